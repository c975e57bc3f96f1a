/* udsbench-relay — the floor: the least any user-space relay on a Unix socket can cost, to read the
 * udsdump numbers against.  Not a product: no capture, no identity switch, no ancillary data.
 *
 *   udsbench-relay [--splice] LISTEN_PATH UPSTREAM_PATH
 *
 * Prints "ready" once it listens; runs until SIGTERM/SIGINT, then removes LISTEN_PATH.
 * One thread, one level-triggered epoll set, a connection as two halves (as in src/relay.c): bytes
 * read from a half go to the other half's socket; what that socket does not take waits there and the
 * reading half pauses.  Default: recv/send through one 256 KiB buffer (the copy loop udsdump uses).
 * --splice: socket -> pipe -> socket with splice(2), no byte in user space.  That mode LOSES passed
 * descriptors (the kernel drops SCM_RIGHTS on splice), which is why it exists only here, to measure.
 * --tee FIFO (with --splice): also tee(2) every batch, as it is, into FIFO (no framing, no headers;
 * what FIFO cannot take at once is not waited for): the least a relay that hands a capture reader a
 * copy of the bytes can cost, to tell the capture's own price from udsdump's.
 */
#include "bench.h"

#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>

#define CHUNK (256u * 1024)
#define PIPE_SIZE (1u << 20)

typedef struct Half Half;
typedef struct Conn Conn;
struct Half {
  Conn *conn;
  int fd;
  Half *peer;
  bool eof, shut;
  uint32_t mask;
  /* bytes read from the peer and not yet written to fd: in buf (copy) or in pipe (splice) */
  uint8_t *buf;
  size_t len, off;
  int pipe[2];
  size_t inpipe;
};

struct Conn {
  Half h[2];
  Conn *next_dead;
};

static int epfd;
static bool use_splice;
static int tee_fd = -1;              /* --tee */
static uint8_t *scratch;
static Conn *dead;   /* closed during this epoll batch, freed after it: later events may point here */

static void conn_close(Conn *c)
{
  for (int i = 0; i < 2; i++) {
    Half *h = &c->h[i];
    if (h->fd >= 0) {
      epoll_ctl(epfd, EPOLL_CTL_DEL, h->fd, NULL);
      close(h->fd);
      h->fd = -1;
    }
    if (h->pipe[0] >= 0) {
      close(h->pipe[0]);
      close(h->pipe[1]);
      h->pipe[0] = h->pipe[1] = -1;
    }
    free(h->buf);
    h->buf = NULL;
  }
  c->next_dead = dead;
  dead = c;
}

static size_t pending(const Half *h)
{
  return use_splice ? h->inpipe : h->len;
}

static void update(Half *h)
{
  uint32_t want = 0;
  if (!h->eof && pending(h->peer) == 0)
    want |= EPOLLIN;
  if (pending(h) > 0)
    want |= EPOLLOUT;
  if (want == h->mask)
    return;
  struct epoll_event ev = { .events = want, .data.ptr = h };
  epoll_ctl(epfd, EPOLL_CTL_MOD, h->fd, &ev);
  h->mask = want;
}

static bool finished(Conn *c)
{
  return c->h[0].eof && c->h[1].eof && pending(&c->h[0]) == 0 && pending(&c->h[1]) == 0;
}

/* Writes what h holds for its socket.  false: the connection is gone. */
static bool flush(Half *h)
{
  while (pending(h) > 0) {
    ssize_t n = use_splice ? splice(h->pipe[0], NULL, h->fd, NULL, h->inpipe, SPLICE_F_NONBLOCK | SPLICE_F_MOVE)
                           : send(h->fd, h->buf + h->off, h->len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN)
        break;
      return false;
    }
    if (use_splice)
      h->inpipe -= (size_t)n;
    else
      h->off += (size_t)n, h->len -= (size_t)n;
  }
  if (pending(h) == 0 && h->peer->eof && !h->shut) {
    shutdown(h->fd, SHUT_WR);
    h->shut = true;
  }
  return true;
}

static bool on_read(Half *h)
{
  Half *o = h->peer;
  ssize_t n;
  if (use_splice) {
    n = splice(h->fd, NULL, o->pipe[1], NULL, PIPE_SIZE, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
    if (n > 0 && tee_fd >= 0 && o->inpipe == 0)
      (void)tee(o->pipe[0], tee_fd, (size_t)n, SPLICE_F_NONBLOCK);   /* from the pipe's head: this batch */
    if (n > 0)
      o->inpipe += (size_t)n;
  } else {
    n = recv(h->fd, scratch, CHUNK, MSG_DONTWAIT);
    if (n > 0) {
      ssize_t s = send(o->fd, scratch, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (s < 0 && errno != EAGAIN)
        return false;
      if (s < n) {
        size_t from = s > 0 ? (size_t)s : 0;
        o->buf = realloc(o->buf, CHUNK);
        memcpy(o->buf, scratch + from, (size_t)n - from);
        o->off = 0;
        o->len = (size_t)n - from;
      }
    }
  }
  if (n < 0 && (errno == EAGAIN || errno == EINTR))
    return true;
  if (n <= 0)
    h->eof = true;
  return use_splice ? flush(o) : (h->eof ? flush(o) : true);
}

static void on_event(Half *h, uint32_t ev)
{
  Conn *c = h->conn;
  if (h->fd < 0)
    return;
  if ((ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && pending(h) > 0 && !flush(h)) {
    conn_close(c);
    return;
  }
  if ((ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !h->eof && pending(h->peer) == 0 && !on_read(h)) {
    conn_close(c);
    return;
  }
  if (finished(c)) {
    conn_close(c);
    return;
  }
  update(&c->h[0]);
  update(&c->h[1]);
}

static void on_accept(int lfd, const char *upstream)
{
  for (;;) {
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
      return;
    struct sockaddr_un sa;
    bench_sockaddr(&sa, upstream);
    int up = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (up < 0 || connect(up, (struct sockaddr *)&sa, sizeof sa) < 0) {
      close(fd);
      if (up >= 0)
        close(up);
      continue;
    }
    Conn *c = calloc(1, sizeof *c);
    c->h[0].fd = fd, c->h[1].fd = up;
    c->h[0].conn = c->h[1].conn = c;
    c->h[0].peer = &c->h[1], c->h[1].peer = &c->h[0];
    for (int i = 0; i < 2; i++) {
      c->h[i].pipe[0] = c->h[i].pipe[1] = -1;
      if (use_splice) {
        if (pipe2(c->h[i].pipe, O_CLOEXEC | O_NONBLOCK) < 0)
          bench_die("pipe2");
        fcntl(c->h[i].pipe[1], F_SETPIPE_SZ, PIPE_SIZE);
      }
      c->h[i].mask = EPOLLIN;
      struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &c->h[i] };
      epoll_ctl(epfd, EPOLL_CTL_ADD, c->h[i].fd, &ev);
    }
  }
}

int main(int argc, char **argv)
{
  int a = 1;
  if (argc > a && strcmp(argv[a], "--splice") == 0)
    use_splice = true, a++;
  if (use_splice && argc > a + 1 && strcmp(argv[a], "--tee") == 0) {
    tee_fd = open(argv[a + 1], O_WRONLY | O_CLOEXEC);
    if (tee_fd < 0)
      bench_die(argv[a + 1]);
    fcntl(tee_fd, F_SETPIPE_SZ, PIPE_SIZE);
    a += 2;
  }
  if (argc - a != 2) {
    fprintf(stderr, "usage: udsbench-relay [--splice [--tee FIFO]] LISTEN_PATH UPSTREAM_PATH\n");
    return 2;
  }
  const char *path = argv[a], *upstream = argv[a + 1];
  bench_raise_nofile();
  scratch = malloc(CHUNK);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigprocmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);
  int sfd = signalfd(-1, &set, SFD_CLOEXEC);
  struct sockaddr_un sa;
  if (bench_sockaddr(&sa, path) < 0)
    bench_die(path);
  int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 4096) < 0)
    bench_die(path);
  epfd = epoll_create1(EPOLL_CLOEXEC);
  static int lfd_tag, sfd_tag;
  struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &lfd_tag };
  epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev);
  ev.data.ptr = &sfd_tag;
  epoll_ctl(epfd, EPOLL_CTL_ADD, sfd, &ev);
  printf("ready\n");
  fflush(stdout);
  for (;;) {
    struct epoll_event evs[64];
    int n = epoll_wait(epfd, evs, 64, -1);
    for (int i = 0; i < n; i++) {
      if (evs[i].data.ptr == &sfd_tag) {
        unlink(path);
        return 0;
      }
      if (evs[i].data.ptr == &lfd_tag)
        on_accept(lfd, upstream);
      else
        on_event(evs[i].data.ptr, evs[i].events);
    }
    while (dead) {
      Conn *c = dead;
      dead = c->next_dead;
      free(c);
    }
  }
}
