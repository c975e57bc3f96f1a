/* fuzz-capture — the capture writer (uds_capture_*) driven by a fuzzed sequence of relay events.
 *
 * The input picks the options (socket type, pcap or text, snap length, a small buffer so drops
 * happen, lossless, a client filter, a libpcap filter from a fixed list), then a script of events on
 * up to four connections: open (with a client whose command name is input bytes), data or messages
 * of input-chosen sizes, passed descriptors, half-closes, resets, closes, and flushes.  The output
 * goes to a memfd, as the relay's FIFO would (a memfd never blocks: flushes always make progress).
 * Checked afterwards on the pcap: the file header, every record's lengths (caplen <= wire length,
 * <= the snap length kept, <= 262144), every IPv4 header checksum, every metadata frame parses;
 * the text view is valid UTF-8.  And no crash, no leak.
 */
#include "capture.h"
#include "frame.h"

#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHECK(c) do { if (!(c)) { __builtin_trap(); } } while (0)
#define NFLOWS 4

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

static guint8 payload[300 * 1024];
#define RUN_BYTES (4u << 20)   /* payload per run: enough for drops and fragments, fast enough to explore */

static const char *const filters[] = { NULL, "tcp", "tcp port 80", "udp", "ether proto 0x88b5", "tcp[13] & 2 != 0",
                                       "len > 1000", "not tcp" };

static guint16 fold(guint32 s)
{
  while (s >> 16)
    s = (s & 0xffff) + (s >> 16);
  return (guint16)s;
}

static void check_pcap(const guint8 *d, size_t n, guint snap)
{
  CHECK(n >= 24);
  guint32 magic;
  memcpy(&magic, d, 4);
  CHECK(magic == 0xa1b23c4d);   /* nanosecond pcap, host order (libpcap writes the host's) */
  size_t off = 24;
  while (off < n) {
    CHECK(n - off >= 16);
    guint32 caplen, wire;
    memcpy(&caplen, d + off + 8, 4);
    memcpy(&wire, d + off + 12, 4);
    off += 16;
    CHECK(caplen <= wire && caplen <= 262144 && caplen <= n - off);
    const guint8 *f = d + off;
    if (caplen >= 14 && f[12] == 0x08 && f[13] == 0x00) {
      CHECK(caplen >= 34);
      guint32 s = 0;
      for (int i = 0; i < 20; i += 2)
        s += (guint32)f[14 + i] << 8 | f[15 + i];
      CHECK(fold(s) == 0xffff);
      if (snap) {
        /* headers are always whole; payload beyond the snap length is not kept */
        CHECK(caplen <= 14 + 60 + 8 + snap + 65535u);
      }
    } else if (caplen >= 14 && f[12] == 0x88 && f[13] == 0xb5) {
      CHECK(uds_meta_parse(f, caplen, NULL, NULL, NULL));
    }
    off += caplen;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  In in = { data, size };
  guint8 o1 = (guint8)take(&in, 1), o2 = (guint8)take(&in, 1);
  static const int types[] = { SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET };
  char comm_filter[8] = "";
  UdsCaptureOptions opt = {
    .path = (o1 & 0x40) ? "/run/docker.sock" : "/tmp/fuzz.sock",
    .sock_type = types[(o1 & 3) % 3],
    .format = (o1 & 4) ? UDS_FORMAT_TEXT : UDS_FORMAT_PCAP,
    .snaplen = (o1 & 8) ? (guint)take(&in, 2) : 0,
    .buffer_bytes = (o1 & 16) ? 4096 + (gsize)take(&in, 2) * 16 : 0,
    .lossless = (o1 & 32) != 0,
    .filter = filters[o2 % G_N_ELEMENTS(filters)],
    .only_pid = (o2 & 0x10) ? 4242 : 0,
    .only_uid = (o2 & 0x20) ? 1000 : -1,
    .max_frames = (o2 & 0x40) ? take(&in, 1) : 0,
  };
  if (o2 & 0x80) {
    memcpy(comm_filter, "curl", 5);
    opt.only_comm = comm_filter;
  }
  int fd = memfd_create("fuzz-capture", MFD_CLOEXEC);
  CHECK(fd >= 0);
  int keep = dup(fd);   /* the capture owns fd; keep reads the result */
  g_autoptr(GError) err = NULL;
  UdsCapture *cap = uds_capture_new(fd, &opt, &err);
  CHECK(cap != NULL);   /* every filter in the list is valid */

  UdsFlow flows[NFLOWS];
  gboolean live[NFLOWS] = { FALSE };
  memset(flows, 0, sizeof flows);
  struct timespec ts = { 1700000000, 0 };
  gboolean stream = opt.sock_type == SOCK_STREAM;
  gsize budget = RUN_BYTES;
  while (in.n > 0) {
    guint8 op = (guint8)take(&in, 1);
    int k = op & 3, dir = (op >> 2) & 1;
    ts.tv_nsec = (ts.tv_nsec + 1000) % 1000000000;
    switch (op >> 3) {
    case 0: case 1: {   /* open, with a client */
      if (live[k])
        break;
      UdsPeer peer = { .pid = (pid_t)take(&in, 2), .uid = (uid_t)((op & 0x80) ? 1000 : take(&in, 2)), .gid = 7,
                       .ngroups = 1, .groups = { 7 } };
      gsize cl = MIN(in.n, sizeof peer.comm - 1);
      memcpy(peer.comm, in.p, cl);
      peer.comm[cl] = '\0';
      UdsConnMeta meta = { .client = (op & 0x40) ? NULL : &peer, .server_pid = 1, .server_comm = "server",
                           .client_addr = (op & 0x20) ? NULL : "/tmp/client.sock" };
      uds_capture_conn_open(cap, &flows[k], &meta, &ts);
      live[k] = TRUE;
      break;
    }
    case 2: case 3: case 4: case 5: case 6: case 7: case 8: case 9: {   /* bytes */
      if (!live[k])
        break;
      gsize len = (gsize)take(&in, 1) << ((op >> 4) & 0xf ? 10 : 0);
      len = MIN(len, sizeof payload);
      len = MIN(len, budget);
      budget -= len;
      for (gsize i = 0; i < len; i++)
        payload[i] = in.n ? in.p[i % in.n] : (guint8)i;
      if (stream)
        uds_capture_conn_data(cap, &flows[k], dir, payload, len, &ts);
      else
        uds_capture_message(cap, &flows[k], dir, payload, MIN(len, (gsize)UDS_FRAME_DGRAM_MAX + 100), &ts);
      break;
    }
    case 10: {   /* descriptors and credentials */
      if (!live[k])
        break;
      const char *desc[3] = { "file /etc/hosts", "socket", "memfd:x\xff}{" };
      UdsAncillary anc = { .nfds = (int)(take(&in, 1) % 4), .fd_desc = desc, .has_creds = op & 0x80,
                           .pid = 1, .uid = 2, .gid = 3, .truncated = op & 0x40 };
      if (anc.nfds > 3)
        anc.nfds = 3;
      uds_capture_conn_ancillary(cap, &flows[k], dir, &anc, &ts);
      break;
    }
    case 11:
      if (live[k] && stream)
        uds_capture_conn_shutdown(cap, &flows[k], dir, &ts);
      break;
    case 12:
      if (live[k] && stream)
        uds_capture_conn_reset(cap, &flows[k], dir, &ts);
      break;
    case 13: case 14:
      if (live[k]) {
        uds_capture_conn_close(cap, &flows[k], &ts);
        live[k] = FALSE;
      }
      break;
    default:
      if (uds_capture_wants_write(cap))
        CHECK(uds_capture_flush(cap) == 0);
      break;
    }
    if (uds_capture_full(cap))
      CHECK(uds_capture_flush(cap) == 0);   /* the reader (a memfd) takes everything */
    if (uds_capture_done(cap))
      break;
  }
  for (int k = 0; k < NFLOWS; k++)
    if (live[k])
      uds_capture_conn_close(cap, &flows[k], &ts);
  uds_capture_finish(cap, 0);
  UdsCaptureStats st;
  uds_capture_stats(cap, &st);
  uds_capture_free(cap);

  off_t n = lseek(keep, 0, SEEK_END);
  CHECK(n >= 0);
  if (n > 0) {
    guint8 *d = mmap(NULL, (size_t)n, PROT_READ, MAP_PRIVATE, keep, 0);
    CHECK(d != MAP_FAILED);
    if (opt.format == UDS_FORMAT_PCAP)
      check_pcap(d, (size_t)n, opt.snaplen);
    else
      CHECK(g_utf8_validate((const char *)d, (gssize)n, NULL));
    munmap(d, (size_t)n);
  }
  close(keep);
  return 0;
}
