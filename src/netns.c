/* netns — the host's network and mount namespaces (see include/netns.h).
 *
 * A namespace is named by its inode (readlink of <proc>/PID/ns/net: "net:[INO]"), which is what
 * distinguishes two of them; pids only reach one.  The lowest pid of each is the one kept, so two
 * listings pick the same way.
 *
 * Entering: setns(CLONE_NEWNET) affects the calling thread only, and a socket keeps the namespace it
 * was created in for life, so uds_netns_socket() enters, creates, and returns at once.  If the way
 * back failed the thread would go on in a container's network namespace; that cannot be allowed to
 * happen silently, so it aborts (it needs a kernel that refuses setns on a namespace we already held
 * open, which does not exist).
 *
 * Container roots: /proc/PID/root is a magic link to the root of PID's mount namespace.  Anything a
 * container's processes control (every name beneath that root) is resolved with openat2's
 * RESOLVE_IN_ROOT and RESOLVE_NO_SYMLINKS, so neither ".." nor a symlink planted inside (absolute or
 * relative, on the way or at the end) can lead outside the container's filesystem: a symlink is
 * refused outright rather than followed within the root, since what it points at inside is just as
 * much the container's choice.
 */
#include "netns.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/openat2.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static guint64 ns_link_ino(const char *link_path, const char *kind)
{
  char buf[64];
  ssize_t n = readlink(link_path, buf, sizeof buf - 1);
  if (n <= 0)
    return 0;
  buf[n] = '\0';
  size_t kl = strlen(kind);
  if (strncmp(buf, kind, kl) != 0 || buf[kl] != ':' || buf[kl + 1] != '[')
    return 0;
  return g_ascii_strtoull(buf + kl + 2, NULL, 10);
}

guint64 uds_ns_ino(const char *proc_root, pid_t pid, const char *kind)
{
  char path[256];
  if (pid > 0)
    g_snprintf(path, sizeof path, "%s/%d/ns/%s", proc_root, (int)pid, kind);
  else
    g_snprintf(path, sizeof path, "%s/self/ns/%s", proc_root, kind);
  return ns_link_ino(path, kind);
}

static int netns_cmp(const void *a, const void *b)
{
  const UdsNetns *x = a, *y = b;
  if (x->ino != y->ino)
    return x->ino < y->ino ? -1 : 1;
  return (x->pid > y->pid) - (x->pid < y->pid);
}

GArray *uds_netns_list(const char *proc_root)
{
  GArray *out = g_array_new(FALSE, FALSE, sizeof(UdsNetns));
  UdsNetns self = { .ino = uds_ns_ino(proc_root, 0, "net"), .pid = 0 };
  g_array_append_val(out, self);
  if (self.ino == 0)
    return out;   /* a fixture root, or no /proc: our own namespace is all we can name */
  GArray *all = g_array_new(FALSE, FALSE, sizeof(UdsNetns));
  DIR *d = opendir(proc_root);
  if (d) {
    struct dirent *de;
    char path[256];
    while ((de = readdir(d))) {
      if (de->d_name[0] < '1' || de->d_name[0] > '9')
        continue;
      char *end;
      long pid = strtol(de->d_name, &end, 10);
      if (*end || pid <= 0 || pid > G_MAXINT32)
        continue;
      g_snprintf(path, sizeof path, "%s/%ld/ns/net", proc_root, pid);
      UdsNetns ns = { .ino = ns_link_ino(path, "net"), .pid = (pid_t)pid };
      if (ns.ino && ns.ino != self.ino)
        g_array_append_val(all, ns);
    }
    closedir(d);
  }
  g_array_sort(all, netns_cmp);
  for (guint i = 0; i < all->len; i++) {
    const UdsNetns *ns = &g_array_index(all, UdsNetns, i);
    if (i == 0 || ns->ino != g_array_index(all, UdsNetns, i - 1).ino)
      g_array_append_val(out, *ns);   /* the lowest pid of each: sorted by (ino, pid) */
  }
  g_array_free(all, TRUE);
  return out;
}

int uds_netns_socket(pid_t pid, int domain, int type, int protocol)
{
  if (pid <= 0)
    return socket(domain, type | SOCK_CLOEXEC, protocol);
  char path[64];
  g_snprintf(path, sizeof path, "/proc/%d/ns/net", (int)pid);
  int target = open(path, O_RDONLY | O_CLOEXEC);
  if (target < 0)
    return -1;
  int home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (home < 0) {
    int e = errno;
    close(target);
    errno = e;
    return -1;
  }
  int fd = -1, e = 0;
  if (setns(target, CLONE_NEWNET) == 0) {
    fd = socket(domain, type | SOCK_CLOEXEC, protocol);
    e = errno;
    if (setns(home, CLONE_NEWNET) != 0)
      g_error("cannot return to udsdump's own network namespace: %s", g_strerror(errno));
  } else {
    e = errno;
  }
  close(target);
  close(home);
  errno = e;
  return fd;
}

gboolean uds_ns_root_path(const char *path, pid_t *pid, const char **inner)
{
  if (!g_str_has_prefix(path, "/proc/"))
    return FALSE;
  const char *p = path + strlen("/proc/");
  char *end;
  errno = 0;
  long v = strtol(p, &end, 10);
  if (end == p || !g_ascii_isdigit(*p) || errno || v <= 0 || v > G_MAXINT32 || !g_str_has_prefix(end, "/root/"))
    return FALSE;
  const char *rest = end + strlen("/root");
  if (rest[1] == '\0')
    return FALSE;
  *pid = (pid_t)v;
  *inner = rest;
  return TRUE;
}

/* Without openat2 (Linux < 5.6): one component at a time, never following a symlink. */
static int walk_beneath(int rootfd, const char *inner, int flags)
{
  g_auto(GStrv) parts = g_strsplit(inner, "/", -1);
  guint n = g_strv_length(parts);
  int cur = openat(rootfd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
  for (guint i = 0; cur >= 0 && i < n; i++) {
    const char *c = parts[i];
    gboolean last = TRUE;
    for (guint j = i + 1; j < n; j++)
      if (*parts[j] && strcmp(parts[j], ".") != 0)
        last = FALSE;
    if (!*c || strcmp(c, ".") == 0)
      continue;
    if (strcmp(c, "..") == 0) {
      close(cur);
      errno = EXDEV;
      return -1;
    }
    int next = openat(cur, c, (last ? flags : O_PATH | O_DIRECTORY) | O_NOFOLLOW | O_CLOEXEC);
    int e = errno;
    close(cur);
    if (next < 0) {
      errno = e == ENOTDIR ? ELOOP : e;   /* O_NOFOLLOW|O_DIRECTORY on a symlink says ENOTDIR */
      return -1;
    }
    struct stat st;
    if (!last || (flags & O_PATH)) {
      if (fstat(next, &st) == 0 && S_ISLNK(st.st_mode)) {
        close(next);
        errno = ELOOP;
        return -1;
      }
    }
    cur = next;
    if (last)
      return cur;
  }
  return cur;
}

int uds_ns_root_open(int rootfd, const char *inner, int flags)
{
  struct open_how how = {
    .flags = (guint64)(flags | O_CLOEXEC),
    .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
  };
  const char *rel = inner;
  while (*rel == '/')
    rel++;
  int fd = (int)syscall(SYS_openat2, rootfd, *rel ? rel : ".", &how, sizeof how);
  if (fd >= 0 || (errno != ENOSYS && errno != E2BIG))
    return fd;
  return walk_beneath(rootfd, inner, flags);
}
