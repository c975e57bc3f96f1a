/* bench-discover — how long the interface listing takes on a busy host.
 *
 * Wireshark runs `udsdump --extcap-interfaces` at every start, so listing must stay fast when a host
 * has many sockets.  This creates N listening sockets in a temp dir, one client connection to each
 * (accepted, so both ends exist as on a real server: 3N descriptors in this process), then times
 * uds_discover(NULL, TRUE) over several rounds, and, given the udsdump executable, the spawned
 * `udsdump --extcap-interfaces --extcap-version=4.0` the same way.
 *
 * With --namespaces K (root): K containers as the kernel makes them (each process in its own network
 * and mount namespace, a private tmpfs over its folder) with --per-ns M listening sockets (+ a client
 * each) that only its namespace sees, so they are listed as /proc/PID/root/... .  The spawned listing
 * is then timed with them, and, given --baseline OLD_UDSDUMP (a build of the code before namespaces
 * were read, see run-namespaces), OLD's listing of the host sockets alone is timed in the same
 * interleaved rounds: the ratio is what the namespace reading costs against yesterday's listing.
 *
 * usage: bench-discover [-n SOCKETS] [-r ROUNDS] [--namespaces K] [--per-ns M] [--baseline OLD] [UDSDUMP]
 */
#include "discover.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
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

/* One listening socket at path with a connected, accepted client: 3 descriptors into fds. */
static gboolean listener_with_client(const char *path, int *fds, int *nfds)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  g_strlcpy(sa.sun_path, path, sizeof sa.sun_path);
  int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (l < 0)
    return FALSE;
  fds[(*nfds)++] = l;
  if (bind(l, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(l, 4) != 0)
    return FALSE;
  int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c < 0)
    return FALSE;
  fds[(*nfds)++] = c;
  if (connect(c, (struct sockaddr *)&sa, sizeof sa) != 0)
    return FALSE;
  int a = accept4(l, NULL, NULL, SOCK_CLOEXEC);
  if (a < 0)
    return FALSE;
  fds[(*nfds)++] = a;
  return TRUE;
}

/* A "container": a child in new network and mount namespaces with a private tmpfs over nsdir and m
 * listeners in it.  It writes one byte to ready once they listen and exits when hold reaches EOF.
 * The parent's descriptors (the host sockets) are closed first: a container holds only its own. */
static pid_t start_container(const char *nsdir, int m, const int *host_fds, int n_host, const int ready[2],
                             const int hold[2])
{
  pid_t pid = fork();
  if (pid != 0)
    return pid;
  for (int i = 0; i < n_host; i++)
    close(host_fds[i]);
  close(ready[0]);
  close(hold[1]);   /* only the parent's copy may keep it open */
  if (unshare(CLONE_NEWNET | CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
      mount("bench", nsdir, "tmpfs", 0, "mode=0755") != 0) {
    fprintf(stderr, "bench-discover: container: %s\n", g_strerror(errno));
    _exit(1);
  }
  int *fds = g_new(int, (gsize)m * 3);
  int nfds = 0;
  for (int i = 0; i < m; i++) {
    char path[108];
    snprintf(path, sizeof path, "%s/c%03d.sock", nsdir, i);
    if (!listener_with_client(path, fds, &nfds)) {
      fprintf(stderr, "bench-discover: container socket %s: %s\n", path, g_strerror(errno));
      _exit(1);
    }
  }
  if (write(ready[1], "r", 1) != 1)
    _exit(1);
  char b;
  while (read(hold[0], &b, 1) > 0)
    ;
  _exit(0);
}

/* Times one spawned `UDSDUMP --extcap-interfaces`; counts the unix: interfaces (and those whose name
 * holds `marker`).  Negative on failure. */
static double time_listing(const char *udsdump, const char *marker, int *ifaces, int *marked)
{
  char *args[] = { (char *)udsdump, (char *)"--extcap-interfaces", (char *)"--extcap-version=4.0", NULL };
  g_autofree char *out = NULL, *errs = NULL;
  g_autoptr(GError) err = NULL;
  int wait_status = 0;
  double s = now_ms();
  gboolean ok = g_spawn_sync(NULL, args, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, &errs, &wait_status, &err);
  double t = now_ms() - s;
  if (!ok || !g_spawn_check_wait_status(wait_status, &err)) {
    fprintf(stderr, "bench-discover: %s: %s%s\n", udsdump, err->message, errs ? errs : "");
    return -1;
  }
  *ifaces = *marked = 0;
  for (const char *p = out; (p = strstr(p, "\ninterface {value=unix:")); p++) {
    const char *eol = strchr(p + 1, '\n');
    const char *m = marker ? strstr(p, marker) : NULL;
    (*ifaces)++;
    *marked += m && (!eol || m < eol);
  }
  return t;
}

/* The namespaces part: K containers of m sockets, then new (with them) against baseline (host only). */
static int bench_namespaces(const char *dir, int k, int m, int rounds, const char *udsdump, const char *baseline,
                            const int *host_fds, int n_host)
{
  int ready[2], hold[2];
  if (pipe2(ready, O_CLOEXEC) != 0 || pipe2(hold, O_CLOEXEC) != 0)
    return 1;
  int status = 1, started = 0;
  pid_t *pids = g_new0(pid_t, (gsize)k);
  g_autofree char *marker = g_strdup_printf("/root%s/ns", dir);
  double *tb = g_new(double, (gsize)rounds), *tn = g_new(double, (gsize)rounds);
  double t0 = now_ms();
  for (int i = 0; i < k; i++) {
    g_autofree char *nsdir = g_strdup_printf("%s/ns%02d", dir, i);
    if (mkdir(nsdir, 0755) != 0)
      goto out;
    pids[i] = start_container(nsdir, m, host_fds, n_host, ready, hold);
    if (pids[i] < 0)
      goto out;
    started++;
  }
  close(hold[0]);
  hold[0] = -1;
  for (int i = 0; i < k; i++) {
    char b;
    if (read(ready[0], &b, 1) != 1) {
      fprintf(stderr, "bench-discover: a container did not start\n");
      goto out;
    }
  }
  printf("%d containers (own network + mount namespace, private tmpfs) x %d listening sockets + a client each, "
         "set up in %.0f ms\n", k, m, now_ms() - t0);
  int ifaces = 0, marked = 0, base_ifaces = 0, ignored = 0;
  for (int r = 0; r < rounds; r++) {
    if (baseline && (tb[r] = time_listing(baseline, NULL, &base_ifaces, &ignored)) < 0)
      goto out;
    if ((tn[r] = time_listing(udsdump, marker, &ifaces, &marked)) < 0)
      goto out;
  }
  printf("udsdump: %d unix: interfaces listed, %d of them the containers' (/proc/PID/root/...)\n", ifaces, marked);
  if (marked != k * m) {
    fprintf(stderr, "bench-discover: expected %d container sockets listed, got %d\n", k * m, marked);
    goto out;
  }
  qsort(tn, (size_t)rounds, sizeof *tn, cmp_double);
  report("udsdump --extcap-interfaces, host + containers (spawned)", tn, rounds);
  if (baseline) {
    qsort(tb, (size_t)rounds, sizeof *tb, cmp_double);
    printf("baseline: %d unix: interfaces listed (host only: it reads no other namespace)\n", base_ifaces);
    report("baseline --extcap-interfaces, host only (spawned)", tb, rounds);
    printf("ratio: host + %d containers / baseline host only = %.2fx (median; target <= 2x)\n", k, tn[rounds / 2] / tb[rounds / 2]);
  }
  status = 0;
out:
  if (hold[0] >= 0)
    close(hold[0]);
  close(hold[1]);   /* the containers exit */
  close(ready[0]);
  close(ready[1]);
  for (int i = 0; i < started; i++)
    waitpid(pids[i], NULL, 0);
  for (int i = 0; i < k; i++) {
    g_autofree char *nsdir = g_strdup_printf("%s/ns%02d", dir, i);
    rmdir(nsdir);
  }
  g_free(pids);
  g_free(tb);
  g_free(tn);
  return status;
}

int main(int argc, char **argv)
{
  int nsock = 2000, rounds = 10, nns = 0, per_ns = 50;
  const char *udsdump = NULL, *baseline = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
      nsock = atoi(argv[++i]);
    else if (strcmp(argv[i], "--namespaces") == 0 && i + 1 < argc)
      nns = atoi(argv[++i]);
    else if (strcmp(argv[i], "--per-ns") == 0 && i + 1 < argc)
      per_ns = atoi(argv[++i]);
    else if (strcmp(argv[i], "--baseline") == 0 && i + 1 < argc)
      baseline = argv[++i];
    else if (strcmp(argv[i], "-r") == 0 && i + 1 < argc)
      rounds = atoi(argv[++i]);
    else if (argv[i][0] != '-' && !udsdump)
      udsdump = argv[i];
    else {
      fprintf(stderr, "usage: %s [-n SOCKETS] [-r ROUNDS] [--namespaces K] [--per-ns M] [--baseline OLD] [UDSDUMP]\n",
              argv[0]);
      return 2;
    }
  }
  if (nsock < 1 || rounds < 1 || nns < 0 || per_ns < 1) {
    fprintf(stderr, "bench-discover: -n, -r and --per-ns must be positive\n");
    return 2;
  }
  if (nns > 0 && (!udsdump || geteuid() != 0)) {
    fprintf(stderr, "bench-discover: --namespaces needs root and the UDSDUMP executable\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
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
    char path[108];
    snprintf(path, sizeof path, "%s/s%05d.sock", dir, i);
    if (!listener_with_client(path, fds, &nfds)) {
      fprintf(stderr, "bench-discover: socket %d: %s\n", i, g_strerror(errno));
      goto out;
    }
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
    int ifaces = 0, ignored = 0;
    for (int r = 0; r < rounds; r++) {
      if ((t[r] = time_listing(udsdump, NULL, &ifaces, &ignored)) < 0) {
        g_free(t);
        goto out;
      }
    }
    printf("udsdump: %d unix: interfaces listed\n", ifaces);
    report("udsdump --extcap-interfaces --extcap-version=4.0 (spawned)", t, rounds);
  }
  if (nns > 0 && bench_namespaces(dir, nns, per_ns, rounds, udsdump, baseline, fds, nfds) != 0) {
    g_free(t);
    goto out;
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
