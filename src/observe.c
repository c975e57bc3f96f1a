/* observe — observe mode: a second source of capture events beside the relay (see include/observe.h).
 *
 * Model.  The relay sees traffic because it stands in the middle; observe mode sees it because the
 * kernel tells it what each process sends.  The kernel half (src/bpf/observe.bpf.c) keeps, of every
 * write/writev/send/sendto/sendmsg/sendmmsg on the host, only the bytes sent on the chosen socket's
 * connections, in records of at most UDS_OBS_CHUNK bytes in one ring buffer.  This file turns those
 * records into exactly the calls the relay makes on the capture (uds_capture_conn_open, _data,
 * _ancillary, _shutdown, _close, uds_capture_message) plus the one event only a tracer has, who sent
 * each chunk (uds_capture_conn_sender): capture.c and the dissector cannot tell which source made a
 * frame.  Nothing on disk is touched, so the socket's path, inode, owner and mode never change, and
 * connections opened before the capture are captured from their next byte.
 *
 * Connections.  A connection is known by the inode of its client end, which the kernel does not reuse
 * while the socket lives (the server end has none until accept(), and clients send before that).  It
 * is opened in the capture at its first record; the client is the sender when the client spoke first,
 * else the process holding the client end (found in /proc when the record arrives, before the client
 * may be gone).  The kernel has no "closed" event on the syscall tracepoints, so a connection ends
 * when its client end no longer exists (one unix_diag question per connection every OBS_TICK_MS, after
 * the ring is drained; /proc/net/unix if unix_diag cannot answer): FIN both ways, then CLOSE.
 *
 * Fast path.  Records are read where they lie in the ring (libbpf's callback), not copied out first.
 * A stream record of PIPE_MIN_BYTES or more goes, while the capture has nothing waiting, straight
 * into its assembly pipe as one frame, record header and payload by one writev (uds_capture_conn_write:
 * the one copy, made by the kernel, no checksum).  Otherwise (the capture is behind) a call's bytes
 * are written from the ring into a pipe of ours, then handed to the capture as the relay hands it
 * spliced bytes (uds_capture_conn_tee: page references, on to the reader without another copy or
 * checksum), one frame per call; smaller records are copied into the capture's queue, which is cheaper
 * than the syscalls.  The bytes are never given to the capture by reference to the ring's own pages (vmsplice):
 * the ring reuses them as soon as a record is consumed, while a pipe may hold them until whoever
 * reads the capture (perhaps by splice, keeping the reference) is done, and a captured byte would
 * then change under the reader.
 *
 * Order.  A record leaves the kernel when its send call returns, but the answer to a request can be
 * sent (its call begun and ended) before the request's own call has returned: the sender of the
 * request was merely slow to be scheduled again.  The kernel counts per connection and direction the
 * calls in progress and when the oldest began; a call that ends while the other direction has one in
 * progress begun earlier marks its records UDS_OBS_F_WAIT.  Only those (and the records of their
 * connection behind them) are copied aside here; they are written, in the order their calls began,
 * once the kernel's count shows the earlier calls ended (their records are then in the ring, and
 * are drained first), or after REORDER_NS (a long blocking send); REORDER_MAX_BYTES bounds what
 * waits.  Everything else is written as it comes, with no wait and no copy.
 *
 * Losses.  The kernel's ring (UDS_OBS_RING_BYTES) is observe mode's one bounded buffer: the capture
 * is made lossless (it never drops), and while it is full, or the reader is behind, udsdump stops
 * draining the ring and no longer watches it, so the records wait where they are.  Every record
 * carries the offset of its first byte in its connection and direction, counted in the kernel for
 * every byte sent; a gap between what arrived and that offset is bytes the ring had no room for,
 * reported as a DROP (uds_capture_conn_lost) before the next bytes, as the relay's capture buffer
 * does.  The same count at close catches a loss at the very end.
 *
 * Wakeups.  The kernel does not wake udsdump per record (a wakeup is an interrupt on the sender's CPU):
 * the ring is drained every OBS_DRAIN_MS, and at once when it passes a quarter full.
 *
 * Output.  The capture fd is written as the relay writes it: at once when enough is queued, else
 * CAPTURE_FLUSH_MS after the first byte, and watched for writability only while the reader is behind.
 *
 * Privilege.  In the group install's capability mode (privilege.h), observe mode runs only where the
 * administrator granted UDS_PRIV_OBSERVE; those two capabilities are effective only while the programs
 * are loaded and attached, and CAP_BPF alone for the few bpf() calls after that (the ring's set-up, the
 * offsets map at a connection's end: kernels before 6.5 refuse every bpf() command without it when
 * kernel.unprivileged_bpf_disabled is set, as Debian sets it).  Other users' /proc entries (who holds a
 * client end, what a passed descriptor is) are read with UDS_PRIV_LIST, as the listing reads them.
 */
#include "observe.h"

#include "discover.h"
#include "log.h"
#include "observe.skel.h"
#include "peer.h"
#include "privilege.h"

#include <linux/types.h>
#include "observe-event.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define OBS_TICK_MS 200           /* how often ended connections are looked for */
#define OBS_DRAIN_MS 5            /* how often the ring is drained (the kernel wakes us only when full) */
#define REORDER_NS (20 * 1000000) /* a record waits at most this long for an earlier call's */
#define REORDER_MAX_BYTES (16u << 20)   /* ... and waiting records hold at most this much */
#define PAYLOAD_PIPE_BYTES (1 << 20)   /* holds one call's bytes (a larger call: in pieces this size) */
#define PIPE_MIN_BYTES 8192      /* smaller calls are copied: three syscalls cost more than the copy */
#define HELD_POLL_MS 1            /* while records wait: how often the earlier calls are looked at */
#define CAPTURE_FLUSH_MS 5        /* as the relay: a live view 5 ms late is not visibly late */
#define BTF_PATH "/sys/kernel/btf/vmlinux"
#define CAP_SYS_ADMIN_BIT 21
#define CAP_PERFMON_BIT 38
#define CAP_BPF_BIT 39

/* A record waiting to be put in order.  Passed descriptors are described on arrival, while the sender
 * most likely still holds them. */
typedef struct {
  char **fd_desc;
  struct uds_obs_event e;     /* last: its payload follows */
} Held;

typedef struct {
  UdsFlow flow;
  guint64 conn, peer;
  guint64 next_off[2];        /* offset of the next byte expected per direction */
  GByteArray *msg[2];         /* seqpacket: the message being put together from its records */
  guint held;                 /* records of this connection waiting in UdsObserve.held */
} ObsConn;

struct UdsObserve {
  char *name;
  int sock_type;
  pid_t server_pid;
  char *server_comm;
  struct observe_bpf *skel;
  struct ring_buffer *ring;
  /* run */
  UdsCapture *cap;
  UdsObserveStats *stats;
  GHashTable *conns;          /* client end inode -> ObsConn */
  GPtrArray *held;            /* records (copies) waiting for an earlier call's (see "Order") */
  gsize held_bytes;
  gint64 mono_to_real;        /* add to a CLOCK_MONOTONIC ns time for CLOCK_REALTIME */
  int epfd, sigfd, flushfd, tickfd, drainfd;
  guint32 cap_mask;           /* events registered for the capture fd; G_MAXUINT32: not pollable */
  guint32 ring_mask;          /* events registered for the ring */
  gboolean flush_armed, cap_blocked, stop;
  gboolean final;             /* the last drain: everything goes into the capture */
  /* payload on its way to the capture through a pipe (see "Fast path") */
  int pipe[2], devnull;
  int diagfd;                 /* NETLINK_SOCK_DIAG: does a connection's client end still exist */
  guint32 diag_seq;
  gsize pipe_room;            /* the pipe's size */
  ObsConn *pend_conn;         /* the call whose bytes the pipe holds (pend_len of them) */
  int pend_dir;
  guint32 pend_tgid;
  guint64 pend_ts, pend_end;
  gsize pend_len;
  gboolean pipe_stuck;        /* the capture's staging pipe is full: pend_len bytes wait in ours */
  gboolean ring_behind;       /* the last drain stopped before the end of the ring */
};

/* ---- requirements ---- */

/* libbpf's messages are kept while loading: the verifier's reason is in them. */
static GString *libbpf_log;

static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
  if (libbpf_log && level != LIBBPF_DEBUG)
    g_string_append_vprintf(libbpf_log, fmt, ap);
  return 0;
}

static gboolean have_caps(void)
{
  g_autofree char *status = NULL;
  if (!g_file_get_contents("/proc/self/status", &status, NULL, NULL))
    return geteuid() == 0;
  const char *p = strstr(status, "\nCapEff:");
  if (!p)
    return geteuid() == 0;
  guint64 eff = g_ascii_strtoull(p + 8, NULL, 16);
  return (eff >> CAP_SYS_ADMIN_BIT & 1) || ((eff >> CAP_BPF_BIT & 1) && (eff >> CAP_PERFMON_BIT & 1));
}

/* The verifier's last words: the line that says why, usually just before "processed N insns". */
static char *verifier_reason(const char *log)
{
  g_auto(GStrv) lines = g_strsplit(log, "\n", -1);
  const char *why = NULL;
  gboolean in_log = FALSE;
  for (char **l = lines; *l; l++) {
    if (strstr(*l, "BEGIN PROG LOAD LOG"))
      in_log = TRUE;
    else if (strstr(*l, "END PROG LOAD LOG"))
      in_log = FALSE;
    else if (in_log && **l && !g_str_has_prefix(*l, "processed ") && !g_str_has_prefix(*l, "verification time"))
      why = *l;
  }
  return g_strdup(why ? why : "no reason given");
}

static gboolean find_target(UdsObserve *o, struct observe_bpf *skel, GError **error)
{
  g_autoptr(UdsSocketInfo) info = NULL;
  if (o->name[0] == '@') {
    gsize n = strlen(o->name);   /* '@' stands for the leading NUL */
    if (n > UDS_OBS_NAME_MAX) {
      g_set_error(error, UDS_ERROR, UDS_ERROR_INVALID, "%s: an abstract name has at most %d bytes", o->name,
                  UDS_OBS_NAME_MAX - 1);
      return FALSE;
    }
    if (!uds_discover_lookup(NULL, o->name, &info)) {
      g_set_error(error, UDS_ERROR, UDS_ERROR_REFUSED, "%s: no server is listening on this abstract socket", o->name);
      return FALSE;
    }
    skel->rodata->target_len = (__u32)(2 + n);   /* sun_family, then NUL + name */
    memcpy((char *)skel->rodata->target_name + 1, o->name + 1, n - 1);
  } else {
    struct stat st;
    UdsCaps was = uds_priv_raise(UDS_PRIV_LIST);   /* a socket in a folder the user cannot search */
    int r = lstat(o->name, &st), e = errno;
    uds_priv_restore(was);
    if (r != 0) {
      g_set_error(error, UDS_ERROR, UDS_ERROR_INVALID, "%s: %s", o->name, g_strerror(e));
      return FALSE;
    }
    if (!S_ISSOCK(st.st_mode)) {
      g_set_error(error, UDS_ERROR, UDS_ERROR_INVALID, "%s is not a socket", o->name);
      return FALSE;
    }
    if (!uds_discover_lookup(NULL, o->name, &info)) {
      g_set_error(error, UDS_ERROR, UDS_ERROR_REFUSED, "%s: no server is listening on this socket", o->name);
      return FALSE;
    }
    skel->rodata->target_ino = st.st_ino;
    skel->rodata->target_dev = (__u32)(major(st.st_dev) << 20 | minor(st.st_dev));   /* the kernel's dev_t */
  }
  if (info->type == SOCK_DGRAM) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_REFUSED,
                "%s is a datagram socket: observe mode captures stream and seqpacket sockets (use interpose mode)",
                o->name);
    return FALSE;
  }
  o->sock_type = info->type;
  o->server_pid = info->pid;
  o->server_comm = g_strdup(info->comm);
  return TRUE;
}

/* The initial pid namespace's inode (PROC_PID_INIT_INO): there, the kernel's own pids are ours. */
#define INIT_PIDNS_INO 0xEFFFFFFCu

/* Tells the program udsdump's pid namespace, so that records carry the pids udsdump and its user see
 * (see observe.bpf.c).  The helper compares the kernel's dev_t of nsfs, which stat() returns encoded. */
static void set_pid_namespace(struct observe_bpf *skel)
{
  struct stat st;
  if (stat("/proc/self/ns/pid", &st) != 0 || st.st_ino == INIT_PIDNS_INO)
    return;
  skel->rodata->pidns_dev = (__u64)major(st.st_dev) << 20 | minor(st.st_dev);
  skel->rodata->pidns_ino = st.st_ino;
}

/* sys_exit before sys_enter: a send caught between two attaches in the other order would be counted in
 * progress at its enter and never ended (its exit unseen), and hold the other direction's records for
 * the connection's life; in this order an exit without its enter is ignored.  The links are the
 * skeleton's: observe_bpf__destroy releases them. */
static int attach_programs(struct observe_bpf *skel)
{
  skel->links.uds_exit = bpf_program__attach(skel->progs.uds_exit);
  if (!skel->links.uds_exit)
    return -errno;
  skel->links.uds_enter = bpf_program__attach(skel->progs.uds_enter);
  if (!skel->links.uds_enter)
    return -errno;
  return 0;
}

UdsObserve *uds_observe_start(const char *name, GError **error)
{
  if (uds_priv_capability_mode() && !uds_priv_has(UDS_PRIV_OBSERVE)) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_REFUSED, "%s", uds_priv_observe_not_granted());
    return NULL;
  }
  if (!uds_priv_capability_mode() && !have_caps()) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_REFUSED,
                "observe mode needs root or the CAP_BPF and CAP_PERFMON capabilities (uid %u has neither)%s",
                (guint)geteuid(), uds_priv_observe_hint());
    return NULL;
  }
  if (access(BTF_PATH, R_OK) != 0) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_REFUSED,
                "observe mode needs the kernel's BTF type information: " BTF_PATH " %s (a kernel built with "
                "CONFIG_DEBUG_INFO_BTF)", errno == ENOENT ? "is missing" : g_strerror(errno));
    return NULL;
  }
  g_autoptr(UdsObserve) o = g_new0(UdsObserve, 1);
  o->name = g_strdup(name);
  o->epfd = o->sigfd = o->flushfd = o->tickfd = o->drainfd = -1;
  o->pipe[0] = o->pipe[1] = o->devnull = o->diagfd = -1;

  libbpf_log = g_string_new(NULL);
  libbpf_set_print(libbpf_print);
  o->skel = observe_bpf__open();
  int err = o->skel ? 0 : -errno;
  if (!o->skel) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_SYSTEM, "cannot open the observe program: %s", g_strerror(-err));
  } else if (find_target(o, o->skel, error)) {
    o->skel->rodata->self_tgid = (__u32)getpid();
    set_pid_namespace(o->skel);
    UdsCaps was = uds_priv_raise(UDS_PRIV_OBSERVE);
    err = observe_bpf__load(o->skel);
    int attach_err = err ? 0 : attach_programs(o->skel);
    uds_priv_restore(was);
    if (err && strstr(libbpf_log->str, "BEGIN PROG LOAD LOG")) {
      g_autofree char *why = verifier_reason(libbpf_log->str);
      g_set_error(error, UDS_ERROR, UDS_ERROR_REFUSED, "the kernel's BPF verifier rejected the observe program: %s", why);
    } else if (err == -EPERM || err == -EACCES) {
      g_set_error(error, UDS_ERROR, UDS_ERROR_REFUSED,
                  "the kernel refused to load BPF programs (%s): kernel lockdown, kernel.unprivileged_bpf_disabled "
                  "or a security module forbids it", g_strerror(-err));
    } else if (err) {
      g_set_error(error, UDS_ERROR, UDS_ERROR_SYSTEM, "cannot load the observe program: %s", g_strerror(-err));
    } else if ((err = attach_err) != 0) {
      g_set_error(error, UDS_ERROR, UDS_ERROR_REFUSED, "the kernel refused to attach to the syscall tracepoints: %s",
                  g_strerror(-err));
    }
  } else {
    err = -1;
  }
  if (libbpf_log->len)
    uds_debug("libbpf: %s", libbpf_log->str);
  g_string_free(libbpf_log, TRUE);
  libbpf_log = NULL;
  libbpf_set_print(NULL);
  if (err)
    return NULL;
  /* Attached: CAP_PERFMON has served (a tracing program's load); from here bpf() calls need CAP_BPF at
   * most, and /proc the listing's.  Dropped for good (a no-op outside the group install). */
  uds_priv_keep_only(UDS_CAP(CAP_BPF) | UDS_PRIV_LIST);
  uds_info("observing %s: programs attached to raw_tracepoint/sys_enter and sys_exit", name);
  return g_steal_pointer(&o);
}

int uds_observe_sock_type(const UdsObserve *o)
{
  return o->sock_type;
}

pid_t uds_observe_server_pid(const UdsObserve *o)
{
  return o->server_pid;
}

const char *uds_observe_server_comm(const UdsObserve *o)
{
  return o->server_comm;
}

void uds_observe_free(UdsObserve *o)
{
  if (!o)
    return;
  if (o->ring)
    ring_buffer__free(o->ring);
  if (o->skel)
    observe_bpf__destroy(o->skel);
  g_free(o->name);
  g_free(o->server_comm);
  g_free(o);
}

/* ---- who is at the client end ---- */

/* The process holding socket inode ino (the lowest pid that does), with its identity.  Only for a
 * connection whose server spoke first; otherwise the client's first record names it. */
static gboolean find_owner(guint64 ino, UdsPeer *peer)
{
  char want[64], link[64], path[PATH_MAX];
  int wn = snprintf(want, sizeof want, "socket:[%" G_GUINT64_FORMAT "]", ino);
  DIR *proc = opendir("/proc");
  if (!proc)
    return FALSE;
  gboolean found = FALSE;
  struct dirent *de;
  while (!found && (de = readdir(proc))) {
    char *end;
    long pid = strtol(de->d_name, &end, 10);
    if (*end || pid <= 0)
      continue;
    snprintf(path, sizeof path, "/proc/%ld/fd", pid);
    DIR *fds = opendir(path);
    if (!fds)
      continue;
    struct dirent *fe;
    while (!found && (fe = readdir(fds))) {
      ssize_t n = readlinkat(dirfd(fds), fe->d_name, link, sizeof link);
      if (n == wn && memcmp(link, want, (gsize)n) == 0)
        found = TRUE;
    }
    closedir(fds);
    if (found) {
      struct stat st;
      snprintf(path, sizeof path, "/proc/%ld", pid);
      memset(peer, 0, sizeof *peer);
      peer->pid = (pid_t)pid;
      peer->ngroups = -1;
      if (stat(path, &st) == 0) {
        peer->uid = st.st_uid;
        peer->gid = st.st_gid;
      }
      g_autofree char *comm = uds_proc_comm(NULL, (pid_t)pid);
      g_strlcpy(peer->comm, comm ? comm : "", sizeof peer->comm);
    }
  }
  closedir(proc);
  return found;
}

/* Other users' /proc/PID/fd are read as the listing reads them (UDS_PRIV_LIST in capability mode). */
static gboolean owner_of(guint64 ino, UdsPeer *peer)
{
  UdsCaps was = uds_priv_raise(UDS_PRIV_LIST);
  gboolean found = find_owner(ino, peer);
  uds_priv_restore(was);
  return found;
}

/* What a passed descriptor is, from the sender's /proc (it still holds it while sendmsg returns; by
 * the time we look it may not: then only its number is known). */
static char *describe_fd_of(pid_t pid, int fd)
{
  char proc[64], link[PATH_MAX];
  snprintf(proc, sizeof proc, "/proc/%d/fd/%d", (int)pid, fd);
  ssize_t n = readlink(proc, link, sizeof link - 1);
  if (n < 0)
    return g_strdup_printf("fd %d (closed before it could be looked at)", fd);
  link[n] = '\0';
  if (g_str_has_prefix(link, "socket:"))
    return g_strdup_printf("socket %s", link + 7);
  struct stat st;
  return uds_describe_fd_link(link, stat(proc, &st) == 0 && S_ISDIR(st.st_mode));
}

static char *describe_fd(pid_t pid, int fd)
{
  UdsCaps was = uds_priv_raise(UDS_PRIV_LIST);
  char *desc = describe_fd_of(pid, fd);
  uds_priv_restore(was);
  return desc;
}

/* ---- records -> capture events ---- */

static void obs_conn_free(gpointer p)
{
  ObsConn *c = p;
  for (int d = 0; d < 2; d++)
    if (c->msg[d])
      g_byte_array_unref(c->msg[d]);
  g_free(c);
}

static void event_time(UdsObserve *o, __u64 mono_ns, struct timespec *ts)
{
  gint64 real = (gint64)mono_ns + o->mono_to_real;
  ts->tv_sec = real / 1000000000;
  ts->tv_nsec = real % 1000000000;
}

/* The connection of a record, opened in the capture at its first record.  Who the client is is found
 * now, while it is surely there: the sender when the client spoke first, else whoever holds the
 * client end. */
static ObsConn *conn_get(UdsObserve *o, const struct uds_obs_event *e)
{
  ObsConn *c = g_hash_table_lookup(o->conns, &e->conn);
  if (c)
    return c;
  UdsPeer client = { .ngroups = -1 };
  gboolean known = TRUE;
  if (e->dir == UDS_DIR_C2S) {
    client.pid = (pid_t)e->tgid;
    client.uid = e->uid;
    client.gid = e->gid;
    memcpy(client.comm, e->comm, MIN(sizeof client.comm - 1, sizeof e->comm));
  } else {
    known = owner_of(e->conn, &client);
  }
  c = g_new0(ObsConn, 1);
  c->conn = e->conn;
  c->peer = e->peer;
  UdsConnMeta meta = {
    .client = known ? &client : NULL,
    .server_pid = o->server_pid,
    .server_comm = o->server_comm,
  };
  struct timespec ts;
  event_time(o, e->ts_ns, &ts);
  uds_capture_conn_open(o->cap, &c->flow, &meta, &ts);
  g_hash_table_insert(o->conns, &c->conn, c);
  o->stats->connections++;
  return c;
}

static char **describe_fds(const struct uds_obs_event *e)
{
  int n = MAX(e->nfds, 0), shown = MIN(n, UDS_OBS_MAX_FDS);
  char **desc = g_new0(char *, n + 1);
  for (int i = 0; i < n; i++)
    desc[i] = i < shown ? describe_fd((pid_t)e->tgid, e->fds[i]) : g_strdup("(not recorded)");
  return desc;
}

static void on_ancillary(UdsObserve *o, ObsConn *c, const struct uds_obs_event *e, char **fd_desc,
                         const struct timespec *ts)
{
  UdsAncillary anc = {
    .nfds = e->nfds,
    .fd_desc = (const char *const *)fd_desc,
    .has_creds = e->has_creds != 0,
    .pid = (pid_t)e->cred_pid,
    .uid = e->cred_uid,
    .gid = e->cred_gid,
  };
  uds_capture_conn_ancillary(o->cap, &c->flow, e->dir, &anc, ts);
}

/* ---- payload through a pipe ---- */

static void pipe_discard(UdsObserve *o, gsize n)
{
  while (n > 0) {
    ssize_t k = splice(o->pipe[0], NULL, o->devnull, NULL, n, SPLICE_F_NONBLOCK);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0) {   /* cannot happen (/dev/null takes anything); never spin */
      uds_debug("observe: cannot empty the payload pipe: %s", g_strerror(errno));
      return;
    }
    n -= (gsize)k;
  }
}

/* The pipe's bytes by memory, into the capture's queue (past its bound if need be). */
static void pipe_drain_stuck(UdsObserve *o)
{
  if (o->pend_len == 0)
    return;
  struct timespec ts;
  event_time(o, o->pend_ts, &ts);
  g_autofree guint8 *rest = g_malloc(o->pend_len);
  gsize got = 0;
  while (got < o->pend_len) {
    ssize_t k = read(o->pipe[0], rest + got, o->pend_len - got);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0)
      break;
    got += (gsize)k;
  }
  uds_capture_conn_data(o->cap, &o->pend_conn->flow, o->pend_dir, rest, got, &ts);
  o->pend_len = 0;
  o->pipe_stuck = FALSE;
}

/* Hands the pipe's bytes (one call's) to the capture, as the relay hands it spliced bytes: by page
 * reference (tee) into its staging pipe.  When that pipe is full (the reader is behind), the rest stays
 * here: FALSE, and nothing more is taken from the ring until it has gone (pipe_stuck). */
static gboolean pipe_flush(UdsObserve *o)
{
  if (o->pend_len == 0)
    return TRUE;
  struct timespec ts;
  event_time(o, o->pend_ts, &ts);
  UdsFlow *flow = &o->pend_conn->flow;
  if (!uds_capture_can_tee(o->cap, flow, o->pend_dir)) {
    pipe_drain_stuck(o);   /* the capture stopped taking spliced bytes (-c reached, an error) */
    return TRUE;
  }
  gsize done = uds_capture_conn_tee(o->cap, flow, o->pend_dir, o->pipe[0], o->pend_len, &ts);
  pipe_discard(o, done);
  o->pend_len -= done;
  o->pipe_stuck = o->pend_len > 0;
  return !o->pipe_stuck;
}

/* Whether record e continues the call whose bytes the pipe holds. */
static gboolean pipe_continues(UdsObserve *o, const ObsConn *c, const struct uds_obs_event *e)
{
  return o->pend_len && o->pend_conn == c && o->pend_dir == e->dir && o->pend_ts == e->ts_ns &&
         o->pend_tgid == e->tgid && o->pend_end == e->off;
}

/* Whatever the pipe holds goes to the capture now: by reference if it has room, else by memory. */
static void pipe_out(UdsObserve *o)
{
  if (!pipe_flush(o))
    pipe_drain_stuck(o);
}

/* Copies a stream record's bytes out of the ring into the pipe; FALSE: they must go by memory (and
 * what the pipe held has gone first). */
static gboolean pipe_put(UdsObserve *o, ObsConn *c, const struct uds_obs_event *e)
{
  if (o->pipe[1] < 0 || (o->pend_len == 0 && e->len < PIPE_MIN_BYTES))
    return FALSE;
  if (!uds_capture_can_tee(o->cap, &c->flow, e->dir)) {
    pipe_out(o);
    return FALSE;
  }
  if (o->pend_len + e->len > o->pipe_room)
    pipe_out(o);
  ssize_t k;
  do
    k = write(o->pipe[1], e->data, e->len);
  while (k < 0 && errno == EINTR);
  if (k <= 0) {   /* cannot happen (the pipe has room) */
    pipe_out(o);
    return FALSE;
  }
  if (o->pend_len == 0) {
    o->pend_conn = c;
    o->pend_dir = e->dir;
    o->pend_tgid = e->tgid;
    o->pend_ts = e->ts_ns;
  }
  o->pend_len += (gsize)k;
  o->pend_end = e->off + (guint64)k;
  if ((gsize)k < e->len) {   /* cannot happen either; the rest by memory, after */
    pipe_out(o);
    struct timespec ts;
    event_time(o, e->ts_ns, &ts);
    uds_capture_conn_data(o->cap, &c->flow, e->dir, e->data + k, e->len - (gsize)k, &ts);
  }
  return TRUE;
}

static void on_data(UdsObserve *o, ObsConn *c, const struct uds_obs_event *e, const struct timespec *ts)
{
  int dir = e->dir;
  if (!pipe_continues(o, c, e))
    pipe_out(o);   /* what the pipe holds goes first, whatever it costs */
  char comm[sizeof e->comm + 1];
  memcpy(comm, e->comm, sizeof e->comm);
  comm[sizeof e->comm] = '\0';
  uds_capture_conn_sender(o->cap, &c->flow, dir, (pid_t)e->tgid, e->uid, e->gid, comm, ts);
  if (e->off > c->next_off[dir]) {
    gsize lost = (gsize)(e->off - c->next_off[dir]);
    if (c->msg[dir] && c->msg[dir]->len) {
      lost += c->msg[dir]->len;   /* a message missing a part is lost whole */
      g_byte_array_set_size(c->msg[dir], 0);
    }
    uds_capture_conn_lost(o->cap, &c->flow, dir, lost);
    o->stats->lost_bytes += e->off - c->next_off[dir];
  }
  /* A record behind the expected offset (two threads of one process sending on one socket at once,
   * their records crossing in the ring) is written where it arrives rather than lost. */
  c->next_off[dir] = MAX(c->next_off[dir], e->off + e->len);
  o->stats->bytes[dir] += e->len;
  if (o->sock_type == SOCK_STREAM) {
    if (o->pend_len == 0 && e->len >= PIPE_MIN_BYTES &&
        uds_capture_conn_write(o->cap, &c->flow, dir, e->data, e->len, (e->flags & UDS_OBS_F_END) != 0, ts))
      return;
    if (!pipe_put(o, c, e))
      uds_capture_conn_data(o->cap, &c->flow, dir, e->data, e->len, ts);
    else if (e->flags & UDS_OBS_F_END)
      pipe_flush(o);   /* the call is complete; stuck, the ring waits (on_record) */
    return;
  }
  if (!c->msg[dir])
    c->msg[dir] = g_byte_array_new();
  g_byte_array_append(c->msg[dir], e->data, e->len);
  if (e->flags & UDS_OBS_F_END) {
    uds_capture_message(o->cap, &c->flow, dir, c->msg[dir]->data, c->msg[dir]->len, ts);
    g_byte_array_set_size(c->msg[dir], 0);
  }
}

static void flush_capture(UdsObserve *o);

static void process_record(UdsObserve *o, ObsConn *c, const struct uds_obs_event *e, char **fd_desc)
{
  struct timespec ts;
  event_time(o, e->ts_ns, &ts);
  if (e->kind == UDS_OBS_ANCILLARY) {
    pipe_out(o);
    on_ancillary(o, c, e, fd_desc, &ts);
  }
  else if (e->kind == UDS_OBS_DATA)
    on_data(o, c, e, &ts);
  if (uds_capture_flush_due(o->cap) && !o->cap_blocked)
    flush_capture(o);   /* a burst of records must not wait for the loop */
}

static gsize record_size(const struct uds_obs_event *e)
{
  return sizeof *e + (e->kind == UDS_OBS_DATA ? e->len : 0);
}

/* The ring buffer's callback: a record, read where it lies in the ring. */
static int on_record(void *ctx, void *data, size_t size)
{
  UdsObserve *o = ctx;
  const struct uds_obs_event *e = data;
  if (size < sizeof *e || e->dir > 1 || (e->kind == UDS_OBS_DATA && size < sizeof *e + e->len))
    return 0;
  if (uds_capture_done(o->cap))   /* -c reached: the rest is not wanted */
    return 0;
  ObsConn *c = conn_get(o, e);
  if (c->held || (e->flags & UDS_OBS_F_WAIT)) {
    /* It waits for an earlier call of the other direction (or behind a record that does): a copy. */
    gsize n = record_size(e);
    Held *h = g_malloc(G_STRUCT_OFFSET(Held, e) + n);
    memcpy(&h->e, e, n);
    h->fd_desc = e->kind == UDS_OBS_ANCILLARY ? describe_fds(e) : NULL;
    g_ptr_array_add(o->held, h);
    o->held_bytes += n;
    c->held++;
    return 0;
  }
  char **fd_desc = e->kind == UDS_OBS_ANCILLARY ? describe_fds(e) : NULL;
  process_record(o, c, e, fd_desc);
  g_strfreev(fd_desc);
  /* The capture holds what its bound allows: the rest waits in the ring, not in memory here. */
  if (!o->final && (uds_capture_full(o->cap) || o->stop || o->pipe_stuck)) {
    return -1;
  }
  return 0;
}

/* Takes what the ring holds, as far as the capture has room. */
static void consume_ring(UdsObserve *o)
{
  o->ring_behind = TRUE;
  if (!pipe_flush(o))
    return;
  if (!uds_capture_full(o->cap) && !o->stop && ring_buffer__consume(o->ring) >= 0)
    o->ring_behind = FALSE;   /* it went through to the end of what the ring held */
  pipe_flush(o);
}

/* When the calls began; within one call, its control data before its bytes, its bytes in order. */
static int held_cmp(gconstpointer a, gconstpointer b)
{
  const struct uds_obs_event *x = &(*(const Held *const *)a)->e, *y = &(*(const Held *const *)b)->e;
  if (x->ts_ns != y->ts_ns)
    return x->ts_ns < y->ts_ns ? -1 : 1;
  if (x->conn != y->conn)
    return x->conn < y->conn ? -1 : 1;
  if (x->dir != y->dir)
    return x->dir < y->dir ? -1 : 1;
  if (x->kind != y->kind)
    return x->kind == UDS_OBS_ANCILLARY ? -1 : 1;
  return x->off < y->off ? -1 : x->off > y->off;
}

static guint64 mono_ns(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (guint64)t.tv_sec * 1000000000u + (guint64)t.tv_nsec;
}

/* The kernel's counts for connection conn (the streams map), under CAP_BPF as every bpf() call (see
 * the top); forget: the connection has ended, its entry goes too.  FALSE: the kernel has none. */
static gboolean stream_counts(UdsObserve *o, guint64 conn, struct uds_obs_stream *st, gboolean forget)
{
  __u64 key = conn;
  int fd = bpf_map__fd(o->skel->maps.streams);
  UdsCaps was = uds_priv_raise(UDS_CAP(CAP_BPF));
  int r = bpf_map_lookup_elem(fd, &key, st);
  if (r == 0 && forget)
    bpf_map_delete_elem(fd, &key);
  uds_priv_restore(was);
  return r == 0;
}

/* Whether the calls a marked record waits for have ended: the kernel's count of calls in progress in
 * the other direction has none begun before it (their records are then in the ring), or it has
 * waited long enough. */
static gboolean wait_over(UdsObserve *o, const struct uds_obs_event *e, guint64 now)
{
  if (!(e->flags & UDS_OBS_F_WAIT) || e->ts_ns + REORDER_NS <= now || o->held_bytes > REORDER_MAX_BYTES)
    return TRUE;
  struct uds_obs_stream st;
  if (!stream_counts(o, e->conn, &st, FALSE))
    return TRUE;
  int other = !e->dir;
  return st.inflight[other] == 0 || st.since[other] > e->ts_ns;
}

/* Writes, in the order their calls began, the held records of every connection whose waits are over
 * (all: of every connection). */
static void release_held(UdsObserve *o, gboolean all)
{
  if (o->held->len == 0)
    return;
  pipe_flush(o);
  guint64 now = mono_ns();
  g_autoptr(GHashTable) blocked = g_hash_table_new(g_int64_hash, g_int64_equal);
  for (guint i = 0; !all && i < o->held->len; i++) {
    Held *h = g_ptr_array_index(o->held, i);
    if (!g_hash_table_contains(blocked, &h->e.conn) && !wait_over(o, &h->e, now))
      g_hash_table_add(blocked, &h->e.conn);
  }
  if (g_hash_table_size(blocked) == o->held->len)
    return;
  /* The records of the calls that ended are in the ring now: they join their connection's.  If the
   * ring could not be read to its end, a request may still be in it: nothing is released before it.
   * Records the consume added (held ones among them) have their own waits. */
  if (!all) {
    guint before = o->held->len;
    consume_ring(o);
    if (o->ring_behind)
      return;
    for (guint i = before; i < o->held->len; i++) {
      Held *h = g_ptr_array_index(o->held, i);
      if (!g_hash_table_contains(blocked, &h->e.conn) && !wait_over(o, &h->e, now))
        g_hash_table_add(blocked, &h->e.conn);
    }
  }
  g_ptr_array_sort(o->held, held_cmp);
  guint keep = 0;
  for (guint i = 0; i < o->held->len; i++) {
    Held *h = g_ptr_array_index(o->held, i);
    const struct uds_obs_event *e = &h->e;
    if (g_hash_table_contains(blocked, &e->conn)) {
      g_ptr_array_index(o->held, keep++) = h;
      continue;
    }
    ObsConn *c = g_hash_table_lookup(o->conns, &e->conn);
    if (c && !uds_capture_done(o->cap))
      process_record(o, c, e, h->fd_desc);
    if (c)
      c->held--;
    o->held_bytes -= record_size(e);
    g_strfreev(h->fd_desc);
    g_free(h);
  }
  pipe_flush(o);
  g_ptr_array_set_size(o->held, keep);
}

/* How long the loop may sleep while records wait (-1: none wait). */
static int held_timeout_ms(UdsObserve *o)
{
  return o->held->len ? HELD_POLL_MS : -1;
}

/* Bytes the kernel counted per direction of c that never arrived (the last records of a connection). */
static void kernel_tail_loss(UdsObserve *o, ObsConn *c, guint64 lost[2])
{
  struct uds_obs_stream st;
  lost[0] = lost[1] = 0;
  if (!stream_counts(o, c->conn, &st, TRUE))
    return;
  for (int d = 0; d < 2; d++)
    lost[d] = st.off[d] > c->next_off[d] ? st.off[d] - c->next_off[d] : 0;
}

static void conn_end(UdsObserve *o, ObsConn *c, const struct timespec *ts)
{
  guint64 lost[2];
  kernel_tail_loss(o, c, lost);
  for (int d = 0; d < 2; d++) {
    if (lost[d]) {
      uds_capture_conn_lost(o->cap, &c->flow, d, (gsize)lost[d]);
      o->stats->lost_bytes += lost[d];
    }
  }
  uds_capture_conn_shutdown(o->cap, &c->flow, UDS_DIR_C2S, ts);
  uds_capture_conn_shutdown(o->cap, &c->flow, UDS_DIR_S2C, ts);
  uds_capture_conn_close(o->cap, &c->flow, ts);
}

/* The inodes /proc/net/unix lists (keys point into *store). */
static GHashTable *proc_net_unix_inodes(GArray **store)
{
  g_autofree char *text = NULL;
  if (!g_file_get_contents("/proc/net/unix", &text, NULL, NULL))
    return NULL;
  *store = g_array_new(FALSE, FALSE, sizeof(guint64));
  char *next = strchr(text, '\n');   /* after the header line */
  while (next && next[1]) {
    char *line = next + 1;
    next = strchr(line, '\n');
    if (next)
      *next = '\0';   /* sscanf measures its input: one line, not the rest of the table */
    unsigned long long ino;
    /* "%pK: %08X %08X %08X %04X %02X %5lu": the inode is the 7th field */
    if (sscanf(line, "%*s %*x %*x %*x %*x %*x %llu", &ino) == 1) {
      guint64 v = ino;
      g_array_append_val(*store, v);
    }
  }
  GHashTable *set = g_hash_table_new(g_int64_hash, g_int64_equal);
  for (guint i = 0; i < (*store)->len; i++)
    g_hash_table_add(set, &g_array_index(*store, guint64, i));
  return set;
}

/* Whether the socket with inode ino still exists: one question to the kernel's unix_diag, which finds
 * it by inode (reading /proc/net/unix instead formats every socket of the host, thousands on a busy
 * one, every tick).  -1: unix_diag cannot answer. */
static int socket_alive(UdsObserve *o, guint64 ino)
{
  if (o->diagfd < 0)
    return -1;
  struct {
    struct nlmsghdr nlh;
    struct unix_diag_req req;
  } msg = {
    .nlh = { .nlmsg_len = sizeof msg, .nlmsg_type = SOCK_DIAG_BY_FAMILY, .nlmsg_flags = NLM_F_REQUEST,
             .nlmsg_seq = ++o->diag_seq },
    .req = { .sdiag_family = AF_UNIX, .udiag_states = ~0u, .udiag_ino = (__u32)ino,
             .udiag_cookie = { INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE } },
  };
  if (ino > G_MAXUINT32 || send(o->diagfd, &msg, sizeof msg, 0) != (ssize_t)sizeof msg)
    return -1;
  for (;;) {
    guint64 buf[1024];
    ssize_t n = recv(o->diagfd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1;
    for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_seq != o->diag_seq)
        continue;   /* an answer to an earlier question that timed out */
      if (h->nlmsg_type == SOCK_DIAG_BY_FAMILY)
        return 1;
      if (h->nlmsg_type == NLMSG_ERROR) {
        const struct nlmsgerr *err = NLMSG_DATA(h);
        return err->error == -ENOENT ? 0 : -1;
      }
    }
  }
}

/* Whether connection c may end now: no record of it waits to be ordered, no byte of it waits in the
 * payload pipe (pend_conn points at it until they have gone). */
static gboolean may_end(UdsObserve *o, const ObsConn *c)
{
  return c->held == 0 && !(o->pend_len && o->pend_conn == c);
}

/* Takes in what the ring holds and releases the held records that may go; FALSE when records are
 * still waiting, in the ring (for the capture to have room) or in the payload pipe: a connection
 * ends only after its last bytes, at a later tick. */
static gboolean caught_up(UdsObserve *o)
{
  consume_ring(o);
  release_held(o, FALSE);
  return !o->ring_behind && !o->pipe_stuck;
}

/* Connections whose client end no longer exists have ended. */
static void reap_connections(UdsObserve *o)
{
  if (g_hash_table_size(o->conns) == 0 || !caught_up(o))   /* their last bytes first */
    return;
  g_autoptr(GHashTable) listed = NULL;   /* /proc/net/unix's inodes, read if unix_diag fails */
  g_autoptr(GArray) inodes = NULL;
  g_autoptr(GPtrArray) dead = g_ptr_array_new();
  GHashTableIter it;
  gpointer value;
  g_hash_table_iter_init(&it, o->conns);
  while (g_hash_table_iter_next(&it, NULL, &value)) {
    ObsConn *c = value;
    if (!may_end(o, c))
      continue;
    int alive = socket_alive(o, c->conn);
    if (alive < 0) {
      if (!listed && !(listed = proc_net_unix_inodes(&inodes)))
        return;
      alive = g_hash_table_contains(listed, &c->conn);
    }
    if (!alive)
      g_ptr_array_add(dead, c);
  }
  if (dead->len == 0)
    return;
  /* A client may have sent its last bytes between the consume above and the look at its socket: they
   * are in the ring now (a process that is gone sends no more), and must be captured, not reported
   * lost by conn_end; if the ring cannot be read to its end, the ending waits for a later tick. */
  if (!caught_up(o))
    return;
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  for (guint i = 0; i < dead->len; i++) {
    ObsConn *c = g_ptr_array_index(dead, i);
    if (!may_end(o, c))
      continue;
    conn_end(o, c, &now);
    g_hash_table_remove(o->conns, &c->conn);
  }
}

/* ---- the loop ---- */

static void watch_capture(UdsObserve *o)
{
  if (o->cap_mask == G_MAXUINT32)
    return;
  guint32 want = o->cap_blocked && uds_capture_wants_write(o->cap) ? EPOLLOUT : 0;
  if (want == o->cap_mask)
    return;
  struct epoll_event ev = { .events = want, .data.fd = uds_capture_fd(o->cap) };
  if (epoll_ctl(o->epfd, EPOLL_CTL_MOD, uds_capture_fd(o->cap), &ev) == 0)
    o->cap_mask = want;
}

/* The ring is watched only while the capture has room for what it holds: level-triggered, it would
 * otherwise wake the loop again and again for records that must wait. */
static void watch_ring(UdsObserve *o)
{
  guint32 want = uds_capture_full(o->cap) || o->pipe_stuck ? 0 : EPOLLIN;
  if (want == o->ring_mask)
    return;
  int fd = ring_buffer__epoll_fd(o->ring);
  struct epoll_event ev = { .events = want, .data.fd = fd };
  if (epoll_ctl(o->epfd, EPOLL_CTL_MOD, fd, &ev) == 0)
    o->ring_mask = want;
}

static void flush_capture(UdsObserve *o)
{
  if (uds_capture_flush(o->cap) < 0 && errno != EAGAIN) {
    if (!o->stop)
      uds_info("capture reader went away (%s): stopping", g_strerror(errno));
    o->stop = TRUE;
    return;
  }
  o->cap_blocked = uds_capture_wants_write(o->cap);
  if (uds_capture_done(o->cap))
    o->stop = TRUE;
}

static void schedule_capture(UdsObserve *o)
{
  if (o->cap_blocked || !uds_capture_wants_write(o->cap))
    return;
  if (uds_capture_flush_due(o->cap) || uds_capture_done(o->cap) || o->stop || o->cap_mask == G_MAXUINT32) {
    flush_capture(o);
  } else if (!o->flush_armed) {
    struct itimerspec its = { .it_value.tv_nsec = CAPTURE_FLUSH_MS * 1000000L };
    if (timerfd_settime(o->flushfd, 0, &its, NULL) == 0)
      o->flush_armed = TRUE;
    else
      flush_capture(o);
  }
}

static void drain_fd(int fd)
{
  guint64 buf[16];
  while (read(fd, buf, sizeof buf) > 0) {
  }
}

static gboolean loop_setup(UdsObserve *o, GError **error)
{
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  o->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  o->epfd = epoll_create1(EPOLL_CLOEXEC);
  o->flushfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  o->tickfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  o->drainfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  o->diagfd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  struct timeval diag_wait = { .tv_sec = 1 };   /* the kernel answers at once; never hang on it */
  if (o->diagfd >= 0)
    setsockopt(o->diagfd, SOL_SOCKET, SO_RCVTIMEO, &diag_wait, sizeof diag_wait);
  /* The payload pipe (see "Fast path"); without it, payload is copied into the capture's queue. */
  o->devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (o->devnull < 0 || pipe2(o->pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
    uds_debug("observe: no payload pipe (%s): payload is copied", g_strerror(errno));
    o->pipe[0] = o->pipe[1] = -1;
  } else {
    fcntl(o->pipe[1], F_SETPIPE_SZ, PAYLOAD_PIPE_BYTES);
    int room = fcntl(o->pipe[1], F_GETPIPE_SZ);
    o->pipe_room = room > 0 ? (gsize)room : 65536;
  }
  UdsCaps was = uds_priv_raise(UDS_CAP(CAP_BPF));
  o->ring = ring_buffer__new(bpf_map__fd(o->skel->maps.events), on_record, o, NULL);
  int ring_errno = errno;
  uds_priv_restore(was);
  errno = ring_errno;
  if (o->sigfd < 0 || o->epfd < 0 || o->flushfd < 0 || o->tickfd < 0 || o->drainfd < 0 || !o->ring) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_SYSTEM, "observe: cannot set up the event loop: %s", g_strerror(errno));
    return FALSE;
  }
  struct itimerspec tick = { .it_value.tv_nsec = OBS_TICK_MS * 1000000L, .it_interval.tv_nsec = OBS_TICK_MS * 1000000L };
  timerfd_settime(o->tickfd, 0, &tick, NULL);
  struct itimerspec drain = { .it_value.tv_nsec = OBS_DRAIN_MS * 1000000L, .it_interval.tv_nsec = OBS_DRAIN_MS * 1000000L };
  timerfd_settime(o->drainfd, 0, &drain, NULL);
  int fds[] = { ring_buffer__epoll_fd(o->ring), o->sigfd, o->flushfd, o->tickfd, o->drainfd };
  for (gsize i = 0; i < G_N_ELEMENTS(fds); i++) {
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = fds[i] };
    if (epoll_ctl(o->epfd, EPOLL_CTL_ADD, fds[i], &ev) < 0) {
      g_set_error(error, UDS_ERROR, UDS_ERROR_SYSTEM, "observe: epoll: %s", g_strerror(errno));
      return FALSE;
    }
  }
  /* Registered with no events: EPOLLERR/EPOLLHUP still say the reader left.  A regular file cannot be
   * watched and is simply written after every batch. */
  struct epoll_event ev = { .events = 0, .data.fd = uds_capture_fd(o->cap) };
  o->cap_mask = epoll_ctl(o->epfd, EPOLL_CTL_ADD, uds_capture_fd(o->cap), &ev) == 0 ? 0 : G_MAXUINT32;
  o->ring_mask = EPOLLIN;
  struct timespec mono, real;
  clock_gettime(CLOCK_MONOTONIC, &mono);
  clock_gettime(CLOCK_REALTIME, &real);
  o->mono_to_real = ((gint64)real.tv_sec - mono.tv_sec) * 1000000000 + (real.tv_nsec - mono.tv_nsec);
  return TRUE;
}

static void close_fd(int *fd)
{
  if (*fd >= 0)
    close(*fd);
  *fd = -1;
}

static void loop_close(UdsObserve *o)
{
  close_fd(&o->epfd);
  close_fd(&o->sigfd);
  close_fd(&o->flushfd);
  close_fd(&o->tickfd);
  close_fd(&o->drainfd);
  close_fd(&o->pipe[0]);
  close_fd(&o->pipe[1]);
  close_fd(&o->devnull);
  close_fd(&o->diagfd);
}

gboolean uds_observe_run(UdsObserve *o, UdsCapture *cap, UdsObserveStats *stats, GError **error)
{
  o->cap = cap;
  o->stats = stats;
  o->conns = g_hash_table_new_full(g_int64_hash, g_int64_equal, NULL, obs_conn_free);
  o->held = g_ptr_array_new();   /* records are freed as they are released */
  gboolean ok = loop_setup(o, error);
  int ringfd = o->ring ? ring_buffer__epoll_fd(o->ring) : -1;
  while (ok && !o->stop) {
    struct epoll_event evs[8];
    schedule_capture(o);   /* the pcap header at once: the reader then knows the programs are attached */
    watch_capture(o);
    watch_ring(o);
    int n = epoll_wait(o->epfd, evs, G_N_ELEMENTS(evs), held_timeout_ms(o));
    if (n < 0 && errno != EINTR) {
      g_set_error(error, UDS_ERROR, UDS_ERROR_SYSTEM, "epoll_wait: %s", g_strerror(errno));
      ok = FALSE;
      break;
    }
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == ringfd) {
        consume_ring(o);
      } else if (fd == o->drainfd) {
        drain_fd(fd);
        consume_ring(o);
      } else if (fd == o->sigfd) {
        struct signalfd_siginfo si;
        while (read(o->sigfd, &si, sizeof si) == sizeof si)
          uds_info("%s: stopping", strsignal((int)si.ssi_signo));
        o->stop = TRUE;
      } else if (fd == o->flushfd) {
        drain_fd(fd);
        o->flush_armed = FALSE;
        flush_capture(o);
      } else if (fd == o->tickfd) {
        drain_fd(fd);
        reap_connections(o);
      } else if (evs[i].events & (EPOLLERR | EPOLLHUP)) {
        if (!o->stop)
          uds_info("capture reader went away: stopping");
        o->stop = TRUE;
      } else {
        flush_capture(o);   /* the reader took some: room for what waits in the ring */
        consume_ring(o);
      }
    }
    release_held(o, FALSE);
    if (uds_capture_done(cap))
      o->stop = TRUE;
  }
  /* What the kernel has handed over is written; connections still open stay open (they are not ours). */
  o->final = TRUE;
  if (o->ring && !uds_capture_done(cap))
    ring_buffer__consume(o->ring);   /* into the capture's queue, past its bound: it is the end */
  pipe_out(o);
  release_held(o, TRUE);
  pipe_out(o);   /* what those put into the pipe: by memory if the capture's pipe is full */
  /* Connections still open: what the kernel counted beyond what arrived was lost, and is reported. */
  GHashTableIter it;
  gpointer value;
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  g_hash_table_iter_init(&it, o->conns);
  while (o->skel && g_hash_table_iter_next(&it, NULL, &value)) {
    ObsConn *c = value;
    guint64 lost[2];
    kernel_tail_loss(o, c, lost);
    for (int d = 0; d < 2; d++) {
      uds_capture_conn_lost(cap, &c->flow, d, (gsize)lost[d]);
      o->stats->lost_bytes += lost[d];
    }
    uds_capture_conn_report_drops(cap, &c->flow, &now);
  }
  uds_capture_finish(cap, 2000);
  g_clear_pointer(&o->conns, g_hash_table_destroy);
  g_clear_pointer(&o->held, g_ptr_array_unref);
  loop_close(o);
  o->cap = NULL;
  return ok;
}
