/* guardian — the process that puts PATH back when the process holding the swap cannot.
 *
 * Model.  uds_swap_guard() forks twice: the guardian is nobody's child (nothing has to reap it) and
 * setsid() puts it in its own session, so the SIGTERM/SIGKILL that tshark or a CI job sends to the
 * capture's process group never reaches it.  It keeps exactly four descriptors: its end of a
 * SOCK_SEQPACKET control channel, a pidfd of the relay process, the folder's O_PATH descriptor and a
 * signalfd; stdin/stdout/stderr are /dev/null and every other inherited descriptor is closed, so it
 * never keeps a caller's pipe open (Wireshark's FIFO, tshark's stderr, a CI log pipe) after the
 * relay is gone.  It works in "/", so it pins no mount but the socket's own.
 *
 * Protocol (relay -> guardian, one message per packet, so no framing is needed):
 *   ARM  state   "if I die now, this is what to put back" - sent *before* each step that changes the
 *                folder (a pending state before bind(), the relay's inode before link and rename), so
 *                at every instant the guardian knows enough to undo;
 *   DONE         "restored, or nothing to do": the guardian exits without touching anything.
 * And once, guardian -> relay: READY with its pid, after it has set itself up.
 *
 * Death detection.  The guardian restores when the relay process ends (the pidfd becomes readable)
 * or when the channel reaches EOF without DONE (the relay closed it: uds_swap_free() while still
 * interposed, or exec).  The pidfd is opened by the relay on itself *before* forking, so it can not
 * name a recycled pid.  Watching the pid rather than relying on EOF alone makes the guardian immune
 * to children that inherit the channel: the relay's detached "drain" process (or anything else it
 * forks) may keep a copy of the channel open forever, and nothing has to remember to close it.  Where
 * pidfd_open() is missing (Linux < 5.3) EOF is the only signal and forked children must close the
 * channel; that is logged.
 *
 * Signals.  The relay blocks SIGTERM/SIGINT/SIGHUP and ignores SIGPIPE; the guardian resets every
 * disposition and the mask first.  SIGINT, SIGHUP, SIGQUIT, SIGPIPE, SIGUSR1/2 and the tty stop
 * signals are ignored: they come from terminals and process groups, never meant for the guardian.
 * SIGTERM is not ignored: someone who names the guardian explicitly (an administrator's kill, or
 * systemd stopping the unit's cgroup at shutdown) wants it gone, and a guardian that exits silently
 * would leave the relay unguarded; so SIGTERM means "put PATH back now, then exit".  The relay then
 * sees PATH change under it (uds_swap_path_replaced reports it and does not re-interpose on the
 * original).  SIGKILL of the guardian alone leaves the relay unguarded; `udsdump --restore` repairs
 * what a later SIGKILL of the relay leaves.
 *
 * Only plain syscalls run in the forked guardian (the relay may be any program state at fork time).
 */
#include "guardian.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "privilege.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

#define GUARD_READY_TIMEOUT_MS 5000

enum { MSG_READY = 1, MSG_ARM, MSG_DONE };

typedef struct {
  guint32 kind;
  gint32 pid;                 /* READY: the guardian's pid */
  guint64 dev, orig_ino, relay_ino;
  char temp[NAME_MAX + 1];
} GuardMsg;

static gboolean is_file(const struct stat *st, dev_t dev, ino_t ino)
{
  return ino != 0 && st->st_dev == dev && st->st_ino == ino;
}

static gboolean name_is(int dirfd, const char *name, dev_t dev, ino_t ino)
{
  struct stat st;
  return fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && is_file(&st, dev, ino);
}

int uds_swap_replace(int dirfd, const char *from, ino_t from_ino, const char *to, dev_t dev, ino_t expect_ino)
{
  if (!name_is(dirfd, to, dev, expect_ino) || !name_is(dirfd, from, dev, from_ino)) {
    errno = EAGAIN;
    return -1;
  }
  if (renameat2(dirfd, from, dirfd, to, RENAME_EXCHANGE) == 0) {
    /* both ends checked: a symlink swapped in at `from` meanwhile must not end up at `to` */
    if (name_is(dirfd, from, dev, expect_ino) && name_is(dirfd, to, dev, from_ino)) {
      unlinkat(dirfd, from, 0);
      return 0;
    }
    /* Something else took `to` between the check and the exchange (a server re-binding): it keeps
     * its place, and `from` gets back what it had. */
    renameat2(dirfd, from, dirfd, to, RENAME_EXCHANGE);
    errno = EAGAIN;
    return -1;
  }
  if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
    return -1;
  /* A filesystem that cannot exchange: the checked rename, with a window of a few instructions. */
  return renameat(dirfd, from, dirfd, to);
}

UdsPutBack uds_swap_put_back(const UdsSwapPlace *place, const UdsSwapState *state)
{
  const int dfd = place->dirfd;
  UdsPutBack out = UDS_PUTBACK_NOTHING;
  int err = 0;
  struct stat st;

  if (state->orig_ino != 0) {
    gboolean path_is_relay = state->relay_ino != 0 && name_is(dfd, place->base, state->dev, state->relay_ino);
    if (path_is_relay) {
      if (!name_is(dfd, place->backup, state->dev, state->orig_ino)) {
        out = UDS_PUTBACK_FAILED;
        err = ENOENT;  /* the original's second name is gone: nothing to put back */
      } else if (uds_swap_replace(dfd, place->backup, state->orig_ino, place->base, state->dev, state->relay_ino) == 0) {
        out = UDS_PUTBACK_RESTORED;
      } else if (errno == EAGAIN) {
        path_is_relay = FALSE;  /* the server re-created PATH this very moment: it wins */
      } else {
        out = UDS_PUTBACK_FAILED;
        err = errno;
      }
    }
    if (!path_is_relay) {
      out = UDS_PUTBACK_LEFT_ALONE;
      if (name_is(dfd, place->backup, state->dev, state->orig_ino))
        unlinkat(dfd, place->backup, 0);
    }
  }
  if (state->temp[0] && fstatat(dfd, state->temp, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISSOCK(st.st_mode) &&
      st.st_dev == state->dev &&
      (state->relay_ino == 0 || st.st_ino == state->relay_ino || st.st_ino == state->orig_ino)) {
    unlinkat(dfd, state->temp, 0);
    if (out == UDS_PUTBACK_NOTHING)
      out = UDS_PUTBACK_LEFT_ALONE;
  }
  errno = err;
  return out;
}

/* ---- the guardian process ---- */

static int cmp_int(const void *a, const void *b)
{
  return *(const int *)a - *(const int *)b;
}

/* Keeps only the descriptors in keep[] (renumbered to >= 3, updated in place), then opens /dev/null
 * on 0, 1 and 2. */
static void keep_only(int *keep, int n)
{
  int sorted[8];
  for (int i = 0; i < n; i++) {
    if (keep[i] < 0) {
      sorted[i] = -1;
      continue;
    }
    int moved = fcntl(keep[i], F_DUPFD_CLOEXEC, 3);
    keep[i] = moved;
    sorted[i] = moved;
  }
  qsort(sorted, (size_t)n, sizeof sorted[0], cmp_int);
  unsigned lo = 0;
  for (int i = 0; i < n; i++) {
    if (sorted[i] < 0)
      continue;
    if ((unsigned)sorted[i] > lo)
      close_range(lo, (unsigned)sorted[i] - 1, 0);
    lo = (unsigned)sorted[i] + 1;
  }
  close_range(lo, ~0U, 0);
  int null = open("/dev/null", O_RDWR);  /* lowest free: 0 */
  if (null == 0) {
    dup2(0, 1);
    dup2(0, 2);
  }
}

static void G_GNUC_NORETURN guardian_main(int chan, int pidfd, const UdsSwapPlace *where)
{
  static const int ignored[] = { SIGINT, SIGHUP, SIGQUIT, SIGPIPE, SIGUSR1, SIGUSR2, SIGTSTP, SIGTTIN, SIGTTOU };
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; sig++)
    sigaction(sig, &sa, NULL);  /* fails harmlessly for SIGKILL, SIGSTOP and libc's own */
  sa.sa_handler = SIG_IGN;
  for (size_t i = 0; i < G_N_ELEMENTS(ignored); i++)
    sigaction(ignored[i], &sa, NULL);
  sigset_t term;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  sigprocmask(SIG_SETMASK, &term, NULL);
  int sfd = signalfd(-1, &term, SFD_CLOEXEC | SFD_NONBLOCK);

  UdsSwapPlace place = *where;
  int keep[4] = { chan, pidfd, place.dirfd, sfd };
  keep_only(keep, 4);
  chan = keep[0];
  pidfd = keep[1];
  place.dirfd = keep[2];
  sfd = keep[3];
  if (chdir("/") < 0) {
    /* stays where it is: harmless */
  }
  umask(077);
  prctl(PR_SET_NAME, "udsdump-guard", 0, 0, 0);
  /* Group install: uid 0 with only what a rename in the folder needs, so that the user who started
   * the capture, who may kill the relay, cannot kill its guardian too. */
  uds_priv_become_guardian();

  GuardMsg m;
  memset(&m, 0, sizeof m);
  m.kind = MSG_READY;
  m.pid = getpid();
  send(chan, &m, sizeof m, MSG_NOSIGNAL);

  UdsSwapState state;
  memset(&state, 0, sizeof state);
  for (;;) {
    struct pollfd pf[3] = {
      { .fd = chan, .events = POLLIN },
      { .fd = pidfd, .events = POLLIN },
      { .fd = sfd, .events = POLLIN },
    };
    if (poll(pf, 3, -1) < 0 && errno != EINTR)
      break;
    gboolean trigger = (pf[1].revents != 0) || (pf[2].revents != 0);
    /* The relay's last words come first: DONE may be queued right before its death. */
    for (;;) {
      ssize_t n = recv(chan, &m, sizeof m, MSG_DONTWAIT);
      if (n == (ssize_t)sizeof m) {
        if (m.kind == MSG_DONE)
          _exit(0);
        if (m.kind == MSG_ARM) {
          state.dev = (dev_t)m.dev;
          state.orig_ino = (ino_t)m.orig_ino;
          state.relay_ino = (ino_t)m.relay_ino;
          memcpy(state.temp, m.temp, sizeof state.temp);
          state.temp[NAME_MAX] = '\0';
        }
        continue;
      }
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && errno == EAGAIN)
        break;
      if (n <= 0) {  /* EOF or a dead peer: the relay let go without DONE */
        trigger = TRUE;
        break;
      }
    }
    if (trigger)
      break;
  }
  uds_swap_put_back(&place, &state);
  _exit(0);
}

int uds_guardian_start(const UdsSwapPlace *place, pid_t *guardian_pid, GError **error)
{
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_SYSTEM, "cannot start the guardian: socketpair: %s", g_strerror(errno));
    return -1;
  }
  int pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
  if (pidfd < 0)
    uds_warn("pidfd_open: %s: the guardian will notice this process's death only when its channel closes",
             g_strerror(errno));
  else
    fcntl(pidfd, F_SETFD, FD_CLOEXEC);

  pid_t mid = fork();
  if (mid == 0) {
    /* Intermediate child: a session of its own for the guardian, which then belongs to nobody. */
    setsid();
    pid_t g = fork();
    if (g == 0)
      guardian_main(sv[1], pidfd, place);
    _exit(g < 0 ? 1 : 0);
  }
  int fork_errno = errno;
  close(sv[1]);
  if (pidfd >= 0)
    close(pidfd);
  if (mid < 0) {
    close(sv[0]);
    g_set_error(error, UDS_ERROR, UDS_ERROR_SYSTEM, "cannot start the guardian: fork: %s", g_strerror(fork_errno));
    return -1;
  }
  int status = 0;
  while (waitpid(mid, &status, 0) < 0 && errno == EINTR)
    ;

  GuardMsg m;
  ssize_t n = -1;
  struct pollfd pf = { .fd = sv[0], .events = POLLIN };
  int pr;
  while ((pr = poll(&pf, 1, GUARD_READY_TIMEOUT_MS)) < 0 && errno == EINTR)
    ;
  if (pr > 0)
    n = recv(sv[0], &m, sizeof m, MSG_DONTWAIT);
  if (n != (ssize_t)sizeof m || m.kind != MSG_READY) {
    close(sv[0]);
    g_set_error(error, UDS_ERROR, UDS_ERROR_SYSTEM, "cannot start the guardian: it did not report ready%s",
                WIFEXITED(status) && WEXITSTATUS(status) != 0 ? " (fork failed)" : "");
    return -1;
  }
  *guardian_pid = m.pid;
  return sv[0];
}

static gboolean chan_send(int chan, const GuardMsg *m)
{
  ssize_t n;
  while ((n = send(chan, m, sizeof *m, MSG_NOSIGNAL | MSG_DONTWAIT)) < 0 && errno == EINTR)
    ;
  return n == (ssize_t)sizeof *m;
}

gboolean uds_guardian_arm(int chan, const UdsSwapState *state)
{
  GuardMsg m;
  memset(&m, 0, sizeof m);
  m.kind = MSG_ARM;
  m.dev = (guint64)state->dev;
  m.orig_ino = (guint64)state->orig_ino;
  m.relay_ino = (guint64)state->relay_ino;
  g_strlcpy(m.temp, state->temp, sizeof m.temp);
  return chan >= 0 && chan_send(chan, &m);
}

void uds_guardian_done(int chan)
{
  if (chan < 0)
    return;
  GuardMsg m;
  memset(&m, 0, sizeof m);
  m.kind = MSG_DONE;
  chan_send(chan, &m);
  close(chan);
}
