/* capture — the pcap stream Wireshark reads: relayed traffic as synthetic Ethernet/IPv4/TCP (UDP for
 * datagram and seqpacket sockets), plus metadata frames, written through libpcap.
 *
 * The relay calls the uds_capture_conn_* functions as traffic happens; this module turns them into
 * frames (frame.h), applies the client filters and the libpcap capture filter, and queues the pcap
 * records in a bounded buffer.  The capture fd (Wireshark's FIFO, stdout for sshdump, or a file) is
 * non-blocking and written from the relay's event loop only when it is writable, so a slow reader
 * never stalls relayed traffic: past the buffer, data frames are dropped and counted (sequence numbers
 * keep counting the real bytes, so Wireshark marks the gap, and a metadata frame carries the count).
 * With lossless set, nothing is dropped: uds_capture_full() tells the relay to stop reading instead.
 *
 * The wire format (addresses, ports, metadata frames) is documented in docs/capture-format.md.
 */
#pragma once
#include <glib.h>
#include <stdio.h>
#include <sys/types.h>
#include <time.h>
#include "peer.h"
#include "wellknown.h"

enum { UDS_DIR_C2S = 0, UDS_DIR_S2C = 1 };   /* client to server, server to client */

typedef enum { UDS_FORMAT_PCAP = 0, UDS_FORMAT_TEXT } UdsCaptureFormat;

typedef struct {
  const char *path;          /* the captured socket's path (addressing and metadata) */
  int sock_type;             /* SOCK_STREAM / SOCK_DGRAM / SOCK_SEQPACKET */
  const UdsProto *proto;     /* server port; NULL: uds_proto_guess(path) */
  UdsCaptureFormat format;   /* pcap, or a human text view (udsdump -i ... in a terminal) */
  guint snaplen;             /* max bytes of payload kept per frame; 0: all */
  gsize buffer_bytes;        /* bound on queued capture output; 0: default (4 MiB) */
  gboolean lossless;         /* never drop: the relay pauses instead */
  const char *filter;        /* libpcap capture filter, NULL or "" for none */
  /* client filters: a connection is captured only when it matches all that are set */
  pid_t only_pid;            /* 0: any */
  const char *only_comm;     /* NULL: any */
  gint64 only_uid;           /* -1: any */
  guint64 max_frames;        /* stop after this many data frames (-c); 0: no limit */
  gboolean hex;              /* text view: show all payload as a hex dump (-x) */
  const char *source;        /* what produces the events, for INFO: NULL "relay", or "observe" */
} UdsCaptureOptions;

/* What the relay knows of a connection (or, for datagrams, of one client address). */
typedef struct {
  const UdsPeer *client;     /* may be NULL when unknown (unbound datagram senders) */
  pid_t server_pid;          /* 0 when unknown */
  const char *server_comm;   /* NULL when unknown */
  const char *client_addr;   /* datagram sender's bound path, NULL if none */
} UdsConnMeta;

/* Descriptors or credentials passed with some bytes. */
typedef struct {
  int nfds;
  const char *const *fd_desc;   /* what each is: "file /etc/hosts", "socket", "pipe", "memfd:x"... */
  gboolean has_creds;
  pid_t pid; uid_t uid; gid_t gid;
  gboolean truncated;           /* MSG_CTRUNC seen */
} UdsAncillary;

/* Per-connection capture state, embedded in the relay's connection; fields are capture's own. */
typedef struct {
  guint32 id;
  guint32 client_ip, server_ip;
  guint16 client_port, server_port;
  guint32 seq[2];          /* next sequence number per direction */
  guint64 unacked[2];      /* bytes sent since the other side last acknowledged */
  guint64 dropped[2];      /* dropped bytes not yet reported in a metadata frame */
  guint16 ip_id;
  gboolean captured;       /* FALSE: the client filters exclude this connection */
  gboolean open;           /* handshake written */
  gboolean fin[2];
  pid_t sender[2];         /* uds_capture_conn_sender: the last sender written per direction */
} UdsFlow;

typedef struct {
  guint64 connections, frames, bytes;           /* captured */
  guint64 dropped_frames, dropped_bytes;        /* lost to a slow reader */
  guint64 filtered_frames;                      /* rejected by the filters */
  guint64 short_tees;   /* zero copy: frames whose payload the assembly pipe took only in part (the rest
                         * followed through the staging pipe; capture.c, "The short way") */
} UdsCaptureStats;

typedef struct UdsCapture UdsCapture;

/* fd: where the pcap (or text) goes; owned by the capture from now on (made non-blocking; its flags
 * are put back and it is closed by uds_capture_free).  Writes the pcap file header into the queue.
 * Fails (nothing written, fd untouched and still the caller's) on an invalid filter, with libpcap's
 * message.  The process must ignore SIGPIPE: a reader going away is reported as EPIPE by flush. */
UdsCapture *uds_capture_new(int fd, const UdsCaptureOptions *opt, GError **error);
void uds_capture_free(UdsCapture *cap);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(UdsCapture, uds_capture_free)

/* Compiles a filter against the synthetic link type; NULL on success, else libpcap's message. */
char *uds_capture_check_filter(const char *filter);

int uds_capture_fd(UdsCapture *cap);
gboolean uds_capture_wants_write(UdsCapture *cap);   /* output queued: watch the fd for writability */
gboolean uds_capture_full(UdsCapture *cap);          /* lossless and full: stop reading for now */
gboolean uds_capture_flush_due(UdsCapture *cap);     /* enough queued to write now rather than later */
gboolean uds_capture_done(UdsCapture *cap);          /* max_frames reached */
/* Writes what the fd takes now.  -1 with errno set (EPIPE: the reader went away), else 0. */
int uds_capture_flush(UdsCapture *cap);
/* At the end: writes the rest, waiting at most timeout_ms for the reader. */
void uds_capture_finish(UdsCapture *cap, int timeout_ms);
void uds_capture_stats(UdsCapture *cap, UdsCaptureStats *out);

/* Connection events.  ts: when the relay saw it (CLOCK_REALTIME). */
void uds_capture_conn_open(UdsCapture *cap, UdsFlow *flow, const UdsConnMeta *meta, const struct timespec *ts);
void uds_capture_conn_data(UdsCapture *cap, UdsFlow *flow, int dir, const guint8 *data, gsize len,
                           const struct timespec *ts);
void uds_capture_conn_ancillary(UdsCapture *cap, UdsFlow *flow, int dir, const UdsAncillary *anc,
                                const struct timespec *ts);
void uds_capture_conn_shutdown(UdsCapture *cap, UdsFlow *flow, int dir, const struct timespec *ts); /* FIN */
void uds_capture_conn_reset(UdsCapture *cap, UdsFlow *flow, int dir, const struct timespec *ts);    /* RST */
void uds_capture_conn_close(UdsCapture *cap, UdsFlow *flow, const struct timespec *ts);
/* Zero copy (stream sockets): whether the bytes of flow/dir may be captured from a pipe rather than
 * from memory (not with the text view, a libpcap filter, a snap length or -c). */
gboolean uds_capture_can_tee(UdsCapture *cap, const UdsFlow *flow, int dir);
/* The next len bytes of flow/dir sit at the head of pipe_fd: captures them without reading them
 * (tee(2) into the capture's staging pipe; the pipe's contents stay where they are).  Returns how
 * many of them it dealt with, from the head: captured, or dropped and counted past the bound; the
 * caller passes the rest to uds_capture_conn_data. */
gsize uds_capture_conn_tee(UdsCapture *cap, UdsFlow *flow, int dir, int pipe_fd, gsize len, const struct timespec *ts);
/* The next len bytes of flow/dir, in memory that the caller reuses as soon as this returns (observe
 * mode reads them where they lie in the kernel's ring): while nothing waits to go before them, one
 * frame (TCP checksum 0, like the teed ones; PSH if psh) is written into the capture's assembly pipe
 * with them at once, one copy by the kernel.  FALSE, with nothing done, when that cannot be; the
 * caller then passes them to uds_capture_conn_data. */
gboolean uds_capture_conn_write(UdsCapture *cap, UdsFlow *flow, int dir, const guint8 *data, gsize len,
                                gboolean psh, const struct timespec *ts);
/* A source that sees who makes each send (observe mode): the process behind the next bytes of
 * flow/dir.  A SENDER metadata frame, written only when it differs from the last one of flow/dir. */
void uds_capture_conn_sender(UdsCapture *cap, UdsFlow *flow, int dir, pid_t pid, uid_t uid, gid_t gid,
                             const char *comm, const struct timespec *ts);
/* len bytes (stream) or messages (len 1 each, otherwise) of flow/dir were lost before they reached
 * the capture (observe mode: the kernel's ring buffer was full): counted and shown as a DROP, like
 * the capture's own losses. */
void uds_capture_conn_lost(UdsCapture *cap, UdsFlow *flow, int dir, gsize len);
/* Writes the DROP frames of losses no data frame has reported yet (a capture ending while the
 * connection goes on: its last losses would otherwise be in the statistics only). */
void uds_capture_conn_report_drops(UdsCapture *cap, UdsFlow *flow, const struct timespec *ts);
/* Datagram / seqpacket: one message, kept whole (IPv4 fragments when over 65507 bytes). */
void uds_capture_message(UdsCapture *cap, UdsFlow *flow, int dir, const guint8 *data, gsize len,
                         const struct timespec *ts);
