/* relay — the event loop that forwards every connection between clients and the real server, and
 * feeds the capture.  See src/relay.c for the design. */
#pragma once
#include <glib.h>
#include "capture.h"
#include "swap.h"

typedef struct {
  const char *path;          /* what clients use (the interposed path, or the side path) */
  const char *upstream;      /* where the real server is reached */
  int listen_fd;             /* the relay's listening (stream/seqpacket) or bound (dgram) socket */
  int sock_type;
  UdsSwap *swap;             /* interpose mode: restored on stop; NULL in side mode */
  UdsCapture *capture;       /* may be NULL: relay only */
  gboolean keep_inflight;    /* on stop, open connections go on in a detached process */
  pid_t server_pid;          /* for the metadata, 0 if unknown */
  const char *server_comm;
  gboolean progress;         /* a once-a-second progress line on stderr (a terminal) */
} UdsRelayConfig;

typedef struct {
  guint64 accepted, closed, refused;
  guint64 bytes[2];
  guint64 spliced[2];        /* of bytes[]: moved by zero copy (src/relay.c) */
} UdsRelayStats;

/* Runs until SIGTERM/SIGINT/SIGHUP, the capture reader going away, or the capture's frame limit.
 * Restores the swap (if any) before returning.  Returns FALSE with error on a fatal error. */
gboolean uds_relay_run(const UdsRelayConfig *cfg, UdsRelayStats *stats, GError **error);
