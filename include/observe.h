/* observe — observe mode: the chosen socket's traffic as the kernel sees it being sent (eBPF on the
 * syscall tracepoints), with nothing on disk changed.  A second source of the same capture events as
 * the relay (capture.h); see src/observe.c for the design and src/bpf/observe.bpf.c for the kernel
 * half.  Built only with -Dbpf (config.h: UDS_HAVE_BPF). */
#pragma once
#include <glib.h>
#include <sys/types.h>
#include "capture.h"

typedef struct UdsObserve UdsObserve;

typedef struct {
  guint64 connections;       /* seen sending */
  guint64 bytes[2];          /* per direction, sent by the processes */
  guint64 lost_bytes;        /* sent, but the kernel's ring buffer had no room for them */
} UdsObserveStats;

/* Checks every requirement (privileges, BTF, the socket: a path or "@name"), then loads and attaches
 * the program.  Each failure is one line naming what is missing.  Nothing is changed on disk. */
UdsObserve *uds_observe_start(const char *name, GError **error);
int uds_observe_sock_type(const UdsObserve *o);
pid_t uds_observe_server_pid(const UdsObserve *o);
const char *uds_observe_server_comm(const UdsObserve *o);
/* Feeds cap until SIGTERM/SIGINT/SIGHUP (blocked by the caller), the capture reader going away, or
 * the capture's frame limit.  FALSE with error on a fatal error. */
gboolean uds_observe_run(UdsObserve *o, UdsCapture *cap, UdsObserveStats *stats, GError **error);
/* Detaches and unloads (the kernel also does it when the process dies, however it dies). */
void uds_observe_free(UdsObserve *o);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(UdsObserve, uds_observe_free)
