/* Swap and guardian against real sockets and real processes.
 *
 * Every test works in its own temporary folder with a real server: a forked child that binds the
 * socket, gives it an owner and mode, and answers each connection (or datagram) with "hello <gen>",
 * gen counting how often it re-created its socket.  Captures that must die run in a forked "holder"
 * child (prepare, guard, install, then wait for orders) so the test can SIGKILL it.  Readiness always
 * comes through a pipe line or a pidfd; the deadlines are only there to fail instead of hanging.
 */
#include "discover.h"
#include "guardian.h"
#include "swap.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

#define NOBODY 65534
#define DEADLINE_MS 5000

/* ---- small helpers ---- */

static gint64 now_ms(void)
{
  return g_get_monotonic_time() / 1000;
}

/* Reads one line from fd, waiting at most timeout_ms.  NULL on EOF or timeout. */
static char *read_line(int fd, int timeout_ms)
{
  GString *line = g_string_new(NULL);
  gint64 end = now_ms() + timeout_ms;
  for (;;) {
    struct pollfd pf = { .fd = fd, .events = POLLIN };
    int left = (int)(end - now_ms());
    if (left <= 0 || poll(&pf, 1, left) <= 0)
      break;
    char c;
    ssize_t n = read(fd, &c, 1);
    if (n <= 0)
      break;
    if (c == '\n')
      return g_string_free(line, FALSE);
    g_string_append_c(line, c);
  }
  g_string_free(line, TRUE);
  return NULL;
}

/* Reads exactly n bytes (n small), waiting at most timeout_ms.  NULL on EOF or timeout. */
static char *read_line_n(int fd, size_t n, int timeout_ms)
{
  char *buf = g_malloc0(n + 1);
  size_t got = 0;
  gint64 end = now_ms() + timeout_ms;
  while (got < n) {
    struct pollfd pf = { .fd = fd, .events = POLLIN };
    int left = (int)(end - now_ms());
    ssize_t r;
    if (left <= 0 || poll(&pf, 1, left) <= 0 || (r = read(fd, buf + got, n - got)) <= 0) {
      g_free(buf);
      return NULL;
    }
    got += (size_t)r;
  }
  return buf;
}

/* Reads everything until EOF (or the deadline). */
static char *read_all(int fd, int timeout_ms, gboolean *eof)
{
  GString *s = g_string_new(NULL);
  gint64 end = now_ms() + timeout_ms;
  *eof = FALSE;
  for (;;) {
    struct pollfd pf = { .fd = fd, .events = POLLIN };
    int left = (int)(end - now_ms());
    if (left <= 0 || poll(&pf, 1, left) <= 0)
      break;
    char buf[512];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n == 0) {
      *eof = TRUE;
      break;
    }
    if (n < 0)
      break;
    g_string_append_len(s, buf, n);
  }
  return g_string_free(s, FALSE);
}

/* Waits until pid has ended (child or not).  Returns the milliseconds waited, -1 on timeout. */
static gint64 wait_gone(pid_t pid, int timeout_ms)
{
  gint64 t0 = now_ms();
  int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (pfd < 0)
    return errno == ESRCH ? 0 : -1;
  struct pollfd pf = { .fd = pfd, .events = POLLIN };
  int r = poll(&pf, 1, timeout_ms);
  close(pfd);
  return r == 1 ? now_ms() - t0 : -1;
}

/* Unflushed stdio (GTest's TAP lines) must not be copied into a child that writes to stdout. */
static pid_t xfork(void)
{
  fflush(NULL);
  return fork();
}

static gboolean alive(pid_t pid)
{
  g_autofree char *p = g_strdup_printf("/proc/%d/stat", (int)pid);
  g_autofree char *stat = NULL;
  if (!g_file_get_contents(p, &stat, NULL, NULL))
    return FALSE;
  const char *rp = strrchr(stat, ')');
  return rp && rp[1] == ' ' && rp[2] != 'Z' && rp[2] != 'X';
}

static char proc_state(pid_t pid)
{
  g_autofree char *p = g_strdup_printf("/proc/%d/stat", (int)pid);
  g_autofree char *stat = NULL;
  if (!g_file_get_contents(p, &stat, NULL, NULL))
    return '?';
  const char *rp = strrchr(stat, ')');
  return rp ? rp[2] : '?';
}

static int cmp_lines(gconstpointer a, gconstpointer b)
{
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The folder as a sorted list of "name inode mode uid gid". */
static char *listing(const char *dir)
{
  g_autoptr(GPtrArray) lines = g_ptr_array_new_with_free_func(g_free);
  DIR *d = opendir(dir);
  g_assert_nonnull(d);
  struct dirent *e;
  while ((e = readdir(d))) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    struct stat st;
    g_autofree char *p = g_build_filename(dir, e->d_name, NULL);
    if (lstat(p, &st) == 0)
      g_ptr_array_add(lines, g_strdup_printf("%s %lu %o %u %u", e->d_name, (unsigned long)st.st_ino,
                                             (unsigned)st.st_mode, (unsigned)st.st_uid, (unsigned)st.st_gid));
  }
  closedir(d);
  g_ptr_array_sort(lines, cmp_lines);
  g_ptr_array_add(lines, NULL);
  return g_strjoinv("\n", (char **)lines->pdata);
}

static ino_t ino_of(const char *path)
{
  struct stat st;
  return lstat(path, &st) == 0 ? st.st_ino : 0;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
  remove(p);
  return 0;
}

static void addr_of(struct sockaddr_un *a, const char *path)
{
  memset(a, 0, sizeof *a);
  a->sun_family = AF_UNIX;
  g_assert_cmpuint(strlen(path), <, sizeof a->sun_path);
  strcpy(a->sun_path, path);
}

/* Asks the server at addr for its greeting: "hello <gen>", or NULL. */
static char *hello(const char *addr, int type)
{
  int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
  g_assert_cmpint(fd, >=, 0);
  struct sockaddr_un a;
  addr_of(&a, addr);
  char buf[64];
  ssize_t n = -1;
  if (type == SOCK_DGRAM) {
    sa_family_t fam = AF_UNIX;
    g_assert_cmpint(bind(fd, (struct sockaddr *)&fam, sizeof fam), ==, 0);  /* autobind: a reply address */
    if (sendto(fd, "hi", 2, 0, (struct sockaddr *)&a, sizeof a) != 2)
      goto out;
  } else if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
    goto out;
  }
  struct pollfd pf = { .fd = fd, .events = POLLIN };
  if (poll(&pf, 1, DEADLINE_MS) == 1)
    n = recv(fd, buf, sizeof buf - 1, 0);
out:
  close(fd);
  if (n <= 0)
    return NULL;
  buf[n] = '\0';
  return g_strdup(buf);
}

/* A client that goes to PATH must arrive at the relay's socket. */
static void assert_reaches_relay(const char *path, int type, int relay_fd)
{
  int c = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
  struct sockaddr_un a;
  addr_of(&a, path);
  if (type == SOCK_DGRAM)
    g_assert_cmpint(sendto(c, "ping", 4, 0, (struct sockaddr *)&a, sizeof a), ==, 4);
  else
    g_assert_cmpint(connect(c, (struct sockaddr *)&a, sizeof a), ==, 0);
  struct pollfd pf = { .fd = relay_fd, .events = POLLIN };
  g_assert_cmpint(poll(&pf, 1, DEADLINE_MS), ==, 1);
  if (type == SOCK_DGRAM) {
    char buf[8];
    g_assert_cmpint(recv(relay_fd, buf, sizeof buf, 0), ==, 4);
    g_assert_cmpmem(buf, 4, "ping", 4);
  } else {
    int acc = accept4(relay_fd, NULL, NULL, SOCK_CLOEXEC);
    g_assert_cmpint(acc, >=, 0);
    close(acc);
  }
  close(c);
}

/* ---- the server ---- */

typedef struct {
  mode_t mode;
  uid_t uid;
  gid_t gid;
} Attr;

typedef struct {
  pid_t pid;
  int ctl;     /* write: 'R' re-create the socket, 'Q' quit */
  int ready;   /* read: "ready <gen>" after each bind */
} Server;

static int server_bind(const char *path, int type, const Attr *attr)
{
  int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
  struct sockaddr_un a = { .sun_family = AF_UNIX };
  if (strlen(path) < sizeof a.sun_path) {
    strcpy(a.sun_path, path);
  } else {
    /* Too long for an address: bind relative to the folder, as a server that chdir()s would. */
    g_autofree char *dir = g_path_get_dirname(path);
    g_autofree char *base = g_path_get_basename(path);
    if (chdir(dir) < 0)
      _exit(3);
    strcpy(a.sun_path, base);
  }
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0)
    _exit(4);
  if (chown(path, attr->uid, attr->gid) < 0 || chmod(path, attr->mode) < 0)
    _exit(5);
  if (type != SOCK_DGRAM && listen(fd, 64) < 0)
    _exit(6);
  return fd;
}

static void G_GNUC_NORETURN server_main(const char *path, int type, Attr a1, Attr a2, int ctl, int ready)
{
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  int gen = 1;
  int lfd = server_bind(path, type, &a1);
  dprintf(ready, "ready %d\n", gen);
  for (;;) {
    struct pollfd pf[2] = { { .fd = lfd, .events = POLLIN }, { .fd = ctl, .events = POLLIN } };
    if (poll(pf, 2, -1) < 0)
      continue;
    if (pf[1].revents) {
      char cmd;
      if (read(ctl, &cmd, 1) != 1 || cmd == 'Q')
        _exit(0);
      if (cmd == 'R') {  /* what dockerd does on restart: unlink, bind again */
        close(lfd);
        unlink(path);
        gen++;
        lfd = server_bind(path, type, &a2);
        dprintf(ready, "ready %d\n", gen);
      }
    }
    if (pf[0].revents) {
      char msg[32];
      int n = snprintf(msg, sizeof msg, "hello %d", gen);
      if (type == SOCK_DGRAM) {
        char buf[64];
        struct sockaddr_un from;
        socklen_t fl = sizeof from;
        if (recvfrom(lfd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl) >= 0 && fl > sizeof(sa_family_t))
          sendto(lfd, msg, (size_t)n, 0, (struct sockaddr *)&from, fl);
      } else {
        int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (c >= 0) {
          send(c, msg, (size_t)n, MSG_NOSIGNAL);
          close(c);
        }
      }
    }
  }
}

/* ---- fixture ---- */

typedef struct {
  char *dir;
  char *path;
  GArray *pids;      /* children and guardians: SIGKILLed and reaped in teardown */
  Server srv;
} Fx;

static const Attr attr1 = { 0660, 1234, 2345 };
static const Attr attr2 = { 0640, 4321, 5432 };

static void fx_track(Fx *fx, pid_t pid)
{
  if (pid > 0)
    g_array_append_val(fx->pids, pid);
}

static void fx_setup(Fx *fx, gconstpointer data)
{
  alarm(60);
  fx->dir = g_dir_make_tmp("udsdump-swap-XXXXXX", NULL);
  g_assert_nonnull(fx->dir);
  chmod(fx->dir, 0755);
  fx->path = g_build_filename(fx->dir, "sock", NULL);
  fx->pids = g_array_new(FALSE, FALSE, sizeof(pid_t));
  fx->srv.pid = 0;
}

static void fx_teardown(Fx *fx, gconstpointer data)
{
  if (fx->srv.pid > 0) {
    close(fx->srv.ctl);
    close(fx->srv.ready);
  }
  for (guint i = 0; i < fx->pids->len; i++) {
    pid_t pid = g_array_index(fx->pids, pid_t, i);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, WNOHANG);
    wait_gone(pid, DEADLINE_MS);
    waitpid(pid, NULL, WNOHANG);
  }
  g_array_free(fx->pids, TRUE);
  nftw(fx->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  g_free(fx->path);
  g_free(fx->dir);
  alarm(0);
}

static void start_server_at(Fx *fx, const char *path, int type, Attr a1, Attr a2)
{
  int ctl[2], ready[2];
  g_assert_cmpint(pipe2(ctl, O_CLOEXEC), ==, 0);
  g_assert_cmpint(pipe2(ready, O_CLOEXEC), ==, 0);
  pid_t pid = xfork();
  g_assert_cmpint(pid, >=, 0);
  if (pid == 0) {
    close(ctl[1]);
    close(ready[0]);
    server_main(path, type, a1, a2, ctl[0], ready[1]);
  }
  close(ctl[0]);
  close(ready[1]);
  fx->srv = (Server){ .pid = pid, .ctl = ctl[1], .ready = ready[0] };
  fx_track(fx, pid);
  g_autofree char *line = read_line(fx->srv.ready, DEADLINE_MS);
  g_assert_cmpstr(line, ==, "ready 1");
}

static void start_server(Fx *fx, int type)
{
  start_server_at(fx, fx->path, type, attr1, attr2);
}

static void server_recreate(Fx *fx, int gen)
{
  g_assert_cmpint(write(fx->srv.ctl, "R", 1), ==, 1);
  g_autofree char *line = read_line(fx->srv.ready, DEADLINE_MS);
  g_autofree char *want = g_strdup_printf("ready %d", gen);
  g_assert_cmpstr(line, ==, want);
}

static void assert_attr(const char *path, const Attr *a)
{
  struct stat st;
  g_assert_cmpint(lstat(path, &st), ==, 0);
  g_assert_true(S_ISSOCK(st.st_mode));
  g_assert_cmpuint(st.st_mode & 07777, ==, a->mode);
  g_assert_cmpuint(st.st_uid, ==, a->uid);
  g_assert_cmpuint(st.st_gid, ==, a->gid);
}

static char *backup_of(const Fx *fx)
{
  return g_build_filename(fx->dir, ".sock.udsdump-orig", NULL);
}

/* ---- the holder: a process that interposes and then is told what to do, or killed ---- */

typedef struct {
  pid_t pid;
  int ctl;        /* write: 'r' restore and exit, 'f' follow a re-created PATH */
  int out;        /* read: status lines */
  pid_t guardian;
  pid_t drain;
} Holder;

enum { HOLD_PLAIN = 0, HOLD_DRAIN = 1 };

static void G_GNUC_NORETURN holder_main(const char *path, int ctl, int out, int stdio_fd, int flags)
{
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (stdio_fd >= 0) {
    dup2(stdio_fd, 1);
    dup2(stdio_fd, 2);
    close(stdio_fd);
  }
  g_autoptr(GError) err = NULL;
  UdsSwap *s = uds_swap_prepare(path, &err);
  int fd = -1;
  if (!s || !uds_swap_guard(s, &err) || (fd = uds_swap_install(s, &err)) < 0) {
    dprintf(out, "err %s\n", err->message);
    _exit(1);
  }
  pid_t drain = 0;
  if (flags & HOLD_DRAIN) {
    /* Like the relay's drain process: forked after install, inherits every descriptor, outlives us. */
    drain = fork();
    if (drain == 0) {
      for (;;)
        pause();
    }
  }
  if (stdio_fd >= 0) {
    /* Only when stdout is the test's pipe: the TAP stream must not see it. */
    printf("holder stdout\n");
    fflush(stdout);
  }
  dprintf(out, "ok %d %d\n", (int)uds_swap_guardian_pid(s), (int)drain);
  for (;;) {
    char cmd;
    ssize_t n = read(ctl, &cmd, 1);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      _exit(0);
    if (cmd == 'r') {
      gboolean ok = uds_swap_restore(s, &err);
      dprintf(out, "%s\n", ok ? "restored" : err->message);
      _exit(0);
    }
    if (cmd == 'f') {
      int newfd = -1;
      gboolean replaced = FALSE;
      gint64 end = now_ms() + DEADLINE_MS;
      while (!replaced && now_ms() < end) {
        struct pollfd pf = { .fd = uds_swap_watch_fd(s), .events = POLLIN };
        if (poll(&pf, 1, DEADLINE_MS) == 1)
          replaced = uds_swap_path_replaced(s, &newfd, NULL);
      }
      dprintf(out, "followed %d\n", replaced && newfd >= 0);
    }
  }
}

static void start_holder(Fx *fx, Holder *h, int stdio_fd, int flags)
{
  int ctl[2], out[2];
  g_assert_cmpint(pipe2(ctl, O_CLOEXEC), ==, 0);
  g_assert_cmpint(pipe2(out, O_CLOEXEC), ==, 0);
  pid_t pid = xfork();
  g_assert_cmpint(pid, >=, 0);
  if (pid == 0) {
    close(ctl[1]);
    close(out[0]);
    holder_main(fx->path, ctl[0], out[1], stdio_fd, flags);
  }
  close(ctl[0]);
  close(out[1]);
  h->pid = pid;
  h->ctl = ctl[1];
  h->out = out[0];
  fx_track(fx, pid);
  g_autofree char *line = read_line(h->out, DEADLINE_MS);
  g_assert_nonnull(line);
  int g = 0, d = 0;
  if (sscanf(line, "ok %d %d", &g, &d) != 2)
    g_error("holder: %s", line);
  h->guardian = g;
  h->drain = d;
  fx_track(fx, g);
  fx_track(fx, d);
  g_assert_cmpint(g, >, 0);
}

static void holder_close(Holder *h)
{
  close(h->ctl);
  close(h->out);
}

static void kill_and_reap(pid_t pid)
{
  g_assert_cmpint(kill(pid, SIGKILL), ==, 0);
  int st;
  g_assert_cmpint(waitpid(pid, &st, 0), ==, pid);
  g_assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
}

/* ---- interposition, normal stop ---- */

static void test_interpose(Fx *fx, gconstpointer data)
{
  int type = GPOINTER_TO_INT(data);
  start_server(fx, type);
  g_autofree char *before = listing(fx->dir);
  ino_t orig = ino_of(fx->path);

  g_autoptr(GError) err = NULL;
  UdsSwap *s = uds_swap_prepare(fx->path, &err);
  g_assert_no_error(err);
  g_assert_cmpint(uds_swap_sock_type(s), ==, type);
  g_assert_cmpint(uds_swap_server_pid(s), ==, fx->srv.pid);
  g_autofree char *comm = uds_proc_comm("/proc", fx->srv.pid);
  g_assert_cmpstr(uds_swap_server_comm(s), ==, comm);
  g_autofree char *prepared = listing(fx->dir);
  g_assert_cmpstr(prepared, ==, before);  /* prepare changes nothing */
  g_assert_true(uds_swap_guard(s, &err));
  pid_t g = uds_swap_guardian_pid(s);
  fx_track(fx, g);
  g_assert_cmpint(getsid(g), !=, getsid(0));  /* a session of its own */

  int fd = uds_swap_install(s, &err);
  g_assert_no_error(err);
  g_assert_cmpint(fd, >=, 0);
  g_assert_cmpint(fcntl(fd, F_GETFD) & FD_CLOEXEC, !=, 0);
  g_assert_cmpint(fcntl(fd, F_GETFL) & O_NONBLOCK, !=, 0);
  g_assert_cmpuint(ino_of(fx->path), !=, orig);
  assert_attr(fx->path, &attr1);
  g_autofree char *bk = backup_of(fx);
  g_assert_cmpuint(ino_of(bk), ==, orig);
  int so_type;
  socklen_t sl = sizeof so_type;
  g_assert_cmpint(getsockopt(fd, SOL_SOCKET, SO_TYPE, &so_type, &sl), ==, 0);
  g_assert_cmpint(so_type, ==, type);

  /* The relay's own name: its temporary path (it fits here). */
  struct sockaddr_un me;
  socklen_t ml = sizeof me;
  g_assert_cmpint(getsockname(fd, (struct sockaddr *)&me, &ml), ==, 0);
  g_autofree char *prefix = g_strdup_printf("%s/.sock.udsdump-", fx->dir);
  g_assert_true(g_str_has_prefix(me.sun_path, prefix));

  assert_reaches_relay(fx->path, type, fd);
  g_autofree char *h = hello(uds_swap_upstream(s), type);
  g_assert_cmpstr(h, ==, "hello 1");
  g_assert_true(g_str_has_prefix(uds_swap_upstream(s), "/proc/self/fd/"));

  /* Nothing to report while PATH is ours (our own install left events in the queue). */
  g_assert_cmpint(uds_swap_watch_fd(s), >=, 0);
  int newfd = -2;
  g_assert_false(uds_swap_path_replaced(s, &newfd, &err));
  g_assert_no_error(err);
  g_assert_cmpint(newfd, ==, -1);

  g_assert_true(uds_swap_restore(s, &err));
  g_assert_no_error(err);
  g_assert_cmpuint(ino_of(fx->path), ==, orig);
  g_autofree char *after = listing(fx->dir);
  g_assert_cmpstr(after, ==, before);
  g_assert_cmpint(wait_gone(g, 1000), >=, 0);  /* "done": the guardian leaves at once */
  g_assert_true(uds_swap_restore(s, &err));    /* idempotent */
  g_free(after);
  after = listing(fx->dir);
  g_assert_cmpstr(after, ==, before);
  g_free(h);
  h = hello(fx->path, type);
  g_assert_cmpstr(h, ==, "hello 1");
  close(fd);
  uds_swap_free(s);
}

/* Long paths: the temporary name does not fit in sun_path, so it is bound through the folder fd; with a
 * long file name the short temporary name is used. */
static void test_long_path(Fx *fx, gconstpointer data)
{
  gboolean long_name = GPOINTER_TO_INT(data);
  GString *p = g_string_new(fx->dir);
  if (long_name) {
    g_string_append_c(p, '/');
    while (p->len < 105)
      g_string_append_c(p, 'n');
  } else {
    while (p->len < 95) {
      g_string_append(p, "/dddddddd");
      g_assert_cmpint(mkdir(p->str, 0755), ==, 0);
    }
    g_string_append(p, "/sock");
  }
  g_free(fx->path);
  fx->path = g_string_free(p, FALSE);
  g_assert_cmpuint(strlen(fx->path), <=, 107);
  start_server_at(fx, fx->path, SOCK_STREAM, attr1, attr2);
  g_autofree char *folder = g_path_get_dirname(fx->path);
  g_autofree char *before = listing(folder);

  g_autoptr(GError) err = NULL;
  UdsSwap *s = uds_swap_prepare(fx->path, &err);
  g_assert_no_error(err);
  g_assert_true(uds_swap_guard(s, &err));
  fx_track(fx, uds_swap_guardian_pid(s));
  int fd = uds_swap_install(s, &err);
  g_assert_no_error(err);
  struct sockaddr_un me;
  socklen_t ml = sizeof me;
  g_assert_cmpint(getsockname(fd, (struct sockaddr *)&me, &ml), ==, 0);
  g_test_message("relay bound as %s", me.sun_path);
  if (long_name)
    g_assert_nonnull(strstr(me.sun_path, "/.udsdump-"));  /* the short temporary name */
  else
    g_assert_true(g_str_has_prefix(me.sun_path, "/proc/self/fd/"));
  assert_attr(fx->path, &attr1);
  assert_reaches_relay(fx->path, SOCK_STREAM, fd);
  g_autofree char *h = hello(uds_swap_upstream(s), SOCK_STREAM);
  g_assert_cmpstr(h, ==, "hello 1");
  g_assert_true(uds_swap_restore(s, &err));
  g_autofree char *after = listing(folder);
  g_assert_cmpstr(after, ==, before);
  close(fd);
  uds_swap_free(s);
}

/* ---- death of the holder ---- */

static void assert_put_back(Fx *fx, const char *before, ino_t orig, int type)
{
  g_assert_cmpuint(ino_of(fx->path), ==, orig);
  g_autofree char *after = listing(fx->dir);
  g_assert_cmpstr(after, ==, before);
  g_autofree char *h = hello(fx->path, type);
  g_assert_cmpstr(h, ==, "hello 1");
}

static void test_sigkill(Fx *fx, gconstpointer data)
{
  int flags = GPOINTER_TO_INT(data);
  start_server(fx, SOCK_STREAM);
  g_autofree char *before = listing(fx->dir);
  ino_t orig = ino_of(fx->path);
  Holder h;
  start_holder(fx, &h, -1, flags);
  g_assert_cmpuint(ino_of(fx->path), !=, orig);
  if (flags & HOLD_DRAIN)
    g_assert_true(alive(h.drain));  /* it holds a copy of the guardian's channel */

  gint64 t0 = now_ms();
  kill_and_reap(h.pid);
  gint64 waited = wait_gone(h.guardian, 1000);
  g_assert_cmpint(waited, >=, 0);
  g_test_message("guardian put PATH back and exited %" G_GINT64_FORMAT " ms after SIGKILL", now_ms() - t0);
  assert_put_back(fx, before, orig, SOCK_STREAM);
  if (flags & HOLD_DRAIN)
    g_assert_true(alive(h.drain));  /* the guardian did not need it gone */
  holder_close(&h);
}

/* The guardian holds none of the caller's descriptors: a pipe on the holder's stdout reaches EOF when
 * the holder dies, although the guardian is still alive (stopped, here, so it cannot act yet). */
static void test_guardian_stdio(Fx *fx, gconstpointer data)
{
  start_server(fx, SOCK_STREAM);
  g_autofree char *before = listing(fx->dir);
  ino_t orig = ino_of(fx->path);
  int pp[2];
  g_assert_cmpint(pipe2(pp, O_CLOEXEC), ==, 0);
  Holder h;
  start_holder(fx, &h, pp[1], HOLD_PLAIN);
  close(pp[1]);
  g_autofree char *first = read_line(pp[0], DEADLINE_MS);
  g_assert_cmpstr(first, ==, "holder stdout");

  /* Its descriptors: /dev/null on 0-2, then only its own (channel, pidfd, folder, signalfd). */
  struct stat pst;
  g_assert_cmpint(fstat(pp[0], &pst), ==, 0);
  g_autofree char *pipe_link = g_strdup_printf("pipe:[%lu]", (unsigned long)pst.st_ino);
  g_autofree char *fddir = g_strdup_printf("/proc/%d/fd", (int)h.guardian);
  GDir *d = g_dir_open(fddir, 0, NULL);
  g_assert_nonnull(d);
  const char *name;
  int nfds = 0;
  while ((name = g_dir_read_name(d))) {
    g_autofree char *lp = g_build_filename(fddir, name, NULL);
    g_autofree char *target = g_file_read_link(lp, NULL);
    g_assert_nonnull(target);
    g_assert_cmpstr(target, !=, pipe_link);
    if (atoi(name) <= 2)
      g_assert_cmpstr(target, ==, "/dev/null");
    nfds++;
  }
  g_dir_close(d);
  g_assert_cmpint(nfds, <=, 7);

  /* Its session, parent and signal dispositions. */
  g_assert_cmpint(getsid(h.guardian), !=, getsid(h.pid));
  g_assert_cmpint(getpgid(h.guardian), !=, getpgid(h.pid));
  g_autofree char *status_path = g_strdup_printf("/proc/%d/status", (int)h.guardian);
  g_autofree char *status = NULL;
  g_assert_true(g_file_get_contents(status_path, &status, NULL, NULL));
  const char *ign = strstr(status, "SigIgn:");
  g_assert_nonnull(ign);
  guint64 ignored = g_ascii_strtoull(ign + 7, NULL, 16);
  g_assert_true(ignored & (1ull << (SIGINT - 1)));
  g_assert_true(ignored & (1ull << (SIGHUP - 1)));
  g_assert_false(ignored & (1ull << (SIGTERM - 1)));
  const char *pp_line = strstr(status, "PPid:");
  g_assert_nonnull(pp_line);
  g_assert_cmpint(atoi(pp_line + 5), !=, h.pid);
  g_autofree char *gcomm = uds_proc_comm("/proc", h.guardian);
  g_assert_cmpstr(gcomm, ==, "udsdump-guard");

  g_assert_cmpint(kill(h.guardian, SIGSTOP), ==, 0);
  gint64 end = now_ms() + DEADLINE_MS;
  while (proc_state(h.guardian) != 'T' && now_ms() < end)
    g_usleep(1000);  /* no readiness signal exists for "stopped" but the state itself */
  g_assert_cmpint(proc_state(h.guardian), ==, 'T');
  kill_and_reap(h.pid);
  gboolean eof;
  g_autofree char *rest = read_all(pp[0], DEADLINE_MS, &eof);
  g_assert_true(eof);
  g_assert_true(alive(h.guardian));
  g_assert_cmpuint(ino_of(fx->path), !=, orig);  /* not put back yet: it is stopped */
  g_assert_cmpint(kill(h.guardian, SIGCONT), ==, 0);
  g_assert_cmpint(wait_gone(h.guardian, 1000), >=, 0);
  assert_put_back(fx, before, orig, SOCK_STREAM);
  close(pp[0]);
  holder_close(&h);
}

/* SIGINT and SIGHUP (a terminal's) leave the guardian alone; SIGTERM (someone naming it) makes it put
 * PATH back and leave; the holder then sees PATH change and does not follow its own original. */
static void test_guardian_signals(Fx *fx, gconstpointer data)
{
  start_server(fx, SOCK_STREAM);
  g_autofree char *before = listing(fx->dir);
  ino_t orig = ino_of(fx->path);
  g_autoptr(GError) err = NULL;
  UdsSwap *s = uds_swap_prepare(fx->path, &err);
  g_assert_no_error(err);
  g_assert_true(uds_swap_guard(s, &err));
  pid_t g = uds_swap_guardian_pid(s);
  fx_track(fx, g);
  int fd = uds_swap_install(s, &err);
  g_assert_cmpint(fd, >=, 0);
  kill(g, SIGINT);
  kill(g, SIGHUP);
  kill(g, SIGPIPE);
  g_assert_cmpint(wait_gone(g, 200), ==, -1);
  g_assert_cmpuint(ino_of(fx->path), !=, orig);
  kill(g, SIGTERM);
  g_assert_cmpint(wait_gone(g, 1000), >=, 0);
  g_assert_cmpuint(ino_of(fx->path), ==, orig);
  g_autofree char *after = listing(fx->dir);
  g_assert_cmpstr(after, ==, before);
  struct pollfd pf = { .fd = uds_swap_watch_fd(s), .events = POLLIN };
  g_assert_cmpint(poll(&pf, 1, DEADLINE_MS), ==, 1);
  int newfd = -2;
  g_assert_true(uds_swap_path_replaced(s, &newfd, &err));
  g_assert_cmpint(newfd, ==, -1);
  g_assert_nonnull(err);
  g_test_message("%s", err->message);
  g_clear_error(&err);
  g_assert_true(uds_swap_restore(s, &err));
  g_free(after);
  after = listing(fx->dir);
  g_assert_cmpstr(after, ==, before);
  close(fd);
  uds_swap_free(s);
}

/* ---- the server re-creates PATH during the capture ---- */

static gboolean wait_replaced(UdsSwap *s, int *newfd)
{
  gint64 end = now_ms() + DEADLINE_MS;
  while (now_ms() < end) {
    struct pollfd pf = { .fd = uds_swap_watch_fd(s), .events = POLLIN };
    if (poll(&pf, 1, (int)(end - now_ms())) != 1)
      break;
    g_autoptr(GError) err = NULL;
    if (uds_swap_path_replaced(s, newfd, &err)) {
      if (err)
        g_test_message("path_replaced: %s", err->message);
      return TRUE;
    }
  }
  return FALSE;
}

typedef enum { RECREATE_RESTORE, RECREATE_DETECT, RECREATE_FOLLOW } RecreateMode;

static void test_recreate(Fx *fx, gconstpointer data)
{
  RecreateMode mode = GPOINTER_TO_INT(data);
  start_server(fx, SOCK_STREAM);
  g_autoptr(GError) err = NULL;
  UdsSwap *s = uds_swap_prepare(fx->path, &err);
  g_assert_no_error(err);
  g_assert_true(uds_swap_guard(s, &err));
  pid_t g = uds_swap_guardian_pid(s);
  fx_track(fx, g);
  int fd = uds_swap_install(s, &err);
  g_assert_cmpint(fd, >=, 0);

  server_recreate(fx, 2);
  ino_t second = ino_of(fx->path);
  g_assert_cmpuint(second, !=, 0);
  assert_attr(fx->path, &attr2);
  g_autofree char *with_new = NULL;

  if (mode == RECREATE_DETECT) {
    g_assert_true(wait_replaced(s, NULL));
    g_assert_cmpuint(ino_of(fx->path), ==, second);
    /* Upstream follows the new server for what is still queued on the old relay socket. */
    g_autofree char *h = hello(uds_swap_upstream(s), SOCK_STREAM);
    g_assert_cmpstr(h, ==, "hello 2");
  } else if (mode == RECREATE_FOLLOW) {
    int newfd = -1;
    g_assert_true(wait_replaced(s, &newfd));
    g_assert_cmpint(newfd, >=, 0);
    g_assert_cmpuint(ino_of(fx->path), !=, second);
    assert_attr(fx->path, &attr2);  /* the new original's owner and mode */
    g_autofree char *bk = backup_of(fx);
    g_assert_cmpuint(ino_of(bk), ==, second);
    assert_reaches_relay(fx->path, SOCK_STREAM, newfd);
    g_autofree char *h = hello(uds_swap_upstream(s), SOCK_STREAM);
    g_assert_cmpstr(h, ==, "hello 2");
    g_assert_false(uds_swap_path_replaced(s, NULL, &err));  /* our own renames are not news */
    close(newfd);
  }
  g_assert_true(uds_swap_restore(s, &err));
  g_assert_no_error(err);
  g_assert_cmpint(wait_gone(g, 1000), >=, 0);
  /* The new socket stays, nothing of ours is left. */
  g_assert_cmpuint(ino_of(fx->path), ==, second);
  g_autofree char *after = listing(fx->dir);
  g_autofree char *only = g_strdup_printf("sock %lu %o %u %u", (unsigned long)second, (unsigned)(S_IFSOCK | attr2.mode),
                                          (unsigned)attr2.uid, (unsigned)attr2.gid);
  g_assert_cmpstr(after, ==, only);
  g_autofree char *h = hello(fx->path, SOCK_STREAM);
  g_assert_cmpstr(h, ==, "hello 2");
  close(fd);
  uds_swap_free(s);
}

/* Re-interposed, then killed: the guardian puts the *new* server socket back. */
static void test_recreate_then_sigkill(Fx *fx, gconstpointer data)
{
  start_server(fx, SOCK_STREAM);
  Holder h;
  start_holder(fx, &h, -1, HOLD_PLAIN);
  server_recreate(fx, 2);
  ino_t second = ino_of(fx->path);
  g_assert_cmpint(write(h.ctl, "f", 1), ==, 1);
  g_autofree char *line = read_line(h.out, DEADLINE_MS);
  g_assert_cmpstr(line, ==, "followed 1");
  g_assert_cmpuint(ino_of(fx->path), !=, second);
  kill_and_reap(h.pid);
  g_assert_cmpint(wait_gone(h.guardian, 1000), >=, 0);
  g_assert_cmpuint(ino_of(fx->path), ==, second);
  g_autofree char *after = listing(fx->dir);
  g_assert_null(strstr(after, "udsdump"));
  g_autofree char *hh = hello(fx->path, SOCK_STREAM);
  g_assert_cmpstr(hh, ==, "hello 2");
  holder_close(&h);
}

/* ---- PATH is never missing nor more permissive: a watcher lstat()s it throughout ---- */

typedef struct {
  guint64 looks, relay_seen, temps_seen, missing, wrong_attr, temp_too_open;
} WatchCounts;

/* ack gets 'r' when the watcher first sees the relay at PATH, 'o' when it sees the original again, so
 * the test can hold each state until it has been observed. */
static void G_GNUC_NORETURN watcher_main(const char *dir, const char *path, struct stat orig, int stop, int out,
                                         int ready, int ack)
{
  gboolean saw_relay = FALSE;
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  WatchCounts c = { 0 };
  int in = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  inotify_add_watch(in, dir, IN_CREATE);
  g_assert_cmpint(write(ready, "x", 1), ==, 1);
  char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
  for (guint64 i = 0;; i++) {
    struct stat st;
    c.looks++;
    if (lstat(path, &st) < 0)
      c.missing++;
    else if ((st.st_mode & 07777) != (orig.st_mode & 07777) || st.st_uid != orig.st_uid || st.st_gid != orig.st_gid)
      c.wrong_attr++;
    else if (st.st_ino != orig.st_ino) {
      c.relay_seen++;
      if (!saw_relay && write(ack, "r", 1) == 1)
        saw_relay = TRUE;
    } else if (saw_relay && write(ack, "o", 1) == 1) {
      saw_relay = FALSE;
    }
    /* A temporary name, as soon as it appears: mode 0, or the original's owner with no more than its mode. */
    ssize_t n = read(in, buf, sizeof buf);
    for (char *p = buf; n > 0 && p < buf + n;) {
      struct inotify_event *ev = (struct inotify_event *)p;
      p += sizeof *ev + ev->len;
      if (!ev->len || !g_str_has_prefix(ev->name, ".sock.udsdump-") || strcmp(ev->name, ".sock.udsdump-orig") == 0)
        continue;
      g_autofree char *tp = g_build_filename(dir, ev->name, NULL);
      if (lstat(tp, &st) < 0)
        continue;  /* already renamed into place */
      c.temps_seen++;
      mode_t m = st.st_mode & 07777;
      if ((m & ~(orig.st_mode & 07777)) ||
          (m != 0 && (st.st_uid != orig.st_uid || st.st_gid != orig.st_gid)))
        c.temp_too_open++;
    }
    if ((i & 63) == 0) {
      struct pollfd pf = { .fd = stop, .events = POLLIN };
      if (poll(&pf, 1, 0) == 1)
        break;
    }
  }
  g_assert_cmpint(write(out, &c, sizeof c), ==, sizeof c);
  _exit(0);
}

static void test_never_missing(Fx *fx, gconstpointer data)
{
  alarm(120);
  start_server(fx, SOCK_STREAM);
  g_autofree char *before = listing(fx->dir);
  struct stat orig;
  g_assert_cmpint(lstat(fx->path, &orig), ==, 0);
  int stop[2], out[2], ready[2], ack[2];
  g_assert_cmpint(pipe2(ack, O_CLOEXEC), ==, 0);
  g_assert_cmpint(pipe2(stop, O_CLOEXEC), ==, 0);
  g_assert_cmpint(pipe2(out, O_CLOEXEC), ==, 0);
  g_assert_cmpint(pipe2(ready, O_CLOEXEC), ==, 0);
  pid_t w = xfork();
  if (w == 0) {
    close(stop[1]);
    close(out[0]);
    close(ready[0]);
    close(ack[0]);
    watcher_main(fx->dir, fx->path, orig, stop[0], out[1], ready[1], ack[1]);
  }
  fx_track(fx, w);
  close(stop[0]);
  close(out[1]);
  close(ready[1]);
  close(ack[1]);
  char x;
  g_assert_cmpint(read(ready[0], &x, 1), ==, 1);

  gint64 t_install = 0, t_restore = 0;
  for (int round = 0; round < 50; round++) {
    g_autoptr(GError) err = NULL;
    UdsSwap *s = uds_swap_prepare(fx->path, &err);
    g_assert_no_error(err);
    g_assert_true(uds_swap_guard(s, &err));
    pid_t g = uds_swap_guardian_pid(s);
    gint64 t0 = g_get_monotonic_time();
    int fd = uds_swap_install(s, &err);
    gint64 t1 = g_get_monotonic_time();
    g_assert_no_error(err);
    assert_reaches_relay(fx->path, SOCK_STREAM, fd);
    g_autofree char *seen = read_line_n(ack[0], 1, DEADLINE_MS);
    g_assert_cmpstr(seen, ==, "r");
    gint64 t2 = g_get_monotonic_time();
    g_assert_true(uds_swap_restore(s, &err));
    t_restore += g_get_monotonic_time() - t2;
    g_free(seen);
    seen = read_line_n(ack[0], 1, DEADLINE_MS);
    g_assert_cmpstr(seen, ==, "o");
    t_install += t1 - t0;
    close(fd);
    uds_swap_free(s);
    g_assert_cmpint(wait_gone(g, 1000), >=, 0);
  }
  close(stop[1]);
  WatchCounts c;
  g_assert_cmpint(read(out[0], &c, sizeof c), ==, sizeof c);
  int st;
  waitpid(w, &st, 0);
  g_test_message("watcher: %" G_GUINT64_FORMAT " looks, relay seen %" G_GUINT64_FORMAT ", temporary names seen %"
                 G_GUINT64_FORMAT "; install %.0f us, restore %.0f us on average",
                 c.looks, c.relay_seen, c.temps_seen, t_install / 50.0, t_restore / 50.0);
  g_assert_cmpuint(c.missing, ==, 0);
  g_assert_cmpuint(c.wrong_attr, ==, 0);
  g_assert_cmpuint(c.temp_too_open, ==, 0);
  g_assert_cmpuint(c.relay_seen, >=, 50);
  g_assert_cmpuint(c.looks, >, c.relay_seen);  /* it saw the original too */
  g_autofree char *after = listing(fx->dir);
  g_assert_cmpstr(after, ==, before);
  close(out[0]);
  close(ready[0]);
  close(ack[0]);
}

/* ---- ACLs: copied from the original, never inherited from the folder ---- */

static GBytes *acl_blob(guint32 named_uid)
{
  /* posix_acl_xattr: version 2, then {tag, perm, id} sorted by tag. */
  struct __attribute__((packed)) {
    guint32 version;
    struct __attribute__((packed)) {
      guint16 tag, perm;
      guint32 id;
    } e[5];
  } acl = { 2, { { 0x01, 6, ~0u }, { 0x02, 6, named_uid }, { 0x04, 0, ~0u }, { 0x10, 6, ~0u }, { 0x20, 0, ~0u } } };
  return g_bytes_new(&acl, sizeof acl);
}

static void test_acl(Fx *fx, gconstpointer data)
{
  start_server(fx, SOCK_STREAM);
  g_autoptr(GBytes) acl = acl_blob(4242);
  if (setxattr(fx->path, "system.posix_acl_access", g_bytes_get_data(acl, NULL), g_bytes_get_size(acl), 0) < 0) {
    g_test_skip("no POSIX ACLs on this filesystem");
    return;
  }
  struct stat orig;
  g_assert_cmpint(lstat(fx->path, &orig), ==, 0);
  /* A default ACL on the folder that would grant uid 4343 everything on new files. */
  g_autoptr(GBytes) dacl = acl_blob(4343);
  g_assert_cmpint(setxattr(fx->dir, "system.posix_acl_default", g_bytes_get_data(dacl, NULL),
                           g_bytes_get_size(dacl), 0), ==, 0);
  char orig_acl[256];
  ssize_t on = getxattr(fx->path, "system.posix_acl_access", orig_acl, sizeof orig_acl);
  g_assert_cmpint(on, >, 0);

  g_autoptr(GError) err = NULL;
  UdsSwap *s = uds_swap_prepare(fx->path, &err);
  g_assert_no_error(err);
  g_assert_true(uds_swap_guard(s, &err));
  fx_track(fx, uds_swap_guardian_pid(s));
  int fd = uds_swap_install(s, &err);
  g_assert_no_error(err);
  struct stat now;
  g_assert_cmpint(lstat(fx->path, &now), ==, 0);
  g_assert_cmpuint(now.st_mode, ==, orig.st_mode);
  char relay_acl[256];
  ssize_t rn = getxattr(fx->path, "system.posix_acl_access", relay_acl, sizeof relay_acl);
  g_assert_cmpmem(relay_acl, rn, orig_acl, on);
  g_assert_true(uds_swap_restore(s, &err));
  close(fd);
  uds_swap_free(s);

  /* An original without an ACL: the relay must not keep what the folder's default ACL gave it. */
  g_assert_cmpint(removexattr(fx->path, "system.posix_acl_access"), ==, 0);
  chmod(fx->path, 0600);
  s = uds_swap_prepare(fx->path, &err);
  g_assert_no_error(err);
  g_assert_true(uds_swap_guard(s, &err));
  fx_track(fx, uds_swap_guardian_pid(s));
  fd = uds_swap_install(s, &err);
  g_assert_no_error(err);
  g_assert_cmpint(getxattr(fx->path, "system.posix_acl_access", relay_acl, sizeof relay_acl), <, 0);
  g_assert_cmpint(errno, ==, ENODATA);
  g_assert_cmpint(lstat(fx->path, &now), ==, 0);
  g_assert_cmpuint(now.st_mode & 07777, ==, 0600);
  g_assert_true(uds_swap_restore(s, &err));
  close(fd);
  uds_swap_free(s);
}

/* ---- refusals: one line naming the problem, nothing changed ---- */

static void expect_refusal(Fx *fx, const char *path, const char *needle)
{
  g_autofree char *before = listing(fx->dir);
  g_autoptr(GError) err = NULL;
  UdsSwap *s = uds_swap_prepare(path, &err);
  g_assert_null(s);
  g_assert_nonnull(err);
  g_test_message("%s -> %s", path, err->message);
  g_assert_nonnull(strstr(err->message, needle));
  g_assert_null(strchr(err->message, '\n'));
  g_autofree char *after = listing(fx->dir);
  g_assert_cmpstr(after, ==, before);
}

static void test_refuse_basic(Fx *fx, gconstpointer data)
{
  start_server(fx, SOCK_STREAM);
  expect_refusal(fx, "sock", "not an absolute path");
  expect_refusal(fx, "@docker", "abstract");
  g_autofree char *missing = g_build_filename(fx->dir, "nope", NULL);
  expect_refusal(fx, missing, "no such file");
  g_autofree char *nofolder = g_build_filename(fx->dir, "nodir", "sock", NULL);
  expect_refusal(fx, nofolder, "no such file");
  g_autofree char *regular = g_build_filename(fx->dir, "file", NULL);
  g_assert_true(g_file_set_contents(regular, "x", 1, NULL));
  expect_refusal(fx, regular, "not a socket");
  g_autofree char *link = g_build_filename(fx->dir, "link", NULL);
  g_assert_cmpint(symlink(fx->path, link), ==, 0);
  expect_refusal(fx, link, "is a symlink");
  /* A symlink in the folder part is fine: resolved once, then worked through the folder fd. */
  g_autofree char *dirlink = g_strdup_printf("%s-link", fx->dir);
  g_assert_cmpint(symlink(fx->dir, dirlink), ==, 0);
  g_autofree char *via = g_build_filename(dirlink, "sock", NULL);
  g_autoptr(GError) err = NULL;
  UdsSwap *s = uds_swap_prepare(via, &err);
  g_assert_no_error(err);
  uds_swap_free(s);
  unlink(dirlink);

  g_autofree char *stale = g_build_filename(fx->dir, "stale", NULL);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a;
  addr_of(&a, stale);
  g_assert_cmpint(bind(fd, (struct sockaddr *)&a, sizeof a), ==, 0);
  close(fd);
  expect_refusal(fx, stale, "no server is listening");
  /* Bound but never listening is no server either. */
  g_autofree char *bound = g_build_filename(fx->dir, "bound", NULL);
  fd = socket(AF_UNIX, SOCK_STREAM, 0);
  addr_of(&a, bound);
  g_assert_cmpint(bind(fd, (struct sockaddr *)&a, sizeof a), ==, 0);
  expect_refusal(fx, bound, "no server is listening");
  close(fd);

  GString *lp = g_string_new(fx->dir);
  g_string_append_c(lp, '/');
  while (lp->len < 130)
    g_string_append_c(lp, 'x');
  expect_refusal(fx, lp->str, "too long for a Unix socket address");
  g_string_free(lp, TRUE);

  g_assert_cmpint(chmod(fx->dir, 0777), ==, 0);
  expect_refusal(fx, fx->path, "writable by everyone and not sticky");
  g_assert_cmpint(chmod(fx->dir, 0755), ==, 0);
}

/* A server whose socket path is too long to bind by name (it chdir()ed): nobody can reach it by
 * PATH, so interposing there makes no sense. */
static void test_refuse_too_long_live(Fx *fx, gconstpointer data)
{
  GString *p = g_string_new(fx->dir);
  while (p->len < 120) {
    g_string_append(p, "/dddddddddddddddd");
    g_assert_cmpint(mkdir(p->str, 0755), ==, 0);
  }
  g_string_append(p, "/sock");
  g_autofree char *path = g_string_free(p, FALSE);
  start_server_at(fx, path, SOCK_STREAM, attr1, attr2);
  expect_refusal(fx, path, "too long for a Unix socket address");
}

/* Runs fn in a child as uid/gid NOBODY (no supplementary groups); returns what it wrote. */
static char *as_nobody(void (*fn)(const char *path, int out), const char *path)
{
  int out[2];
  g_assert_cmpint(pipe2(out, O_CLOEXEC), ==, 0);
  pid_t pid = xfork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (setgroups(0, NULL) < 0 || setresgid(NOBODY, NOBODY, NOBODY) < 0 || setresuid(NOBODY, NOBODY, NOBODY) < 0)
      _exit(2);
    fn(path, out[1]);
    _exit(0);
  }
  close(out[1]);
  gboolean eof;
  char *text = read_all(out[0], 2 * DEADLINE_MS, &eof);
  close(out[0]);
  int st;
  g_assert_cmpint(waitpid(pid, &st, 0), ==, pid);
  g_assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  g_assert_true(eof);
  return text;
}

static void nobody_prepare(const char *path, int out)
{
  g_autoptr(GError) err = NULL;
  UdsSwap *s = uds_swap_prepare(path, &err);
  dprintf(out, "%s", s ? "prepared" : err->message);
  uds_swap_free(s);
}

static void test_refuse_unprivileged(Fx *fx, gconstpointer data)
{
  start_server_at(fx, fx->path, SOCK_STREAM, (Attr){ 0666, 0, 0 }, attr2);
  g_autofree char *before = listing(fx->dir);
  g_autofree char *msg = as_nobody(nobody_prepare, fx->path);
  g_test_message("as nobody: %s", msg);
  g_assert_nonnull(strstr(msg, "root or write access to the folder is needed"));
  /* A sticky, world-writable folder may be written, but the relay could not get root's ownership. */
  g_assert_cmpint(chmod(fx->dir, 01777), ==, 0);
  g_free(msg);
  msg = as_nobody(nobody_prepare, fx->path);
  g_test_message("as nobody: %s", msg);
  g_assert_nonnull(strstr(msg, "root is needed"));
  g_assert_cmpint(chmod(fx->dir, 0755), ==, 0);
  g_autofree char *after = listing(fx->dir);
  g_assert_cmpstr(after, ==, before);
}

static void nobody_capture(const char *path, int out)
{
  g_autoptr(GError) err = NULL;
  UdsSwap *s = uds_swap_prepare(path, &err);
  int fd = -1;
  if (!s || !uds_swap_guard(s, &err) || (fd = uds_swap_install(s, &err)) < 0) {
    dprintf(out, "%s", err->message);
    uds_swap_free(s);
    return;
  }
  assert_reaches_relay(path, SOCK_STREAM, fd);
  g_autofree char *h = hello(uds_swap_upstream(s), SOCK_STREAM);
  struct stat st;
  lstat(path, &st);
  gboolean ok = uds_swap_restore(s, &err);
  dprintf(out, "%s %s mode %o uid %u", ok ? "restored" : err->message, h ? h : "-", (unsigned)(st.st_mode & 07777),
          (unsigned)st.st_uid);
  close(fd);
  uds_swap_free(s);
}

/* An unprivileged user interposes on its own socket in its own folder. */
static void test_unprivileged_own_socket(Fx *fx, gconstpointer data)
{
  g_assert_cmpint(chown(fx->dir, NOBODY, NOBODY), ==, 0);
  start_server_at(fx, fx->path, SOCK_STREAM, (Attr){ 0600, NOBODY, NOBODY }, attr2);
  g_autofree char *before = listing(fx->dir);
  ino_t orig = ino_of(fx->path);
  g_autofree char *msg = as_nobody(nobody_capture, fx->path);
  g_test_message("as nobody: %s", msg);
  g_assert_cmpstr(msg, ==, "restored hello 1 mode 600 uid 65534");
  g_assert_cmpuint(ino_of(fx->path), ==, orig);
  g_autofree char *after = listing(fx->dir);
  g_assert_cmpstr(after, ==, before);
}

/* Upstream checks the caller's permission on the original, as a direct connect() would. */
static void nobody_upstream(const char *upstream, int out)
{
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un a;
  addr_of(&a, upstream);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
    dprintf(out, "%s", g_strerror(errno));
    close(fd);
    return;
  }
  char buf[32];
  ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
  dprintf(out, "%.*s", (int)(n > 0 ? n : 0), buf);
  close(fd);
}

static void test_upstream_permission(Fx *fx, gconstpointer data)
{
  start_server_at(fx, fx->path, SOCK_STREAM, (Attr){ 0660, 0, 0 }, attr2);
  g_autoptr(GError) err = NULL;
  UdsSwap *s = uds_swap_prepare(fx->path, &err);
  g_assert_no_error(err);
  g_assert_true(uds_swap_guard(s, &err));
  fx_track(fx, uds_swap_guardian_pid(s));
  int fd = uds_swap_install(s, &err);
  g_assert_no_error(err);
  g_autofree char *denied = as_nobody(nobody_upstream, uds_swap_upstream(s));
  g_assert_cmpstr(denied, ==, g_strerror(EACCES));
  g_autofree char *bk = backup_of(fx);
  g_assert_cmpint(chmod(bk, 0666), ==, 0);  /* the original's inode */
  g_autofree char *allowed = as_nobody(nobody_upstream, uds_swap_upstream(s));
  g_assert_cmpstr(allowed, ==, "hello 1");
  g_assert_cmpint(chmod(bk, 0660), ==, 0);
  g_assert_true(uds_swap_restore(s, &err));
  close(fd);
  uds_swap_free(s);
}

static void test_refuse_interposed(Fx *fx, gconstpointer data)
{
  start_server(fx, SOCK_STREAM);
  Holder h;
  start_holder(fx, &h, -1, HOLD_PLAIN);
  g_autofree char *needle = g_strdup_printf("already interposed by a running capture (pid %d,", (int)h.pid);
  expect_refusal(fx, fx->path, needle);
  g_autoptr(GError) err = NULL;
  g_autoptr(GString) report = g_string_new(NULL);
  g_autofree char *before = listing(fx->dir);
  g_assert_false(uds_swap_repair(fx->path, report, &err));
  g_assert_nonnull(err);
  g_test_message("repair: %s", err->message);
  g_autofree char *pidtext = g_strdup_printf("pid %d", (int)h.pid);
  g_assert_nonnull(strstr(err->message, pidtext));
  g_autofree char *after = listing(fx->dir);
  g_assert_cmpstr(after, ==, before);
  g_assert_cmpint(write(h.ctl, "r", 1), ==, 1);
  g_autofree char *line = read_line(h.out, DEADLINE_MS);
  g_assert_cmpstr(line, ==, "restored");
  g_assert_cmpint(wait_gone(h.guardian, 1000), >=, 0);
  holder_close(&h);
}

/* ---- udsdump --restore after a power cut (holder and guardian both SIGKILLed) ---- */

static void power_cut(Fx *fx, Holder *h)
{
  start_holder(fx, h, -1, HOLD_PLAIN);
  g_assert_cmpint(kill(h->guardian, SIGKILL), ==, 0);
  g_assert_cmpint(wait_gone(h->guardian, DEADLINE_MS), >=, 0);
  kill_and_reap(h->pid);
  holder_close(h);
}

static void test_repair(Fx *fx, gconstpointer data)
{
  start_server(fx, SOCK_STREAM);
  g_autofree char *before = listing(fx->dir);
  ino_t orig = ino_of(fx->path);
  Holder h;
  power_cut(fx, &h);
  g_assert_cmpuint(ino_of(fx->path), !=, orig);
  g_autofree char *bk = backup_of(fx);
  g_assert_cmpuint(ino_of(bk), ==, orig);
  /* A dead temporary relay socket, as a cut during install would leave. */
  g_autofree char *temp = g_build_filename(fx->dir, ".sock.udsdump-0badf00d", NULL);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a;
  addr_of(&a, temp);
  g_assert_cmpint(bind(fd, (struct sockaddr *)&a, sizeof a), ==, 0);
  close(fd);
  g_autofree char *needle = g_strdup_printf("run `udsdump --restore %s`", fx->path);
  expect_refusal(fx, fx->path, needle);

  g_autoptr(GError) err = NULL;
  g_autoptr(GString) report = g_string_new(NULL);
  g_assert_true(uds_swap_repair(fx->path, report, &err));
  g_assert_no_error(err);
  g_test_message("repair: %s", report->str);
  g_assert_nonnull(strstr(report->str, "put the original socket back"));
  g_assert_nonnull(strstr(report->str, "0badf00d"));
  assert_put_back(fx, before, orig, SOCK_STREAM);
  g_string_truncate(report, 0);
  g_assert_true(uds_swap_repair(fx->path, report, &err));
  g_assert_nonnull(strstr(report->str, "nothing to do"));
  g_autofree char *after = listing(fx->dir);
  g_assert_cmpstr(after, ==, before);
  /* And a capture can start again. */
  UdsSwap *s = uds_swap_prepare(fx->path, &err);
  g_assert_no_error(err);
  uds_swap_free(s);
}

static void test_repair_server_restarted(Fx *fx, gconstpointer data)
{
  start_server(fx, SOCK_STREAM);
  Holder h;
  power_cut(fx, &h);
  server_recreate(fx, 2);  /* unlinks udsdump's dead relay, binds anew */
  ino_t second = ino_of(fx->path);
  g_autoptr(GError) err = NULL;
  g_autoptr(GString) report = g_string_new(NULL);
  g_assert_true(uds_swap_repair(fx->path, report, &err));
  g_assert_no_error(err);
  g_test_message("repair: %s", report->str);
  g_assert_nonnull(strstr(report->str, "removed the stale backup"));
  g_assert_cmpuint(ino_of(fx->path), ==, second);
  g_autofree char *after = listing(fx->dir);
  g_assert_null(strstr(after, "udsdump"));
  g_autofree char *hh = hello(fx->path, SOCK_STREAM);
  g_assert_cmpstr(hh, ==, "hello 2");
}

static void test_repair_path_missing(Fx *fx, gconstpointer data)
{
  start_server(fx, SOCK_STREAM);
  g_autofree char *before = listing(fx->dir);
  ino_t orig = ino_of(fx->path);
  Holder h;
  power_cut(fx, &h);
  g_assert_cmpint(unlink(fx->path), ==, 0);
  g_autoptr(GError) err = NULL;
  g_autoptr(GString) report = g_string_new(NULL);
  g_assert_true(uds_swap_repair(fx->path, report, &err));
  g_assert_no_error(err);
  g_test_message("repair: %s", report->str);
  g_assert_nonnull(strstr(report->str, "was missing"));
  assert_put_back(fx, before, orig, SOCK_STREAM);
}

/* Without sock_diag (a seccomp filter), the kernel's list by name and a connect() probe decide. */
static void test_no_sock_diag(Fx *fx, gconstpointer data)
{
  int type = GPOINTER_TO_INT(data);
  start_server(fx, type);
  g_setenv("UDSDUMP_NO_SOCK_DIAG", "1", TRUE);
  g_autoptr(GError) err = NULL;
  UdsSwap *s = uds_swap_prepare(fx->path, &err);
  g_assert_no_error(err);
  g_assert_cmpint(uds_swap_sock_type(s), ==, type);
  g_assert_true(uds_swap_guard(s, &err));
  fx_track(fx, uds_swap_guardian_pid(s));
  int fd = uds_swap_install(s, &err);
  g_assert_no_error(err);
  assert_reaches_relay(fx->path, type, fd);
  g_assert_true(uds_swap_restore(s, &err));
  close(fd);
  uds_swap_free(s);
  g_autofree char *stale = g_build_filename(fx->dir, "stale", NULL);
  int sfd = socket(AF_UNIX, type, 0);
  struct sockaddr_un a;
  addr_of(&a, stale);
  g_assert_cmpint(bind(sfd, (struct sockaddr *)&a, sizeof a), ==, 0);
  close(sfd);
  expect_refusal(fx, stale, "no server is listening");
  g_unsetenv("UDSDUMP_NO_SOCK_DIAG");
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  setvbuf(stdout, NULL, _IOLBF, 0);  /* TAP lines survive a watchdog's SIGALRM */
  signal(SIGPIPE, SIG_IGN);
  if (geteuid() != 0) {
    g_test_skip("the swap tests need root (owners, setresuid)");
    return g_test_run();
  }
#define ADD(name, data, fn) g_test_add(name, Fx, data, fx_setup, fn, fx_teardown)
  ADD("/swap/interpose/stream", GINT_TO_POINTER(SOCK_STREAM), test_interpose);
  ADD("/swap/interpose/seqpacket", GINT_TO_POINTER(SOCK_SEQPACKET), test_interpose);
  ADD("/swap/interpose/dgram", GINT_TO_POINTER(SOCK_DGRAM), test_interpose);
  ADD("/swap/long-path/deep-folder", GINT_TO_POINTER(FALSE), test_long_path);
  ADD("/swap/long-path/long-name", GINT_TO_POINTER(TRUE), test_long_path);
  ADD("/swap/sigkill/holder", GINT_TO_POINTER(HOLD_PLAIN), test_sigkill);
  ADD("/swap/sigkill/holder-with-drain-child", GINT_TO_POINTER(HOLD_DRAIN), test_sigkill);
  ADD("/swap/guardian/stdio-and-session", NULL, test_guardian_stdio);
  ADD("/swap/guardian/signals", NULL, test_guardian_signals);
  ADD("/swap/recreate/restore-only", GINT_TO_POINTER(RECREATE_RESTORE), test_recreate);
  ADD("/swap/recreate/detect", GINT_TO_POINTER(RECREATE_DETECT), test_recreate);
  ADD("/swap/recreate/follow", GINT_TO_POINTER(RECREATE_FOLLOW), test_recreate);
  ADD("/swap/recreate/follow-then-sigkill", NULL, test_recreate_then_sigkill);
  ADD("/swap/never-missing-50-rounds", NULL, test_never_missing);
  ADD("/swap/acl", NULL, test_acl);
  ADD("/swap/refuse/basic", NULL, test_refuse_basic);
  ADD("/swap/refuse/too-long-live", NULL, test_refuse_too_long_live);
  ADD("/swap/refuse/unprivileged", NULL, test_refuse_unprivileged);
  ADD("/swap/refuse/already-interposed", NULL, test_refuse_interposed);
  ADD("/swap/unprivileged/own-socket", NULL, test_unprivileged_own_socket);
  ADD("/swap/upstream/permission", NULL, test_upstream_permission);
  ADD("/swap/repair/power-cut", NULL, test_repair);
  ADD("/swap/repair/server-restarted", NULL, test_repair_server_restarted);
  ADD("/swap/repair/path-missing", NULL, test_repair_path_missing);
  ADD("/swap/no-sock-diag/stream", GINT_TO_POINTER(SOCK_STREAM), test_no_sock_diag);
  ADD("/swap/no-sock-diag/dgram", GINT_TO_POINTER(SOCK_DGRAM), test_no_sock_diag);
  return g_test_run();
}
