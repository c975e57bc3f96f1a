/* capture — turns relay events into the pcap stream (or the text view); see include/capture.h and
 * docs/capture-format.md for the wire format.
 *
 * Model.  Each connection is a synthetic TCP flow (UDP for datagram and seqpacket sockets) whose
 * sequence numbers count the real relayed bytes, whatever the capture keeps: so a frame that is
 * dropped or filtered out leaves a gap Wireshark can see, and never shifts what follows.  Records go
 * into a bounded in-memory queue (a list of chunks: appends at the tail, writes from the head, no
 * memmove), drained to the non-blocking capture fd by uds_capture_flush() from the relay's loop.
 *
 * libpcap writes the records (pcap_dump on an fopencookie FILE whose write appends to the queue), as
 * decided for the format; to keep that from costing a second copy of every payload byte, a frame is
 * built directly in the queue's tail, 16 bytes past the current end (where pcap_dump will put the
 * record header): when the cookie is then asked to append the frame, the bytes are already in place
 * and the append only moves the tail.  The cookie's write stays a general append (memmove), so
 * whatever way stdio hands the bytes over, the result is the same; the stream is unbuffered and
 * flushed after each record, so stdio never holds bytes across two records.  Payload bytes are thus
 * copied once (into the frame, checksummed in the same pass, frame.c), then written by the kernel.
 *
 * Bound.  A data frame that would take the queue past buffer_bytes is dropped whole and counted (per
 * flow and direction, and in the stats); a DROP metadata frame reports the count before the next data
 * frame of that flow and direction that fits.  Control frames (handshake, FIN, RST, bare ACK) and
 * metadata may use a reserve above the bound, so a flood of data cannot hide how connections begin
 * and end.  In lossless mode nothing is dropped: the queue may exceed the bound by what the relay has
 * already read, and uds_capture_full() asks the relay to stop reading until the reader catches up.
 *
 * Spliced payload.  For bulk stream data the relay can move bytes between the two sockets without
 * reading them (relay.c, "Zero copy"); it then hands the capture a pipe whose head holds those bytes,
 * and uds_capture_conn_tee() duplicates them (tee(2): page references, no copy) into the capture's own
 * staging pipe.  The frame headers still go into the queue; a *stage mark* at that point of the queue
 * says "here come N bytes from the staging pipe", and the flush splices them into the capture fd
 * between the headers, so the payload never enters user space.  Such frames carry TCP checksum 0.  The
 * staged bytes count against the same bound as the queue's.  Whatever needs the bytes themselves (the
 * text view, a libpcap filter, a snap length, -c) keeps the copy path.
 *
 * Assembly.  Headers and staged payload alternate, two writes per frame; written straight to
 * Wireshark's FIFO, each takes the FIFO's lock, which its reader holds while it copies a large read
 * out, and each may wake the reader: measured, a seventh of udsdump's CPU time went to spinning on
 * that lock.  So the flush first puts the stream, in order, into a private *assembly pipe* (no one
 * else takes its lock), then moves all of it into the capture fd with one splice (page references, no
 * copy).  Bytes in the assembly pipe count against the bound like the others.
 *
 * The short way.  While nothing waits in the queue or the staging pipe, a spliced batch skips the
 * staging pipe: its record goes into the assembly pipe by one write and its payload by one tee from
 * the relay's pipe, as one frame of up to 256 KiB (IPv4 total length 0 past 64 KiB, as captured with
 * TCP segmentation offload; docs/capture-format.md).  That is a pipe-to-pipe move and two writes per
 * 64 KiB fewer: a fifth of udsdump's CPU per GB at 64 KiB writes (docs/benchmarks.md).  It is taken only
 * while the assembly pipe surely has room for the whole frame (its buffers are counted; a tee never
 * blocks, and a short one would leave a record promising bytes that did not follow); should a tee still
 * come out short, the rest follows through the staging pipe (tee_rest).
 *
 * Filters.  The client filters decide once per connection, at open (flow->captured).  The libpcap
 * filter runs on every traffic frame (pcap_offline_filter on the dead handle's program); metadata
 * frames of captured connections always pass, as they are not traffic.  With a filter set, frames are
 * built whole (a filter may read any byte) and only then cut to the snap length; a frame that does
 * not fit the queue is built in a scratch buffer first so that a frame the filter rejects is counted
 * as filtered, not dropped.  A datagram is filtered as a whole, on its first frame (seen by the filter
 * as plain UDP even when it is written as UDP-Lite fragments).
 *
 * Errors.  A write error other than EAGAIN (EPIPE: the reader went away) is sticky: the queue is
 * released, later events are ignored and every flush reports the error.
 */
#include "capture.h"

#include "config.h"
#include "frame.h"
#include "log.h"
#include "textview.h"

#include <errno.h>
#include <fcntl.h>
#include <pcap/pcap.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define DEFAULT_BUFFER (4u * 1024 * 1024)
#define CHUNK_SIZE (512u * 1024)
#define MAX_SPARE_CHUNKS 4           /* kept warm: no malloc/page faults per chunk in steady state */
#define PCAP_SNAPLEN 262144          /* Wireshark's largest; every frame is at most UDS_FRAME_MAX */
#define REC_HDR 16                   /* pcap record header */
#define ACK_EVERY (512u * 1024)      /* unacknowledged bytes before the other side sends a bare ACK */
#define DROP_NOTE_LEN 96             /* room for a DROP metadata record */
#define PIPE_SLOT 4096               /* a pipe holds its size / page size buffers (slots) */
#define TEXT_MAX_DIVISOR 8           /* the text view shows at most buffer/8 bytes of one event */

G_STATIC_ASSERT(UDS_FRAME_MAX <= PCAP_SNAPLEN);
G_STATIC_ASSERT(UDS_FRAME_RECORD_MAX <= PCAP_SNAPLEN);

typedef struct Chunk {
  struct Chunk *next;
  gsize size, head, tail;   /* bytes [head, tail) are queued */
  guint8 data[];
} Chunk;

typedef enum { REC_DATA, REC_CONTROL } RecKind;

/* len bytes from the staging pipe go into the stream once the queue has been written up to `at`. */
typedef struct {
  guint64 at;
  gsize len;
} StageMark;

struct UdsCapture {
  int fd;
  int fd_flags;             /* to put back on free: stdout may be shared with a shell */
  UdsCaptureFormat format;
  char *path;
  int sock_type;
  char *proto_name;
  char *source;             /* INFO's SOURCE: NULL for the relay */
  guint32 server_ip;
  guint16 hash, server_port;
  guint32 n_start, last_id;
  gsize snap;               /* payload bytes kept per frame */
  gsize bound, reserve;
  gboolean lossless, hex;
  guint64 max_frames, data_frames;
  pid_t only_pid;
  char *only_comm;
  gint64 only_uid;

  pcap_t *pcap;             /* dead handle: the link type for the dumper and the filter */
  pcap_dumper_t *dumper;    /* NULL in the text view */
  gboolean have_filter;
  struct bpf_program prog;

  Chunk *first, *last, *spare;
  guint nspare;
  gsize queued;
  guint64 q_in, q_out;      /* bytes ever appended to / written from the queue: where marks point */
  int stage[2];             /* staging pipe for spliced payload (-1: none, payload is copied) */
  gboolean can_splice;      /* the capture fd takes splice(2) (pipe, FIFO, file, socket) */
  gsize staged;             /* bytes in the staging pipe not yet written */
  int assemble[2];          /* assembly pipe: the stream in order, on its way to fd (-1: none) */
  gsize assembled;          /* bytes in it */
  guint asm_slots;          /* of its buffers (slots), at most this many in use (reset when empty) */
  guint asm_nslots;         /* how many it has */
  GQueue marks;             /* StageMark, in stream order */
  int err;                  /* sticky write error */

  UdsCaptureStats stats;
  guint8 *scratch;          /* UDS_FRAME_MAX bytes: metadata frames, frames built only to be filtered */
  GHashTable *who;          /* text view: conn id -> "comm[pid]" */
  GString *text;
};

/* ---- the queue ---- */

static Chunk *chunk_get(UdsCapture *cap, gsize need)
{
  Chunk *c;
  if (need <= CHUNK_SIZE && cap->spare) {
    c = cap->spare;
    cap->spare = c->next;
    cap->nspare--;
  } else {
    gsize size = MAX(need, CHUNK_SIZE);
    c = g_malloc(sizeof *c + size);
    c->size = size;
  }
  c->next = NULL;
  c->head = c->tail = 0;
  return c;
}

static void chunk_put(UdsCapture *cap, Chunk *c)
{
  if (c->size == CHUNK_SIZE && cap->nspare < MAX_SPARE_CHUNKS) {
    c->next = cap->spare;
    cap->spare = c;
    cap->nspare++;
  } else {
    g_free(c);
  }
}

/* Contiguous room for n bytes at the tail; returns where they go.  Nothing is queued yet. */
static guint8 *q_reserve(UdsCapture *cap, gsize n)
{
  Chunk *l = cap->last;
  if (l && l->size - l->tail >= n)
    return l->data + l->tail;
  Chunk *c = chunk_get(cap, n);
  if (l)
    l->next = c;
  else
    cap->first = c;
  cap->last = c;
  return c->data;
}

/* Appends n bytes; free when they already sit at the tail (a frame built by frame_slot). */
static void q_append(UdsCapture *cap, const void *buf, gsize n)
{
  Chunk *l = cap->last;
  if (!(l && (const guint8 *)buf == l->data + l->tail && l->size - l->tail >= n)) {
    guint8 *p = q_reserve(cap, n);
    memmove(p, buf, n);
  }
  cap->last->tail += n;
  cap->queued += n;
  cap->q_in += n;
}

static void q_consume(UdsCapture *cap, gsize n)
{
  while (cap->first) {
    Chunk *c = cap->first;
    gsize k = MIN(n, c->tail - c->head);
    c->head += k;
    cap->queued -= k;
    cap->q_out += k;
    n -= k;
    if (c->head < c->tail)
      break;
    if (c == cap->last) {
      c->head = c->tail = 0;   /* empty: reuse in place */
      break;
    }
    cap->first = c->next;
    chunk_put(cap, c);
  }
}

static void q_clear(UdsCapture *cap)
{
  while (cap->first) {
    Chunk *c = cap->first;
    cap->first = c->next;
    g_free(c);
  }
  while (cap->spare) {
    Chunk *c = cap->spare;
    cap->spare = c->next;
    g_free(c);
  }
  cap->last = NULL;
  cap->nspare = 0;
  cap->queued = 0;
  cap->q_in = cap->q_out = 0;
  /* The staging pipe's bytes are never written now; the pipe itself goes with the capture. */
  g_queue_clear_full(&cap->marks, g_free);
  cap->staged = 0;
  cap->assembled = 0;
}

/* stdio's side of the queue: libpcap writes records here. */
static ssize_t cookie_write(void *cookie, const char *buf, size_t n)
{
  q_append(cookie, buf, n);
  return (ssize_t)n;
}

static int cookie_close(void *cookie)
{
  return 0;   /* the fd is the capture's, closed in uds_capture_free */
}

/* ---- records ---- */

static gboolean usable(UdsCapture *cap)
{
  return cap->err == 0 && !uds_capture_done(cap);
}

/* Capture bytes not yet taken by the reader. */
static gsize waiting(const UdsCapture *cap)
{
  return cap->queued + cap->staged + cap->assembled;
}

static gboolean room_for(UdsCapture *cap, gsize n, RecKind kind)
{
  if (cap->lossless)
    return TRUE;
  return waiting(cap) + n <= cap->bound + (kind == REC_CONTROL ? cap->reserve : 0);
}

/* A data frame (or text event) of n payload bytes went into the stream whole. */
static void count_frame(UdsCapture *cap, gsize n)
{
  cap->stats.frames++;
  cap->stats.bytes += n;
  cap->data_frames++;
}

/* Where to build a frame of up to len bytes so that committing it copies nothing. */
static guint8 *frame_slot(UdsCapture *cap, gsize len)
{
  return q_reserve(cap, REC_HDR + len) + REC_HDR;
}

static void commit(UdsCapture *cap, const guint8 *frame, gsize caplen, gsize wire_len, const struct timespec *ts)
{
  struct pcap_pkthdr h = { .caplen = (bpf_u_int32)caplen, .len = (bpf_u_int32)wire_len };
  h.ts.tv_sec = ts->tv_sec;
  h.ts.tv_usec = ts->tv_nsec;   /* nanosecond-precision dumper: this field carries nanoseconds */
  pcap_dump((u_char *)cap->dumper, &h, frame);
  pcap_dump_flush(cap->dumper);
  cap->stats.frames++;
}

static gboolean filter_pass(UdsCapture *cap, const guint8 *frame, gsize caplen, gsize wire_len)
{
  if (!cap->have_filter)
    return TRUE;
  struct pcap_pkthdr h = { .caplen = (bpf_u_int32)caplen, .len = (bpf_u_int32)wire_len };
  return pcap_offline_filter(&cap->prog, &h, frame) != 0;
}

static void flow_ends(const UdsFlow *f, int from, UdsFrameEnds *e)
{
  if (from == UDS_DIR_C2S) {
    *e = (UdsFrameEnds){ f->client_ip, f->server_ip, f->client_port, f->server_port };
  } else {
    *e = (UdsFrameEnds){ f->server_ip, f->client_ip, f->server_port, f->client_port };
  }
}

/* ---- metadata frames ---- */

static void meta_begin(UdsCapture *cap, UdsMetaWriter *w, const UdsFlow *f, guint8 type, guint8 dir)
{
  UdsMetaHeader h = { .type = type, .dir = dir };
  guint8 cmac[6], smac[6];
  uds_frame_mac(cap->server_ip, smac);
  if (f) {
    h.conn_id = f->id;
    h.client_ip = f->client_ip;
    h.server_ip = f->server_ip;
    h.client_port = f->client_port;
    h.server_port = f->server_port;
    uds_frame_mac(f->client_ip, cmac);
  } else {
    memcpy(cmac, smac, 6);
  }
  if (dir == UDS_DIR_S2C)
    uds_meta_begin(w, cap->scratch, UDS_FRAME_MAX, cmac, smac, &h);
  else
    uds_meta_begin(w, cap->scratch, UDS_FRAME_MAX, smac, cmac, &h);
}

/* Metadata is not traffic: never filtered, dropped only past the reserve. */
static gboolean meta_emit(UdsCapture *cap, UdsMetaWriter *w, const struct timespec *ts)
{
  if (w->overflow)
    uds_debug("capture: metadata frame too long, some fields left out");
  if (!room_for(cap, REC_HDR + w->len, REC_CONTROL)) {
    cap->stats.dropped_frames++;
    return FALSE;
  }
  commit(cap, w->buf, w->len, w->len, ts);
  return TRUE;
}

static void meta_common(UdsCapture *cap, UdsMetaWriter *w)
{
  uds_meta_tlv(w, UDS_TLV_PATH, cap->path, strlen(cap->path));
  uds_meta_u8(w, UDS_TLV_SOCK_TYPE, (guint8)cap->sock_type);
  uds_meta_str(w, UDS_TLV_PROTO, cap->proto_name);
}

/* Reports the bytes of flow/dir lost since the last report, before the frame that follows them. */
static gboolean note_drop(UdsCapture *cap, UdsFlow *flow, int dir, const struct timespec *ts)
{
  if (flow->dropped[dir] == 0)
    return TRUE;
  if (cap->format == UDS_FORMAT_TEXT) {
    const char *who = g_hash_table_lookup(cap->who, GUINT_TO_POINTER(flow->id));
    g_string_truncate(cap->text, 0);
    uds_text_event(cap->text, ts, flow->id, who ? who : "?", (UdsTextDir)dir, cap->path,
                   "lost %" G_GUINT64_FORMAT " bytes (capture buffer full)", flow->dropped[dir]);
    if (!room_for(cap, cap->text->len, REC_CONTROL))
      return FALSE;
    q_append(cap, cap->text->str, cap->text->len);
    cap->stats.frames++;
  } else {
    UdsMetaWriter w;
    meta_begin(cap, &w, flow, UDS_META_DROP, (guint8)dir);
    uds_meta_u64(&w, UDS_TLV_DROPPED_BYTES, flow->dropped[dir]);
    if (!meta_emit(cap, &w, ts))
      return FALSE;
  }
  flow->dropped[dir] = 0;
  return TRUE;
}

static void count_drop(UdsCapture *cap, UdsFlow *flow, int dir, gsize bytes)
{
  flow->dropped[dir] += bytes;
  cap->stats.dropped_frames++;
  cap->stats.dropped_bytes += bytes;
}

/* ---- TCP ---- */

static void tcp_control(UdsCapture *cap, UdsFlow *flow, int from, guint8 flags, gboolean syn_options,
                        const struct timespec *ts)
{
  UdsTcpFields t = {
    .seq = flow->seq[from],
    .ack = (flags & UDS_TCP_ACK) ? flow->seq[!from] : 0,
    .flags = flags,
    .window = UDS_FRAME_TCP_WINDOW,
    .syn_options = syn_options,
  };
  gsize hl = uds_frame_tcp_header_len(&t);
  if (!room_for(cap, REC_HDR + hl, REC_CONTROL)) {
    cap->stats.dropped_frames++;
    return;
  }
  UdsFrameEnds e;
  flow_ends(flow, from, &e);
  guint8 *f = frame_slot(cap, hl);
  gsize wire;
  gsize caplen = uds_frame_tcp(f, &e, flow->ip_id++, &t, NULL, 0, 0, &wire);
  if (!filter_pass(cap, f, caplen, wire)) {
    cap->stats.filtered_frames++;
    return;
  }
  commit(cap, f, caplen, wire, ts);
}

/* The stream's numbers move with the real bytes, whatever becomes of their frame. */
static void tcp_advance(UdsFlow *flow, int dir, gsize n)
{
  flow->seq[dir] += (guint32)n;
  flow->unacked[dir] += n;
  flow->unacked[!dir] = 0;
}

/* The TCP fields of the next data bytes of flow/dir. */
static UdsTcpFields tcp_fields(const UdsFlow *flow, int dir, gboolean psh)
{
  return (UdsTcpFields){
    .seq = flow->seq[dir],
    .ack = flow->seq[!dir],
    .flags = UDS_TCP_ACK | (psh ? UDS_TCP_PSH : 0),
    .window = UDS_FRAME_TCP_WINDOW,
  };
}

/* The TCP fields of the next n data bytes of flow/dir, whose numbers they then take. */
static UdsTcpFields tcp_take(UdsFlow *flow, int dir, gsize n, gboolean psh)
{
  UdsTcpFields t = tcp_fields(flow, dir, psh);
  tcp_advance(flow, dir, n);
  return t;
}

static void tcp_segment(UdsCapture *cap, UdsFlow *flow, int dir, const guint8 *p, gsize n, gboolean psh,
                        const struct timespec *ts)
{
  UdsTcpFields t = tcp_take(flow, dir, n, psh);
  if (!usable(cap))
    return;

  const gsize hl = UDS_FRAME_ETH_LEN + UDS_FRAME_IP_LEN + UDS_FRAME_TCP_LEN;
  gsize keep = MIN(n, cap->snap);
  gsize build = cap->have_filter ? n : keep;
  gboolean fits = room_for(cap, REC_HDR + hl + keep + (flow->dropped[dir] ? DROP_NOTE_LEN : 0), REC_DATA);
  if (!fits && !cap->have_filter) {
    count_drop(cap, flow, dir, n);
    return;
  }
  if (fits && !note_drop(cap, flow, dir, ts)) {
    count_drop(cap, flow, dir, n);
    return;
  }
  UdsFrameEnds e;
  flow_ends(flow, dir, &e);
  guint8 *f = fits ? frame_slot(cap, hl + build) : cap->scratch;
  gsize wire;
  gsize built = uds_frame_tcp(f, &e, flow->ip_id++, &t, p, n, build, &wire);
  if (!filter_pass(cap, f, built, wire)) {
    cap->stats.filtered_frames++;
    return;
  }
  if (!fits) {
    count_drop(cap, flow, dir, n);
    return;
  }
  commit(cap, f, hl + keep, wire, ts);
  cap->stats.bytes += n;
  cap->data_frames++;
}

/* The other side acknowledges every ACK_EVERY bytes, as a real receiver would. */
static void maybe_ack(UdsCapture *cap, UdsFlow *flow, int dir, const struct timespec *ts)
{
  if (flow->unacked[dir] >= ACK_EVERY && usable(cap)) {
    tcp_control(cap, flow, !dir, UDS_TCP_ACK, FALSE, ts);
    flow->unacked[dir] = 0;
  }
}

/* ---- datagrams ---- */

static void dgram_message(UdsCapture *cap, UdsFlow *flow, int dir, const guint8 *p, gsize n, const struct timespec *ts)
{
  UdsFrameEnds e;
  flow_ends(flow, dir, &e);
  guint nf = uds_frame_dgram_count(n);
  gsize keep[2], build[2], rec = 0;
  for (guint i = 0; i < nf; i++) {
    gsize off, span, hl = uds_frame_dgram_header_len(n, i);
    uds_frame_dgram_span(n, i, &off, &span);
    gsize most = UDS_FRAME_MAX - hl;   /* only past UDS_FRAME_DGRAM_MAX */
    keep[i] = MIN(MIN(span, cap->snap), most);
    build[i] = cap->have_filter ? MIN(span, most) : keep[i];
    rec += REC_HDR + hl + keep[i];
  }
  gboolean fits = room_for(cap, rec + (flow->dropped[dir] ? DROP_NOTE_LEN : 0), REC_DATA);
  if (!fits && !cap->have_filter) {
    count_drop(cap, flow, dir, n);
    return;
  }
  if (fits && !note_drop(cap, flow, dir, ts)) {
    count_drop(cap, flow, dir, n);
    return;
  }
  guint16 ip_id = flow->ip_id++;
  for (guint i = 0; i < nf; i++) {
    gsize hl = uds_frame_dgram_header_len(n, i);
    guint8 *f = fits ? frame_slot(cap, hl + build[i]) : cap->scratch;
    gsize wire;
    gsize built = uds_frame_dgram(f, &e, ip_id, i, p, n, build[i], &wire);
    if (i == 0 && cap->have_filter) {
      /* The filter sees the message as one plain UDP datagram. */
      guint8 *proto = f + UDS_FRAME_ETH_LEN + 9;
      guint8 saved = *proto;
      *proto = UDS_FRAME_PROTO_UDP;
      gboolean pass = filter_pass(cap, f, built, wire);
      *proto = saved;
      if (!pass) {
        cap->stats.filtered_frames++;
        return;
      }
      if (!fits) {
        count_drop(cap, flow, dir, n);
        return;
      }
    }
    commit(cap, f, hl + keep[i], wire, ts);
  }
  cap->stats.bytes += n;
  cap->data_frames++;
}

/* ---- the text view ---- */

static const char *text_who(UdsCapture *cap, const UdsFlow *flow)
{
  const char *who = g_hash_table_lookup(cap->who, GUINT_TO_POINTER(flow->id));
  return who ? who : "?";
}

static gboolean text_emit(UdsCapture *cap, RecKind kind)
{
  if (!room_for(cap, cap->text->len, kind)) {
    cap->stats.dropped_frames++;
    return FALSE;
  }
  q_append(cap, cap->text->str, cap->text->len);
  cap->stats.frames++;
  return TRUE;
}

/* The text view filters an event on the frame its first bytes would make. */
static gboolean text_filter(UdsCapture *cap, UdsFlow *flow, int dir, const guint8 *p, gsize n, gboolean dgram)
{
  if (!cap->have_filter)
    return TRUE;
  UdsFrameEnds e;
  flow_ends(flow, dir, &e);
  gsize wire, built;
  if (dgram) {
    built = uds_frame_dgram(cap->scratch, &e, flow->ip_id, 0, p, n, UDS_FRAME_MAX, &wire);
    cap->scratch[UDS_FRAME_ETH_LEN + 9] = UDS_FRAME_PROTO_UDP;
  } else {
    UdsTcpFields t = { .seq = flow->seq[dir], .ack = flow->seq[!dir], .flags = UDS_TCP_ACK | UDS_TCP_PSH,
                       .window = UDS_FRAME_TCP_WINDOW };
    gsize seg = MIN(n, (gsize)UDS_FRAME_TCP_MSS);
    built = uds_frame_tcp(cap->scratch, &e, flow->ip_id, &t, p, seg, seg, &wire);
  }
  return filter_pass(cap, cap->scratch, built, wire);
}

static void text_data(UdsCapture *cap, UdsFlow *flow, int dir, const guint8 *p, gsize n, gboolean dgram,
                      const struct timespec *ts)
{
  if (!text_filter(cap, flow, dir, p, n, dgram)) {
    cap->stats.filtered_frames++;
    return;
  }
  gsize shown = MIN(n, cap->snap);
  shown = MIN(shown, MAX(cap->bound / TEXT_MAX_DIVISOR, 4096));
  gboolean binary = cap->hex || uds_text_is_binary(p, shown);
  GString *t = cap->text;
  g_string_truncate(t, 0);
  /* The loss report goes out only together with the event it precedes. */
  if (flow->dropped[dir])
    uds_text_event(t, ts, flow->id, text_who(cap, flow), (UdsTextDir)dir, cap->path,
                   "lost %" G_GUINT64_FORMAT " bytes (capture buffer full)", flow->dropped[dir]);
  uds_text_event(t, ts, flow->id, text_who(cap, flow), (UdsTextDir)dir, cap->path, "%" G_GSIZE_FORMAT " bytes%s%s",
                 n, dgram ? " (message)" : "", binary && !cap->hex ? " (binary)" : "");
  uds_text_payload(t, p, shown, binary);
  if (shown < n)
    g_string_append_printf(t, "... %" G_GSIZE_FORMAT " more bytes not shown\n", n - shown);
  if (!room_for(cap, t->len, REC_DATA)) {
    count_drop(cap, flow, dir, n);
    return;
  }
  q_append(cap, t->str, t->len);
  flow->dropped[dir] = 0;
  count_frame(cap, n);
}

static void text_line(UdsCapture *cap, const UdsFlow *flow, UdsTextDir dir, const struct timespec *ts,
                      const char *fmt, ...) G_GNUC_PRINTF(5, 6);

static void text_line(UdsCapture *cap, const UdsFlow *flow, UdsTextDir dir, const struct timespec *ts,
                      const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *what = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_string_truncate(cap->text, 0);
  uds_text_event(cap->text, ts, flow ? flow->id : 0, flow ? text_who(cap, flow) : NULL, dir, cap->path, "%s", what);
  text_emit(cap, REC_CONTROL);
}

/* ---- public ---- */

char *uds_capture_check_filter(const char *filter)
{
  if (!filter || !*filter)
    return NULL;
  pcap_t *p = pcap_open_dead_with_tstamp_precision(DLT_EN10MB, PCAP_SNAPLEN, PCAP_TSTAMP_PRECISION_NANO);
  if (!p)
    return g_strdup("cannot set up libpcap");
  struct bpf_program prog;
  char *msg = NULL;
  if (pcap_compile(p, &prog, filter, 1, PCAP_NETMASK_UNKNOWN) < 0)
    msg = g_strdup(pcap_geterr(p));
  else
    pcap_freecode(&prog);
  pcap_close(p);
  return msg;
}

static const char *sock_type_name(int t)
{
  return t == SOCK_STREAM ? "stream" : t == SOCK_DGRAM ? "datagram" : t == SOCK_SEQPACKET ? "seqpacket" : "socket";
}

UdsCapture *uds_capture_new(int fd, const UdsCaptureOptions *opt, GError **error)
{
  g_autoptr(UdsCapture) cap = g_new0(UdsCapture, 1);
  cap->fd = -1;   /* taken only on success */
  cap->stage[0] = cap->stage[1] = -1;
  cap->assemble[0] = cap->assemble[1] = -1;
  g_queue_init(&cap->marks);
  cap->format = opt->format;
  cap->path = g_strdup(opt->path ? opt->path : "");
  cap->sock_type = opt->sock_type ? opt->sock_type : SOCK_STREAM;
  const UdsProto *proto = opt->proto ? opt->proto : uds_proto_guess(cap->path);
  cap->proto_name = g_strdup(proto->name);
  cap->source = g_strdup(opt->source);
  cap->server_port = proto->port;
  cap->hash = uds_frame_path_hash(cap->path, strlen(cap->path));
  cap->server_ip = uds_frame_server_ip(cap->hash);
  cap->n_start = (guint32)g_random_int_range(0, UDS_CLIENT_PORTS * 253);
  cap->snap = opt->snaplen ? opt->snaplen : G_MAXSIZE;
  cap->bound = opt->buffer_bytes ? opt->buffer_bytes : DEFAULT_BUFFER;
  cap->reserve = MAX(cap->bound / 8, 64 * 1024);
  cap->lossless = opt->lossless;
  cap->hex = opt->hex;
  cap->max_frames = opt->max_frames;
  cap->only_pid = opt->only_pid;
  cap->only_comm = opt->only_comm && *opt->only_comm ? g_strdup(opt->only_comm) : NULL;
  cap->only_uid = opt->only_uid;

  cap->pcap = pcap_open_dead_with_tstamp_precision(DLT_EN10MB, PCAP_SNAPLEN, PCAP_TSTAMP_PRECISION_NANO);
  if (!cap->pcap) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_FAILED, "cannot set up libpcap");
    return NULL;
  }
  if (opt->filter && *opt->filter) {
    if (pcap_compile(cap->pcap, &cap->prog, opt->filter, 1, PCAP_NETMASK_UNKNOWN) < 0) {
      g_set_error(error, UDS_ERROR, UDS_ERROR_INVALID, "invalid capture filter \"%s\": %s", opt->filter,
                  pcap_geterr(cap->pcap));
      return NULL;
    }
    cap->have_filter = TRUE;
  }
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_SYSTEM, "capture output: %s", g_strerror(errno));
    return NULL;
  }
  cap->scratch = g_malloc(UDS_FRAME_MAX);
  cap->who = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, g_free);
  cap->text = g_string_sized_new(4096);

  if (cap->format == UDS_FORMAT_PCAP) {
    FILE *f = fopencookie(cap, "w", (cookie_io_functions_t){ .write = cookie_write, .close = cookie_close });
    if (!f) {
      g_set_error(error, UDS_ERROR, UDS_ERROR_SYSTEM, "capture output: %s", g_strerror(errno));
      return NULL;
    }
    setvbuf(f, NULL, _IONBF, 0);   /* records reach the queue at once (see the top of this file) */
    cap->dumper = pcap_dump_fopen(cap->pcap, f);
    if (!cap->dumper) {
      g_set_error(error, UDS_ERROR, UDS_ERROR_FAILED, "capture output: %s", pcap_geterr(cap->pcap));
      fclose(f);
      return NULL;
    }
    pcap_dump_flush(cap->dumper);
  }

  /* A pipe or FIFO (Wireshark's) of the default 64 KiB fills in a few relayed reads; the reader,
   * sharing the CPUs with client, server and relay, then runs too late and the queue overflows.
   * 1 MiB (the unprivileged maximum by default) rides that out. */
  struct stat st;
  if (fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode) && fcntl(fd, F_GETPIPE_SZ) < (1 << 20))
    fcntl(fd, F_SETPIPE_SZ, 1 << 20);
  /* What splice(2) can write to; a terminal (the text view) or a character device cannot take it. */
  cap->can_splice = cap->format == UDS_FORMAT_PCAP && cap->sock_type == SOCK_STREAM && fstat(fd, &st) == 0 &&
                    (S_ISFIFO(st.st_mode) || S_ISREG(st.st_mode) || S_ISSOCK(st.st_mode));
  /* The staging pipe: as large as an unprivileged process may make it, since it holds what the reader
   * has not taken yet, like the queue.  Made now, so the descriptors held do not depend on traffic. */
  if (cap->can_splice && pipe2(cap->stage, O_CLOEXEC | O_NONBLOCK) < 0) {
    uds_debug("capture: no staging pipe (%s): payload is copied", g_strerror(errno));
    cap->stage[0] = cap->stage[1] = -1;
    cap->can_splice = FALSE;
  }
  if (cap->can_splice && fcntl(cap->stage[1], F_GETPIPE_SZ) < (1 << 20))
    fcntl(cap->stage[1], F_SETPIPE_SZ, 1 << 20);
  /* The assembly pipe, the size of the FIFO, so that one splice can fill the FIFO.  Without it the
   * flush writes to fd directly (correct, only slower). */
  if (cap->can_splice && pipe2(cap->assemble, O_CLOEXEC | O_NONBLOCK) < 0) {
    uds_debug("capture: no assembly pipe (%s)", g_strerror(errno));
    cap->assemble[0] = cap->assemble[1] = -1;
  }
  if (cap->assemble[1] >= 0 && fcntl(cap->assemble[1], F_GETPIPE_SZ) < (1 << 20))
    fcntl(cap->assemble[1], F_SETPIPE_SZ, 1 << 20);
  if (cap->assemble[1] >= 0)
    cap->asm_nslots = (guint)MAX(fcntl(cap->assemble[1], F_GETPIPE_SZ), 0) / PIPE_SLOT;

  /* Success: from here on the fd is ours. */
  cap->fd = fd;
  cap->fd_flags = fl;
  if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
    uds_debug("capture output: cannot make it non-blocking: %s", g_strerror(errno));

  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  if (cap->format == UDS_FORMAT_TEXT) {
    text_line(cap, NULL, UDS_TEXT_NONE, &now, "capturing (%s, %s)", sock_type_name(cap->sock_type), cap->proto_name);
  } else {
    UdsMetaWriter w;
    meta_begin(cap, &w, NULL, UDS_META_INFO, UDS_META_DIR_NONE);
    uds_meta_str(&w, UDS_TLV_VERSION, UDSDUMP_VERSION);
    uds_meta_str(&w, UDS_TLV_SOURCE, cap->source);
    uds_meta_u64(&w, UDS_TLV_CAPTURE_START, (guint64)now.tv_sec * 1000000000u + (guint64)now.tv_nsec);
    meta_common(cap, &w);
    meta_emit(cap, &w, &now);
  }
  return g_steal_pointer(&cap);
}

void uds_capture_free(UdsCapture *cap)
{
  if (!cap)
    return;
  if (cap->dumper)
    pcap_dump_close(cap->dumper);
  if (cap->have_filter)
    pcap_freecode(&cap->prog);
  if (cap->pcap)
    pcap_close(cap->pcap);
  q_clear(cap);
  for (int i = 0; i < 2; i++) {
    if (cap->stage[i] >= 0)
      close(cap->stage[i]);
    if (cap->assemble[i] >= 0)
      close(cap->assemble[i]);
  }
  if (cap->fd >= 0) {
    fcntl(cap->fd, F_SETFL, cap->fd_flags);
    close(cap->fd);
  }
  g_clear_pointer(&cap->who, g_hash_table_destroy);
  if (cap->text)
    g_string_free(cap->text, TRUE);
  g_free(cap->scratch);
  g_free(cap->path);
  g_free(cap->proto_name);
  g_free(cap->source);
  g_free(cap->only_comm);
  g_free(cap);
}

int uds_capture_fd(UdsCapture *cap)
{
  return cap->fd;
}

gboolean uds_capture_wants_write(UdsCapture *cap)
{
  return cap->err == 0 && waiting(cap) > 0;
}

gboolean uds_capture_full(UdsCapture *cap)
{
  return cap->lossless && cap->err == 0 && waiting(cap) > cap->bound;
}

/* Worth a write of its own: a quarter of the bound (so a small --buffer-size never drops a frame
 * while the FIFO has room, and lossless never pauses for it), at most 256 KiB (a write that size
 * costs the reader one wakeup per a good many frames). */
gboolean uds_capture_flush_due(UdsCapture *cap)
{
  return cap->err == 0 && waiting(cap) >= MIN(cap->bound / 4, (gsize)256 * 1024);
}

gboolean uds_capture_done(UdsCapture *cap)
{
  return cap->max_frames > 0 && cap->data_frames >= cap->max_frames;
}

/* Moves queued and staged bytes, in stream order, to fd until fd takes no more or nothing is left.
 * Returns 0, or -1 (errno set) when fd failed otherwise than by being full. */
static int drain_to(UdsCapture *cap, int fd)
{
  while (cap->queued > 0 || cap->staged > 0) {
    /* Next in the stream: staged payload (a mark at this point), or queued bytes up to the next mark. */
    StageMark *m = g_queue_peek_head(&cap->marks);
    gboolean staged_next = m && m->at == cap->q_out;
    gsize want = 0;
    ssize_t k;
    if (staged_next) {
      want = m->len;
      k = splice(cap->stage[0], NULL, fd, NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    } else {
      gsize limit = m ? (gsize)(m->at - cap->q_out) : cap->queued;
      struct iovec iov[16];
      int n = 0;
      for (Chunk *c = cap->first; c && n < (int)G_N_ELEMENTS(iov) && want < limit; c = c->next) {
        if (c->tail > c->head) {
          iov[n].iov_base = c->data + c->head;
          iov[n].iov_len = MIN(c->tail - c->head, limit - want);
          want += iov[n].iov_len;
          n++;
        }
      }
      k = writev(fd, iov, n);
    }
    if (k < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return 0;
      return -1;
    }
    if (staged_next) {
      m->len -= (gsize)k;
      cap->staged -= (gsize)k;
      if (m->len == 0)
        g_free(g_queue_pop_head(&cap->marks));
    } else {
      q_consume(cap, (gsize)k);
    }
    if ((gsize)k < want)
      break;   /* fd is full: wait for writability */
  }
  return 0;
}

/* Moves the assembly pipe's bytes to the capture fd.  Returns 0, or -1 (errno set) on an error. */
static int assembled_out(UdsCapture *cap)
{
  while (cap->assembled > 0) {
    ssize_t k = splice(cap->assemble[0], NULL, cap->fd, NULL, cap->assembled, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (k < 0 && errno == EINTR)
      continue;
    if (k < 0)
      return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
    cap->assembled -= (gsize)k;
    if (cap->assembled == 0)
      cap->asm_slots = 0;
    if (k == 0)
      break;
  }
  return 0;
}

/* A write error other than EAGAIN: sticky (see the top).  Returns -1 with errno set. */
static int fail(UdsCapture *cap)
{
  cap->err = errno;
  q_clear(cap);
  errno = cap->err;
  return -1;
}

/* Moves queued and staged bytes, in order, into the assembly pipe as far as it takes them. */
static int assemble_more(UdsCapture *cap)
{
  gsize before = cap->queued + cap->staged;
  guint marks = g_queue_get_length(&cap->marks);
  int rc = drain_to(cap, cap->assemble[1]);
  gsize moved = before - (cap->queued + cap->staged);
  cap->assembled += moved;
  /* An estimate of the buffers they took (see tee_direct): a page each, and one more per write. */
  if (moved > 0)
    cap->asm_slots += (guint)(moved / PIPE_SLOT) + 2 * (marks - g_queue_get_length(&cap->marks) + 1);
  return rc;
}

int uds_capture_flush(UdsCapture *cap)
{
  if (cap->err) {
    errno = cap->err;
    return -1;
  }
  int rc = 0;
  if (cap->assemble[1] < 0) {
    rc = drain_to(cap, cap->fd);
  } else {
    /* Out with what is assembled; while the fd takes it all, assemble more (see the top). */
    while ((rc = assembled_out(cap)) == 0 && cap->assembled == 0 && (cap->queued > 0 || cap->staged > 0)) {
      if ((rc = assemble_more(cap)) < 0)
        break;
      if (cap->assembled == 0)
        break;   /* cannot happen (the pipe is empty here); never spin */
    }
  }
  return rc < 0 ? fail(cap) : 0;
}

void uds_capture_finish(UdsCapture *cap, int timeout_ms)
{
  gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
  while (cap->err == 0 && waiting(cap) > 0) {
    if (uds_capture_flush(cap) < 0 || waiting(cap) == 0)
      break;
    gint64 left = (deadline - g_get_monotonic_time()) / 1000;
    if (left <= 0)
      break;
    struct pollfd pfd = { .fd = cap->fd, .events = POLLOUT };
    int r = poll(&pfd, 1, (int)MIN(left, G_MAXINT));
    if (r < 0 && errno != EINTR)
      break;
    if (r == 0)
      break;
  }
  if (waiting(cap) > 0 && cap->err == 0)
    uds_info("capture: the reader took too long; %" G_GSIZE_FORMAT " bytes of capture not written",
             waiting(cap));
}

void uds_capture_stats(UdsCapture *cap, UdsCaptureStats *out)
{
  *out = cap->stats;
}

static gboolean client_matches(UdsCapture *cap, const UdsPeer *c)
{
  if (cap->only_pid > 0 && (!c || c->pid != cap->only_pid))
    return FALSE;
  if (cap->only_comm && (!c || strcmp(c->comm, cap->only_comm) != 0))
    return FALSE;
  if (cap->only_uid >= 0 && (!c || (gint64)c->uid != cap->only_uid))
    return FALSE;
  return TRUE;
}

void uds_capture_conn_open(UdsCapture *cap, UdsFlow *flow, const UdsConnMeta *meta, const struct timespec *ts)
{
  memset(flow, 0, sizeof *flow);
  flow->id = ++cap->last_id;
  guint32 n = cap->n_start + flow->id;
  flow->client_ip = uds_frame_client_ip(cap->hash, n);
  flow->client_port = uds_frame_client_port(n);
  flow->server_ip = cap->server_ip;
  flow->server_port = cap->server_port;
  const UdsPeer *client = meta ? meta->client : NULL;
  flow->captured = client_matches(cap, client);
  if (!flow->captured)
    return;
  cap->stats.connections++;
  flow->open = TRUE;
  gboolean stream = cap->sock_type == SOCK_STREAM;
  if (stream) {
    flow->seq[UDS_DIR_C2S] = g_random_int();
    flow->seq[UDS_DIR_S2C] = g_random_int();
  }
  if (!usable(cap))
    return;

  if (cap->format == UDS_FORMAT_TEXT) {
    g_hash_table_replace(cap->who, GUINT_TO_POINTER(flow->id),
                         uds_text_who(client ? client->comm : NULL, client ? client->pid : 0));
    GString *what = g_string_new(stream ? "connected" : "first message");
    if (client)
      g_string_append_printf(what, " (uid %u gid %u)", (guint)client->uid, (guint)client->gid);
    if (meta && meta->client_addr)
      g_string_append_printf(what, " from %s", meta->client_addr);
    if (meta && meta->server_comm && meta->server_pid > 0)
      g_string_append_printf(what, ", server %s[%d]", meta->server_comm, (int)meta->server_pid);
    text_line(cap, flow, UDS_TEXT_NONE, ts, "%s", what->str);
    g_string_free(what, TRUE);
    return;
  }

  UdsMetaWriter w;
  meta_begin(cap, &w, flow, UDS_META_OPEN, UDS_DIR_C2S);
  meta_common(cap, &w);
  if (client) {
    uds_meta_u32(&w, UDS_TLV_CLIENT_PID, (guint32)client->pid);
    uds_meta_u32(&w, UDS_TLV_CLIENT_UID, (guint32)client->uid);
    uds_meta_u32(&w, UDS_TLV_CLIENT_GID, (guint32)client->gid);
    if (client->comm[0])
      uds_meta_str(&w, UDS_TLV_CLIENT_COMM, client->comm);
    if (client->ngroups >= 0) {
      guint8 groups[4 * UDS_MAX_GROUPS];
      int ng = MIN(client->ngroups, UDS_MAX_GROUPS);
      for (int i = 0; i < ng; i++) {
        guint32 g = (guint32)client->groups[i];
        groups[4 * i] = g >> 24;
        groups[4 * i + 1] = (g >> 16) & 0xff;
        groups[4 * i + 2] = (g >> 8) & 0xff;
        groups[4 * i + 3] = g & 0xff;
      }
      uds_meta_tlv(&w, UDS_TLV_CLIENT_GROUPS, groups, 4 * (gsize)ng);
    }
  }
  if (meta && meta->server_pid > 0)
    uds_meta_u32(&w, UDS_TLV_SERVER_PID, (guint32)meta->server_pid);
  if (meta && meta->server_comm)
    uds_meta_str(&w, UDS_TLV_SERVER_COMM, meta->server_comm);
  if (meta && meta->client_addr)
    uds_meta_str(&w, UDS_TLV_CLIENT_ADDR, meta->client_addr);
  meta_emit(cap, &w, ts);

  if (stream) {
    tcp_control(cap, flow, UDS_DIR_C2S, UDS_TCP_SYN, TRUE, ts);
    flow->seq[UDS_DIR_C2S]++;
    tcp_control(cap, flow, UDS_DIR_S2C, UDS_TCP_SYN | UDS_TCP_ACK, TRUE, ts);
    flow->seq[UDS_DIR_S2C]++;
    tcp_control(cap, flow, UDS_DIR_C2S, UDS_TCP_ACK, FALSE, ts);
  }
}

void uds_capture_conn_data(UdsCapture *cap, UdsFlow *flow, int dir, const guint8 *data, gsize len,
                           const struct timespec *ts)
{
  if (!flow->captured || !flow->open || len == 0)
    return;
  if (cap->sock_type != SOCK_STREAM) {
    uds_capture_message(cap, flow, dir, data, len, ts);
    return;
  }
  if (cap->format == UDS_FORMAT_TEXT) {
    if (usable(cap))
      text_data(cap, flow, dir, data, len, FALSE, ts);
    return;
  }
  if (flow->fin[dir]) {
    return;   /* after RST: the relay closes the connection */
  }
  for (gsize off = 0; off < len;) {
    gsize seg = MIN(len - off, (gsize)UDS_FRAME_TCP_MSS);
    tcp_segment(cap, flow, dir, data + off, seg, off + seg == len, ts);
    off += seg;
  }
  maybe_ack(cap, flow, dir, ts);
}

gboolean uds_capture_can_tee(UdsCapture *cap, const UdsFlow *flow, int dir)
{
  return cap->can_splice && !cap->have_filter && cap->snap >= UDS_FRAME_TCP_SPLICE_MSS && cap->max_frames == 0 &&
         usable(cap) && flow->captured && flow->open && !flow->fin[dir];
}

/* Bytes of a spliced frame's record header (libpcap's, host order, nanosecond dumper) and headers. */
#define SPLICED_REC (REC_HDR + UDS_FRAME_ETH_LEN + UDS_FRAME_IP_LEN + UDS_FRAME_TCP_LEN)

/* Writes into rec the record header and headers of the next frame of flow/dir, whose len payload bytes
 * follow it in the capture, unread (no checksum).  Returns SPLICED_REC. */
static gsize spliced_record(guint8 *rec, UdsFlow *flow, int dir, const UdsTcpFields *tf, gsize len,
                            const struct timespec *ts)
{
  UdsFrameEnds e;
  flow_ends(flow, dir, &e);
  gsize h = uds_frame_tcp_unsummed(rec + REC_HDR, &e, flow->ip_id, tf, len);
  g_assert(REC_HDR + h == SPLICED_REC);
  guint32 rh[4] = { (guint32)ts->tv_sec, (guint32)ts->tv_nsec, (guint32)(h + len), (guint32)(h + len) };
  memcpy(rec, rh, sizeof rh);
  return SPLICED_REC;
}

/* Whether a new frame of need buffers may go straight into the assembly pipe: nothing waits to go
 * before it (what waited has been moved in first), and the counted buffers leave it room. */
static gboolean assembly_free(UdsCapture *cap, guint need)
{
  if (cap->assemble[1] < 0)
    return FALSE;
  if ((cap->queued > 0 || cap->staged > 0) && assemble_more(cap) < 0) {
    fail(cap);
    return FALSE;
  }
  return cap->queued == 0 && cap->staged == 0 && cap->asm_slots + need <= cap->asm_nslots;
}

/* The assembly pipe took a record promising seg payload bytes but only the first k of them: the rest
 * follows through the staging pipe, which is empty (nothing was waiting) and as large as the relay's
 * pipe, so it takes the whole segment; tee copies from the head only, so the k bytes already in the
 * assembly pipe are read out of the staging pipe's head and dropped.  Should that fail, the capture
 * fails with it (the record cannot be completed). */
static void tee_rest(UdsCapture *cap, int pipe_fd, gsize k, gsize seg)
{
  ssize_t t = tee(pipe_fd, cap->stage[1], seg, SPLICE_F_NONBLOCK);
  for (gsize off = 0; t == (ssize_t)seg && off < k;) {
    ssize_t n = read(cap->stage[0], cap->scratch, MIN(k - off, (gsize)UDS_FRAME_MAX));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      t = -1;
      break;
    }
    off += (gsize)n;
  }
  if (t != (ssize_t)seg) {
    errno = EIO;
    uds_warn("capture: a spliced frame could not be completed: the capture ends here");
    fail(cap);
    return;
  }
  cap->stats.short_tees++;
  StageMark *m = g_new(StageMark, 1);
  m->at = cap->q_in;
  m->len = seg - k;
  g_queue_push_tail(&cap->marks, m);
  cap->staged += seg - k;
}

/* The short way for spliced payload: with nothing else waiting to go before it, a batch of at most one
 * frame has its record and headers written straight into the assembly pipe and its payload teed after
 * them, so the bytes make one pipe-to-pipe move fewer (no staging).  Returns the payload bytes taken
 * (all), 0 when the staging way must be used (nothing was written). */
static gsize tee_direct(UdsCapture *cap, UdsFlow *flow, int dir, int pipe_fd, gsize len, const struct timespec *ts)
{
  if (len > UDS_FRAME_TCP_SPLICE_MSS)
    return 0;   /* more than one frame: tee takes from the head only, so they go by the staging pipe */
  gsize seg = len;
  /* Room, in buffers: the record's (it may not merge into the last one), and the payload's pages, one
   * more where it does not start on a page boundary.  The tee can still come out short (a batch of
   * many small messages is a buffer per message): see below. */
  guint need = 2 + (guint)((seg + PIPE_SLOT - 1) / PIPE_SLOT);
  if (!assembly_free(cap, need))
    return 0;
  guint8 rec[SPLICED_REC];
  UdsTcpFields tf = tcp_fields(flow, dir, TRUE);
  spliced_record(rec, flow, dir, &tf, seg, ts);
  /* A pipe write of at most PIPE_BUF bytes is whole or nothing. */
  if (write(cap->assemble[1], rec, sizeof rec) != (ssize_t)sizeof rec)
    return 0;
  flow->ip_id++;
  tcp_advance(flow, dir, seg);
  cap->assembled += sizeof rec;
  cap->asm_slots += need;
  count_frame(cap, seg);
  ssize_t k = tee(pipe_fd, cap->assemble[1], seg, SPLICE_F_NONBLOCK);
  if (k < 0)
    k = 0;
  cap->assembled += (gsize)k;
  if ((gsize)k < seg)
    tee_rest(cap, pipe_fd, (gsize)k, seg);   /* should it fail, the capture ends: the bytes stay the relay's */
  return seg;
}

gboolean uds_capture_conn_write(UdsCapture *cap, UdsFlow *flow, int dir, const guint8 *data, gsize len,
                                gboolean psh, const struct timespec *ts)
{
  if (len == 0 || len > UDS_FRAME_TCP_SPLICE_MSS || flow->dropped[dir] || !uds_capture_can_tee(cap, flow, dir))
    return FALSE;
  guint8 rec[SPLICED_REC];
  /* The record and the payload copied into the pipe's pages, merged: one buffer per page. */
  guint need = 1 + (guint)((sizeof rec + len + PIPE_SLOT - 1) / PIPE_SLOT);
  if (!room_for(cap, sizeof rec + len, REC_DATA) || !assembly_free(cap, need))
    return FALSE;
  UdsTcpFields tf = tcp_take(flow, dir, len, psh);
  spliced_record(rec, flow, dir, &tf, len, ts);
  flow->ip_id++;
  struct iovec iov[2] = { { rec, sizeof rec }, { (void *)data, len } };
  ssize_t k;
  do
    k = writev(cap->assemble[1], iov, 2);
  while (k < 0 && errno == EINTR);
  if (k < 0)
    k = 0;
  cap->assembled += (gsize)k;
  cap->asm_slots += need;
  /* What the pipe did not take (it had fewer buffers than counted) is next in the stream: the queue. */
  if ((gsize)k < sizeof rec) {
    q_append(cap, rec + k, sizeof rec - (gsize)k);
    k = sizeof rec;
  }
  if ((gsize)k < sizeof rec + len)
    q_append(cap, data + ((gsize)k - sizeof rec), sizeof rec + len - (gsize)k);
  count_frame(cap, len);
  maybe_ack(cap, flow, dir, ts);
  return TRUE;
}

gsize uds_capture_conn_tee(UdsCapture *cap, UdsFlow *flow, int dir, int pipe_fd, gsize len, const struct timespec *ts)
{
  if (len == 0 || !uds_capture_can_tee(cap, flow, dir))
    return 0;
  gsize nseg = (len + UDS_FRAME_TCP_SPLICE_MSS - 1) / UDS_FRAME_TCP_SPLICE_MSS;
  gsize need = len + nseg * SPLICED_REC + (flow->dropped[dir] ? DROP_NOTE_LEN : 0);
  if (!room_for(cap, need, REC_DATA) || !note_drop(cap, flow, dir, ts)) {
    /* Past the bound (never in lossless mode): the frames are dropped as tcp_segment drops them, and
     * the bytes count as handled, so the relay forwards them without reading them. */
    for (gsize off = 0; off < len;) {
      gsize seg = MIN(len - off, (gsize)UDS_FRAME_TCP_SPLICE_MSS);
      tcp_advance(flow, dir, seg);
      count_drop(cap, flow, dir, seg);
      off += seg;
    }
    maybe_ack(cap, flow, dir, ts);
    return len;
  }
  gsize direct = tee_direct(cap, flow, dir, pipe_fd, len, ts);
  if (direct > 0 || !usable(cap)) {
    maybe_ack(cap, flow, dir, ts);
    return direct;
  }
  /* tee takes what the staging pipe has room for, from the head; the relay copies the rest. */
  ssize_t t = tee(pipe_fd, cap->stage[1], len, SPLICE_F_NONBLOCK);
  if (t <= 0)
    return 0;
  for (gsize off = 0; off < (gsize)t;) {
    gsize seg = MIN((gsize)t - off, (gsize)UDS_FRAME_TCP_SPLICE_MSS);
    UdsTcpFields tf = tcp_take(flow, dir, seg, off + seg == len);
    /* The record in the queue; its payload follows from the staging pipe. */
    guint8 *rec = q_reserve(cap, SPLICED_REC);
    q_append(cap, rec, spliced_record(rec, flow, dir, &tf, seg, ts));
    flow->ip_id++;
    StageMark *m = g_new(StageMark, 1);
    m->at = cap->q_in;
    m->len = seg;
    g_queue_push_tail(&cap->marks, m);
    cap->staged += seg;
    count_frame(cap, seg);
    off += seg;
  }
  maybe_ack(cap, flow, dir, ts);
  return (gsize)t;
}

void uds_capture_message(UdsCapture *cap, UdsFlow *flow, int dir, const guint8 *data, gsize len,
                         const struct timespec *ts)
{
  if (!flow->captured || !flow->open || !usable(cap))
    return;
  if (cap->format == UDS_FORMAT_TEXT)
    text_data(cap, flow, dir, data, len, TRUE, ts);
  else
    dgram_message(cap, flow, dir, data, len, ts);
}

void uds_capture_conn_ancillary(UdsCapture *cap, UdsFlow *flow, int dir, const UdsAncillary *anc,
                                const struct timespec *ts)
{
  if (!flow->captured || !flow->open || !usable(cap))
    return;
  if (cap->format == UDS_FORMAT_TEXT) {
    GString *what = g_string_new(NULL);
    if (anc->nfds > 0) {
      g_string_append_printf(what, "passes %d descriptor%s:", anc->nfds, anc->nfds == 1 ? "" : "s");
      for (int i = 0; i < anc->nfds; i++)
        g_string_append_printf(what, "%s %s", i ? "," : "", anc->fd_desc && anc->fd_desc[i] ? anc->fd_desc[i] : "?");
    }
    if (anc->has_creds)
      g_string_append_printf(what, "%scredentials pid %d uid %u gid %u", what->len ? "; " : "", (int)anc->pid,
                             (guint)anc->uid, (guint)anc->gid);
    if (anc->truncated)
      g_string_append_printf(what, "%scontrol data truncated", what->len ? "; " : "");
    text_line(cap, flow, (UdsTextDir)dir, ts, "%s", what->str);
    g_string_free(what, TRUE);
    return;
  }
  UdsMetaWriter w;
  meta_begin(cap, &w, flow, UDS_META_ANCILLARY, (guint8)dir);
  uds_meta_u32(&w, UDS_TLV_FD_COUNT, (guint32)MAX(anc->nfds, 0));
  for (int i = 0; i < anc->nfds; i++)
    uds_meta_str(&w, UDS_TLV_FD_DESC, anc->fd_desc && anc->fd_desc[i] ? anc->fd_desc[i] : "?");
  if (anc->has_creds) {
    uds_meta_u32(&w, UDS_TLV_CRED_PID, (guint32)anc->pid);
    uds_meta_u32(&w, UDS_TLV_CRED_UID, (guint32)anc->uid);
    uds_meta_u32(&w, UDS_TLV_CRED_GID, (guint32)anc->gid);
  }
  if (anc->truncated)
    uds_meta_u8(&w, UDS_TLV_CTRUNC, 1);
  meta_emit(cap, &w, ts);
}

void uds_capture_conn_sender(UdsCapture *cap, UdsFlow *flow, int dir, pid_t pid, uid_t uid, gid_t gid,
                             const char *comm, const struct timespec *ts)
{
  if (!flow->captured || !flow->open || flow->sender[dir] == pid || !usable(cap))
    return;
  flow->sender[dir] = pid;
  if (cap->format == UDS_FORMAT_TEXT) {
    text_line(cap, flow, (UdsTextDir)dir, ts, "sent by %s[%d] (uid %u)", comm && *comm ? comm : "?", (int)pid,
              (guint)uid);
    return;
  }
  UdsMetaWriter w;
  meta_begin(cap, &w, flow, UDS_META_SENDER, (guint8)dir);
  uds_meta_u32(&w, UDS_TLV_SENDER_PID, (guint32)pid);
  uds_meta_u32(&w, UDS_TLV_SENDER_UID, (guint32)uid);
  uds_meta_u32(&w, UDS_TLV_SENDER_GID, (guint32)gid);
  if (comm && *comm)
    uds_meta_str(&w, UDS_TLV_SENDER_COMM, comm);
  if (!meta_emit(cap, &w, ts))
    flow->sender[dir] = 0;   /* not written: say it again with the next bytes */
}

void uds_capture_conn_lost(UdsCapture *cap, UdsFlow *flow, int dir, gsize len)
{
  if (!flow->captured || !flow->open || len == 0)
    return;
  if (cap->sock_type == SOCK_STREAM)
    tcp_advance(flow, dir, len);
  count_drop(cap, flow, dir, len);
}

void uds_capture_conn_report_drops(UdsCapture *cap, UdsFlow *flow, const struct timespec *ts)
{
  if (!flow->captured || !flow->open || !usable(cap))
    return;
  note_drop(cap, flow, UDS_DIR_C2S, ts);
  note_drop(cap, flow, UDS_DIR_S2C, ts);
}

void uds_capture_conn_shutdown(UdsCapture *cap, UdsFlow *flow, int dir, const struct timespec *ts)
{
  if (!flow->captured || !flow->open || flow->fin[dir])
    return;
  flow->fin[dir] = TRUE;
  if (!usable(cap))
    return;
  if (cap->format == UDS_FORMAT_TEXT) {
    text_line(cap, flow, (UdsTextDir)dir, ts, "end of data");
    return;
  }
  if (cap->sock_type != SOCK_STREAM)
    return;
  tcp_control(cap, flow, dir, UDS_TCP_FIN | UDS_TCP_ACK, FALSE, ts);
  flow->seq[dir]++;
  tcp_control(cap, flow, !dir, UDS_TCP_ACK, FALSE, ts);
  flow->unacked[dir] = 0;
}

void uds_capture_conn_reset(UdsCapture *cap, UdsFlow *flow, int dir, const struct timespec *ts)
{
  if (!flow->captured || !flow->open)
    return;
  gboolean already = flow->fin[0] && flow->fin[1];
  flow->fin[0] = flow->fin[1] = TRUE;   /* nothing follows a reset */
  if (!usable(cap) || already)
    return;
  if (cap->format == UDS_FORMAT_TEXT) {
    text_line(cap, flow, (UdsTextDir)dir, ts, "reset");
    return;
  }
  if (cap->sock_type == SOCK_STREAM)
    tcp_control(cap, flow, dir, UDS_TCP_RST | UDS_TCP_ACK, FALSE, ts);
}

void uds_capture_conn_close(UdsCapture *cap, UdsFlow *flow, const struct timespec *ts)
{
  if (!flow->captured || !flow->open)
    return;
  flow->open = FALSE;
  if (usable(cap)) {
    /* Losses no later data frame will report (observe mode: the last bytes of a connection). */
    uds_capture_conn_report_drops(cap, flow, ts);
    if (cap->format == UDS_FORMAT_TEXT) {
      text_line(cap, flow, UDS_TEXT_NONE, ts, "closed");
    } else {
      UdsMetaWriter w;
      meta_begin(cap, &w, flow, UDS_META_CLOSE, UDS_META_DIR_NONE);
      meta_emit(cap, &w, ts);
    }
  }
  g_hash_table_remove(cap->who, GUINT_TO_POINTER(flow->id));
}
