/* udsbench-pcapcount — a fast pcap reader for udsdump's capture stream that proves what it holds.
 *
 *   udsdump ... --fifo - | udsbench-pcapcount [--verify] [--pipe-size BYTES]
 *   udsbench-pcapcount [--verify] --file FILE      a pcap or pcapng file (dumpcap's), read by libpcap
 *   udsbench-pcapcount --raw FIFO                  not a capture: counts the bytes (relay-floor --tee)
 *
 * Prints "ready" on stdout as soon as the 24-byte pcap header has arrived (udsdump writes nothing
 * before its relay is in place, so this is the runner's readiness signal), then at EOF one line:
 *   records= c2s_bytes= s2c_bytes= data_frames= syn= fin= rst= meta= drop_frames= dropped_bytes=
 *   truncated= verify_errors= verified_bytes= partial=
 * c2s/s2c_bytes are the TCP payload lengths of the frames (the IPv4 total length, or when it is 0 the
 * frame's, less the headers),
 * per direction: the client-to-server direction is the one whose destination is the server address
 * 10.x.y.1 (docs/capture-format.md).  With every byte captured they equal what the clients and the
 * server sent; drop_frames counts metadata frames of type DROP and dropped_bytes what they report.
 *
 * It must keep up with the relay, so it is a streaming state machine over 1 MiB reads: it copies only
 * record headers and the first bytes of each frame (the protocol headers) and skips payload in place.
 * With --verify it also compares every client-to-server payload byte of 'S' (sink) connections
 * against bench_pattern() at its stream offset (from the SYN's sequence number): a lost, repeated,
 * reordered or altered byte is a verify error.  Metadata frames are parsed with the product's own
 * uds_meta_parse.
 */
#include "bench.h"
#include "frame.h"

#include <fcntl.h>
#include <glib.h>
#include <pcap/pcap.h>
#include <stdbool.h>

#define READ_BUF (1u << 20)
#define HEAD_MAX 128                 /* Ethernet + IPv4 (60 at most) + TCP (60 at most) fits */
#define META_MAX 65536

typedef struct {
  uint32_t isn;                      /* sequence number of the first payload byte */
  bool sink;                         /* first payload byte was 'S': the rest is the pattern */
  bool known;                        /* first payload byte seen */
} Flow;

typedef struct {
  bool swapped;
  uint32_t linktype;
  uint64_t records, c2s_bytes, s2c_bytes, data_frames, syn, fin, rst, meta, drop_frames, dropped_bytes,
    truncated, verify_errors, verified_bytes;
  GHashTable *flows;                 /* client ip << 16 | port -> Flow */
  bool verify;
} Stats;

static uint32_t rd32(const uint8_t *p, bool swapped)
{
  uint32_t v;
  memcpy(&v, p, 4);
  return swapped ? __builtin_bswap32(v) : v;
}

static uint16_t be16(const uint8_t *p)
{
  return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t be32(const uint8_t *p)
{
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static gboolean on_tlv(guint16 type, const guint8 *value, guint16 len, gpointer user_data)
{
  Stats *st = user_data;
  if (type == UDS_TLV_DROPPED_BYTES && len == 8) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
      v = v << 8 | value[i];
    st->dropped_bytes += v;
  }
  return TRUE;
}

/* The payload bytes of the current record still to come, and where they belong when verifying. */
typedef struct {
  Flow *flow;                        /* NULL: nothing to verify */
  uint64_t offset;                   /* pattern offset of the next payload byte */
} Cursor;

static void verify_span(Stats *st, Cursor *cur, const uint8_t *data, size_t len)
{
  if (!cur->flow || len == 0)
    return;
  const uint8_t *pat = bench_pattern();
  while (len > 0) {
    size_t span = len < BENCH_PATTERN_SPAN ? len : BENCH_PATTERN_SPAN;
    if (memcmp(data, pat + cur->offset % BENCH_PATTERN_PERIOD, span) != 0)
      st->verify_errors++;
    st->verified_bytes += span;
    cur->offset += span;
    data += span;
    len -= span;
  }
}

/* head: the first hlen bytes of a frame of incl (captured) / orig (wire) bytes.  Sets up cur for the
 * payload bytes that follow head. */
static void frame_head(Stats *st, const uint8_t *head, size_t hlen, uint32_t incl, uint32_t orig, Cursor *cur)
{
  cur->flow = NULL;
  if (incl < orig)
    st->truncated++;
  if (hlen < 14)
    return;
  uint16_t ethertype = be16(head + 12);
  if (ethertype == UDS_FRAME_ETHERTYPE_META) {
    st->meta++;
    UdsMetaHeader h;
    if (hlen == incl && uds_meta_parse(head, hlen, &h, on_tlv, st) && h.type == UDS_META_DROP)
      st->drop_frames++;
    return;
  }
  if (ethertype != UDS_FRAME_ETHERTYPE_IPV4 || hlen < 14 + 20)
    return;
  const uint8_t *ip = head + 14;
  size_t ihl = (size_t)(ip[0] & 0xf) * 4;
  if (ip[9] != UDS_FRAME_PROTO_TCP || hlen < 14 + ihl + 20)
    return;
  const uint8_t *tcp = ip + ihl;
  size_t doff = (size_t)(tcp[12] >> 4) * 4;
  /* A total length of 0 is a segment longer than 16 bits can say: the frame's (Wireshark's reading). */
  size_t total = be16(ip + 2) ? be16(ip + 2) : (size_t)orig - 14;
  if (total < ihl + doff)
    return;
  size_t plen = total - ihl - doff;
  bool c2s = ip[19] == 1;            /* destination 10.x.y.1: the server */
  uint8_t flags = tcp[13];
  uint32_t seq = be32(tcp + 4);
  uint32_t cip = c2s ? be32(ip + 12) : be32(ip + 16);
  uint16_t cport = c2s ? be16(tcp) : be16(tcp + 2);
  uint64_t key = (uint64_t)cip << 16 | cport;
  if (flags & UDS_TCP_SYN) {
    if (c2s) {
      st->syn++;
      if (st->verify) {
        Flow *f = g_new0(Flow, 1);
        f->isn = seq + 1;
        g_hash_table_replace(st->flows, g_memdup2(&key, sizeof key), f);
      }
    }
    return;
  }
  if (flags & UDS_TCP_FIN)
    st->fin++;
  if (flags & UDS_TCP_RST)
    st->rst++;
  if (plen == 0)
    return;
  st->data_frames++;
  if (c2s)
    st->c2s_bytes += plen;
  else
    st->s2c_bytes += plen;
  if (!st->verify || !c2s)
    return;
  Flow *f = g_hash_table_lookup(st->flows, &key);
  if (!f)
    return;
  const uint8_t *payload = tcp + doff;
  size_t in_head = hlen > (size_t)(payload - head) ? hlen - (size_t)(payload - head) : 0;
  uint64_t off = (uint32_t)(seq - f->isn);   /* stream offset; streams here stay below 4 GiB */
  if (off == 0 && in_head > 0) {
    f->known = true;
    f->sink = payload[0] == BENCH_MODE_SINK;
    payload++, in_head--, off++;
  }
  if (!f->known || !f->sink || off == 0)
    return;
  cur->flow = f;
  cur->offset = off - 1;
  verify_span(st, cur, payload, in_head);
}

/* --file: a finished capture file, pcap or pcapng (what dumpcap writes), through libpcap. */
static int count_file(Stats *st, const char *file)
{
  char err[PCAP_ERRBUF_SIZE];
  pcap_t *p = pcap_open_offline(file, err);
  if (!p) {
    fprintf(stderr, "udsbench-pcapcount: %s\n", err);
    return -1;
  }
  st->linktype = (uint32_t)pcap_datalink(p);
  struct pcap_pkthdr *h;
  const u_char *data;
  int rc;
  while ((rc = pcap_next_ex(p, &h, &data)) == 1) {
    st->records++;
    size_t hlen = h->caplen < HEAD_MAX ? h->caplen : HEAD_MAX;
    if (h->caplen > HEAD_MAX && h->caplen <= META_MAX && be16(data + 12) == UDS_FRAME_ETHERTYPE_META)
      hlen = h->caplen;
    Cursor cur = { 0 };
    frame_head(st, data, hlen, h->caplen, h->len, &cur);
    verify_span(st, &cur, data + hlen, h->caplen - hlen);
  }
  if (rc == PCAP_ERROR)
    fprintf(stderr, "udsbench-pcapcount: %s: %s\n", file, pcap_geterr(p));
  pcap_close(p);
  return rc == PCAP_ERROR ? -1 : 0;
}

static guint key_hash(gconstpointer k)
{
  uint64_t v;
  memcpy(&v, k, sizeof v);
  return (guint)(v ^ v >> 32);
}

static gboolean key_equal(gconstpointer a, gconstpointer b)
{
  return memcmp(a, b, sizeof(uint64_t)) == 0;
}

int main(int argc, char **argv)
{
  Stats st = { 0 };
  const char *file = NULL, *raw = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--verify") == 0)
      st.verify = true;
    else if (strcmp(argv[i], "--raw") == 0 && i + 1 < argc)
      raw = argv[++i];
    else if (strcmp(argv[i], "--file") == 0 && i + 1 < argc)
      file = argv[++i];
    else if (strcmp(argv[i], "--pipe-size") == 0 && i + 1 < argc)
      fcntl(0, F_SETPIPE_SZ, atoi(argv[++i]));
    else {
      fprintf(stderr, "usage: udsbench-pcapcount [--verify] [--pipe-size BYTES] < pcap | [--verify] --file FILE | --raw FIFO\n");
      return 2;
    }
  }
  if (raw) {
    /* The same 1 MiB reads as for a capture stream, so that both readers cost the same per byte. */
    int fd = open(raw, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      bench_die(raw);
    uint8_t *rbuf = g_malloc(READ_BUF);
    uint64_t total = 0;
    for (ssize_t n; (n = read(fd, rbuf, READ_BUF)) != 0;) {
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        bench_die("read");
      total += (uint64_t)n;
    }
    printf("raw_bytes=%llu\n", (unsigned long long)total);
    g_free(rbuf);
    close(fd);
    return 0;
  }
  st.flows = g_hash_table_new_full(key_hash, key_equal, g_free, g_free);
  bool partial = false;
  if (file) {
    partial = count_file(&st, file) < 0;
    goto done;
  }
  uint8_t *buf = g_malloc(READ_BUF);
  uint8_t *acc = g_malloc(META_MAX);   /* the part of a header being gathered across reads */
  enum { S_GLOBAL, S_RECORD, S_HEAD, S_PAYLOAD } state = S_GLOBAL;
  size_t need = 24, have = 0;          /* bytes wanted in acc / gathered */
  uint32_t incl = 0, orig = 0;
  uint64_t rest = 0;                   /* S_PAYLOAD: bytes of the record still to skip or verify */
  Cursor cur = { 0 };
  for (;;) {
    ssize_t n = read(0, buf, READ_BUF);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      bench_die("read");
    if (n == 0)
      break;
    const uint8_t *p = buf, *end = buf + n;
    while (p < end) {
      if (state == S_PAYLOAD) {
        size_t take = (size_t)(end - p) < rest ? (size_t)(end - p) : (size_t)rest;
        verify_span(&st, &cur, p, take);
        p += take;
        rest -= take;
        if (rest == 0)
          state = S_RECORD, need = 16, have = 0;
        continue;
      }
      size_t take = (size_t)(end - p) < need - have ? (size_t)(end - p) : need - have;
      memcpy(acc + have, p, take);
      p += take;
      have += take;
      if (have < need)
        continue;
      if (state == S_GLOBAL) {
        uint32_t magic;
        memcpy(&magic, acc, 4);
        if (magic == 0xd4c3b2a1 || magic == 0x4d3cb2a1)
          st.swapped = true;
        else if (magic != 0xa1b2c3d4 && magic != 0xa1b23c4d) {
          fprintf(stderr, "udsbench-pcapcount: not a pcap stream (magic %08x)\n", magic);
          return 1;
        }
        st.linktype = rd32(acc + 20, st.swapped);
        printf("ready\n");
        fflush(stdout);
        state = S_RECORD, need = 16, have = 0;
      } else if (state == S_RECORD) {
        st.records++;
        incl = rd32(acc + 8, st.swapped);
        orig = rd32(acc + 12, st.swapped);
        state = S_HEAD, have = 0;
        need = incl < HEAD_MAX ? incl : HEAD_MAX;
        if (need == 0)
          state = S_RECORD, need = 16;
      } else {                         /* S_HEAD */
        if (need == HEAD_MAX && incl > HEAD_MAX && incl <= META_MAX && be16(acc + 12) == UDS_FRAME_ETHERTYPE_META) {
          need = incl;                 /* metadata frames are parsed whole */
          continue;
        }
        frame_head(&st, acc, have, incl, orig, &cur);
        rest = incl - have;
        if (rest > 0)
          state = S_PAYLOAD;
        else
          state = S_RECORD, need = 16, have = 0;
      }
    }
  }
  g_free(buf);
  g_free(acc);
  partial = !(state == S_RECORD && have == 0);
done:
  printf("records=%llu c2s_bytes=%llu s2c_bytes=%llu data_frames=%llu syn=%llu fin=%llu rst=%llu meta=%llu "
         "drop_frames=%llu dropped_bytes=%llu truncated=%llu verify_errors=%llu verified_bytes=%llu linktype=%u "
         "partial=%d\n",
         (unsigned long long)st.records, (unsigned long long)st.c2s_bytes, (unsigned long long)st.s2c_bytes,
         (unsigned long long)st.data_frames, (unsigned long long)st.syn, (unsigned long long)st.fin,
         (unsigned long long)st.rst, (unsigned long long)st.meta, (unsigned long long)st.drop_frames,
         (unsigned long long)st.dropped_bytes, (unsigned long long)st.truncated,
         (unsigned long long)st.verify_errors, (unsigned long long)st.verified_bytes, st.linktype, partial);
  g_hash_table_destroy(st.flows);
  return partial || st.verify_errors ? 1 : 0;
}
