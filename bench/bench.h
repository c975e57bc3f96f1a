/* bench — what the benchmark programs share: the byte pattern of a bulk stream, the tiny protocol
 * between udsbench-client and udsbench-server, clocks and socket helpers.
 *
 * The protocol: the first byte a client sends picks what the server does with the connection.
 *   'S' sink: the server reads everything up to EOF, then answers the count of bytes it read after the
 *       mode byte (8 bytes, little endian) and closes.  The client stops its clock on that answer, so a
 *       bulk time covers delivery to the server, not just the client's last write.
 *   'E' echo: the server writes back every byte it reads after the mode byte, until EOF.
 * A bulk stream after 'S' is bench_pattern(), stream offset k carrying byte k % BENCH_PATTERN_PERIOD
 * of it: a prime period, so no read or frame boundary ever lines up with it, and a lost, repeated or
 * shifted chunk shows in a plain memcmp (the server's and the pcap reader's optional checks).
 */
#pragma once
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define BENCH_MODE_SINK 'S'
#define BENCH_MODE_ECHO 'E'
#define BENCH_PATTERN_PERIOD 65521u               /* prime */
#define BENCH_PATTERN_SPAN (4u << 20)             /* longest compare or write from one offset */

/* period + span bytes, so any offset < period has span valid bytes after it.  Never freed. */
static inline const uint8_t *bench_pattern(void)
{
  static uint8_t *pat;
  if (!pat) {
    pat = malloc(BENCH_PATTERN_PERIOD + BENCH_PATTERN_SPAN);
    if (!pat)
      abort();
    uint64_t x = 0x9e3779b97f4a7c15ull;   /* xorshift64: fixed, so every program agrees */
    for (uint32_t i = 0; i < BENCH_PATTERN_PERIOD; i++) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      pat[i] = (uint8_t)(x >> 24);
    }
    for (uint32_t i = BENCH_PATTERN_PERIOD; i < BENCH_PATTERN_PERIOD + BENCH_PATTERN_SPAN; i++)
      pat[i] = pat[i - BENCH_PATTERN_PERIOD];
  }
  return pat;
}

static inline uint64_t bench_now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Fills sa for path; -1 (ENAMETOOLONG) when it does not fit. */
static inline int bench_sockaddr(struct sockaddr_un *sa, const char *path)
{
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  if (strlen(path) >= sizeof sa->sun_path) {
    errno = ENAMETOOLONG;
    return -1;
  }
  strcpy(sa->sun_path, path);
  return 0;
}

/* 1000 connections need more descriptors than a default soft limit of 1024 gives. */
static inline void bench_raise_nofile(void)
{
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

static inline void bench_die(const char *what)
{
  fprintf(stderr, "udsbench: %s: %s\n", what, strerror(errno));
  exit(1);
}
