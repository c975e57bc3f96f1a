/* bench-discover — how long the interface listing takes on a busy host.
 *
 * Wireshark runs `udsdump --extcap-interfaces` at every start, so listing must stay fast when a host
 * has many sockets.  This creates N listening sockets in a temp dir, one client connection to each
 * (accepted, so both ends exist as on a real server: 3N descriptors in this process), then times
 * uds_discover(NULL, TRUE) over several rounds, and, given the udsdump executable, the spawned
 * `udsdump --extcap-interfaces --extcap-version=4.0` the same way.
 *
 * usage: bench-discover [-n SOCKETS] [-r ROUNDS] [UDSDUMP]
 */
#include "discover.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void report(const char *what, double *t, int n)
{
  qsort(t, (size_t)n, sizeof *t, cmp_double);
  printf("%-58s min %7.1f  median %7.1f  max %7.1f ms  (%d rounds)\n", what, t[0], t[n / 2], t[n - 1], n);
}

static gboolean raise_nofile(rlim_t want)
{
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return FALSE;
  if (rl.rlim_cur >= want)
    return TRUE;
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want) {
    fprintf(stderr, "bench-discover: need %lu descriptors, the hard limit is %lu (ulimit -Hn)\n",
            (unsigned long)want, (unsigned long)rl.rlim_max);
    return FALSE;
  }
  rl.rlim_cur = want;
  return setrlimit(RLIMIT_NOFILE, &rl) == 0;
}

static guint count_ours(GPtrArray *list, const char *dir, pid_t self)
{
  guint n = 0;
  gsize dl = strlen(dir);
  for (guint i = 0; i < list->len; i++) {
    const UdsSocketInfo *s = g_ptr_array_index(list, i);
    n += strncmp(s->path, dir, dl) == 0 && s->path[dl] == '/' && s->pid == self;
  }
  return n;
}

int main(int argc, char **argv)
{
  int nsock = 2000, rounds = 10;
  const char *udsdump = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
      nsock = atoi(argv[++i]);
    else if (strcmp(argv[i], "-r") == 0 && i + 1 < argc)
      rounds = atoi(argv[++i]);
    else if (argv[i][0] != '-' && !udsdump)
      udsdump = argv[i];
    else {
      fprintf(stderr, "usage: %s [-n SOCKETS] [-r ROUNDS] [UDSDUMP]\n", argv[0]);
      return 2;
    }
  }
  if (nsock < 1 || rounds < 1) {
    fprintf(stderr, "bench-discover: -n and -r must be positive\n");
    return 2;
  }
  if (!raise_nofile((rlim_t)nsock * 3 + 64))
    return 1;
  g_unsetenv("UDSDUMP_PROC_ROOT");

  g_autoptr(GError) err = NULL;
  g_autofree char *dir = g_dir_make_tmp("udsbench-XXXXXX", &err);
  if (!dir) {
    fprintf(stderr, "bench-discover: %s\n", err->message);
    return 1;
  }
  int *fds = g_new(int, (gsize)nsock * 3);
  int nfds = 0, status = 1;
  double t0 = now_ms();
  for (int i = 0; i < nsock; i++) {
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/s%05d.sock", dir, i);
    int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l < 0)
      goto fail;
    fds[nfds++] = l;
    if (bind(l, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(l, 4) != 0)
      goto fail;
    int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c < 0)
      goto fail;
    fds[nfds++] = c;
    if (connect(c, (struct sockaddr *)&sa, sizeof sa) != 0)
      goto fail;
    int a = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    if (a < 0)
      goto fail;
    fds[nfds++] = a;
    continue;
  fail:
    fprintf(stderr, "bench-discover: socket %d: %s\n", i, g_strerror(errno));
    goto out;
  }
  printf("%d listening sockets + %d connections (%d descriptors) in %s, set up in %.0f ms\n", nsock, nsock, nfds,
         dir, now_ms() - t0);

  double *t = g_new(double, (gsize)rounds);
  for (int mode = 0; mode < 2; mode++) {
    gboolean owners = mode == 0;
    guint found = 0, listed = 0;
    for (int r = 0; r < rounds; r++) {
      double s = now_ms();
      g_autoptr(GPtrArray) list = uds_discover(NULL, owners, &err);
      t[r] = now_ms() - s;
      if (!list) {
        fprintf(stderr, "bench-discover: %s\n", err->message);
        g_free(t);
        goto out;
      }
      listed = list->len;
      found = owners ? count_ours(list, dir, getpid()) : listed;
    }
    if (owners)
      printf("uds_discover: %u sockets listed, %u of ours with our pid\n", listed, found);
    report(owners ? "uds_discover(NULL, with_owners=TRUE)" : "uds_discover(NULL, with_owners=FALSE)", t, rounds);
    if (owners && found != (guint)nsock) {
      fprintf(stderr, "bench-discover: expected %d of our sockets with owners, got %u\n", nsock, found);
      g_free(t);
      goto out;
    }
  }

  if (udsdump) {
    char *args[] = { (char *)udsdump, (char *)"--extcap-interfaces", (char *)"--extcap-version=4.0", NULL };
    int ifaces = 0;
    for (int r = 0; r < rounds; r++) {
      g_autofree char *out = NULL, *errs = NULL;
      int wait_status = 0;
      double s = now_ms();
      gboolean ok = g_spawn_sync(NULL, args, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, &errs, &wait_status, &err);
      t[r] = now_ms() - s;
      if (!ok || !g_spawn_check_wait_status(wait_status, &err)) {
        fprintf(stderr, "bench-discover: %s: %s%s\n", udsdump, err->message, errs ? errs : "");
        g_free(t);
        goto out;
      }
      ifaces = 0;
      for (const char *p = out; (p = strstr(p, "\ninterface {value=unix:")); p++)
        ifaces++;
    }
    printf("udsdump: %d unix: interfaces listed\n", ifaces);
    report("udsdump --extcap-interfaces --extcap-version=4.0 (spawned)", t, rounds);
  }
  g_free(t);
  status = 0;

out:
  for (int i = 0; i < nfds; i++)
    close(fds[i]);
  for (int i = 0; i < nsock; i++) {
    char p[sizeof(((struct sockaddr_un *)NULL)->sun_path)];
    snprintf(p, sizeof p, "%s/s%05d.sock", dir, i);
    unlink(p);
  }
  rmdir(dir);
  g_free(fds);
  return status;
}
