/* fuzz-frame — the pure frame builders (include/frame.h) against an independent checksum.
 *
 * The input chooses the header values, the payload, its length and the snap length.  Checked: the
 * lengths the builders report; every IPv4 header checksum, and the TCP/UDP checksum of every frame
 * that kept its whole payload, recomputed here byte by byte (RFC 1071, the plain way) - a frame
 * Wireshark would flag is a bug; datagram spans tile the message; a metadata frame built from the
 * input's TLVs parses back to exactly the TLVs that fit; uds_meta_parse survives any bytes.
 */
#include "frame.h"

#include <stdint.h>
#include <string.h>

#define CHECK(c) do { if (!(c)) { __builtin_trap(); } } while (0)

static guint8 out[UDS_FRAME_MAX];
static guint8 big[UDS_FRAME_DGRAM_MAX];

typedef struct {
  const guint8 *p;
  size_t n;
} In;

static guint64 take(In *in, int bytes)
{
  guint64 v = 0;
  for (int i = 0; i < bytes; i++) {
    v = v << 8 | (in->n ? *in->p : 0);
    if (in->n) {
      in->p++;
      in->n--;
    }
  }
  return v;
}

/* RFC 1071 over big-endian 16-bit words, with a starting sum */
static guint32 sum16(const guint8 *d, size_t n, guint32 s)
{
  for (size_t i = 0; i + 1 < n; i += 2)
    s += (guint32)d[i] << 8 | d[i + 1];
  if (n & 1)
    s += (guint32)d[n - 1] << 8;
  return s;
}

static guint16 fold(guint32 s)
{
  while (s >> 16)
    s = (s & 0xffff) + (s >> 16);
  return (guint16)s;
}

/* The IPv4 header at frame+14 sums to 0xffff; with whole, so does the L4 part with its pseudo header. */
static void check_ip(const guint8 *f, size_t caplen, gboolean whole)
{
  CHECK(caplen >= 34);
  CHECK(f[12] == 0x08 && f[13] == 0x00);
  const guint8 *ip = f + 14;
  CHECK((ip[0] >> 4) == 4 && (ip[0] & 15) == 5);
  CHECK(fold(sum16(ip, 20, 0)) == 0xffff);
  guint16 total = (guint16)(ip[2] << 8 | ip[3]);
  guint16 frag = (guint16)((ip[6] << 8 | ip[7]) & 0x3fff);
  if (!whole || frag != 0 || total == 0)
    return;   /* fragments carry the checksum of the whole datagram: checked by its first frame only */
  CHECK(caplen == 14u + total);
  guint8 proto = ip[9];
  if (proto == UDS_FRAME_PROTO_UDP && (ip[26] | ip[27]) == 0)
    return;   /* UDP without checksum */
  size_t l4 = total - 20u;
  guint32 s = sum16(ip + 12, 8, 0) + proto + (guint32)l4;
  CHECK(fold(sum16(ip + 20, l4, s)) == 0xffff);
}

typedef struct {
  guint16 type, len;
  const guint8 *value;
} Tlv;

typedef struct {
  Tlv *want;
  guint n, seen;
} TlvCheck;

static gboolean on_tlv(guint16 type, const guint8 *value, guint16 len, gpointer user)
{
  TlvCheck *c = user;
  CHECK(c->seen < c->n);
  const Tlv *w = &c->want[c->seen++];
  CHECK(w->type == type && w->len == len && (len == 0 || memcmp(w->value, value, len) == 0));
  return TRUE;
}

static gboolean count_tlv(guint16 type, const guint8 *value, guint16 len, gpointer user)
{
  (void)type; (void)value; (void)len;
  (*(guint *)user)++;
  return TRUE;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  In in = { data, size };
  guint8 mode = (guint8)take(&in, 1);
  UdsFrameEnds e = { (guint32)take(&in, 4), (guint32)take(&in, 4), (guint16)take(&in, 2), (guint16)take(&in, 2) };
  guint16 ip_id = (guint16)take(&in, 2);

  switch (mode % 3) {
  case 0: {   /* TCP */
    UdsTcpFields t = { (guint32)take(&in, 4), (guint32)take(&in, 4), (guint8)take(&in, 1), (guint16)take(&in, 2),
                       (gboolean)(take(&in, 1) & 1) };
    gsize len = MIN(in.n, (gsize)UDS_FRAME_TCP_MSS);
    gsize want_copy = (mode & 0x80) ? len : (gsize)take(&in, 2);   /* MIN evaluates twice: not take() in it */
    gsize copy = MIN(len, want_copy);
    len = MIN(len, in.n);
    copy = MIN(copy, len);
    gsize wire = 0;
    gsize cap = uds_frame_tcp(out, &e, ip_id, &t, in.p, len, copy, &wire);
    gsize hdr = uds_frame_tcp_header_len(&t);
    CHECK(cap == hdr + copy && wire == hdr + len);
    check_ip(out, cap, copy == len);
    break;
  }
  case 1: {   /* datagram, up to the largest kept whole: the input repeated */
    gsize len = (gsize)take(&in, 3) % (UDS_FRAME_DGRAM_MAX + 1);
    gsize snap = (mode & 0x80) ? G_MAXSIZE : (gsize)take(&in, 3);
    for (gsize i = 0; i < len; i++)
      big[i] = in.n ? in.p[i % in.n] : (guint8)i;
    guint count = uds_frame_dgram_count(len);
    CHECK(count == 1 || count == 2);
    CHECK(count == 1 || len > UDS_FRAME_UDP_MAX);
    gsize next = 0;
    for (guint k = 0; k < count; k++) {
      gsize off = 0, span = 0, wire = 0;
      uds_frame_dgram_span(len, k, &off, &span);
      CHECK(off == next);
      next = off + span;
      gsize hdr = uds_frame_dgram_header_len(len, k);
      gsize cap = uds_frame_dgram(out, &e, ip_id, k, big, len, snap, &wire);
      CHECK(cap <= UDS_FRAME_MAX && cap <= wire && wire <= UDS_FRAME_MAX);
      CHECK(cap == hdr + MIN(span, snap));
      check_ip(out, cap, cap == wire);
    }
    CHECK(next == len);
    break;
  }
  default: {  /* a metadata frame from the input's TLVs, parsed back */
    gsize capacity = (gsize)take(&in, 2) % 4096;
    guint8 dst[6], src[6];
    for (int i = 0; i < 6; i++) {
      dst[i] = (guint8)take(&in, 1);
      src[i] = (guint8)take(&in, 1);
    }
    UdsMetaHeader h = { (guint8)take(&in, 1), (guint8)take(&in, 1), (guint32)take(&in, 4), e.src_ip, e.dst_ip,
                        e.src_port, e.dst_port };
    UdsMetaWriter w;
    if (!uds_meta_begin(&w, out, capacity, dst, src, &h)) {
      CHECK(capacity < UDS_FRAME_ETH_LEN + UDS_META_HDR_LEN);
      break;
    }
    Tlv want[64];
    guint n = 0;
    while (in.n > 0 && n < G_N_ELEMENTS(want)) {
      guint16 type = (guint16)take(&in, 2);
      gsize vlen = (gsize)take(&in, 1) * 3;
      vlen = MIN(vlen, in.n);
      gsize before = w.len;
      uds_meta_tlv(&w, type, in.p, vlen);
      CHECK(w.len <= w.cap);
      if (w.len != before) {
        CHECK(w.len == before + 4 + vlen);
        want[n++] = (Tlv){ type, (guint16)vlen, in.p };
      } else {
        CHECK(w.overflow);
      }
      in.p += vlen;
      in.n -= vlen;
    }
    UdsMetaHeader back;
    TlvCheck c = { want, n, 0 };
    CHECK(uds_meta_parse(w.buf, w.len, &back, on_tlv, &c));
    CHECK(c.seen == n);
    CHECK(back.type == h.type && back.dir == h.dir && back.conn_id == h.conn_id);
    break;
  }
  }
  /* and the raw input as a frame */
  UdsMetaHeader any;
  guint count = 0;
  uds_meta_parse(data, size, &any, count_tlv, &count);
  uds_meta_parse(data, size, NULL, NULL, NULL);
  return 0;
}
