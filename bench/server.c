/* udsbench-server — the far end of every benchmark: a sink/echo server on a Unix stream socket.
 *
 *   udsbench-server [--verify] [--threads] PATH
 *                                            serve PATH (protocol in bench.h) until SIGTERM/SIGINT
 *   udsbench-server --listeners N DIR        N listening sockets DIR/lNNNNN.sock, one connected client
 *                                            each, held until SIGTERM/SIGINT (the discovery load)
 *
 * It prints "ready" on stdout once it is listening (the runner's readiness signal), and removes its
 * sockets on SIGTERM/SIGINT.
 *
 * It must never be what a benchmark measures, so it does the least per byte: one thread, one
 * level-triggered epoll set, one read per wakeup into a 1 MiB buffer (a bulk read drains the whole
 * socket queue), the echo written straight back from the read buffer.  Thread-per-connection would
 * spare the echo an epoll_wait, but it would put a thread creation into every connection of the
 * connection-cost test; one loop keeps the server's share small and the same on every path.
 * A connection's state lives in an array indexed by its fd.
 *
 * --threads: the other common server shape, one blocking thread per connection reading 128 KiB at a
 * time (what many servers in Go, Java or a thread pool look like from the socket's side).  Its reads
 * are smaller and each wakes a thread of its own, which changes how a relay's writes are batched: the
 * benchmark measures both shapes for that reason.
 */
#include "bench.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/stat.h>

#define SERVER_BUF (1u << 20)
#define THREAD_BUF (128u * 1024)

typedef struct {
  char mode;                 /* 0 until the first byte */
  uint64_t count;            /* sink: bytes after the mode byte */
  uint8_t *pending;          /* echo: what the socket did not take yet */
  size_t pending_len, pending_off;
} Client;

static Client *clients;
static int nclients_max;
static int epfd;
static uint8_t *buf;
static bool verify;
static uint64_t verify_errors;

static void client_close(int fd)
{
  Client *c = &clients[fd];
  free(c->pending);
  memset(c, 0, sizeof *c);
  epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
  close(fd);
}

static void set_events(int fd, uint32_t events)
{
  struct epoll_event ev = { .events = events, .data.fd = fd };
  epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev);
}

/* Echo: send data back; what does not fit waits, and reading stops until it is out. */
static bool echo_send(int fd, const uint8_t *data, size_t len)
{
  Client *c = &clients[fd];
  while (len > 0) {
    ssize_t n = send(fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno != EAGAIN)
        return false;
      c->pending = malloc(len);
      if (!c->pending)
        bench_die("malloc");
      memcpy(c->pending, data, len);
      c->pending_len = len;
      c->pending_off = 0;
      set_events(fd, EPOLLOUT);
      return true;
    }
    data += n;
    len -= (size_t)n;
  }
  return true;
}

static void on_writable(int fd)
{
  Client *c = &clients[fd];
  while (c->pending_len > 0) {
    ssize_t n = send(fd, c->pending + c->pending_off, c->pending_len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN)
        return;
      client_close(fd);
      return;
    }
    c->pending_off += (size_t)n;
    c->pending_len -= (size_t)n;
  }
  free(c->pending);
  c->pending = NULL;
  set_events(fd, EPOLLIN);
}

static void sink_check(Client *c, const uint8_t *data, size_t len)
{
  const uint8_t *pat = bench_pattern();
  while (len > 0) {
    size_t span = len < BENCH_PATTERN_SPAN ? len : BENCH_PATTERN_SPAN;
    if (memcmp(data, pat + (c->count % BENCH_PATTERN_PERIOD), span) != 0)
      verify_errors++;
    c->count += span;
    data += span;
    len -= span;
  }
}

static void on_readable(int fd)
{
  Client *c = &clients[fd];
  ssize_t n = recv(fd, buf, SERVER_BUF, MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EINTR))
    return;
  if (n <= 0) {
    if (c->mode == BENCH_MODE_SINK && n == 0) {
      uint64_t le = c->count;   /* little-endian hosts only: fine for a benchmark */
      if (send(fd, &le, sizeof le, MSG_NOSIGNAL) != sizeof le)
        fprintf(stderr, "udsbench-server: cannot send the count: %s\n", strerror(errno));
      if (verify && verify_errors)
        fprintf(stderr, "udsbench-server: %llu chunks differ from the pattern\n", (unsigned long long)verify_errors);
    }
    client_close(fd);
    return;
  }
  const uint8_t *data = buf;
  size_t len = (size_t)n;
  if (!c->mode) {
    c->mode = (char)data[0];
    data++, len--;
  }
  if (c->mode == BENCH_MODE_SINK) {
    if (verify)
      sink_check(c, data, len);
    else
      c->count += len;
  } else if (len > 0 && !echo_send(fd, data, len)) {
    client_close(fd);
  }
}

static void on_accept(int lfd)
{
  for (int i = 0; i < 64; i++) {
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      if (errno != EAGAIN)
        fprintf(stderr, "udsbench-server: accept: %s\n", strerror(errno));
      return;
    }
    if (fd >= nclients_max) {
      close(fd);
      continue;
    }
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
  }
}

static int listen_at(const char *path)
{
  struct sockaddr_un sa;
  if (bench_sockaddr(&sa, path) < 0)
    bench_die(path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    bench_die("socket");
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
    bench_die(path);
  if (listen(fd, 4096) < 0)
    bench_die("listen");
  return fd;
}

static int stop_signals(void)
{
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigprocmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);
  return signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
}

static int serve(const char *path)
{
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  nclients_max = (int)(rl.rlim_cur > 1000000 ? 1000000 : rl.rlim_cur);
  clients = calloc((size_t)nclients_max, sizeof *clients);
  buf = malloc(SERVER_BUF);
  if (!clients || !buf)
    bench_die("malloc");
  int sfd = stop_signals();
  int lfd = listen_at(path);
  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (sfd < 0 || epfd < 0)
    bench_die("epoll/signalfd");
  struct epoll_event ev = { .events = EPOLLIN, .data.fd = lfd };
  epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev);
  ev.data.fd = sfd;
  epoll_ctl(epfd, EPOLL_CTL_ADD, sfd, &ev);
  printf("ready\n");
  fflush(stdout);
  for (;;) {
    struct epoll_event evs[64];
    int n = epoll_wait(epfd, evs, 64, -1);
    if (n < 0 && errno != EINTR)
      bench_die("epoll_wait");
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == sfd) {
        unlink(path);
        return verify_errors ? 1 : 0;
      }
      if (fd == lfd)
        on_accept(lfd);
      else if (clients[fd].pending_len > 0)
        on_writable(fd);
      else
        on_readable(fd);
    }
  }
}

/* --threads: one blocking thread per connection. */
static void *conn_thread(void *arg)
{
  int fd = (int)(intptr_t)arg;
  uint8_t *tbuf = malloc(THREAD_BUF);
  if (!tbuf)
    bench_die("malloc");
  Client c = { 0 };
  uint64_t mine = 0;
  for (;;) {
    ssize_t n = recv(fd, tbuf, THREAD_BUF, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    const uint8_t *data = tbuf;
    size_t len = (size_t)n;
    if (!c.mode) {
      c.mode = (char)data[0];
      data++, len--;
    }
    if (c.mode == BENCH_MODE_SINK) {
      if (verify) {
        uint64_t before = verify_errors;
        sink_check(&c, data, len);   /* counts into the shared total: a benchmark runs one bulk at a time */
        mine += verify_errors - before;
      } else {
        c.count += len;
      }
      continue;
    }
    while (len > 0) {
      ssize_t k = send(fd, data, len, MSG_NOSIGNAL);
      if (k < 0 && errno == EINTR)
        continue;
      if (k <= 0)
        goto out;
      data += k;
      len -= (size_t)k;
    }
  }
  if (c.mode == BENCH_MODE_SINK) {
    uint64_t le = c.count;
    if (send(fd, &le, sizeof le, MSG_NOSIGNAL) != sizeof le)
      fprintf(stderr, "udsbench-server: cannot send the count: %s\n", strerror(errno));
    if (mine)
      fprintf(stderr, "udsbench-server: %llu chunks differ from the pattern\n", (unsigned long long)mine);
  }
out:
  close(fd);
  free(tbuf);
  return NULL;
}

static int serve_threads(const char *path)
{
  int sfd = stop_signals();
  int lfd = listen_at(path);
  if (sfd < 0)
    bench_die("signalfd");
  int fl = fcntl(lfd, F_GETFL);
  fcntl(lfd, F_SETFL, fl & ~O_NONBLOCK);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  printf("ready\n");
  fflush(stdout);
  for (;;) {
    struct pollfd pf[2] = { { .fd = lfd, .events = POLLIN }, { .fd = sfd, .events = POLLIN } };
    if (poll(pf, 2, -1) < 0) {
      if (errno == EINTR)
        continue;
      bench_die("poll");
    }
    if (pf[1].revents) {
      unlink(path);
      return verify_errors ? 1 : 0;
    }
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
      continue;
    pthread_t t;
    if (pthread_create(&t, &attr, conn_thread, (void *)(intptr_t)fd) != 0) {
      close(fd);
      continue;
    }
  }
}

/* The discovery load: listeners, each with one connected (and accepted) client, so /proc/net/unix
 * holds three entries per listener as on a busy host. */
static int listeners(int n, const char *dir)
{
  close(stop_signals());   /* blocked from here: sigwaitinfo below takes them */
  char **paths = calloc((size_t)n, sizeof *paths);
  if (!paths)
    bench_die("calloc");
  for (int i = 0; i < n; i++) {
    if (asprintf(&paths[i], "%s/l%05d.sock", dir, i) < 0)
      bench_die("asprintf");
    int lfd = listen_at(paths[i]);
    struct sockaddr_un sa;
    bench_sockaddr(&sa, paths[i]);
    int cfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (cfd < 0 || connect(cfd, (struct sockaddr *)&sa, sizeof sa) < 0)
      bench_die("connect");
    if (accept4(lfd, NULL, NULL, SOCK_CLOEXEC) < 0)
      bench_die("accept");
  }
  printf("ready\n");
  fflush(stdout);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  while (sigwaitinfo(&set, NULL) < 0 && errno == EINTR)
    ;
  for (int i = 0; i < n; i++) {
    unlink(paths[i]);
    free(paths[i]);
  }
  free(paths);
  return 0;
}

int main(int argc, char **argv)
{
  bench_raise_nofile();
  if (argc == 4 && strcmp(argv[1], "--listeners") == 0)
    return listeners(atoi(argv[2]), argv[3]);
  bool threads = false;
  int a = 1;
  for (; a < argc - 1; a++) {
    if (strcmp(argv[a], "--verify") == 0)
      verify = true;
    else if (strcmp(argv[a], "--threads") == 0)
      threads = true;
    else
      break;
  }
  if (a == argc - 1 && argv[a][0] != '-')
    return threads ? serve_threads(argv[a]) : serve(argv[a]);
  fprintf(stderr, "usage: udsbench-server [--verify] [--threads] PATH | --listeners N DIR\n");
  return 2;
}
