/* relay — forwards every connection between clients and the real server, and feeds the capture.
 *
 * Model (after OpenBSD relayd and redis' ae): one thread, one epoll set, level-triggered.  A
 * connection is two symmetric halves, each owning one socket and pointing at the other: bytes read
 * from a half are written to its peer's socket.  What the peer's socket does not take at once is kept
 * in the *peer's* pending buffer, and the reading half stops reading until that buffer has drained:
 * so memory per connection is bounded by one read (RELAY_CHUNK), a slow consumer slows its producer,
 * and an idle connection holds no buffer at all.  A half's epoll mask is derived from its state every
 * time (half_update), never tracked twice.
 *
 * Half-close passes per direction: EOF on one side becomes shutdown(SHUT_WR) on the other once its
 * pending bytes are written; the connection closes only when both directions are done.  A reset
 * (ECONNRESET) closes the other side at once, abortively.
 *
 * Ancillary data passes through: every read is a recvmsg with room for SCM_RIGHTS and
 * SCM_CREDENTIALS, and what came with some bytes is sent with exactly those bytes (the kernel never
 * merges a recvmsg across a descriptor-carrying message, and sendmsg attaches control data to the
 * first byte it sends).  Our own copies of passed descriptors are closed once sent.
 *
 * Identity: the upstream connection is made with the client's uid, gid and groups (SO_PEERCRED /
 * SO_PEERGROUPS of the accepted socket).  Running as root we switch effective ids around connect()
 * (the kernel records SO_PEERCRED and checks the socket file's permissions at connect time);
 * unprivileged, a client whose identity differs from ours is refused: connecting as ourselves would
 * hand it our privileges.  The pid cannot be preserved: the server sees udsdump's pid.
 * Credentials passed explicitly (SCM_CREDENTIALS, what a server with SO_PASSCRED reads) are forwarded
 * as the client's when we may, so journald & co. still attribute messages to the client.
 *
 * Zero copy.  Bulk stream data (RELAY_SPLICE_MIN bytes or more waiting) is moved without entering
 * user space: splice(2) from the socket into a pipe, tee(2) of it into the capture (capture.c), splice
 * from the pipe to the other socket.  Splicing bypasses recvmsg/sendmsg, so it is used only where that
 * changes nothing the other side can see, checked before every splice:
 *   - no descriptor waits in the socket's queue (its fdinfo's scm_fds: 0, read after SIOCINQ, which
 *     bounds the splice to those bytes): a splice would close SCM_RIGHTS descriptors, not pass them;
 *   - the credentials of the bytes at the head (MSG_PEEK) are the ones the kernel attaches to what we
 *     send: ours (uid and gid; a privileged relay otherwise forwards the sender's explicitly) and, from
 *     a client, its own (an explicit SCM_CREDENTIALS claim is forwarded and captured by the copy
 *     path).  The kernel never splices across a change of credentials (SO_PASSCRED is set), so one
 *     peek covers a splice.  What remains different is the pid in SCM_CREDENTIALS: ours, as in
 *     SO_PEERCRED (docs/identity.md);
 *   - the capture can take the bytes from a pipe (uds_capture_can_tee).
 * Whatever the other socket does not take at once stays in the pipe as that half's pending bytes (the
 * pipe has one owner at a time; meanwhile other connections copy); what the capture could not tee is
 * read out of the pipe and goes the copy path's way.
 *
 * Datagram sockets (SOCK_DGRAM) have no connections: each sender address becomes a "flow" with its own
 * upstream socket bound at a private name (so the server's replies find their way back) - see
 * the dgram_* functions.
 *
 * Stopping: PATH is put back first (new clients go straight to the server), the listener's backlog is
 * accepted, the capture is finished, and the connections still open go on, uncaptured, in a detached
 * drain process (own session, stdio closed) so that `docker logs -f` survives the end of a capture
 * while the extcap process exits at once.
 */
#include "relay.h"

#include "discover.h"
#include "log.h"
#include "peer.h"
#include "privilege.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RELAY_CHUNK (256 * 1024)      /* one read; also the bound on a half's pending bytes */
/* Bytes waiting before zero copy beats recvmsg + sendmsg.  A 64 KiB write reaches the socket as skbs
 * of at most ~36 KiB (32 KiB of pages + a head), so a threshold of 64 KiB left such clients mostly on
 * the copy path; at 32 KiB the relay's CPU per GB fell by about a sixth at 16 and 64 KiB writes
 * (A/B, docs/benchmarks.md). */
#define RELAY_SPLICE_MIN (32 * 1024)
#define RELAY_READS_PER_WAKEUP 4      /* fairness between busy connections */
#define RELAY_ACCEPTS_PER_WAKEUP 64
#define RELAY_MAX_FDS_PER_MSG 253     /* SCM_MAX_FD */
#define RELAY_TICK_MS 20              /* retry timer: paused accept, upstream backlog full */
#define RELAY_CONNECT_RETRIES 250     /* x RELAY_TICK_MS: give up on a full upstream backlog after 5 s */
#define DGRAM_MAX (256 * 1024)
#define DGRAM_WAIT_MS 1000              /* a full datagram receiver: how long we wait before dropping */
/* Capture output is written CAPTURE_FLUSH_MS after the first byte queued (or at once when the capture
 * says enough is queued: uds_capture_flush_due).  Every write to Wireshark's FIFO wakes its reader,
 * and on a small machine that wakeup takes a CPU the client, server and relay are waiting for: with a
 * write after every epoll batch it was ~4 reader wakeups per short connection, the largest part of
 * udsdump's connection cost above a plain relay.  A live view 5 ms late is not visibly late. */
#define CAPTURE_FLUSH_MS 5

typedef struct Conn Conn;
typedef struct Relay Relay;

typedef enum { EV_HALF, EV_LISTEN, EV_SIGNAL, EV_CAPTURE, EV_TIMER, EV_WATCH, EV_DGRAM_UP, EV_PROGRESS, EV_FLUSH } EvKind;

/* What an epoll event points at. */
typedef struct {
  EvKind kind;
} EvTag;

typedef struct Half {
  EvTag tag;
  Conn *conn;
  struct Half *peer;
  int fd;
  int dir;                  /* direction of the bytes READ from this half's socket */
  guint32 mask;             /* events currently registered */
  gboolean eof;             /* read side finished (EOF, error, or the peer can take no more) */
  gboolean shut_pending;    /* SHUT_WR this socket once pending is written */
  gboolean shut_done;
  /* Bytes (and ancillary data) read from the peer, waiting for this socket to take them. */
  guint8 *pending;
  gsize pending_len, pending_off;
  int *pending_fds;
  int pending_nfds;
  gboolean pending_creds;
  struct ucred creds;
  gboolean pending_piped;   /* the pending bytes wait in the relay's pipe, not in `pending` */
  gboolean quiet;           /* the last copy read was short: no bulk to splice, skip the probe */
} Half;

/* /proc/self/fdinfo/<n> files kept open for the zero-copy probe (queued_fds).  Such a file reads
 * whatever descriptor n is at the time of the read, so one file serves any socket that gets number n;
 * a few of them, reused round robin, serve the busy halves without an open() per probe, and the
 * relay's descriptors stay two per connection (not four, as with one file per half). */
#define RELAY_FDINFO_CACHE 4
typedef struct {
  int num;                  /* the descriptor it shows; -1: unused */
  int fd;
} FdinfoFile;

struct Conn {
  Half client, server;
  UdsFlow flow;
  UdsPeer peer;
  gboolean captured_open;
  gboolean connecting;      /* upstream backlog was full; retried on the timer */
  int connect_tries;
  Conn *prev, *next;
};

struct Relay {
  const UdsRelayConfig *cfg;
  UdsCapture *cap;          /* NULL once the capture has ended (drain) */
  int epfd;
  EvTag listen_tag, signal_tag, capture_tag, timer_tag, watch_tag, progress_tag, flush_tag;
  int listen_fd, signal_fd, timer_fd, watch_fd, progress_fd;
  int flush_fd;             /* one-shot timer: write the capture CAPTURE_FLUSH_MS after output queued */
  gboolean flush_armed;
  gboolean capture_blocked; /* the last write left bytes queued: EPOLLOUT says when to go on */
  gboolean progress_shown;
  guint32 listen_mask, capture_mask;
  gboolean accept_paused;   /* EMFILE: wait for the timer instead of spinning */
  gboolean capture_paused;  /* lossless capture is full: nobody reads */
  gboolean stop;
  gboolean reader_gone;
  char *stop_reason;
  Conn *conns;
  guint nconns;
  Conn *dead;               /* closed in this epoll batch; freed after it (events may still point here) */
  gboolean timer_armed;
  const char *upstream;     /* where the server is reached: the swap's address, PATH once restored */
  UdsPeer self;
  uid_t kernel_uid;         /* what the kernel puts in SCM_CREDENTIALS of what we send */
  gid_t kernel_gid;
  gboolean privileged;
  int pipe[2];              /* zero copy: [0] read, [1] write */
  FdinfoFile fdinfo[RELAY_FDINFO_CACHE];
  guint fdinfo_next;        /* the entry a miss replaces */
  Half *pipe_owner;         /* whose pending bytes the pipe holds (then nobody else splices) */
  gboolean no_splice;       /* copy only: not a stream socket, no pipe, or the kernel cannot tell queued
                             * descriptors (no scm_fds) */
  guint8 *buf;
  GHashTable *dgram_flows;  /* datagram mode: sender address -> DgramFlow */
  UdsRelayStats *stats;
};

static void relay_close(Relay *r, Conn *c, const char *why);
static void half_update(Relay *r, Half *h);

/* ---- small helpers ---- */

static void now(struct timespec *ts)
{
  clock_gettime(CLOCK_REALTIME, ts);
}

static int ep_set(Relay *r, int fd, guint32 *cur, guint32 want, void *ptr)
{
  if (*cur == want)
    return 0;
  struct epoll_event ev = { .events = want, .data.ptr = ptr };
  int op = *cur == 0xffffffffu ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
  if (epoll_ctl(r->epfd, op, fd, &ev) < 0)
    return -1;
  *cur = want;
  return 0;
}

static void close_fds(int *fds, int n)
{
  for (int i = 0; i < n; i++)
    if (fds[i] >= 0)
      close(fds[i]);
}

/* What a passed descriptor is, for the capture: "file /etc/hosts", "socket [123] unix stream",
 * "pipe [456]", "memfd:x", "directory /tmp".  Descriptors are identified by what the kernel shows in
 * /proc, never by reading them: the relay must not consume a pipe's bytes or move a file's offset. */
static char *describe_fd(int fd)
{
  char link[PATH_MAX], proc[64];
  snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(proc, link, sizeof link - 1);
  if (n < 0)
    return g_strdup("unknown");
  link[n] = '\0';
  if (g_str_has_prefix(link, "socket:")) {
    int domain = 0, type = 0;
    socklen_t len = sizeof domain;
    getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len);
    len = sizeof type;
    getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len);
    const char *d = domain == AF_UNIX ? "unix" : domain == AF_INET ? "inet" : domain == AF_INET6 ? "inet6" :
                    domain == AF_NETLINK ? "netlink" : "other";
    const char *t = type == SOCK_STREAM ? "stream" : type == SOCK_DGRAM ? "dgram" :
                    type == SOCK_SEQPACKET ? "seqpacket" : type == SOCK_RAW ? "raw" : "other";
    return g_strdup_printf("socket %s %s %s", link + 7, d, t);
  }
  struct stat st;
  return uds_describe_fd_link(link, fstat(fd, &st) == 0 && S_ISDIR(st.st_mode));
}

/* ---- identity ---- */

/* Unprivileged, we can only connect as ourselves.  That is faithful enough - never more than the
 * client had - when the client has our uid and gid and at least our supplementary groups: the server
 * then sees a subset of the client's rights (our groups), never a superset. */
static gboolean identity_covers(const UdsPeer *client, const UdsPeer *self)
{
  if (client->uid != self->uid || client->gid != self->gid || client->ngroups < 0 || self->ngroups < 0)
    return FALSE;
  for (int i = 0; i < self->ngroups; i++) {
    gboolean found = self->groups[i] == client->gid;
    for (int j = 0; j < client->ngroups && !found; j++)
      found = client->groups[j] == self->groups[i];
    if (!found)
      return FALSE;
  }
  return TRUE;
}

/* Failing to get our identity back would leave the relay running as a client: never continue.
 * abort() ends the process; the guardian puts PATH back. */
static void identity_return(Relay *r, UdsCaps was)
{
  if (seteuid(r->self.uid) < 0)
    abort();
  /* Group install, back from a root client: uid 0 -> ours cleared the effective set (keep-caps kept
   * the permitted one). */
  uds_priv_raise(UDS_PRIV_IDENTITY);
  if (setegid(r->self.gid) < 0 || setgroups(r->self.ngroups, r->self.groups) < 0)
    abort();
  uds_priv_restore(was);
}

/* Takes who's effective ids, for one connect(): groups and gid while we still may, uid last.
 * *was: the capabilities to restore with identity_return.  FALSE with errno: we are ourselves. */
static gboolean identity_take(Relay *r, const UdsPeer *who, UdsCaps *was)
{
  *was = uds_priv_raise(UDS_PRIV_IDENTITY);
  if (setgroups(who->ngroups, who->groups) < 0 || setegid(who->gid) < 0 || seteuid(who->uid) < 0) {
    int e = errno;
    identity_return(r, *was);
    errno = e;
    return FALSE;
  }
  return TRUE;
}

/* Connects a new socket of the relay's type to the real server, as `who`.  Returns the fd, or -1
 * with errno (EAGAIN: the server's backlog is full, try again; EPERM: we may not speak as `who`).
 * The kernel checks the socket file's (and its folders') permissions at connect time with the
 * caller's fsuid, fsgid and groups, and records the euid, egid and groups as the server's
 * SO_PEERCRED / SO_PEERGROUPS: so as root we take the client's ids for the connect() only.
 * Datagram sockets are returned unbound and without SO_PASSCRED (which would autobind them):
 * dgram_flow_get decides, per sender, whether the server must be able to answer. */
static int connect_upstream(Relay *r, const UdsPeer *who)
{
  const char *path = r->upstream;
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  if (strlen(path) >= sizeof sa.sun_path) {
    errno = ENAMETOOLONG;
    return -1;
  }
  strcpy(sa.sun_path, path);

  if (who && uds_peer_unmapped(who)) {
    /* Before the same-identity test: an unnamed client may look like us, and is not. */
    uds_warn("client pid %d: its uid, gid or groups have no name in udsdump's user namespace (shown as %u:%u): "
             "refused, the server must not see another identity", (int)who->pid, (unsigned)who->uid,
             (unsigned)who->gid);
    errno = EPERM;
    return -1;
  }
  gboolean switch_id = FALSE;
  if (who && !uds_peer_same_identity(who, &r->self)) {
    if (who->ngroups < 0) {
      /* More supplementary groups than SO_PEERGROUPS could tell us: a truncated list could be
       * another identity, so refuse rather than guess. */
      uds_warn("client pid %d (uid %u) has more than %d supplementary groups: refused", (int)who->pid,
               (unsigned)who->uid, UDS_MAX_GROUPS);
      errno = EPERM;
      return -1;
    }
    if (!r->privileged) {
      if (!identity_covers(who, &r->self)) {
        errno = EPERM;
        return -1;
      }
    } else {
      switch_id = TRUE;
    }
  }
  int fd = socket(AF_UNIX, r->cfg->sock_type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  UdsCaps was = 0;
  if (switch_id && !identity_take(r, who, &was)) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
  int e = errno;
  if (switch_id)
    identity_return(r, was);
  if (rc < 0 && e != EINPROGRESS) {
    close(fd);
    errno = e;
    return -1;
  }
  /* After connect(), not before: SO_PASSCRED on an unbound socket makes connect() autobind it, and the
   * server would see an abstract address where a plain client shows none.  From here on the kernel
   * attaches the server's credentials to what it sends us, so they can be forwarded. */
  if (r->cfg->sock_type != SOCK_DGRAM) {
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one);
  }
  return fd;
}

/* ---- capture glue ---- */

static void cap_ancillary(Relay *r, UdsFlow *flow, int dir, int *fds, int nfds, const struct ucred *creds,
                          gboolean truncated, const struct timespec *ts)
{
  if (!r->cap || !flow->captured)
    return;
  g_autoptr(GPtrArray) desc = g_ptr_array_new_with_free_func(g_free);
  for (int i = 0; i < nfds; i++)
    g_ptr_array_add(desc, describe_fd(fds[i]));
  UdsAncillary anc = {
    .nfds = nfds,
    .fd_desc = (const char *const *)desc->pdata,
    .has_creds = creds != NULL,
    .pid = creds ? creds->pid : 0,
    .uid = creds ? creds->uid : 0,
    .gid = creds ? creds->gid : 0,
    .truncated = truncated,
  };
  uds_capture_conn_ancillary(r->cap, flow, dir, &anc, ts);
}

/* ---- halves ---- */

static gboolean half_wants_read(Relay *r, Half *h)
{
  return !h->eof && h->peer->pending_len == 0 && !h->peer->shut_done && !r->capture_paused &&
         !h->conn->connecting && !r->stop;
}

static void half_update(Relay *r, Half *h)
{
  if (h->fd < 0)
    return;
  guint32 want = 0;
  if (half_wants_read(r, h))
    want |= EPOLLIN;
  if (h->pending_len > 0 || h->shut_pending)
    want |= EPOLLOUT;
  /* With no interest the fd leaves the set: EPOLLHUP cannot be masked, and a half that waits for its
   * peer to drain would otherwise wake us in a loop.  Errors on it surface on the next write. */
  if (want == 0) {
    if (h->mask != 0xffffffffu)
      epoll_ctl(r->epfd, EPOLL_CTL_DEL, h->fd, NULL);
    h->mask = 0xffffffffu;
    return;
  }
  if (ep_set(r, h->fd, &h->mask, want, h) < 0)
    uds_warn("epoll_ctl: %s", g_strerror(errno));
}

static void half_free_pending(Half *h)
{
  g_clear_pointer(&h->pending, g_free);
  h->pending_len = h->pending_off = 0;
  if (h->pending_fds) {
    close_fds(h->pending_fds, h->pending_nfds);
    g_clear_pointer(&h->pending_fds, g_free);
  }
  h->pending_nfds = 0;
  h->pending_creds = FALSE;
}

static void half_shutdown_write(Half *h)
{
  if (h->fd >= 0 && !h->shut_done)
    shutdown(h->fd, SHUT_WR);
  h->shut_done = TRUE;
  h->shut_pending = FALSE;
}

/* Both directions done: close.  A direction is done when its reader hit EOF and the writer's pending
 * bytes are gone and its SHUT_WR went out. */
static gboolean conn_finished(Conn *c)
{
  return c->client.eof && c->server.eof && c->client.pending_len == 0 && c->server.pending_len == 0 &&
         !c->client.shut_pending && !c->server.shut_pending;
}

/* sendmsg() with descriptors and credentials attached to the first byte, to fd's peer or (to != NULL)
 * to an address.  Returns bytes sent, or -1 with errno. */
static ssize_t send_ancillary(int fd, const struct sockaddr_un *to, socklen_t tolen, const guint8 *data, gsize len,
                              const int *fds, int nfds, const struct ucred *creds, int flags)
{
  struct iovec iov = { .iov_base = (void *)data, .iov_len = len };
  union {
    char buf[CMSG_SPACE(sizeof(int) * RELAY_MAX_FDS_PER_MSG) + CMSG_SPACE(sizeof(struct ucred))];
    struct cmsghdr align;
  } u;
  struct msghdr msg = { .msg_name = (void *)to, .msg_namelen = to ? tolen : 0, .msg_iov = &iov, .msg_iovlen = 1 };
  gsize clen = 0;
  if (nfds > 0 || creds) {
    memset(u.buf, 0, sizeof u.buf);
    msg.msg_control = u.buf;
    msg.msg_controllen = sizeof u.buf;
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    if (nfds > 0) {
      cm->cmsg_level = SOL_SOCKET;
      cm->cmsg_type = SCM_RIGHTS;
      cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
      memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
      clen += CMSG_SPACE(sizeof(int) * nfds);
      cm = CMSG_NXTHDR(&msg, cm);
    }
    if (creds) {
      cm->cmsg_level = SOL_SOCKET;
      cm->cmsg_type = SCM_CREDENTIALS;
      cm->cmsg_len = CMSG_LEN(sizeof(struct ucred));
      memcpy(CMSG_DATA(cm), creds, sizeof *creds);
      clen += CMSG_SPACE(sizeof(struct ucred));
    }
    msg.msg_controllen = clen;
  }
  ssize_t n;
  UdsCaps was = creds ? uds_priv_raise(UDS_PRIV_IDENTITY) : 0;  /* another uid/gid: CAP_SETUID/SETGID */
  do
    n = sendmsg(fd, &msg, flags | MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (creds) {
    int e = errno;
    uds_priv_restore(was);
    errno = e;
  }
  if (n < 0 && creds && (errno == ESRCH || errno == EPERM)) {
    /* ESRCH: the process the credentials name has exited (a client that sent and quit; common with
     * datagrams).  Its uid and gid still stand, with our pid, which is what the kernel would have said
     * had we sent nothing.  EPERM: we may not name another pid (no CAP_SYS_ADMIN over the pid
     * namespace: the group install, a user namespace): its uid and gid with our pid, as for ESRCH; if
     * even that is refused, nothing explicit, and the kernel attaches ours. */
    struct ucred mine = { .pid = getpid(), .uid = creds->uid, .gid = creds->gid };
    gboolean retry_mine = creds->pid != mine.pid;
    return send_ancillary(fd, to, tolen, data, len, fds, nfds, retry_mine ? &mine : NULL, flags);
  }
  return n;
}

/* Sends data (with ancillary data) to h's socket.  Returns bytes sent, or -1 with errno. */
static ssize_t half_send(Relay *r, Half *h, const guint8 *data, gsize len, const int *fds, int nfds,
                         const struct ucred *creds)
{
  return send_ancillary(h->fd, NULL, 0, data, len, fds, nfds, creds, MSG_DONTWAIT);
}

/* Credentials to forward explicitly, or NULL to let the kernel attach ours.  Every read from a
 * socket with SO_PASSCRED carries the sender's credentials, explicit or the kernel's: forwarding them
 * as they came makes a server with SO_PASSCRED see its client's pid, uid and gid, as without us.
 * Only a privileged relay may name another process (CAP_SYS_ADMIN for the pid, CAP_SETUID/SETGID for
 * ids); the kernel has already checked that the sender could claim what it sent, so forwarding never
 * claims more than the client could.  Unprivileged, the kernel allows only our own pid: say nothing. */
static const struct ucred *creds_to_forward(Relay *r, const struct ucred *got)
{
  if (!got || !r->privileged)
    return NULL;
  if (got->pid == r->self.pid && got->uid == r->self.uid && got->gid == r->self.gid)
    return NULL;
  return got;
}

/* Splices up to n bytes from the head of the relay's pipe to fd, as many as fd takes now.  Returns
 * how many went; *err is set (else 0) when fd failed otherwise than by being full. */
static gsize pipe_give(Relay *r, int fd, gsize n, int *err)
{
  gsize sent = 0;
  *err = 0;
  while (sent < n) {
    ssize_t k = splice(r->pipe[0], NULL, fd, NULL, n - sent, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (k > 0) {
      sent += (gsize)k;
    } else if (k < 0 && errno == EINTR) {
      continue;
    } else {
      if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS)
        *err = errno;
      break;
    }
  }
  return sent;
}

/* Writes h's pending bytes.  Returns FALSE when the connection was closed. */
static gboolean half_flush(Relay *r, Half *h)
{
  if (h->pending_piped) {
    int err;
    h->pending_len -= pipe_give(r, h->fd, h->pending_len, &err);
    if (err) {
      uds_debug("conn %u: write: %s", h->conn->flow.id, g_strerror(err));
      relay_close(r, h->conn, err == EPIPE ? "peer closed" : g_strerror(err));
      return FALSE;
    }
    if (h->pending_len == 0) {
      h->pending_piped = FALSE;
      r->pipe_owner = NULL;
    }
  }
  while (h->pending_len > 0 && !h->pending_piped) {
    ssize_t n = half_send(r, h, h->pending + h->pending_off, h->pending_len, h->pending_fds, h->pending_nfds,
                          h->pending_creds ? &h->creds : NULL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
        break;
      /* The writer's far end is gone: what remains cannot be delivered (as with a direct
       * connection); stop reading the other direction's producer too. */
      uds_debug("conn %u: write: %s", h->conn->flow.id, g_strerror(errno));
      relay_close(r, h->conn, errno == EPIPE ? "peer closed" : g_strerror(errno));
      return FALSE;
    }
    if (h->pending_fds) {
      close_fds(h->pending_fds, h->pending_nfds);   /* sent: they went with the first byte */
      g_clear_pointer(&h->pending_fds, g_free);
      h->pending_nfds = 0;
    }
    /* The credentials stay: every byte must go with them, or the rest would reach the server with
     * ours. */
    h->pending_off += n;
    h->pending_len -= n;
    if (r->cfg->sock_type == SOCK_SEQPACKET)
      h->pending_len = 0;  /* a message goes whole or not at all */
  }
  if (h->pending_len == 0) {
    g_clear_pointer(&h->pending, g_free);
    h->pending_off = 0;
    h->pending_creds = FALSE;
    if (h->shut_pending)
      half_shutdown_write(h);
  }
  half_update(r, h);
  half_update(r, h->peer);
  if (conn_finished(h->conn)) {
    relay_close(r, h->conn, "done");
    return FALSE;
  }
  return TRUE;
}

/* Sends the n bytes at r->buf to o, with their descriptors and credentials.  What o's socket does not
 * take waits as o's pending bytes, with the credentials (every byte carries them) and, if nothing went,
 * the descriptors (they go with the first byte).  Returns 0 when all went, 1 when bytes wait, -1 when
 * the connection was closed.  (seqpacket: a message goes whole or waits whole.) */
static int forward(Relay *r, Half *o, gsize n, int *fds, int nfds, const struct ucred *creds)
{
  ssize_t sent = half_send(r, o, r->buf, n, fds, nfds, creds);
  if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS) {
    int e = errno;
    close_fds(fds, nfds);
    relay_close(r, o->conn, e == EPIPE ? "peer closed" : g_strerror(e));
    return -1;
  }
  if (sent == (ssize_t)n) {
    close_fds(fds, nfds);
    return 0;
  }
  gsize from = sent > 0 ? (gsize)sent : 0;
  o->pending = g_memdup2(r->buf + from, n - from);
  o->pending_len = n - from;
  o->pending_off = 0;
  if (sent < 0 && nfds > 0) {
    o->pending_fds = g_memdup2(fds, sizeof(int) * nfds);
    o->pending_nfds = nfds;
  } else {
    close_fds(fds, nfds);
  }
  if (creds) {
    o->pending_creds = TRUE;
    o->creds = *creds;
  }
  half_update(r, o);
  return 1;
}

/* EOF (or an unrecoverable read error) on h: pass the half-close on. */
static gboolean half_read_done(Relay *r, Half *h, const struct timespec *ts)
{
  h->eof = TRUE;
  if (r->cap && h->conn->flow.captured)
    uds_capture_conn_shutdown(r->cap, &h->conn->flow, h->dir, ts);
  Half *o = h->peer;
  if (o->pending_len > 0)
    o->shut_pending = TRUE;
  else if (o->eof && h->pending_len == 0 && !h->shut_pending)
    o->shut_done = TRUE;   /* the connection closes now: close() tells the peer; a shutdown adds nothing */
  else
    half_shutdown_write(o);
  if (conn_finished(h->conn)) {
    relay_close(r, h->conn, "done");
    return FALSE;
  }
  half_update(r, h);
  half_update(r, o);
  return TRUE;
}

/* ---- zero copy (see the top of this file) ---- */

static void fdinfo_drop(FdinfoFile *e)
{
  if (e->fd >= 0)
    close(e->fd);
  e->fd = e->num = -1;
}

/* The open /proc/self/fdinfo/<num> (from the cache, or opened into it); -1 when it cannot be opened. */
static int fdinfo_file(Relay *r, int num)
{
  for (int i = 0; i < RELAY_FDINFO_CACHE; i++)
    if (r->fdinfo[i].num == num)
      return r->fdinfo[i].fd;
  FdinfoFile *e = &r->fdinfo[r->fdinfo_next++ % RELAY_FDINFO_CACHE];
  fdinfo_drop(e);
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fdinfo/%d", num);
  e->fd = open(path, O_RDONLY | O_CLOEXEC);
  e->num = e->fd >= 0 ? num : -1;
  return e->fd;
}

/* The socket numbered num is being closed: its file goes too, so that an idle relay holds none. */
static void fdinfo_forget(Relay *r, int num)
{
  for (int i = 0; i < RELAY_FDINFO_CACHE; i++)
    if (r->fdinfo[i].num == num)
      fdinfo_drop(&r->fdinfo[i]);
}

/* Closes the fdinfo files: at the end, and in a forked child (they show the parent's descriptors). */
static void fdinfo_files_close(Relay *r)
{
  for (int i = 0; i < RELAY_FDINFO_CACHE; i++)
    fdinfo_drop(&r->fdinfo[i]);
}

/* Descriptors waiting in h's receive queue: 0, >0, or -1 when the kernel does not say. */
static int queued_fds(Relay *r, Half *h)
{
  int f = fdinfo_file(r, h->fd);
  if (f < 0)
    return -1;
  char buf[512];
  ssize_t n = pread(f, buf, sizeof buf - 1, 0);
  if (n <= 0)
    return -1;
  buf[n] = '\0';
  const char *p = strstr(buf, "\nscm_fds:");
  if (!p) {
    uds_debug("this kernel does not show queued descriptors (scm_fds): no zero copy");
    r->no_splice = TRUE;
    return -1;
  }
  return atoi(p + 10);
}

/* Whether bytes sent with these credentials may go out with ours (see the top of this file). */
static gboolean splice_creds_ok(Relay *r, Half *h)
{
  union {
    char buf[CMSG_SPACE(sizeof(int) * 4) + CMSG_SPACE(sizeof(struct ucred))];
    struct cmsghdr align;
  } u;
  char byte;
  struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
  struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf };
  if (recvmsg(h->fd, &msg, MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC) != 1)
    return FALSE;
  gboolean have = FALSE, ok = TRUE;
  struct ucred cr;
  for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
    if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_CREDENTIALS && cm->cmsg_len >= CMSG_LEN(sizeof cr)) {
      memcpy(&cr, CMSG_DATA(cm), sizeof cr);
      have = TRUE;
    } else if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
      /* Cannot be (scm_fds was 0 for these bytes); a peek duplicates them into us: close, and copy. */
      int k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
      for (int i = 0; i < k; i++) {
        int fd;
        memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof fd);
        close(fd);
      }
      ok = FALSE;
    }
  }
  if (!have || !ok || (msg.msg_flags & MSG_CTRUNC))
    return FALSE;
  if (r->privileged && (cr.uid != r->kernel_uid || cr.gid != r->kernel_gid))
    return FALSE;
  const UdsPeer *p = &h->conn->peer;
  if (h->dir == UDS_DIR_C2S && (cr.pid != p->pid || cr.uid != p->uid || cr.gid != p->gid))
    return FALSE;
  return TRUE;
}

/* The relay's pipe, made once at the start (stream sockets only), so that the descriptors a capture
 * holds do not depend on its traffic.  Without it, everything is copied. */
static void pipe_open(Relay *r)
{
  if (pipe2(r->pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
    uds_debug("no pipe for zero copy (%s): relayed bytes are copied", g_strerror(errno));
    r->pipe[0] = r->pipe[1] = -1;
    r->no_splice = TRUE;
    return;
  }
  /* One splice takes at most RELAY_CHUNK bytes, in up to one page per pipe slot. */
  if (fcntl(r->pipe[1], F_GETPIPE_SZ) < (1 << 20))
    fcntl(r->pipe[1], F_SETPIPE_SZ, 1 << 20);
}

/* Takes the next n bytes out of the relay's pipe into dst. */
static void pipe_take(Relay *r, guint8 *dst, gsize n)
{
  for (gsize got = 0; got < n;) {
    ssize_t k = read(r->pipe[0], dst + got, n - got);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0)
      abort();   /* our own pipe holds exactly these bytes: nothing else can happen */
    got += (gsize)k;
  }
}

/* Empties n bytes out of the pipe (their connection ended): it must be empty for the next splice. */
static void pipe_discard(Relay *r, gsize n)
{
  for (gsize k; n > 0; n -= k) {
    k = MIN(n, (gsize)RELAY_CHUNK);
    pipe_take(r, r->buf, k);
  }
}

/* Moves one splice's worth of h's queued bytes to its peer without reading them.  Returns 1 when it
 * did, -1 when the connection was closed, 0 when the copy path must take what is queued (reading at
 * most *read_max bytes). */
static int half_splice(Relay *r, Half *h, gsize *read_max)
{
  Conn *c = h->conn;
  Half *o = h->peer;
  *read_max = RELAY_CHUNK;
  if (r->no_splice || r->pipe_owner || o->fd < 0 || o->pending_len > 0 || o->shut_done)
    return 0;
  gboolean captured = r->cap && c->flow.captured;
  if (captured && !uds_capture_can_tee(r->cap, &c->flow, h->dir))
    return 0;
  *read_max = RELAY_SPLICE_MIN;
  if (h->quiet)
    return 0;   /* request/response traffic: one recvmsg, no ioctl; a full read ends the quiet */
  int inq = 0;
  if (ioctl(h->fd, SIOCINQ, &inq) < 0)
    return 0;
  if (inq < RELAY_SPLICE_MIN)
    return 0;   /* copy what is there, not what arrives meanwhile: a sender still writing has the
                 * next read find enough waiting to splice */
  if (queued_fds(r, h) != 0 || !splice_creds_ok(r, h))
    return 0;
  ssize_t m = splice(h->fd, NULL, r->pipe[1], NULL, MIN((gsize)inq, (gsize)RELAY_CHUNK),
                     SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
  if (m <= 0)
    return 0;   /* recvmsg will say why */
  struct timespec ts;
  now(&ts);
  gsize t = captured ? uds_capture_conn_tee(r->cap, &c->flow, h->dir, r->pipe[0], (gsize)m, &ts) : (gsize)m;
  if (r->stats)
    r->stats->bytes[h->dir] += m;
  int err;
  gsize sent = pipe_give(r, o->fd, t, &err);
  if (err) {
    pipe_discard(r, (gsize)m - sent);
    relay_close(r, c, err == EPIPE ? "peer closed" : g_strerror(err));
    return -1;
  }
  if (t == (gsize)m) {
    if (sent < t) {
      /* The other socket is full: the rest waits in the pipe, written when it can take more. */
      o->pending_len = t - sent;
      o->pending_piped = TRUE;
      r->pipe_owner = o;
      half_update(r, o);
    }
    if (r->stats)
      r->stats->spliced[h->dir] += t;
    return 1;
  }
  /* The capture needs the bytes it could not tee (t..m): they come out of the pipe, after those the
   * other socket did not take (sent..t), and go the copy path's way. */
  if (r->stats)
    r->stats->spliced[h->dir] += sent;
  gsize rest = (gsize)m - sent;
  pipe_take(r, r->buf, rest);
  if (captured)
    uds_capture_conn_data(r->cap, &c->flow, h->dir, r->buf + (t - sent), (gsize)m - t, &ts);
  return forward(r, o, rest, NULL, 0, NULL) < 0 ? -1 : 1;
}

/* Reads from h and forwards to its peer.  Returns FALSE when the connection was closed. */
static gboolean half_read(Relay *r, Half *h)
{
  Conn *c = h->conn;
  Half *o = h->peer;
  for (int round = 0; round < RELAY_READS_PER_WAKEUP && half_wants_read(r, h); round++) {
    gsize read_max;
    int spliced = half_splice(r, h, &read_max);
    if (spliced < 0)
      return FALSE;
    if (spliced > 0)
      continue;
    union {
      char buf[CMSG_SPACE(sizeof(int) * RELAY_MAX_FDS_PER_MSG) + CMSG_SPACE(sizeof(struct ucred))];
      struct cmsghdr align;
    } u;
    struct iovec iov = { .iov_base = r->buf, .iov_len = read_max };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf };
    ssize_t n;
    do
      n = recvmsg(h->fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    struct timespec ts;
    now(&ts);

    int fds[RELAY_MAX_FDS_PER_MSG];
    int nfds = 0;
    struct ucred creds;
    gboolean have_creds = FALSE;
    if (n >= 0) {
      for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
        if (cm->cmsg_level != SOL_SOCKET)
          continue;
        if (cm->cmsg_type == SCM_RIGHTS) {
          int k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
          for (int i = 0; i < k && nfds < RELAY_MAX_FDS_PER_MSG; i++)
            memcpy(&fds[nfds++], CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
        } else if (cm->cmsg_type == SCM_CREDENTIALS && cm->cmsg_len >= CMSG_LEN(sizeof creds)) {
          memcpy(&creds, CMSG_DATA(cm), sizeof creds);
          have_creds = TRUE;
        }
      }
      if (msg.msg_flags & MSG_CTRUNC) {
        /* Descriptors were lost on the way in: forwarding the bytes without them would alter what the
         * server receives.  End the connection, and say why. */
        uds_warn("conn %u: control data truncated (MSG_CTRUNC): closing the connection", c->flow.id);
        cap_ancillary(r, &c->flow, h->dir, fds, nfds, have_creds ? &creds : NULL, TRUE, &ts);
        close_fds(fds, nfds);
        if (r->cap && c->flow.captured)
          uds_capture_conn_reset(r->cap, &c->flow, h->dir, &ts);
        relay_close(r, c, "control data truncated");
        return FALSE;
      }
      if (msg.msg_flags & MSG_TRUNC) {
        /* A seqpacket message longer than one read (possible with a raised SO_SNDBUF): its tail is
         * gone, and a shortened message would reach the server as if whole.  Same rule. */
        uds_warn("conn %u: a message longer than %d bytes was truncated (MSG_TRUNC): closing the connection",
                 c->flow.id, RELAY_CHUNK);
        close_fds(fds, nfds);
        if (r->cap && c->flow.captured)
          uds_capture_conn_reset(r->cap, &c->flow, h->dir, &ts);
        relay_close(r, c, "message truncated");
        return FALSE;
      }
    }
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        break;
      if (errno == ECONNRESET) {
        if (r->cap && c->flow.captured)
          uds_capture_conn_reset(r->cap, &c->flow, h->dir, &ts);
        relay_close(r, c, "reset");
        return FALSE;
      }
      uds_debug("conn %u: read: %s", c->flow.id, g_strerror(errno));
      return half_read_done(r, h, &ts);
    }
    /* EOF: no bytes and no ancillary data.  With SO_PASSCRED every message carries credentials, so an
     * empty seqpacket message from a live peer is told apart from the end. */
    if (n == 0 && nfds == 0 && (r->cfg->sock_type != SOCK_SEQPACKET || !have_creds))
      return half_read_done(r, h, &ts);

    /* Every read carries credentials (SO_PASSCRED); the capture records them only when they say
     * something the OPEN frame does not: a client speaking for another process or id (explicitly,
     * or a setuid client whose real uid differs).  pid 0: the sender has exited meanwhile. */
    gboolean creds_news = have_creds && h->dir == UDS_DIR_C2S && creds.pid != 0 &&
                          (creds.pid != c->peer.pid || creds.uid != c->peer.uid || creds.gid != c->peer.gid);
    if (nfds > 0 || creds_news)
      cap_ancillary(r, &c->flow, h->dir, fds, nfds, creds_news ? &creds : NULL, FALSE, &ts);
    if (r->cap && c->flow.captured && n > 0) {
      if (r->cfg->sock_type == SOCK_SEQPACKET)
        uds_capture_message(r->cap, &c->flow, h->dir, r->buf, n, &ts);
      else
        uds_capture_conn_data(r->cap, &c->flow, h->dir, r->buf, n, &ts);
    }
    if (r->stats)
      r->stats->bytes[h->dir] += n;
    h->quiet = (gsize)n < read_max;

    int f = forward(r, o, (gsize)n, fds, nfds, have_creds ? creds_to_forward(r, &creds) : NULL);
    if (f < 0)
      return FALSE;
    /* Bytes wait on the peer half: this half stops reading until they drain.  Or a short stream read
     * emptied the queue (or stopped at a change of sender credentials, which leaves the socket
     * readable: level-triggered epoll calls again), so another read now would only say EAGAIN. */
    if (f > 0 || (r->cfg->sock_type == SOCK_STREAM && (gsize)n < read_max))
      break;
  }
  half_update(r, h);
  return TRUE;
}

/* ---- connections ---- */

static void conn_unlink(Relay *r, Conn *c)
{
  if (c->prev)
    c->prev->next = c->next;
  else
    r->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  r->nconns--;
}

/* The one place a connection ends. */
static void relay_close(Relay *r, Conn *c, const char *why)
{
  struct timespec ts;
  now(&ts);
  uds_debug("conn %u closed: %s", c->flow.id, why);
  if (r->cap && c->flow.captured && c->captured_open)
    uds_capture_conn_close(r->cap, &c->flow, &ts);
  Half *hs[2] = { &c->client, &c->server };
  for (int i = 0; i < 2; i++) {
    Half *h = hs[i];
    if (h->pending_piped) {
      pipe_discard(r, h->pending_len);
      h->pending_piped = FALSE;
      r->pipe_owner = NULL;
    }
    half_free_pending(h);
    if (h->fd >= 0) {
      if (h->mask != 0xffffffffu)
        epoll_ctl(r->epfd, EPOLL_CTL_DEL, h->fd, NULL);
      fdinfo_forget(r, h->fd);
      close(h->fd);
      h->fd = -1;
    }
  }
  conn_unlink(r, c);
  if (r->stats)
    r->stats->closed++;
  c->next = r->dead;
  r->dead = c;
}

static void free_dead(Relay *r)
{
  while (r->dead) {
    Conn *c = r->dead;
    r->dead = c->next;
    g_free(c);
  }
}

static void half_init(Half *h, Conn *c, Half *peer, int fd, int dir)
{
  h->tag.kind = EV_HALF;
  h->conn = c;
  h->peer = peer;
  h->fd = fd;
  h->dir = dir;
  h->mask = 0xffffffffu;   /* not registered yet */
  h->quiet = TRUE;          /* most connections never carry bulk: the first read does not probe */
}

/* Upstream is connected (or the fd is in progress): start relaying. */
static void conn_start(Relay *r, Conn *c, int up)
{
  struct timespec ts;
  now(&ts);
  c->connecting = FALSE;
  c->server.fd = up;
  if (r->cap) {
    UdsConnMeta meta = {
      .client = &c->peer,
      .server_pid = r->cfg->server_pid,
      .server_comm = r->cfg->server_comm,
    };
    uds_capture_conn_open(r->cap, &c->flow, &meta, &ts);
    c->captured_open = TRUE;
  }
  half_update(r, &c->client);
  half_update(r, &c->server);
  /* A client usually sends its request right after connect(), so it is often here already: forwarded
   * now, it waits in the server's queue when the server accepts, which then reads it without another
   * wakeup (and we skip an epoll round). */
  if (half_wants_read(r, &c->client))
    half_read(r, &c->client);
}

static void conn_try_connect(Relay *r, Conn *c)
{
  int up = connect_upstream(r, &c->peer);
  if (up >= 0) {
    conn_start(r, c, up);
    return;
  }
  if (errno == EAGAIN && ++c->connect_tries < RELAY_CONNECT_RETRIES && !r->stop) {
    c->connecting = TRUE;
    return;  /* the timer retries */
  }
  if (errno == EPERM && uds_peer_unmapped(&c->peer))
    ;  /* connect_upstream said why */
  else if (errno == EPERM)
    uds_warn("refused a client (pid %d, uid %u, gid %u): it differs from udsdump's identity and udsdump is not "
             "privileged, so the server would see it with udsdump's rights; run udsdump as root to relay it",
             (int)c->peer.pid, (unsigned)c->peer.uid, (unsigned)c->peer.gid);
  else
    uds_warn("connection from %s[%d]: cannot reach the server: %s", c->peer.comm, (int)c->peer.pid,
             g_strerror(errno));
  if (r->stats)
    r->stats->refused++;
  relay_close(r, c, "upstream connect failed");
}

/* SO_PASSCRED on the listener: datagrams then always say who sent them, and accepted sockets inherit
 * it from the start.  Set after accept(), bytes a client sent in between would come without
 * credentials (pid 0, the overflow uid), to be forwarded as nobody's. */
static void listen_passcred(int fd)
{
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0)
    uds_warn("SO_PASSCRED: %s", g_strerror(errno));
}

static void relay_accept(Relay *r)
{
  for (int i = 0; i < RELAY_ACCEPTS_PER_WAKEUP; i++) {
    int fd = accept4(r->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        /* Out of descriptors: stop accepting until the timer fires, rather than spin on a listener
         * that stays readable (relayd's accept_reserve idea). */
        uds_warn("accept: %s; pausing new connections", g_strerror(errno));
        r->accept_paused = TRUE;
      }
      break;
    }
    Conn *c = g_new0(Conn, 1);
    half_init(&c->client, c, &c->server, fd, UDS_DIR_C2S);
    half_init(&c->server, c, &c->client, -1, UDS_DIR_S2C);
    c->next = r->conns;
    if (r->conns)
      r->conns->prev = c;
    r->conns = c;
    r->nconns++;
    if (r->stats)
      r->stats->accepted++;
    /* SO_PASSCRED came from the listener (listen_passcred). */
    if (!uds_peer_from_fd(fd, &c->peer)) {
      uds_warn("SO_PEERCRED: %s", g_strerror(errno));
      relay_close(r, c, "no peer credentials");
      continue;
    }
    conn_try_connect(r, c);
  }
}

/* ---- datagram sockets ---- */

/* One sender address of a SOCK_DGRAM socket, with its own upstream socket (bound to an abstract
 * autobind name, so the server's replies come back to it and not to another client). */
typedef struct {
  EvTag tag;
  Relay *relay;
  int up;                   /* connected to the real server */
  guint32 mask;
  char *addr;               /* the client's bound path, NULL for unbound senders */
  gsize addrlen;
  struct sockaddr_un sa;
  UdsFlow flow;
  UdsPeer peer;
} DgramFlow;

static void dgram_flow_free(gpointer p)
{
  DgramFlow *f = p;
  if (f->up >= 0) {
    epoll_ctl(f->relay->epfd, EPOLL_CTL_DEL, f->up, NULL);
    close(f->up);
  }
  g_free(f->addr);
  g_free(f);
}

/* Whether the sender of flow f is gone, so its flow (and upstream descriptor) may go: its process
 * has exited, or the path it was bound to no longer exists.  A sender address can outlive the
 * process that bound it (a child holds the socket); such a flow is simply made again at its next
 * datagram, and only replies in flight at that moment are lost. */
static gboolean dgram_sender_gone(DgramFlow *f)
{
  if (f->peer.pid > 0 && kill(f->peer.pid, 0) < 0 && errno == ESRCH)
    return TRUE;
  struct stat st;
  return f->addr && f->addr[0] == '/' && (lstat(f->addr, &st) < 0 || !S_ISSOCK(st.st_mode));
}

/* Flows are made per sender and identity, so without this the table (and our descriptors) would grow
 * with every short-lived sender (logger(1) to /dev/log, sd_notify).  Run when the table doubles:
 * amortised O(1) per new flow.  A flow cannot be freed at once: an epoll event of the batch being
 * dispatched may still point at it.  So it is retired - its descriptor closed (which also removes it
 * from epoll), kept in the table under a key no sender can have - and freed by the next sweep, which
 * runs in a later dgram_from_client call, hence after a later epoll_wait. */
static void dgram_sweep(Relay *r)
{
  g_autoptr(GPtrArray) retired = g_ptr_array_new();
  GHashTableIter it;
  gpointer key, value;
  g_hash_table_iter_init(&it, r->dgram_flows);
  while (g_hash_table_iter_next(&it, &key, &value)) {
    DgramFlow *f = value;
    if (g_str_has_prefix(key, "x:")) {
      g_hash_table_iter_remove(&it);   /* retired by an earlier sweep: nothing can point at it now */
    } else if (dgram_sender_gone(f)) {
      if (f->up >= 0) {
        epoll_ctl(r->epfd, EPOLL_CTL_DEL, f->up, NULL);
        close(f->up);
        f->up = -1;
      }
      g_hash_table_iter_steal(&it);
      g_free(key);
      g_ptr_array_add(retired, f);
    }
  }
  for (guint i = 0; i < retired->len; i++)
    g_hash_table_insert(r->dgram_flows, g_strdup_printf("x:%p", retired->pdata[i]), retired->pdata[i]);
  if (retired->len)
    uds_debug("datagram flows: %u retired, %u kept", retired->len, g_hash_table_size(r->dgram_flows) - retired->len);
}

/* The flow of a datagram's sender, made on its first datagram.  NULL when the datagram must be dropped
 * (the sender may not reach the server through us; said once per sender).
 *
 * A flow is one sender address *and identity*: the upstream socket was connected with the sender's
 * uid and gid, so a path later bound by another user (or a sender that changed ids) gets its own.
 * Groups are not carried by SCM_CREDENTIALS: the upstream is connected with the sender's uid and gid
 * and no supplementary groups, which never exceeds what it had (a sender that needs a group to reach
 * the server is refused: docs/identity.md).
 *
 * A bound sender's upstream socket is autobound to a private abstract name, so the server's replies
 * come back to this flow and go on to the sender's own address.  An unbound sender's upstream stays
 * unbound, as the sender was: the server sees no address and cannot answer, exactly as without us;
 * such flows are kept per process, so the capture still tells senders apart. */
static DgramFlow *dgram_flow_get(Relay *r, const struct sockaddr_un *from, socklen_t fromlen, const struct ucred *cr,
                                 gboolean *swept)
{
  const gsize off = offsetof(struct sockaddr_un, sun_path);
  gsize plen = fromlen > off ? fromlen - off : 0;
  gboolean abstract = plen > 0 && from->sun_path[0] == '\0';
  if (plen && !abstract)
    plen = strnlen(from->sun_path, plen);   /* "path" and "path\0" are the same address */
  g_autofree char *key = NULL;
  if (plen) {
    g_autofree char *hex = g_malloc(2 * plen + 1);
    for (gsize i = 0; i < plen; i++)
      snprintf(hex + 2 * i, 3, "%02x", (guint8)from->sun_path[i]);
    key = g_strdup_printf("a:%u:%u:%s", (unsigned)cr->uid, (unsigned)cr->gid, hex);
  } else {
    key = g_strdup_printf("u:%u:%u:%d", (unsigned)cr->uid, (unsigned)cr->gid, (int)cr->pid);
  }
  DgramFlow *f = g_hash_table_lookup(r->dgram_flows, key);
  if (f)
    return f->up >= 0 ? f : NULL;

  guint size = g_hash_table_size(r->dgram_flows);
  if (!*swept && size >= 64 && (size & (size - 1)) == 0) {
    *swept = TRUE;
    dgram_sweep(r);
  }

  f = g_new0(DgramFlow, 1);
  f->tag.kind = EV_DGRAM_UP;
  f->relay = r;
  f->up = -1;
  f->mask = 0xffffffffu;
  f->peer.pid = cr->pid;
  f->peer.uid = cr->uid;
  f->peer.gid = cr->gid;
  f->peer.ngroups = 0;
  g_autofree char *comm = uds_proc_comm(uds_proc_root(), cr->pid);
  if (comm)
    g_strlcpy(f->peer.comm, comm, sizeof f->peer.comm);
  if (plen) {
    f->sa = *from;
    f->addrlen = fromlen;
    if (abstract) {
      /* "@name", NULs shown as '@' (as ss(8) does): for the capture and the log. */
      f->addr = g_malloc(plen + 1);
      for (gsize i = 0; i < plen; i++)
        f->addr[i] = from->sun_path[i] ? from->sun_path[i] : '@';
      f->addr[plen] = '\0';
    } else {
      f->addr = g_strndup(from->sun_path, plen);
    }
  }
  int up = connect_upstream(r, &f->peer);
  if (up < 0) {
    int e = errno;
    if (e == EPERM && uds_peer_unmapped(&f->peer))
      ;  /* connect_upstream said why */
    else if (e == EPERM)
      uds_warn("refused a datagram sender (%s[%d], uid %u, gid %u): it differs from udsdump's identity and udsdump "
               "is not privileged; its datagrams are dropped", f->peer.comm, (int)cr->pid, (unsigned)cr->uid,
               (unsigned)cr->gid);
    else
      uds_warn("datagram sender %s[%d] (uid %u) cannot reach the server: %s; its datagrams are dropped",
               f->peer.comm, (int)cr->pid, (unsigned)cr->uid, g_strerror(e));
    if (r->stats)
      r->stats->refused++;
    if (e == EAGAIN || e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM || e == ENOENT ||
        e == ECONNREFUSED) {
      /* Transient (or the server is being restarted): try again with the next datagram. */
      g_free(f->addr);
      g_free(f);
      return NULL;
    }
    /* Remembered, so the next datagrams are dropped without a word each; swept with the sender. */
    g_hash_table_insert(r->dgram_flows, g_steal_pointer(&key), f);
    return NULL;
  }
  if (plen) {
    struct sockaddr_un any = { .sun_family = AF_UNIX };
    int one = 1;
    if (bind(up, (struct sockaddr *)&any, sizeof(sa_family_t)) < 0)
      uds_warn("datagram flow for %s: cannot bind a reply address (%s): the server cannot answer it", f->addr,
               g_strerror(errno));
    setsockopt(up, SOL_SOCKET, SO_PASSCRED, &one, sizeof one);   /* the server's credentials, to forward */
  }
  f->up = up;
  struct epoll_event ev = { .events = EPOLLIN, .data.ptr = f };
  epoll_ctl(r->epfd, EPOLL_CTL_ADD, up, &ev);
  f->mask = EPOLLIN;
  g_hash_table_insert(r->dgram_flows, g_steal_pointer(&key), f);
  if (r->stats)
    r->stats->accepted++;   /* a new sender: the summary's "connections" */
  if (r->cap) {
    struct timespec ts;
    now(&ts);
    UdsConnMeta meta = { .client = &f->peer, .server_pid = r->cfg->server_pid,
                         .server_comm = r->cfg->server_comm, .client_addr = f->addr };
    uds_capture_conn_open(r->cap, &f->flow, &meta, &ts);
  }
  return f;
}

/* Reads a datagram's descriptors and credentials. */
static void dgram_parse_control(struct msghdr *msg, int *fds, int *nfds, struct ucred *cr, gboolean *have_cr)
{
  *nfds = 0;
  *have_cr = FALSE;
  for (struct cmsghdr *cm = CMSG_FIRSTHDR(msg); cm; cm = CMSG_NXTHDR(msg, cm)) {
    if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
      int k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
      for (int j = 0; j < k && *nfds < RELAY_MAX_FDS_PER_MSG; j++)
        memcpy(&fds[(*nfds)++], CMSG_DATA(cm) + j * sizeof(int), sizeof(int));
    } else if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_CREDENTIALS &&
               cm->cmsg_len >= CMSG_LEN(sizeof *cr)) {
      memcpy(cr, CMSG_DATA(cm), sizeof *cr);
      *have_cr = TRUE;
    }
  }
}

static void dgram_replies(Relay *r, DgramFlow *f, guint8 *buf);

/* The server's queue is full (a datagram socket's sender blocks there, as our clients would without
 * us): wait until f's upstream can take a datagram, relaying the server's replies meanwhile - the
 * server may itself be blocked sending us replies we have not read.  FALSE after DGRAM_WAIT_MS. */
static gboolean dgram_wait_upstream(Relay *r, DgramFlow *f)
{
  g_autofree guint8 *scratch = NULL;   /* r->buf holds the datagram waiting to go */
  gint64 deadline = g_get_monotonic_time() + DGRAM_WAIT_MS * 1000;
  for (;;) {
    gint64 left = (deadline - g_get_monotonic_time()) / 1000;
    if (left <= 0)
      return FALSE;
    g_autoptr(GArray) pfds = g_array_new(FALSE, FALSE, sizeof(struct pollfd));
    g_autoptr(GPtrArray) flows = g_ptr_array_new();
    struct pollfd p = { .fd = f->up, .events = POLLOUT };
    g_array_append_val(pfds, p);
    g_ptr_array_add(flows, f);
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, r->dgram_flows);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
      DgramFlow *g = value;
      if (g->up >= 0 && g->addr) {
        struct pollfd q = { .fd = g->up, .events = POLLIN };
        g_array_append_val(pfds, q);
        g_ptr_array_add(flows, g);
      }
    }
    int n = poll((struct pollfd *)pfds->data, pfds->len, (int)left);
    if (n < 0 && errno != EINTR)
      return FALSE;
    struct pollfd *ps = (struct pollfd *)pfds->data;
    if (ps[0].revents & (POLLOUT | POLLERR | POLLHUP))
      return TRUE;   /* writable, or an error the next send reports */
    for (guint i = 1; i < pfds->len; i++) {
      if (ps[i].revents & (POLLIN | POLLERR | POLLHUP)) {
        if (!scratch)
          scratch = g_malloc(DGRAM_MAX);
        dgram_replies(r, flows->pdata[i], scratch);
      }
    }
  }
}

/* A datagram from a client to PATH: forward it whole, with its descriptors and (privileged) the
 * sender's credentials, so a server with SO_PASSCRED (journald) sees the sender's pid, uid, gid. */
static void dgram_from_client(Relay *r)
{
  gboolean swept = FALSE;
  for (int i = 0; i < RELAY_ACCEPTS_PER_WAKEUP && !r->capture_paused && r->listen_fd >= 0; i++) {
    struct sockaddr_un from;
    union {
      char buf[CMSG_SPACE(sizeof(int) * RELAY_MAX_FDS_PER_MSG) + CMSG_SPACE(sizeof(struct ucred))];
      struct cmsghdr align;
    } u;
    struct iovec iov = { .iov_base = r->buf, .iov_len = DGRAM_MAX };
    struct msghdr msg = { .msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &iov, .msg_iovlen = 1,
                          .msg_control = u.buf, .msg_controllen = sizeof u.buf };
    ssize_t n = recvmsg(r->listen_fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0)
      return;
    struct timespec ts;
    now(&ts);
    int fds[RELAY_MAX_FDS_PER_MSG], nfds;
    struct ucred cr;
    gboolean have_cr;
    dgram_parse_control(&msg, fds, &nfds, &cr, &have_cr);
    gboolean truncated = (msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC)) != 0;
    if (truncated) {
      /* Before looking up the flow: the descriptors that did arrive may be what exhausted ours. */
      close_fds(fds, nfds);
      if (msg.msg_flags & MSG_TRUNC)
        uds_warn("a datagram longer than %d bytes was truncated on the way in (MSG_TRUNC): dropped", DGRAM_MAX);
      else
        uds_warn("a datagram's control data was truncated on the way in (MSG_CTRUNC: more descriptors than udsdump "
                 "could take): dropped");
    }
    if (!have_cr) {
      /* The listening socket has SO_PASSCRED: the kernel always says who sent it. */
      close_fds(fds, truncated ? 0 : nfds);
      uds_warn("a datagram came without credentials: dropped");
      continue;
    }
    DgramFlow *f = dgram_flow_get(r, &from, msg.msg_namelen, &cr, &swept);
    if (!f || truncated) {
      if (f)
        cap_ancillary(r, &f->flow, UDS_DIR_C2S, fds, 0, &cr, TRUE, &ts);
      if (!truncated)
        close_fds(fds, nfds);
      continue;
    }
    const struct ucred *fwd = creds_to_forward(r, &cr);
    ssize_t s = send_ancillary(f->up, NULL, 0, r->buf, n, fds, nfds, fwd, MSG_DONTWAIT);
    for (int tries = 0; s < 0 && tries < 2; tries++) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (!dgram_wait_upstream(r, f))
          break;
      } else if (errno == ECONNREFUSED || errno == ECONNRESET || errno == ENOTCONN) {
        /* The server's socket went away (it restarts, and the relay follows the new one): connect
         * this flow again, as the same sender. */
        int up = connect_upstream(r, &f->peer);
        if (up < 0)
          break;
        if (f->addr) {
          struct sockaddr_un any = { .sun_family = AF_UNIX };
          int one = 1;
          bind(up, (struct sockaddr *)&any, sizeof(sa_family_t));
          setsockopt(up, SOL_SOCKET, SO_PASSCRED, &one, sizeof one);
        }
        epoll_ctl(r->epfd, EPOLL_CTL_DEL, f->up, NULL);
        close(f->up);
        f->up = up;
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = f };
        epoll_ctl(r->epfd, EPOLL_CTL_ADD, up, &ev);
      } else {
        break;
      }
      s = send_ancillary(f->up, NULL, 0, r->buf, n, fds, nfds, fwd, MSG_DONTWAIT);
    }
    if (s < 0) {
      uds_warn("a datagram of %zd bytes from %s[%d] to the server was lost: %s", n, f->peer.comm, (int)cr.pid,
               g_strerror(errno));
    } else {
      gboolean creds_news = cr.pid != 0 && cr.pid != f->peer.pid;
      if (nfds || creds_news)
        cap_ancillary(r, &f->flow, UDS_DIR_C2S, fds, nfds, creds_news ? &cr : NULL, FALSE, &ts);
      if (r->cap && f->flow.captured)
        uds_capture_message(r->cap, &f->flow, UDS_DIR_C2S, r->buf, n, &ts);
      if (r->stats)
        r->stats->bytes[UDS_DIR_C2S] += n;
    }
    close_fds(fds, nfds);
  }
}

/* Sends a reply to a client's address, waiting at most DGRAM_WAIT_MS for room in its queue (a
 * datagram server's sendto would have blocked there).  The relay socket is not connected, so there is
 * no readiness to poll: a blocking send with a timeout waits on exactly that receiver. */
static ssize_t dgram_send_reply(Relay *r, DgramFlow *f, const guint8 *data, gsize n, const int *fds, int nfds,
                                const struct ucred *creds)
{
  ssize_t s = send_ancillary(r->listen_fd, &f->sa, f->addrlen, data, n, fds, nfds, creds, MSG_DONTWAIT);
  if (s >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
    return s;
  int fl = fcntl(r->listen_fd, F_GETFL);
  struct timeval tv = { .tv_sec = DGRAM_WAIT_MS / 1000, .tv_usec = (DGRAM_WAIT_MS % 1000) * 1000 };
  setsockopt(r->listen_fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  fcntl(r->listen_fd, F_SETFL, fl & ~O_NONBLOCK);
  s = send_ancillary(r->listen_fd, &f->sa, f->addrlen, data, n, fds, nfds, creds, 0);
  int e = errno;
  fcntl(r->listen_fd, F_SETFL, fl);
  errno = e;
  return s;
}

/* Replies from the server to one flow: on to the client's bound address, with their descriptors and
 * (privileged) the server's credentials.  buf: DGRAM_MAX bytes of scratch. */
static void dgram_replies(Relay *r, DgramFlow *f, guint8 *buf)
{
  for (int i = 0; i < RELAY_READS_PER_WAKEUP && f->up >= 0; i++) {
    union {
      char buf[CMSG_SPACE(sizeof(int) * RELAY_MAX_FDS_PER_MSG) + CMSG_SPACE(sizeof(struct ucred))];
      struct cmsghdr align;
    } u;
    struct iovec iov = { .iov_base = buf, .iov_len = DGRAM_MAX };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf };
    ssize_t n = recvmsg(f->up, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0)
      return;   /* EAGAIN; or the server's socket went away, reported once and cleared by this read */
    struct timespec ts;
    now(&ts);
    int fds[RELAY_MAX_FDS_PER_MSG], nfds;
    struct ucred cr;
    gboolean have_cr;
    dgram_parse_control(&msg, fds, &nfds, &cr, &have_cr);
    if (msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC)) {
      uds_warn("a reply from the server to %s was truncated on the way in (%s): dropped", f->addr ? f->addr : "?",
               msg.msg_flags & MSG_TRUNC ? "too long" : "control data");
      cap_ancillary(r, &f->flow, UDS_DIR_S2C, fds, 0, NULL, TRUE, &ts);
      close_fds(fds, nfds);
      continue;
    }
    if (!f->addr) {
      close_fds(fds, nfds);   /* cannot happen: an unbound flow has no address to answer */
      continue;
    }
    ssize_t s = dgram_send_reply(r, f, buf, n, fds, nfds, have_cr ? creds_to_forward(r, &cr) : NULL);
    if (s < 0) {
      /* ECONNREFUSED / ENOENT: the client is gone (its socket closed, its path removed). */
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        uds_warn("a reply of %zd bytes to %s was lost: the client did not read for %d ms", n, f->addr, DGRAM_WAIT_MS);
      else
        uds_debug("a reply of %zd bytes to %s was lost: %s", n, f->addr, g_strerror(errno));
    } else {
      if (nfds)
        cap_ancillary(r, &f->flow, UDS_DIR_S2C, fds, nfds, NULL, FALSE, &ts);
      if (r->cap && f->flow.captured)
        uds_capture_message(r->cap, &f->flow, UDS_DIR_S2C, buf, n, &ts);
      if (r->stats)
        r->stats->bytes[UDS_DIR_S2C] += n;
    }
    close_fds(fds, nfds);
  }
}

/* A reply from the server to one client. */
static void dgram_from_server(Relay *r, DgramFlow *f)
{
  dgram_replies(r, f, r->buf);
}

/* ---- loop ---- */

static void relay_set_paused(Relay *r, gboolean paused)
{
  if (r->capture_paused == paused)
    return;
  r->capture_paused = paused;
  for (Conn *c = r->conns; c; c = c->next) {
    half_update(r, &c->client);
    half_update(r, &c->server);
  }
}

static void update_listener(Relay *r)
{
  if (r->listen_fd < 0)
    return;
  guint32 want = (r->accept_paused || r->stop || (r->capture_paused && r->cfg->sock_type == SOCK_DGRAM)) ? 0 : EPOLLIN;
  ep_set(r, r->listen_fd, &r->listen_mask, want, &r->listen_tag);
}

static void update_capture(Relay *r)
{
  if (!r->cap || r->capture_mask == 0xfffffffeu)
    return;  /* 0xfffffffe: a regular file, not pollable */
  /* Writability matters only while the reader is behind; queued output it has room for waits for
   * the flush timer instead (a pipe with room is always writable: EPOLLOUT would fire at once). */
  guint32 want = r->capture_blocked && uds_capture_wants_write(r->cap) ? EPOLLOUT : 0;
  if (ep_set(r, uds_capture_fd(r->cap), &r->capture_mask, want, &r->capture_tag) < 0)
    r->capture_mask = 0xfffffffeu;
}

static void flush_capture(Relay *r)
{
  if (!r->cap)
    return;
  if (uds_capture_flush(r->cap) < 0 && errno != EAGAIN) {
    if (!r->stop)
      uds_info("capture reader went away (%s): stopping", g_strerror(errno));
    r->reader_gone = TRUE;
    r->stop = TRUE;
    return;
  }
  r->capture_blocked = uds_capture_wants_write(r->cap);
  if (uds_capture_done(r->cap))
    r->stop = TRUE;
  relay_set_paused(r, uds_capture_full(r->cap));
}

/* After an epoll batch: write the capture now if it is due (enough queued, lossless and full, the
 * frame limit reached, stopping), else make sure the flush timer will.  While the reader is behind
 * (capture_blocked), EPOLLOUT drives the writes. */
static void schedule_capture(Relay *r)
{
  if (!r->cap)
    return;
  if (r->capture_blocked) {
    /* Lossless: reads of this batch may have filled the buffer while the reader is behind; stop
     * reading now, not at the reader's next EPOLLOUT (until then the queue would grow unbounded). */
    relay_set_paused(r, uds_capture_full(r->cap));
    return;
  }
  if (!uds_capture_wants_write(r->cap))
    return;
  if (uds_capture_flush_due(r->cap) || uds_capture_full(r->cap) || uds_capture_done(r->cap) || r->stop) {
    flush_capture(r);
  } else if (!r->flush_armed) {
    struct itimerspec its = { .it_value.tv_nsec = CAPTURE_FLUSH_MS * 1000000L };
    if (timerfd_settime(r->flush_fd, 0, &its, NULL) == 0)
      r->flush_armed = TRUE;
    else
      flush_capture(r);   /* no timer: write now, as before */
  }
}

static void on_flush_timer(Relay *r)
{
  guint64 ticks;
  if (read(r->flush_fd, &ticks, sizeof ticks) < 0) {
    /* nothing: spurious */
  }
  r->flush_armed = FALSE;
  flush_capture(r);
}

static void on_timer(Relay *r)
{
  guint64 ticks;
  if (read(r->timer_fd, &ticks, sizeof ticks) < 0) {
    /* nothing: spurious */
  }
  r->accept_paused = FALSE;
  update_listener(r);
  Conn *next;
  for (Conn *c = r->conns; c; c = next) {
    next = c->next;
    if (c->connecting)
      conn_try_connect(r, c);
  }
}

static gboolean need_timer(Relay *r)
{
  if (r->accept_paused)
    return TRUE;
  for (Conn *c = r->conns; c; c = c->next)
    if (c->connecting)
      return TRUE;
  return FALSE;
}

static void arm_timer(Relay *r)
{
  gboolean want = need_timer(r);
  if (want == r->timer_armed)
    return;
  struct itimerspec its = { 0 };
  if (want)
    its.it_value.tv_nsec = its.it_interval.tv_nsec = RELAY_TICK_MS * 1000000L;
  timerfd_settime(r->timer_fd, 0, &its, NULL);
  r->timer_armed = want;
}

static void on_signal(Relay *r)
{
  struct signalfd_siginfo si;
  while (read(r->signal_fd, &si, sizeof si) == sizeof si) {
    if (!r->stop) {
      g_free(r->stop_reason);
      r->stop_reason = g_strdup(strsignal((int)si.ssi_signo));
    }
    r->stop = TRUE;
  }
}

static void on_watch(Relay *r)
{
  if (!r->cfg->swap)
    return;
  const char *ended = uds_swap_ended(r->cfg->swap);
  if (ended && !r->stop) {
    uds_warn("%s", ended);
    g_free(r->stop_reason);
    r->stop_reason = g_strdup(ended);
    r->stop = TRUE;
  }
  int newfd = -1;
  g_autoptr(GError) err = NULL;
  if (!uds_swap_path_replaced(r->cfg->swap, &newfd, &err))
    return;
  uds_warn("the server re-created %s during the capture%s", r->cfg->path,
           newfd >= 0 ? "; following the new socket" : "; new connections now go to it directly, uncaptured");
  if (err)
    uds_warn("%s", err->message);
  if (r->listen_fd >= 0) {
    /* Connections already queued on the old relay socket still deserve an answer. */
    relay_accept(r);
    epoll_ctl(r->epfd, EPOLL_CTL_DEL, r->listen_fd, NULL);
    close(r->listen_fd);
  }
  r->listen_fd = newfd;
  if (newfd >= 0)
    listen_passcred(newfd);
  r->listen_mask = 0xffffffffu;
  update_listener(r);
}

/* A terminal's progress line: once a second, overwritten in place. */
static void on_progress(Relay *r)
{
  guint64 ticks;
  if (read(r->progress_fd, &ticks, sizeof ticks) < 0 || !r->stats)
    return;
  UdsCaptureStats cs = { 0 };
  if (r->cap)
    uds_capture_stats(r->cap, &cs);
  fprintf(stderr, "\rudsdump: %u open, %" G_GUINT64_FORMAT " connections, %" G_GUINT64_FORMAT " bytes, %"
          G_GUINT64_FORMAT " frames, %" G_GUINT64_FORMAT " dropped ", r->nconns, r->stats->accepted,
          r->stats->bytes[0] + r->stats->bytes[1], cs.frames, cs.dropped_frames);
  fflush(stderr);
  r->progress_shown = TRUE;
}

static void dispatch(Relay *r, struct epoll_event *ev)
{
  EvTag *tag = ev->data.ptr;
  switch (tag->kind) {
  case EV_HALF: {
    Half *h = (Half *)tag;
    if (h->fd < 0)
      return;  /* its connection closed earlier in this batch */
    /* Writes first: they make room that lets the other direction read. */
    if ((ev->events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && (h->pending_len > 0 || h->shut_pending)) {
      if (h->pending_len > 0) {
        if (!half_flush(r, h))
          return;
      } else {
        half_shutdown_write(h);
        half_update(r, h);
        if (conn_finished(h->conn)) {
          relay_close(r, h->conn, "done");
          return;
        }
      }
    }
    if ((ev->events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && half_wants_read(r, h))
      half_read(r, h);
    break;
  }
  case EV_LISTEN:
    if (r->cfg->sock_type == SOCK_DGRAM)
      dgram_from_client(r);
    else
      relay_accept(r);
    break;
  case EV_DGRAM_UP:
    dgram_from_server(r, (DgramFlow *)tag);
    break;
  case EV_SIGNAL:
    on_signal(r);
    break;
  case EV_CAPTURE:
    if (ev->events & (EPOLLERR | EPOLLHUP)) {
      if (!r->stop)
        uds_info("capture reader went away: stopping");
      r->reader_gone = TRUE;
      r->stop = TRUE;
    } else {
      flush_capture(r);
    }
    break;
  case EV_TIMER:
    on_timer(r);
    break;
  case EV_PROGRESS:
    on_progress(r);
    break;
  case EV_FLUSH:
    on_flush_timer(r);
    break;
  case EV_WATCH:
    on_watch(r);
    break;
  }
}

static void loop_once(Relay *r, int timeout_ms)
{
  struct epoll_event evs[64];
  update_capture(r);
  arm_timer(r);
  int n = epoll_wait(r->epfd, evs, G_N_ELEMENTS(evs), timeout_ms);
  if (n < 0 && errno != EINTR) {
    uds_error("epoll_wait: %s", g_strerror(errno));
    r->stop = TRUE;
    return;
  }
  /* A close in one event must not free what a later event of this batch points at: relay_close
   * sets the halves' fds to -1 (dispatch skips them) and free_dead releases them after the batch. */
  for (int i = 0; i < n; i++)
    dispatch(r, &evs[i]);
  free_dead(r);
  schedule_capture(r);
}

static int make_signalfd(void)
{
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  sigprocmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);
  return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

static void raise_nofile(void)
{
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

/* The connections still open go on in a detached process: own session, stdio on /dev/null, no capture,
 * no listener.  It exits when the last one ends.  Returns TRUE in the parent. */
static gboolean hand_over_to_drain(Relay *r)
{
  /* Pending bytes in the pipe move to memory first: after the fork both processes share the pipe,
   * and the parent, closing its copies of the connections, would empty it under the drain. */
  Half *po = r->pipe_owner;
  if (po) {
    po->pending = g_malloc(po->pending_len);
    pipe_take(r, po->pending, po->pending_len);
    po->pending_off = 0;
    po->pending_piped = FALSE;
    r->pipe_owner = NULL;
  }
  pid_t pid = fork();
  if (pid < 0) {
    uds_warn("cannot start the drain process (%s): closing %u open connections", g_strerror(errno), r->nconns);
    return TRUE;
  }
  if (pid > 0) {
    int status;
    waitpid(pid, &status, 0);  /* the intermediate child exits at once */
    return TRUE;
  }
  /* Intermediate child: a new session, then fork again so the drain is nobody's child to reap. */
  setsid();
  pid = fork();
  if (pid != 0)
    _exit(0);
  int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull >= 0) {
    dup2(devnull, 0);
    dup2(devnull, 1);
    dup2(devnull, 2);
    if (devnull > 2)
      close(devnull);
  }
  uds_log_close();
  if (r->cap) {
    close(uds_capture_fd(r->cap));
    r->cap = NULL;  /* the parent owns and frees the capture; the drain just forgets it */
  }
  close(r->signal_fd);
  r->signal_fd = -1;
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_UNBLOCK, &all, NULL);  /* the drain dies of SIGTERM like any process */
  /* An epoll instance is shared across fork: the parent closing its copies of the connections would
   * remove them from our set too.  The drain starts a set of its own. */
  close(r->epfd);
  r->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (r->epfd < 0)
    _exit(1);
  r->watch_fd = -1;
  guint32 m = 0xffffffffu;
  ep_set(r, r->timer_fd, &m, EPOLLIN, &r->timer_tag);
  r->stop = FALSE;
  r->stats = NULL;
  r->self.pid = getpid();   /* forwarded credentials naming "us" are the drain's now */
  /* Group install: the drain never touches the folder or /proc of others again; it only forwards
   * clients' credentials (and may connect a datagram sender as itself). */
  uds_priv_keep_only(UDS_PRIV_IDENTITY);
  /* /proc/self of the parent: this process must open its own.  (The pipe is empty between reads;
   * the parent, which shares it, no longer uses it.) */
  fdinfo_files_close(r);
  for (Conn *c = r->conns; c; c = c->next) {
    c->flow.captured = FALSE;
    c->client.mask = c->server.mask = 0xffffffffu;
    half_update(r, &c->client);
    half_update(r, &c->server);
  }
  while (r->nconns > 0)
    loop_once(r, -1);
  _exit(0);
}

/* The loop's own resources; the connections are gone by now (closed or handed to the drain). */
static void relay_release(Relay *r)
{
  g_clear_pointer(&r->dgram_flows, g_hash_table_destroy);
  if (r->epfd >= 0)
    close(r->epfd);
  if (r->signal_fd >= 0)
    close(r->signal_fd);
  if (r->timer_fd >= 0)
    close(r->timer_fd);
  if (r->flush_fd >= 0)
    close(r->flush_fd);
  for (int i = 0; i < 2; i++)
    if (r->pipe[i] >= 0)
      close(r->pipe[i]);
  fdinfo_files_close(r);
  g_free(r->buf);
  g_free(r->stop_reason);
}

gboolean uds_relay_run(const UdsRelayConfig *cfg, UdsRelayStats *stats, GError **error)
{
  Relay rr = { 0 }, *r = &rr;
  r->cfg = cfg;
  r->cap = cfg->capture;
  r->listen_fd = cfg->listen_fd;
  r->stats = stats;
  r->listen_tag.kind = EV_LISTEN;
  r->signal_tag.kind = EV_SIGNAL;
  r->capture_tag.kind = EV_CAPTURE;
  r->timer_tag.kind = EV_TIMER;
  r->watch_tag.kind = EV_WATCH;
  r->progress_tag.kind = EV_PROGRESS;
  r->flush_tag.kind = EV_FLUSH;
  r->flush_fd = -1;
  r->progress_fd = -1;
  r->listen_mask = r->capture_mask = 0xffffffffu;
  r->upstream = cfg->upstream;
  uds_peer_self(&r->self);
  r->kernel_uid = getuid();
  r->kernel_gid = getgid();
  r->privileged = uds_priv_has(UDS_PRIV_IDENTITY);
  r->pipe[0] = r->pipe[1] = -1;
  for (int i = 0; i < RELAY_FDINFO_CACHE; i++)
    r->fdinfo[i].fd = r->fdinfo[i].num = -1;
  r->no_splice = TRUE;
  r->buf = g_malloc(MAX(RELAY_CHUNK, DGRAM_MAX));
  r->dgram_flows = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, dgram_flow_free);
  raise_nofile();

  r->epfd = epoll_create1(EPOLL_CLOEXEC);
  r->signal_fd = make_signalfd();
  r->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  r->flush_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (r->epfd < 0 || r->signal_fd < 0 || r->timer_fd < 0 || r->flush_fd < 0) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_SYSTEM, "cannot set up the event loop: %s", g_strerror(errno));
    relay_release(r);
    return FALSE;
  }
  if (cfg->sock_type == SOCK_STREAM) {
    r->no_splice = FALSE;
    pipe_open(r);
  }
  listen_passcred(r->listen_fd);
  guint32 m = 0xffffffffu;
  ep_set(r, r->signal_fd, &m, EPOLLIN, &r->signal_tag);
  m = 0xffffffffu;
  ep_set(r, r->timer_fd, &m, EPOLLIN, &r->timer_tag);
  m = 0xffffffffu;
  ep_set(r, r->flush_fd, &m, EPOLLIN, &r->flush_tag);
  r->watch_fd = cfg->swap ? uds_swap_watch_fd(cfg->swap) : -1;
  if (r->watch_fd >= 0) {
    m = 0xffffffffu;
    ep_set(r, r->watch_fd, &m, EPOLLIN, &r->watch_tag);
  }
  if (cfg->progress) {
    r->progress_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct itimerspec its = { .it_value.tv_sec = 1, .it_interval.tv_sec = 1 };
    m = 0xffffffffu;
    if (r->progress_fd >= 0 && timerfd_settime(r->progress_fd, 0, &its, NULL) == 0)
      ep_set(r, r->progress_fd, &m, EPOLLIN, &r->progress_tag);
  }
  update_listener(r);
  if (r->cap) {
    /* Register the capture fd with no interest: EPOLLERR tells us the reader left even when idle
     * (sshdump's channel closing while nothing is relayed).  Regular files cannot be polled. */
    guint32 want = 0;
    struct epoll_event ev = { .events = want, .data.ptr = &r->capture_tag };
    if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, uds_capture_fd(r->cap), &ev) == 0)
      r->capture_mask = want;
    else
      r->capture_mask = 0xfffffffeu;
    flush_capture(r);
  }

  while (!r->stop)
    loop_once(r, -1);

  if (r->progress_fd >= 0) {
    close(r->progress_fd);  /* also leaves the epoll set, so the drain never inherits it */
    r->progress_fd = -1;
  }
  if (r->progress_shown)
    fputc('\n', stderr);
  /* ---- stop: PATH first, then the backlog, then the capture, then the open connections ---- */
  if (r->stats)
    uds_debug("zero copy moved %" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT " bytes to the server, %" G_GUINT64_FORMAT
              " of %" G_GUINT64_FORMAT " back", r->stats->spliced[0], r->stats->bytes[0], r->stats->spliced[1],
              r->stats->bytes[1]);
  uds_info("stopping: %s", r->stop_reason ? r->stop_reason : r->reader_gone ? "capture reader went away" : "done");
  gboolean ok = TRUE;
  if (cfg->swap) {
    g_autoptr(GError) rerr = NULL;
    if (!uds_swap_restore(cfg->swap, &rerr)) {
      uds_error("%s", rerr->message);
      ok = FALSE;
    } else {
      r->upstream = cfg->path;  /* the real socket is at PATH again */
    }
  }
  if (r->listen_fd >= 0) {
    if (cfg->sock_type != SOCK_DGRAM) {
      r->stop = FALSE;
      relay_accept(r);  /* clients already queued on the relay socket are served, not reset */
      r->stop = TRUE;
    }
    epoll_ctl(r->epfd, EPOLL_CTL_DEL, r->listen_fd, NULL);
    close(r->listen_fd);
    r->listen_fd = -1;
  }
  free_dead(r);
  g_hash_table_remove_all(r->dgram_flows);
  if (r->cap && !r->reader_gone) {
    uds_capture_finish(r->cap, 2000);
  }
  if (r->nconns > 0) {
    if (cfg->keep_inflight) {
      uds_info("%u connections still open: they go on, uncaptured, in a detached process", r->nconns);
      hand_over_to_drain(r);
    }
    /* The drain has its own copies of the sockets; ours close without a word to the capture. */
    r->cap = NULL;
    while (r->conns)
      relay_close(r, r->conns, "capture stopped");
    free_dead(r);
  }
  if (!ok)
    g_set_error(error, UDS_ERROR, UDS_ERROR_FAILED, "could not put %s back", cfg->path);
  relay_release(r);
  return ok;
}
