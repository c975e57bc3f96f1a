/* udsbench-client — the measuring end: each mode times one kind of use of a Unix stream socket and
 * prints one line of key=value results on stdout.
 *
 *   udsbench-client PATH bulk BYTES [WRITE [RATE]]
 *                                             one connection, BYTES one way in WRITE-byte writes
 *                                             (default 1 MiB); the clock stops when the server
 *                                             answers how many bytes it got, which must be BYTES.
 *                                             RATE (MB/s, 10^6 bytes): no write starts before its
 *                                             time at that rate (a paced sender; 0: as fast as it can)
 *   udsbench-client PATH rtt N [SIZE]         one connection, N round trips of SIZE bytes (default 64)
 *                                             after N/10 (at least 100) unmeasured ones; mean, median,
 *                                             p99 in microseconds
 *   udsbench-client PATH conn N [SIZE]        N x (connect, SIZE-byte request, reply, close), one at a
 *                                             time, after N/10 unmeasured; mean and median
 *   udsbench-client PATH hold N               N connections, each proven through by one echoed byte,
 *                                             then "ready" and held until stdin reaches EOF
 *
 * Blocking sockets and plain read/write: the client does what an ordinary client does, and the same
 * on every path, so only the path in between differs.  Exits non-zero on any short or wrong answer:
 * a benchmark of a relay that loses bytes must fail, not report a number.
 */
#include "bench.h"

#include <stdbool.h>

static int connect_to(const char *path)
{
  struct sockaddr_un sa;
  if (bench_sockaddr(&sa, path) < 0)
    bench_die(path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    bench_die("socket");
  while (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    if (errno != EINTR)
      bench_die("connect");
  }
  return fd;
}

static void write_all(int fd, const void *data, size_t len)
{
  const uint8_t *p = data;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      bench_die("write");
    }
    p += n;
    len -= (size_t)n;
  }
}

static void read_all(int fd, void *data, size_t len)
{
  uint8_t *p = data;
  while (len > 0) {
    ssize_t n = read(fd, p, len);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      bench_die("read");
    }
    if (n == 0) {
      fprintf(stderr, "udsbench-client: connection closed with %zu bytes missing\n", len);
      exit(1);
    }
    p += n;
    len -= (size_t)n;
  }
}

static int cmp_u64(const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* mean, median, p99 of n samples in ns, printed in microseconds. */
static void print_latency(const char *what, uint64_t *ns, size_t n)
{
  qsort(ns, n, sizeof *ns, cmp_u64);
  double sum = 0;
  for (size_t i = 0; i < n; i++)
    sum += (double)ns[i];
  printf("%s n=%zu mean_us=%.3f median_us=%.3f p99_us=%.3f min_us=%.3f\n", what, n, sum / (double)n / 1e3,
         (double)ns[n / 2] / 1e3, (double)ns[(size_t)((double)n * 0.99)] / 1e3, (double)ns[0] / 1e3);
}

static int bulk(const char *path, uint64_t bytes, size_t wsize, uint64_t rate_mbps)
{
  if (wsize == 0 || wsize > BENCH_PATTERN_SPAN)
    wsize = 1u << 20;
  const uint8_t *pat = bench_pattern();
  uint64_t t0 = bench_now_ns();
  int fd = connect_to(path);
  char mode = BENCH_MODE_SINK;
  write_all(fd, &mode, 1);
  for (uint64_t off = 0; off < bytes;) {
    size_t len = bytes - off < wsize ? (size_t)(bytes - off) : wsize;
    if (rate_mbps) {
      uint64_t due = t0 + off * 1000 / rate_mbps;   /* ns: off bytes at rate_mbps * 10^6 B/s */
      struct timespec ts = { .tv_sec = (time_t)(due / 1000000000ull), .tv_nsec = (long)(due % 1000000000ull) };
      while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
    }
    write_all(fd, pat + off % BENCH_PATTERN_PERIOD, len);
    off += len;
  }
  shutdown(fd, SHUT_WR);
  uint64_t got = 0;
  read_all(fd, &got, sizeof got);
  uint64_t t1 = bench_now_ns();
  close(fd);
  if (got != bytes) {
    fprintf(stderr, "udsbench-client: the server got %llu bytes of %llu\n", (unsigned long long)got,
            (unsigned long long)bytes);
    return 1;
  }
  double secs = (double)(t1 - t0) / 1e9;
  printf("bulk bytes=%llu secs=%.6f mbps=%.1f\n", (unsigned long long)bytes, secs, (double)bytes / secs / 1e6);
  return 0;
}

static int rtt(const char *path, size_t n, size_t size)
{
  if (size == 0 || size > 65536)
    size = 64;
  size_t warm = n / 10 < 100 ? 100 : n / 10;
  uint64_t *ns = malloc(n * sizeof *ns);
  uint8_t *out = malloc(size), *in = malloc(size);
  if (!ns || !out || !in)
    bench_die("malloc");
  memcpy(out, bench_pattern(), size);
  int fd = connect_to(path);
  char mode = BENCH_MODE_ECHO;
  write_all(fd, &mode, 1);
  for (size_t i = 0; i < warm + n; i++) {
    uint64_t t0 = bench_now_ns();
    write_all(fd, out, size);
    read_all(fd, in, size);
    uint64_t t1 = bench_now_ns();
    if (memcmp(in, out, size) != 0) {
      fprintf(stderr, "udsbench-client: echo differs at round trip %zu\n", i);
      return 1;
    }
    if (i >= warm)
      ns[i - warm] = t1 - t0;
  }
  close(fd);
  print_latency("rtt", ns, n);
  free(ns), free(out), free(in);
  return 0;
}

static int conn(const char *path, size_t n, size_t size)
{
  if (size < 2 || size > 65536)
    size = 64;
  size_t warm = n / 10;
  uint64_t *ns = malloc(n * sizeof *ns);
  uint8_t *req = malloc(size), *rep = malloc(size);
  if (!ns || !req || !rep)
    bench_die("malloc");
  memcpy(req, bench_pattern(), size);
  req[0] = BENCH_MODE_ECHO;   /* the echo answers the other size - 1 bytes */
  for (size_t i = 0; i < warm + n; i++) {
    uint64_t t0 = bench_now_ns();
    int fd = connect_to(path);
    write_all(fd, req, size);
    read_all(fd, rep, size - 1);
    close(fd);
    uint64_t t1 = bench_now_ns();
    if (memcmp(rep, req + 1, size - 1) != 0) {
      fprintf(stderr, "udsbench-client: reply differs on connection %zu\n", i);
      return 1;
    }
    if (i >= warm)
      ns[i - warm] = t1 - t0;
  }
  print_latency("conn", ns, n);
  free(ns), free(req), free(rep);
  return 0;
}

static int hold(const char *path, size_t n)
{
  int *fds = malloc(n * sizeof *fds);
  if (!fds)
    bench_die("malloc");
  const char hello[2] = { BENCH_MODE_ECHO, 'x' };
  for (size_t i = 0; i < n; i++) {
    fds[i] = connect_to(path);
    write_all(fds[i], hello, sizeof hello);
  }
  for (size_t i = 0; i < n; i++) {   /* every one of them reached the server and back */
    char c;
    read_all(fds[i], &c, 1);
    if (c != 'x') {
      fprintf(stderr, "udsbench-client: wrong echo on held connection %zu\n", i);
      return 1;
    }
  }
  printf("ready n=%zu\n", n);
  fflush(stdout);
  char c;
  while (read(0, &c, 1) > 0)
    ;
  for (size_t i = 0; i < n; i++)
    close(fds[i]);
  free(fds);
  return 0;
}

int main(int argc, char **argv)
{
  bench_raise_nofile();
  if (argc >= 4) {
    const char *path = argv[1], *mode = argv[2];
    uint64_t n = strtoull(argv[3], NULL, 0);
    uint64_t arg = argc >= 5 ? strtoull(argv[4], NULL, 0) : 0;
    uint64_t rate = argc >= 6 ? strtoull(argv[5], NULL, 0) : 0;
    if (n > 0 && strcmp(mode, "bulk") == 0)
      return bulk(path, n, (size_t)arg, rate);
    if (n > 0 && strcmp(mode, "rtt") == 0)
      return rtt(path, (size_t)n, (size_t)arg);
    if (n > 0 && strcmp(mode, "conn") == 0)
      return conn(path, (size_t)n, (size_t)arg);
    if (n > 0 && strcmp(mode, "hold") == 0)
      return hold(path, (size_t)n);
  }
  fprintf(stderr, "usage: udsbench-client PATH bulk BYTES [WRITE [RATE]] | rtt N [SIZE] | conn N [SIZE] | hold N\n");
  return 2;
}
