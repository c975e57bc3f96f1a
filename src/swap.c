/* swap — interposing the relay on a live socket path, and always putting it back.
 *
 * What the seed recipe (`mv docker.sock docker.sock.original; socat UNIX-LISTEN:docker.sock,mode=777`)
 * got wrong is the specification: PATH was missing between mv and bind, mode 777 handed everyone the
 * server, and nothing put PATH back when socat died.  Here:
 *
 *   prepare   every check, nothing changed.  PATH must be absolute (relative paths are refused rather
 *             than resolved: Wireshark starts extcaps in a working folder of its own choosing), at most
 *             107 bytes (what a client can put in sun_path), not abstract, an existing socket and not a
 *             symlink; a server must be listening on it; we must be able to write the folder and give a
 *             file PATH's owner (root, or PATH's owner with PATH's group); the folder must not be
 *             writable by others without the sticky bit (anyone could swap names under us); no backup
 *             name may exist (a capture runs: its pid is named; or one died: `udsdump --restore`).
 *   install   the relay socket is bound at ".<name>.udsdump-XXXXXXXX" (random, from getrandom) in PATH's
 *             folder with umask 0777 and a sockfs mode of 0, so it is born mode 0 even under a default
 *             ACL; then it gets PATH's owner, ACL, mode and SELinux label; the original is hard-linked to
 *             ".<name>.udsdump-orig"; and the relay is exchanged with PATH (renameat2 RENAME_EXCHANGE,
 *             checking that what left PATH was the original).  PATH is never missing and is at every
 *             instant either the original or a relay with the original's owner, mode and label.  Any
 *             failure undoes every step.
 *   restore   the backup is exchanged back over PATH only while PATH is still our relay (st_dev/st_ino
 *             recorded at install).  If the server re-created PATH (dockerd and systemd unlink and bind
 *             again) PATH is left alone and only our leftovers go: the backup name while it is still the
 *             original, the temporary name while it is still ours.  Idempotent.
 *   follow    an inotify watch on the folder (names filtered) tells when PATH changes.  PATH unlinked:
 *             nothing yet (the server is about to bind again, or is gone for good).  PATH a new socket:
 *             the stale backup goes, upstream is re-pointed to the new socket, and with new_listen_fd
 *             udsdump interposes again exactly as install does.  PATH the original again (the guardian
 *             got SIGTERM, or someone ran --restore): reported, never re-interposed.
 *   repair    `udsdump --restore PATH` after a power cut or a killed guardian: with no running capture,
 *             a live PATH means the server re-created it (only the backup goes); a dead or missing PATH
 *             is udsdump's dead relay (a dead socket with a backup beside it is taken for one: nothing
 *             else makes that pair), and the backup goes back over it.  Dead temporary names go too.
 *
 * Every operation goes through an O_PATH descriptor of the folder (realpath() of PATH's folder part,
 * so /var/run -> /run is fine) with *at() calls that never follow a symlink in the folder; attributes
 * are set through O_PATH|O_NOFOLLOW descriptors checked to be the expected inode.
 *
 * Containers.  PATH = /proc/PID/root/INNER names a socket in PID's mount namespace.  realpath() there
 * would follow symlinks the container's processes planted (an absolute one leads into the host), so
 * the folder is opened beneath PID's root with openat2 RESOLVE_IN_ROOT|RESOLVE_NO_SYMLINKS (netns.c)
 * and a symlink anywhere on the way is refused; the relay is bound through /proc/self/fd/DIRFD/, never
 * by the folder's name; the sun_path limit applies to INNER, the name clients there use.  A pidfd of
 * PID, taken at prepare, ends the capture when the container's process exits (uds_swap_ended).
 * sock_diag only sees its own network namespace, so the listener check asks every namespace.
 *
 * "Is anyone listening on this file?" is answered by the kernel's socket table through NETLINK_SOCK_DIAG,
 * which reports each bound socket's file (device, inode).  /proc/net/unix cannot answer it: it shows
 * the name a socket was bound under, and after the swap the server's socket still shows PATH while
 * living at the backup name.  Without sock_diag (a seccomp filter) the fallback is discover's lookup
 * plus a non-blocking connect() probe (ECONNREFUSED: stale).  The holder of a socket is the lowest pid
 * with a descriptor of it under <proc>/PID/fd.
 *
 * A "running capture" holds PATH when PATH's listener is held by a process named udsdump, or by a
 * different process than the backup's listener (the relay in front of its server).  When those
 * holders cannot be seen (an unprivileged caller) the answer is "maybe", and repair refuses.
 *
 * Upstream: the relay reaches the real server through "/proc/self/fd/N", N an O_PATH descriptor of the
 * original socket file.  connect() through it works for any path length, reaches exactly that inode
 * whatever happens to the names, and checks the caller's permission on the original's inode as a
 * direct connect() would.  When the server re-creates PATH, N is re-pointed (dup3) to the new socket,
 * so the string stays valid.  /proc is therefore required (and checked by prepare).
 *
 * The relay socket's own bound name is its temporary path (when that fits in sun_path, else
 * "/proc/self/fd/N/<temp>"): that is what a client's getpeername() reports, a difference we cannot
 * avoid (bind needs a free name).  Very long file names (whose temporary name cannot be bound even via
 * /proc) use the short ".udsdump-XXXXXXXX".
 *
 * Ownership: the UdsSwap owns the folder fd, the original's O_PATH fd, the inotify fd and the guardian
 * channel; the relay socket returned by install/path_replaced belongs to the caller.  uds_swap_free()
 * does not restore, but closing the channel while still interposed makes the guardian do it.
 */
#include "swap.h"

#include "discover.h"
#include "guardian.h"
#include "log.h"
#include "netns.h"
#include "privilege.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>

#define SUN_PATH_MAX (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)  /* 107 bytes and a NUL */
#define BACKUP_SUFFIX ".udsdump-orig"
#define TEMP_TAG ".udsdump-"
#define LISTEN_BACKLOG 4096
#define BIND_ATTEMPTS 8
#define TCP_LISTEN_STATE 10  /* the kernel's TCP_LISTEN, used by unix sockets too */

struct UdsSwap {
  char *path;
  char *folder;             /* realpath of PATH's folder */
  UdsSwapPlace place;       /* folder fd and names */
  UdsSwapState state;       /* the original (always) and, while installed, the relay */
  struct stat orig_st;      /* the original socket file as last checked */
  int orig_fd;              /* O_PATH of the original: what upstream names */
  char upstream[32];
  int type;
  pid_t server_pid;
  char *server_comm;
  gboolean installed;
  pid_t root_pid;           /* PATH is /proc/PID/root/...: the container's process, else 0 */
  int root_pidfd;           /* pidfd of root_pid: readable when the container is gone */
  int inotify_fd;           /* the folder's watch */
  int watch_fd;             /* what the caller polls: inotify_fd, or an epoll of it and root_pidfd */
  char *ended;              /* why the capture must end (the container is gone), NULL while it may go on */
  int guard_chan;
  pid_t guard_pid;
};

/* ---- the kernel's socket table ---- */

typedef struct {
  guint32 sock_ino;   /* sockfs inode: what <proc>/PID/fd links name */
  int type;
  int state;
} DiagHit;

static int diag_dump_once(pid_t netns_pid, dev_t dev, ino_t ino, DiagHit *hit)
{
  int fd = uds_netns_socket(netns_pid, AF_NETLINK, SOCK_DGRAM, NETLINK_SOCK_DIAG);
  if (fd < 0)
    return -1;
  struct {
    struct nlmsghdr nlh;
    struct unix_diag_req req;
  } msg;
  memset(&msg, 0, sizeof msg);
  msg.nlh.nlmsg_len = sizeof msg;
  msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  msg.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  msg.nlh.nlmsg_seq = 1;
  msg.req.sdiag_family = AF_UNIX;
  msg.req.udiag_states = ~0u;
  msg.req.udiag_show = UDIAG_SHOW_VFS;
  struct sockaddr_nl nl = { .nl_family = AF_NETLINK };
  if (sendto(fd, &msg, sizeof msg, 0, (struct sockaddr *)&nl, sizeof nl) < 0) {
    close(fd);
    return -1;
  }
  int found = 0;
  g_autofree char *buf = g_malloc(32768);
  for (;;) {
    ssize_t n = recv(fd, buf, 32768, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      found = -1;
      break;
    }
    for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (guint32)n); h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_type == NLMSG_DONE)
        goto out;
      if (h->nlmsg_type == NLMSG_ERROR) {
        found = -1;
        goto out;
      }
      struct unix_diag_msg *um = NLMSG_DATA(h);
      int alen = (int)h->nlmsg_len - (int)NLMSG_LENGTH(sizeof *um);
      for (struct rtattr *a = (struct rtattr *)(um + 1); RTA_OK(a, alen); a = RTA_NEXT(a, alen)) {
        if (a->rta_type != UNIX_DIAG_VFS || RTA_PAYLOAD(a) < sizeof(struct unix_diag_vfs))
          continue;
        struct unix_diag_vfs *v = RTA_DATA(a);
        /* The kernel reports its internal dev_t (major << 20 | minor). */
        /* Accepted connections carry their listener's path too: the listener wins. */
        if (v->udiag_vfs_ino == ino && makedev(v->udiag_vfs_dev >> 20, v->udiag_vfs_dev & 0xfffff) == dev &&
            (!found || (hit->state != TCP_LISTEN_STATE && um->udiag_state == TCP_LISTEN_STATE))) {
          found = 1;
          hit->sock_ino = um->udiag_ino;
          hit->type = um->udiag_type;
          hit->state = um->udiag_state;
        }
      }
    }
  }
out:
  close(fd);
  return found;
}

/* The socket bound to file (dev, ino) - its listener when it has one.  1 found, 0 none (a stale socket
 * file), -1 sock_diag unusable.  sock_diag answers for one network namespace, and a server in a
 * container may be bound on a host path: so every namespace is asked, ours first; a miss is only
 * "none" when every one of them could be asked.
 * A dump resumes by position in the kernel's hash buckets, so sockets closing elsewhere meanwhile can
 * make it skip an entry: a hit is certain, a miss is confirmed by two more dumps. */
static int diag_lookup(dev_t dev, ino_t ino, DiagHit *hit)
{
  if (g_getenv("UDSDUMP_NO_SOCK_DIAG"))  /* tests: exercise the fallback */
    return -1;
  int r = diag_dump_once(0, dev, ino, hit);
  if (r != 0)
    return r;
  g_autoptr(GArray) nss = uds_netns_list("/proc");
  for (int round = 0; round < 3; round++) {
    gboolean all_asked = TRUE;
    for (guint i = round == 0 ? 1 : 0; i < nss->len; i++) {
      r = diag_dump_once(g_array_index(nss, UdsNetns, i).pid, dev, ino, hit);
      if (r > 0)
        return r;
      if (r < 0)
        all_asked = FALSE;   /* that namespace's process left, or we may not enter it */
    }
    if (!all_asked && nss->len > 1)
      return -1;
  }
  return 0;
}

static gboolean hit_is_live(const DiagHit *hit)
{
  return hit->type == SOCK_DGRAM || hit->state == TCP_LISTEN_STATE;
}

/* The lowest pid holding socket sock_ino, 0 when none is visible. */
static pid_t holder_pid(guint32 sock_ino)
{
  const char *proc = uds_proc_root();
  g_autofree char *want = g_strdup_printf("socket:[%u]", sock_ino);
  DIR *d = opendir(proc);
  if (!d)
    return 0;
  pid_t best = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    char *end;
    long pid = strtol(e->d_name, &end, 10);
    if (*end || pid <= 0 || (best && pid >= best))
      continue;
    g_autofree char *fddir = g_strdup_printf("%s/%ld/fd", proc, pid);
    DIR *fds = opendir(fddir);
    if (!fds)
      continue;
    struct dirent *f;
    while ((f = readdir(fds))) {
      char link[64];
      g_autofree char *lp = g_strdup_printf("%s/%s", fddir, f->d_name);
      ssize_t n = readlink(lp, link, sizeof link - 1);
      if (n > 0) {
        link[n] = '\0';
        if (strcmp(link, want) == 0) {
          best = (pid_t)pid;
          break;
        }
      }
    }
    closedir(fds);
  }
  closedir(d);
  return best;
}

static char *fd_path(int fd)
{
  return g_strdup_printf("/proc/self/fd/%d", fd);
}

/* Non-blocking connect() to the file behind an O_PATH fd: 1 live, 0 stale, -1 wrong type / error. */
static int probe_connect(int ofd, int type)
{
  int s = socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (s < 0)
    return -1;
  struct sockaddr_un a = { .sun_family = AF_UNIX };
  snprintf(a.sun_path, sizeof a.sun_path, "/proc/self/fd/%d", ofd);
  int rc = connect(s, (struct sockaddr *)&a, sizeof a);
  int e = errno;
  close(s);
  if (rc == 0 || e == EINPROGRESS || e == EAGAIN)
    return 1;
  return e == ECONNREFUSED ? 0 : -1;
}

typedef enum { LISTENER_NONE, LISTENER_LIVE, LISTENER_BOUND } Listener;

/* Who serves the socket file behind ofd (already fstat'ed into st).  *type and *pid filled when live. */
static Listener listener_of(const char *path, int ofd, const struct stat *st, int *type, guint32 *sock_ino,
                            pid_t *pid)
{
  DiagHit hit = { 0 };
  *pid = 0;
  int r = diag_lookup(st->st_dev, st->st_ino, &hit);
  if (r > 0) {
    *type = hit.type;
    if (sock_ino)
      *sock_ino = hit.sock_ino;
    if (!hit_is_live(&hit))
      return LISTENER_BOUND;
    *pid = holder_pid(hit.sock_ino);
    return LISTENER_LIVE;
  }
  if (r == 0)
    return LISTENER_NONE;
  /* No sock_diag: the kernel's list by bound name, confirmed by a probe of this very inode. */
  g_autoptr(UdsSocketInfo) info = NULL;
  int types[3] = { SOCK_STREAM, SOCK_SEQPACKET, SOCK_DGRAM };
  if (path && uds_discover_lookup(NULL, path, &info) && info) {
    types[0] = info->type;
    *pid = info->pid;
  }
  for (int i = 0; i < 3; i++) {
    int p = probe_connect(ofd, types[i]);
    if (p == 1) {
      *type = types[i];
      if (sock_ino)
        *sock_ino = 0;
      return LISTENER_LIVE;
    }
    if (p == 0)
      return LISTENER_NONE;
  }
  return LISTENER_NONE;
}

typedef enum { HELD_NO, HELD_YES, HELD_MAYBE } Held;

/* Does a running capture hold PATH (see the top of the file)?  *pid / *comm name its relay. */
static Held capture_holds(int dirfd, const char *base, const char *backup, pid_t *pid, char **comm)
{
  *pid = 0;
  *comm = NULL;
  int pfd = openat(dirfd, base, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  int bfd = openat(dirfd, backup, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  Held held = HELD_NO;
  struct stat pst, bst;
  int ptype = 0, btype = 0;
  pid_t ppid = 0, bpid = 0;
  if (pfd < 0 || fstat(pfd, &pst) < 0 || !S_ISSOCK(pst.st_mode))
    goto out;
  if (listener_of(NULL, pfd, &pst, &ptype, NULL, &ppid) != LISTENER_LIVE)
    goto out;
  *pid = ppid;
  *comm = ppid ? uds_proc_comm(uds_proc_root(), ppid) : NULL;
  if (*comm && strcmp(*comm, "udsdump") == 0) {
    held = HELD_YES;
    goto out;
  }
  if (bfd < 0 || fstat(bfd, &bst) < 0 || !S_ISSOCK(bst.st_mode) ||
      listener_of(NULL, bfd, &bst, &btype, NULL, &bpid) != LISTENER_LIVE)
    goto out;
  if (ppid == 0 || bpid == 0)
    held = HELD_MAYBE;
  else if (ppid != bpid)
    held = HELD_YES;
out:
  if (pfd >= 0)
    close(pfd);
  if (bfd >= 0)
    close(bfd);
  return held;
}

/* ---- names ---- */

/* /proc/PID/root/INNER: the folder part of INNER opened beneath PID's root (see netns.h), never
 * following a symlink there.  *folder is the name shown in messages. */
static gboolean open_in_root(const char *path, pid_t pid, const char *inner, char **folder, int *dirfd,
                             GError **error)
{
  const char *slash = strrchr(inner, '/');
  g_autofree char *dir = slash == inner ? g_strdup("/") : g_strndup(inner, (gsize)(slash - inner));
  g_autofree char *rootlink = g_strdup_printf("/proc/%d/root", (int)pid);
  int rfd = open(rootlink, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (rfd < 0) {
    g_set_error(error, UDS_ERROR, errno == ENOENT ? UDS_ERROR_INVALID : UDS_ERROR_SYSTEM,
                "%s: cannot open %s: %s", path, rootlink, errno == ENOENT ? "no such process" : g_strerror(errno));
    return FALSE;
  }
  int fd = uds_ns_root_open(rfd, dir, O_PATH | O_DIRECTORY);
  int e = errno;
  close(rfd);
  if (fd < 0) {
    if (e == ELOOP || e == EXDEV)
      g_set_error(error, UDS_ERROR, UDS_ERROR_REFUSED,
                  "%s: folder %s inside pid %d's filesystem is reached through a symlink (or \"..\"): udsdump follows "
                  "none there, give the real path",
                  path, dir, (int)pid);
    else
      g_set_error(error, UDS_ERROR, UDS_ERROR_INVALID, "%s: no such file (folder %s inside pid %d's filesystem: %s)",
                  path, dir, (int)pid, g_strerror(e));
    return FALSE;
  }
  *folder = g_strdup_printf("%s%s", rootlink, dir);
  *dirfd = fd;
  return TRUE;
}

/* Splits an absolute PATH into its resolved folder and last component, with the checks that need no
 * filesystem.  Opens the folder.  *root_pid: PID when PATH is /proc/PID/root/INNER (the limits that
 * concern clients then apply to INNER, the name they connect to), else 0. */
static gboolean parse_path(const char *path, char **folder, char **base, int *dirfd, pid_t *root_pid,
                           GError **error)
{
  *root_pid = 0;
  if (!path || !*path) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_INVALID, "no socket path given");
    return FALSE;
  }
  if (path[0] == '@') {
    g_set_error(error, UDS_ERROR, UDS_ERROR_INVALID,
                "%s: an abstract socket name has no file that could be renamed: udsdump can interpose only on "
                "path sockets",
                path);
    return FALSE;
  }
  if (path[0] != '/') {
    g_set_error(error, UDS_ERROR, UDS_ERROR_INVALID, "%s: not an absolute path (give the full path, e.g. /run/%s)",
                path, path);
    return FALSE;
  }
  const char *inner = path;
  pid_t pid = 0;
  if (!uds_ns_root_path(path, &pid, &inner))
    inner = path;
  size_t len = strlen(inner);
  if (len > SUN_PATH_MAX) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_INVALID,
                "%s: too long for a Unix socket address (%zu bytes, at most %zu): clients cannot connect to it "
                "by this path",
                path, len, (size_t)SUN_PATH_MAX);
    return FALSE;
  }
  const char *slash = strrchr(inner, '/');
  const char *name = slash + 1;
  if (!*name || strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_INVALID, "%s: not a socket file path", path);
    return FALSE;
  }
  if (strlen(name) + 1 + strlen(BACKUP_SUFFIX) > NAME_MAX) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_INVALID, "%s: file name too long to give it a backup name", path);
    return FALSE;
  }
  if (pid) {
    if (!open_in_root(path, pid, inner, folder, dirfd, error))
      return FALSE;
    *base = g_strdup(name);
    *root_pid = pid;
    return TRUE;
  }
  g_autofree char *dir = slash == path ? g_strdup("/") : g_strndup(path, (gsize)(slash - path));
  char *real = realpath(dir, NULL);
  if (!real) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_INVALID, "%s: no such file (folder %s: %s)", path, dir,
                g_strerror(errno));
    return FALSE;
  }
  int fd = open(real, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_SYSTEM, "%s: cannot open folder %s: %s", path, real, g_strerror(errno));
    free(real);
    return FALSE;
  }
  *folder = g_strdup(real);
  free(real);
  *base = g_strdup(name);
  *dirfd = fd;
  return TRUE;
}

static gboolean in_groups(gid_t gid)
{
  if (gid == getegid())
    return TRUE;
  int n = getgroups(0, NULL);
  if (n <= 0)
    return FALSE;
  g_autofree gid_t *groups = g_new(gid_t, n);
  n = getgroups(n, groups);
  for (int i = 0; i < n; i++)
    if (groups[i] == gid)
      return TRUE;
  return FALSE;
}

/* ---- prepare ---- */

static UdsSwap *swap_prepare(const char *path, GError **error)
{
  g_autofree char *folder = NULL, *base = NULL;
  int dirfd = -1, ofd = -1;
  pid_t root_pid = 0;
  if (!parse_path(path, &folder, &base, &dirfd, &root_pid, error))
    return NULL;

  UdsSwap *s = g_new0(UdsSwap, 1);
  s->path = g_strdup(path);
  s->folder = g_steal_pointer(&folder);
  s->place.dirfd = dirfd;
  s->root_pid = root_pid;
  /* Taken now, so that it names the process whose root was opened even if its pid is reused. */
  s->root_pidfd = root_pid ? (int)syscall(SYS_pidfd_open, root_pid, 0) : -1;
  s->inotify_fd = -1;
  g_strlcpy(s->place.base, base, sizeof s->place.base);
  g_snprintf(s->place.backup, sizeof s->place.backup, ".%s%s", base, BACKUP_SUFFIX);
  s->orig_fd = -1;
  s->watch_fd = -1;
  s->guard_chan = -1;

  ofd = openat(dirfd, base, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  struct stat st;
  if (ofd < 0 || fstat(ofd, &st) < 0) {
    if (errno == ENOENT)
      g_set_error(error, UDS_ERROR, UDS_ERROR_INVALID, "%s: no such file", path);
    else
      g_set_error(error, UDS_ERROR, UDS_ERROR_SYSTEM, "%s: %s", path, g_strerror(errno));
    goto bad;
  }
  s->orig_fd = ofd;
  if (S_ISLNK(st.st_mode)) {
    char target[PATH_MAX];
    ssize_t n = readlinkat(dirfd, base, target, sizeof target - 1);
    target[n > 0 ? n : 0] = '\0';
    g_set_error(error, UDS_ERROR, UDS_ERROR_INVALID,
                "%s: is a symlink (to %s): give the socket's own path", path, target);
    goto bad;
  }
  if (!S_ISSOCK(st.st_mode)) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_INVALID, "%s: not a socket", path);
    goto bad;
  }
  s->orig_st = st;
  s->state.dev = st.st_dev;
  s->state.orig_ino = st.st_ino;

  /* Another capture, running or dead?  (Before the listener check: a dead one leaves PATH stale.) */
  struct stat bst;
  if (fstatat(dirfd, s->place.backup, &bst, AT_SYMLINK_NOFOLLOW) == 0) {
    pid_t pid;
    g_autofree char *comm = NULL;
    Held held = capture_holds(dirfd, base, s->place.backup, &pid, &comm);
    if (held == HELD_YES)
      g_set_error(error, UDS_ERROR, UDS_ERROR_REFUSED, "%s: already interposed by a running capture (pid %d, %s)",
                  path, (int)pid, comm ? comm : "?");
    else if (held == HELD_MAYBE)
      g_set_error(error, UDS_ERROR, UDS_ERROR_REFUSED,
                  "%s: already interposed (%s/%s exists) by a capture whose process is not visible to us", path,
                  s->folder, s->place.backup);
    else
      g_set_error(error, UDS_ERROR, UDS_ERROR_REFUSED,
                  "%s: an earlier capture left %s/%s behind: run `udsdump --restore %s` first", path, s->folder,
                  s->place.backup, path);
    goto bad;
  }

  int type = 0;
  pid_t pid = 0;
  Listener l = listener_of(path, ofd, &st, &type, NULL, &pid);
  if (l != LISTENER_LIVE) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_REFUSED, "%s: no server is listening on it (a stale socket file)", path);
    goto bad;
  }
  s->type = type;
  s->server_pid = pid;
  s->server_comm = pid ? uds_proc_comm(uds_proc_root(), pid) : NULL;
  if (s->server_comm && strcmp(s->server_comm, "udsdump") == 0) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_REFUSED, "%s: already served by udsdump (pid %d)", path, (int)pid);
    goto bad;
  }

  struct stat dst;
  if (fstat(dirfd, &dst) < 0) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_SYSTEM, "%s: %s", s->folder, g_strerror(errno));
    goto bad;
  }
  if ((dst.st_mode & S_IWOTH) && !(dst.st_mode & S_ISVTX)) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_REFUSED,
                "%s: folder %s is writable by everyone and not sticky: anyone could swap names in it, refusing",
                path, s->folder);
    goto bad;
  }
  if (faccessat(dirfd, ".", W_OK | X_OK, AT_EACCESS) < 0) {
    if (errno == EROFS)
      g_set_error(error, UDS_ERROR, UDS_ERROR_REFUSED, "%s: folder %s is on a read-only filesystem", path,
                  s->folder);
    else
      g_set_error(error, UDS_ERROR, UDS_ERROR_REFUSED,
                  "%s: cannot write in folder %s: root or write access to the folder is needed%s", path, s->folder,
                  uds_priv_refusal_hint());
    goto bad;
  }
  if (!uds_priv_has(UDS_PRIV_SWAP) && (st.st_uid != geteuid() || !in_groups(st.st_gid))) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_REFUSED,
                "%s: belongs to uid %u, gid %u: root is needed to give the relay socket the same owner%s", path,
                (unsigned)st.st_uid, (unsigned)st.st_gid, uds_priv_refusal_hint());
    goto bad;
  }

  g_snprintf(s->upstream, sizeof s->upstream, "/proc/self/fd/%d", ofd);
  struct stat ust;
  if (stat(s->upstream, &ust) < 0 || ust.st_dev != st.st_dev || ust.st_ino != st.st_ino) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_SYSTEM, "%s: /proc must be mounted to interpose", path);
    goto bad;
  }
  return s;

bad:
  uds_swap_free(s);
  return NULL;
}

int uds_swap_sock_type(const UdsSwap *s)
{
  return s->type;
}

pid_t uds_swap_server_pid(const UdsSwap *s)
{
  return s->server_pid;
}

const char *uds_swap_server_comm(const UdsSwap *s)
{
  return s->server_comm;
}

const char *uds_swap_upstream(const UdsSwap *s)
{
  return s->upstream;
}

pid_t uds_swap_guardian_pid(const UdsSwap *s)
{
  return s->guard_chan >= 0 ? s->guard_pid : 0;
}

/* ---- guardian ---- */

gboolean uds_swap_guard(UdsSwap *s, GError **error)
{
  if (s->guard_chan >= 0)
    return TRUE;
  s->guard_chan = uds_guardian_start(&s->place, &s->guard_pid, error);
  if (s->guard_chan < 0)
    return FALSE;
  uds_info("guardian for %s: pid %d", s->path, (int)s->guard_pid);
  return TRUE;
}

static gboolean guard_arm(UdsSwap *s, const UdsSwapState *st, GError **error)
{
  if (uds_guardian_arm(s->guard_chan, st))
    return TRUE;
  g_set_error(error, UDS_ERROR, UDS_ERROR_FAILED, "%s: the guardian (pid %d) is gone: refusing to interpose unguarded",
              s->path, (int)s->guard_pid);
  return FALSE;
}

static void guard_disarm(UdsSwap *s)
{
  UdsSwapState none;
  memset(&none, 0, sizeof none);
  uds_guardian_arm(s->guard_chan, &none);
}

/* ---- install ---- */

static void random_temp(const UdsSwap *s, char *temp, size_t size, gboolean short_form)
{
  guint32 r = 0;
  if (getrandom(&r, sizeof r, 0) != sizeof r)
    r = g_random_int();  /* never on Linux >= 3.17; glib seeds from /dev/urandom */
  if (short_form)
    g_snprintf(temp, size, "%s%08x", TEMP_TAG, r);
  else
    g_snprintf(temp, size, ".%s%s%08x", s->place.base, TEMP_TAG, r);
}

/* The address to bind temp at: its real path when that fits, else through the folder fd. */
static gboolean temp_address(const UdsSwap *s, const char *temp, struct sockaddr_un *a)
{
  memset(a, 0, sizeof *a);
  a->sun_family = AF_UNIX;
  int n;
  /* Inside a container's filesystem the folder's name is the container's to change: only the
   * descriptor reaches the folder that was checked. */
  if (s->root_pid)
    goto by_fd;
  n = g_snprintf(a->sun_path, sizeof a->sun_path, "%s%s%s", s->folder,
                     g_str_has_suffix(s->folder, "/") ? "" : "/", temp);
  if (n >= 0 && (size_t)n <= SUN_PATH_MAX)
    return TRUE;
by_fd:
  n = g_snprintf(a->sun_path, sizeof a->sun_path, "/proc/self/fd/%d/%s", s->place.dirfd, temp);
  return n >= 0 && (size_t)n <= SUN_PATH_MAX;
}

/* Binds a new relay socket at a fresh temporary name, born mode 0; arms the guardian for it first.
 * Fills st->temp and st->relay_ino.  Returns the socket or -1. */
static int bind_relay(UdsSwap *s, UdsSwapState *st, GError **error)
{
  for (int attempt = 0; attempt < BIND_ATTEMPTS; attempt++) {
    struct sockaddr_un a;
    random_temp(s, st->temp, sizeof st->temp, FALSE);
    if (!temp_address(s, st->temp, &a)) {
      random_temp(s, st->temp, sizeof st->temp, TRUE);
      if (!temp_address(s, st->temp, &a)) {
        g_set_error(error, UDS_ERROR, UDS_ERROR_FAILED, "%s: no temporary name fits in a socket address", s->path);
        return -1;
      }
    }
    st->relay_ino = 0;
    if (!guard_arm(s, st, error))  /* pending: if we die after bind, the guardian removes the name */
      return -1;
    int fd = socket(AF_UNIX, s->type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      g_set_error(error, UDS_ERROR, UDS_ERROR_SYSTEM, "%s: socket: %s", s->path, g_strerror(errno));
      return -1;
    }
    /* The new file's mode is the sockfs inode's mode less the umask; a default ACL on the folder would
     * replace the umask, so both are zero. */
    fchmod(fd, 0);
    mode_t old = umask(0777);
    int rc = bind(fd, (struct sockaddr *)&a, sizeof a);
    int e = errno;
    umask(old);
    if (rc < 0) {
      close(fd);
      if (e == EADDRINUSE)
        continue;
      g_set_error(error, UDS_ERROR, e == EACCES || e == EPERM ? UDS_ERROR_REFUSED : UDS_ERROR_SYSTEM,
                  "%s: cannot create the relay socket in %s: %s", s->path, s->folder, g_strerror(e));
      return -1;
    }
    /* It must have appeared in *our* folder, as *our* socket (the folder path was resolved by name). */
    struct stat fst, sst;
    DiagHit hit = { 0 };
    gboolean ours = fstatat(s->place.dirfd, st->temp, &fst, AT_SYMLINK_NOFOLLOW) == 0 && S_ISSOCK(fst.st_mode) &&
                    fst.st_dev == s->state.dev;
    if (ours && fstat(fd, &sst) == 0 && diag_lookup(fst.st_dev, fst.st_ino, &hit) == 1)
      ours = hit.sock_ino == (guint32)sst.st_ino;
    if (!ours) {
      close(fd);
      g_set_error(error, UDS_ERROR, UDS_ERROR_FAILED, "%s: folder %s changed while binding the relay socket", s->path,
                  s->folder);
      return -1;
    }
    st->relay_ino = fst.st_ino;
    if (!guard_arm(s, st, error)) {
      unlinkat(s->place.dirfd, st->temp, 0);
      close(fd);
      return -1;
    }
    return fd;
  }
  g_set_error(error, UDS_ERROR, UDS_ERROR_FAILED, "%s: every temporary name tried was taken", s->path);
  return -1;
}

/* Copies an extended attribute between two files named by path.  Absent at the source: removed from
 * the target when strip (an ACL inherited from the folder's default ACL must not outlive the copy),
 * else left as it is. */
static gboolean copy_xattr(const char *from, const char *to, const char *name, gboolean strip)
{
  char small[512];
  ssize_t n = getxattr(from, name, small, sizeof small);
  g_autofree char *big = NULL;
  char *val = small;
  if (n < 0 && errno == ERANGE) {
    n = getxattr(from, name, NULL, 0);
    if (n > 0) {
      big = g_malloc((gsize)n);
      n = getxattr(from, name, big, (size_t)n);
      val = big;
    }
  }
  if (n < 0) {
    if (errno != ENODATA && errno != ENOTSUP)
      return FALSE;
    if (strip && removexattr(to, name) < 0 && errno != ENODATA && errno != ENOTSUP)
      return FALSE;
    return TRUE;
  }
  return setxattr(to, name, val, (size_t)n, 0) == 0;
}

/* Gives the bound temporary socket the original's owner, ACL, mode and label. */
static gboolean copy_identity(UdsSwap *s, const UdsSwapState *st, GError **error)
{
  int tfd = openat(s->place.dirfd, st->temp, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  struct stat tst;
  if (tfd < 0 || fstat(tfd, &tst) < 0 || tst.st_ino != st->relay_ino) {
    if (tfd >= 0)
      close(tfd);
    g_set_error(error, UDS_ERROR, UDS_ERROR_FAILED, "%s: the relay socket vanished from %s", s->path, s->folder);
    return FALSE;
  }
  g_autofree char *to = fd_path(tfd);
  g_autofree char *from = fd_path(s->orig_fd);
  const struct stat *o = &s->orig_st;
  gboolean ok = FALSE;
  if (fchownat(tfd, "", o->st_uid, o->st_gid, AT_EMPTY_PATH) < 0) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_REFUSED,
                "%s: cannot give the relay socket the owner uid %u, gid %u (%s): root is needed", s->path,
                (unsigned)o->st_uid, (unsigned)o->st_gid, g_strerror(errno));
    goto out;
  }
  /* The ACL before the mode: without it, the group bits (the ACL mask) would grant the owning group
   * what the ACL denies it. */
  if (!copy_xattr(from, to, "system.posix_acl_access", TRUE)) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_FAILED, "%s: cannot copy its ACL to the relay socket: %s", s->path,
                g_strerror(errno));
    goto out;
  }
  if (chmod(to, o->st_mode & 07777) < 0) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_FAILED, "%s: cannot set the relay socket's mode: %s", s->path,
                g_strerror(errno));
    goto out;
  }
  if (!copy_xattr(from, to, "security.selinux", FALSE)) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_FAILED, "%s: cannot give the relay socket its SELinux label: %s", s->path,
                g_strerror(errno));
    goto out;
  }
  ok = TRUE;
out:
  close(tfd);
  return ok;
}

static gboolean ensure_watch(UdsSwap *s, GError **error)
{
  if (s->watch_fd >= 0)
    return TRUE;
  int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  g_autofree char *dir = fd_path(s->place.dirfd);
  if (fd < 0 || inotify_add_watch(fd, dir, IN_CREATE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM | IN_ONLYDIR) < 0) {
    int e = errno;
    if (fd >= 0)
      close(fd);
    g_set_error(error, UDS_ERROR, UDS_ERROR_SYSTEM, "%s: cannot watch folder %s: %s", s->path, s->folder,
                g_strerror(e));
    return FALSE;
  }
  s->inotify_fd = fd;
  if (s->root_pidfd < 0) {
    s->watch_fd = fd;
    return TRUE;
  }
  /* One descriptor for the caller to poll: the folder's changes and the container's end. */
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = { .events = EPOLLIN };
  if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, s->root_pidfd, &ev) < 0) {
    int e = errno;
    if (ep >= 0)
      close(ep);
    g_set_error(error, UDS_ERROR, UDS_ERROR_SYSTEM, "%s: epoll: %s", s->path, g_strerror(e));
    return FALSE;
  }
  s->watch_fd = ep;
  return TRUE;
}

const char *uds_swap_ended(UdsSwap *s)
{
  if (s->ended)
    return s->ended;
  struct pollfd p = { .fd = s->root_pidfd, .events = POLLIN };
  if (s->root_pidfd < 0 || poll(&p, 1, 0) <= 0)
    return NULL;
  if (s->watch_fd != s->inotify_fd)
    epoll_ctl(s->watch_fd, EPOLL_CTL_DEL, s->root_pidfd, NULL);
  s->ended = g_strdup_printf("pid %d, whose filesystem holds %s, exited: the container is gone", (int)s->root_pid,
                             s->path);
  return s->ended;
}

/* Puts a new relay in front of the original in s->orig_fd / s->orig_st.  The backup name must be free.
 * Returns the relay socket, or -1 with everything undone. */
static int interpose(UdsSwap *s, GError **error)
{
  const int dfd = s->place.dirfd;
  UdsSwapState st;
  memset(&st, 0, sizeof st);
  st.dev = s->orig_st.st_dev;
  st.orig_ino = s->orig_st.st_ino;
  gboolean linked = FALSE;

  int fd = bind_relay(s, &st, error);
  if (fd < 0)
    goto undo;
  if (!copy_identity(s, &st, error))
    goto undo;
  if (s->type != SOCK_DGRAM && listen(fd, LISTEN_BACKLOG) < 0) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_SYSTEM, "%s: listen: %s", s->path, g_strerror(errno));
    goto undo;
  }
  struct stat cur;
  if (fstatat(dfd, s->place.base, &cur, AT_SYMLINK_NOFOLLOW) < 0 || cur.st_ino != st.orig_ino ||
      cur.st_dev != st.dev) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_FAILED, "%s: changed while udsdump was interposing: try again", s->path);
    goto undo;
  }
  if (linkat(dfd, s->place.base, dfd, s->place.backup, 0) < 0) {
    int e = errno;
    g_set_error(error, UDS_ERROR, e == EPERM || e == EACCES ? UDS_ERROR_REFUSED : UDS_ERROR_SYSTEM,
                "%s: cannot give the original a backup name %s: %s%s", s->path, s->place.backup, g_strerror(e),
                e == EPERM ? " (root is needed)" : "");
    goto undo;
  }
  linked = TRUE;
  if (fstatat(dfd, s->place.backup, &cur, AT_SYMLINK_NOFOLLOW) < 0 || cur.st_ino != st.orig_ino) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_FAILED, "%s: changed while udsdump was interposing: try again", s->path);
    goto undo;
  }
  if (uds_swap_replace(dfd, st.temp, st.relay_ino, s->place.base, st.dev, st.orig_ino) < 0) {
    int e = errno;
    g_set_error(error, UDS_ERROR, UDS_ERROR_FAILED, "%s: cannot put the relay in place: %s", s->path,
                e == EAGAIN ? "the server re-created the socket meanwhile; try again" : g_strerror(e));
    goto undo;
  }
  s->state = st;
  s->installed = TRUE;
  return fd;

undo:
  if (fd >= 0) {
    if (st.relay_ino && fstatat(dfd, st.temp, &cur, AT_SYMLINK_NOFOLLOW) == 0 && cur.st_ino == st.relay_ino)
      unlinkat(dfd, st.temp, 0);
    close(fd);
  }
  if (linked && (fstatat(dfd, s->place.base, &cur, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISSOCK(cur.st_mode)) &&
      fstatat(dfd, s->place.backup, &cur, AT_SYMLINK_NOFOLLOW) == 0 && cur.st_ino == st.orig_ino) {
    /* Something that is not a socket reached PATH: another writer of the folder replaced our
     * temporary name (with a symlink, say) between uds_swap_replace's check and its exchange, and
     * replaced it again before the exchange back.  The original goes back from its backup name,
     * atomically (a socket at PATH is the server's own re-creation, and stays). */
    renameat(dfd, s->place.backup, dfd, s->place.base);
  }
  if (linked && fstatat(dfd, s->place.backup, &cur, AT_SYMLINK_NOFOLLOW) == 0 && cur.st_ino == st.orig_ino)
    unlinkat(dfd, s->place.backup, 0);
  guard_disarm(s);
  return -1;
}

static int swap_install(UdsSwap *s, GError **error)
{
  if (s->installed) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_FAILED, "%s: already interposed", s->path);
    return -1;
  }
  if (s->guard_chan < 0) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_FAILED, "%s: refusing to interpose without a guardian", s->path);
    return -1;
  }
  struct stat cur;
  if (fstatat(s->place.dirfd, s->place.base, &cur, AT_SYMLINK_NOFOLLOW) < 0 || cur.st_ino != s->orig_st.st_ino ||
      cur.st_dev != s->orig_st.st_dev) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_FAILED, "%s: changed since it was checked: try again", s->path);
    return -1;
  }
  s->orig_st = cur;  /* owner and mode as of now */
  if (!ensure_watch(s, error))  /* before the swap, so no re-creation by the server goes unseen */
    return -1;
  int fd = interpose(s, error);
  if (fd >= 0)
    uds_info("interposed on %s (relay socket inode %lu, original at %s)", s->path, (unsigned long)s->state.relay_ino,
             s->place.backup);
  return fd;
}

/* ---- restore ---- */

static gboolean swap_restore(UdsSwap *s, GError **error)
{
  if (s->installed) {
    UdsPutBack r = uds_swap_put_back(&s->place, &s->state);
    if (r == UDS_PUTBACK_FAILED) {
      int e = errno;
      /* The guardian keeps its state and tries again when this process exits. */
      g_set_error(error, UDS_ERROR, UDS_ERROR_FAILED,
                  "could not put %s back (%s): the original socket is %s/%s; run `udsdump --restore %s`", s->path,
                  e == ENOENT ? "the original's backup name is gone" : g_strerror(e), s->folder, s->place.backup,
                  s->path);
      return FALSE;
    }
    s->installed = FALSE;
    if (r == UDS_PUTBACK_RESTORED)
      uds_info("put %s back", s->path);
    else
      uds_info("%s was re-created by its server meanwhile: left as it is, udsdump's leftovers removed", s->path);
  }
  if (s->guard_chan >= 0) {
    uds_guardian_done(s->guard_chan);
    s->guard_chan = -1;
  }
  return TRUE;
}

/* ---- following the server ---- */

int uds_swap_watch_fd(UdsSwap *s)
{
  return s->watch_fd;
}

/* Reads every queued event; TRUE when one may concern PATH. */
static gboolean drain_watch(UdsSwap *s)
{
  gboolean relevant = FALSE;
  char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
  for (;;) {
    ssize_t n = read(s->inotify_fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    for (char *p = buf; p < buf + n;) {
      struct inotify_event *ev = (struct inotify_event *)p;
      if ((ev->mask & IN_Q_OVERFLOW) || (ev->len && strcmp(ev->name, s->place.base) == 0))
        relevant = TRUE;
      p += sizeof *ev + ev->len;
    }
  }
  return relevant;
}

static gboolean swap_path_replaced(UdsSwap *s, int *new_listen_fd, GError **error)
{
  if (new_listen_fd)
    *new_listen_fd = -1;
  if (s->watch_fd < 0 || !drain_watch(s) || !s->installed)
    return FALSE;
  const int dfd = s->place.dirfd;
  int nfd = openat(dfd, s->place.base, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  struct stat st;
  if (nfd < 0 || fstat(nfd, &st) < 0) {
    if (nfd >= 0)
      close(nfd);
    return FALSE;  /* unlinked: the server is about to bind again (or is gone); wait for it */
  }
  if (st.st_dev == s->state.dev && st.st_ino == s->state.relay_ino) {
    close(nfd);
    return FALSE;
  }

  /* The relay is no longer in front.  Our leftovers go (the backup of the old original, a temp name). */
  s->installed = FALSE;
  gboolean put_back_by_other = st.st_dev == s->state.dev && st.st_ino == s->state.orig_ino;
  uds_swap_put_back(&s->place, &s->state);
  guard_disarm(s);
  memset(&s->state, 0, sizeof s->state);
  s->state.dev = s->orig_st.st_dev;
  s->state.orig_ino = s->orig_st.st_ino;
  if (put_back_by_other) {
    close(nfd);
    g_set_error(error, UDS_ERROR, UDS_ERROR_FAILED,
                "%s was put back by another process (the guardian or `udsdump --restore`): not following it", s->path);
    return TRUE;
  }
  if (!S_ISSOCK(st.st_mode)) {
    close(nfd);
    g_set_error(error, UDS_ERROR, UDS_ERROR_FAILED, "%s is no longer a socket", s->path);
    return TRUE;
  }
  /* Upstream now names the new socket: same string, new inode. */
  if (dup3(nfd, s->orig_fd, O_CLOEXEC) < 0) {
    close(nfd);
    g_set_error(error, UDS_ERROR, UDS_ERROR_SYSTEM, "%s: dup3: %s", s->path, g_strerror(errno));
    return TRUE;
  }
  close(nfd);
  s->orig_st = st;
  s->state.dev = st.st_dev;
  s->state.orig_ino = st.st_ino;
  DiagHit hit = { 0 };
  int r = diag_lookup(st.st_dev, st.st_ino, &hit);
  if (r > 0) {
    g_free(s->server_comm);
    s->server_pid = holder_pid(hit.sock_ino);
    s->server_comm = s->server_pid ? uds_proc_comm(uds_proc_root(), s->server_pid) : NULL;
  }
  if (!new_listen_fd)
    return TRUE;
  if (r == 0) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_FAILED, "%s: the new socket has no server: not following it", s->path);
    return TRUE;
  }
  if (r > 0 && hit.type != s->type) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_FAILED, "%s: the new socket is of another type: not following it", s->path);
    return TRUE;
  }
  /* The server may have bound and not yet called listen(): a relay in front of it now behaves as the
   * server itself would for the few microseconds until it does. */
  *new_listen_fd = interpose(s, error);
  if (*new_listen_fd >= 0)
    uds_info("re-interposed on %s (new server socket inode %lu)", s->path, (unsigned long)st.st_ino);
  return TRUE;
}

/* ---- release ---- */

void uds_swap_free(UdsSwap *s)
{
  if (!s)
    return;
  if (s->guard_chan >= 0)
    close(s->guard_chan);  /* still interposed?  then the guardian puts PATH back now */
  if (s->watch_fd >= 0 && s->watch_fd != s->inotify_fd)
    close(s->watch_fd);
  if (s->inotify_fd >= 0)
    close(s->inotify_fd);
  if (s->root_pidfd >= 0)
    close(s->root_pidfd);
  if (s->orig_fd >= 0)
    close(s->orig_fd);
  if (s->place.dirfd >= 0)
    close(s->place.dirfd);
  g_free(s->path);
  g_free(s->folder);
  g_free(s->server_comm);
  g_free(s->ended);
  g_free(s);
}

/* ---- udsdump --restore ---- */

static gboolean is_temp_name(const char *name, const char *base)
{
  const char *rest = NULL;
  size_t bl = strlen(base);
  if (name[0] == '.' && strncmp(name + 1, base, bl) == 0 && g_str_has_prefix(name + 1 + bl, TEMP_TAG))
    rest = name + 1 + bl + strlen(TEMP_TAG);
  else if (g_str_has_prefix(name, TEMP_TAG))
    rest = name + strlen(TEMP_TAG);
  if (!rest || strlen(rest) != 8)
    return FALSE;
  for (int i = 0; i < 8; i++)
    if (!g_ascii_isxdigit(rest[i]) || g_ascii_isupper(rest[i]))
      return FALSE;
  return TRUE;
}

/* Removes temporary relay names nobody is bound to any more.  Returns how many. */
static guint remove_dead_temps(int dirfd, const char *folder, const char *base, GString *report)
{
  int lfd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR *d = lfd >= 0 ? fdopendir(lfd) : NULL;
  if (!d) {
    if (lfd >= 0)
      close(lfd);
    return 0;
  }
  guint removed = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    struct stat st;
    DiagHit hit;
    if (!is_temp_name(e->d_name, base) || fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
        !S_ISSOCK(st.st_mode) || diag_lookup(st.st_dev, st.st_ino, &hit) != 0)
      continue;
    if (unlinkat(dirfd, e->d_name, 0) == 0) {
      g_string_append_printf(report, "removed the dead relay socket %s/%s\n", folder, e->d_name);
      removed++;
    }
  }
  closedir(d);
  return removed;
}

static gboolean swap_repair(const char *path, GString *report, GError **error)
{
  g_autofree char *folder = NULL, *base = NULL;
  int dirfd = -1;
  pid_t root_pid = 0;
  if (!parse_path(path, &folder, &base, &dirfd, &root_pid, error))
    return FALSE;
  g_autofree char *backup = g_strdup_printf(".%s%s", base, BACKUP_SUFFIX);
  gboolean ok = FALSE;
  struct stat bst, pst;
  pid_t pid;
  g_autofree char *comm = NULL;  /* declared before the first goto: the cleanup runs at out */

  if (fstatat(dirfd, backup, &bst, AT_SYMLINK_NOFOLLOW) < 0) {
    if (remove_dead_temps(dirfd, folder, base, report) == 0)
      g_string_append_printf(report, "nothing to do: %s is not interposed\n", path);
    ok = TRUE;
    goto out;
  }
  if (!S_ISSOCK(bst.st_mode)) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_REFUSED, "%s/%s is not a socket, so not udsdump's: left alone", folder,
                backup);
    goto out;
  }
  Held held = capture_holds(dirfd, base, backup, &pid, &comm);
  if (held == HELD_YES) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_REFUSED,
                "%s: a running capture holds it (pid %d, %s): stop that capture, it puts the socket back itself",
                path, (int)pid, comm ? comm : "?");
    goto out;
  }
  if (held == HELD_MAYBE) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_REFUSED,
                "%s: cannot tell whether a capture still holds it (its processes are not visible): run as root",
                path);
    goto out;
  }
  int pfd = openat(dirfd, base, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (pfd >= 0 && fstat(pfd, &pst) == 0) {
    if (!S_ISSOCK(pst.st_mode)) {
      close(pfd);
      g_set_error(error, UDS_ERROR, UDS_ERROR_REFUSED, "%s is not a socket: left it and %s/%s alone", path, folder,
                  backup);
      goto out;
    }
    int type;
    pid_t spid;
    Listener l = listener_of(NULL, pfd, &pst, &type, NULL, &spid);
    close(pfd);
    if (l == LISTENER_LIVE) {
      /* The server re-created PATH: it stays, the old original's backup goes. */
      if (unlinkat(dirfd, backup, 0) < 0) {
        g_set_error(error, UDS_ERROR, UDS_ERROR_SYSTEM, "cannot remove %s/%s: %s", folder, backup, g_strerror(errno));
        goto out;
      }
      g_autofree char *scomm = spid ? uds_proc_comm(uds_proc_root(), spid) : NULL;
      g_string_append_printf(report, "%s is served by its server again (pid %d, %s): removed the stale backup %s/%s\n",
                             path, (int)spid, scomm ? scomm : "?", folder, backup);
    } else {
      /* PATH is udsdump's dead relay: the original goes back over it. */
      if (uds_swap_replace(dirfd, backup, bst.st_ino, base, pst.st_dev, pst.st_ino) < 0) {
        g_set_error(error, UDS_ERROR, UDS_ERROR_SYSTEM, "cannot put %s/%s back at %s: %s", folder, backup, path,
                    errno == EAGAIN ? "it changed meanwhile, run again" : g_strerror(errno));
        goto out;
      }
      g_string_append_printf(report, "put the original socket back at %s (it was behind udsdump's dead relay)\n",
                             path);
    }
  } else {
    if (pfd >= 0)
      close(pfd);
    if (renameat2(dirfd, backup, dirfd, base, RENAME_NOREPLACE) < 0 &&
        (errno != EINVAL || renameat(dirfd, backup, dirfd, base) < 0)) {
      g_set_error(error, UDS_ERROR, UDS_ERROR_SYSTEM, "cannot put %s/%s back at %s: %s", folder, backup, path,
                  g_strerror(errno));
      goto out;
    }
    g_string_append_printf(report, "%s was missing: put the original socket back\n", path);
  }
  remove_dead_temps(dirfd, folder, base, report);
  ok = TRUE;
out:
  close(dirfd);
  return ok;
}

/* ---- the public calls: each runs with UDS_PRIV_SWAP effective in capability mode ----
 *
 * Everything above works on PATH's folder through its descriptor, on names it made itself or on the
 * socket file PATH (checked to be a socket, never a symlink): these are the only operations of the
 * group install that write as someone else.  Nothing the user names other than PATH is touched here. */

UdsSwap *uds_swap_prepare(const char *path, GError **error)
{
  UdsCaps was = uds_priv_raise(UDS_PRIV_SWAP);
  UdsSwap *s = swap_prepare(path, error);
  uds_priv_restore(was);
  return s;
}

int uds_swap_install(UdsSwap *s, GError **error)
{
  UdsCaps was = uds_priv_raise(UDS_PRIV_SWAP);
  int fd = swap_install(s, error);
  uds_priv_restore(was);
  return fd;
}

gboolean uds_swap_restore(UdsSwap *s, GError **error)
{
  UdsCaps was = uds_priv_raise(UDS_PRIV_SWAP);
  gboolean ok = swap_restore(s, error);
  uds_priv_restore(was);
  return ok;
}

gboolean uds_swap_path_replaced(UdsSwap *s, int *new_listen_fd, GError **error)
{
  UdsCaps was = uds_priv_raise(UDS_PRIV_SWAP);
  gboolean changed = swap_path_replaced(s, new_listen_fd, error);
  uds_priv_restore(was);
  return changed;
}

gboolean uds_swap_repair(const char *path, GString *report, GError **error)
{
  UdsCaps was = uds_priv_raise(UDS_PRIV_SWAP);
  gboolean ok = swap_repair(path, report, error);
  uds_priv_restore(was);
  return ok;
}
