/* discover — which Unix sockets on this host a client could connect to by path (see discover.h).
 *
 * The model.  <proc>/net/unix is the kernel's list of every AF_UNIX socket in our network namespace,
 * one entry per socket:
 *     "%pK: %08X %08X %08X %04X %02X %5lu" [" " path] "\n"
 *      addr  refs   proto  flags  type st   inode
 * The path's bytes are printed raw, so a path holding '\n' spills onto further lines.  A line that
 * does not have the entry-line shape is therefore the continuation of the previous entry's path;
 * the kernel always ends a line with '\n', so an unterminated last line (a truncated file) is
 * ignored.  Abstract names print as '@' + name (NULs as '@'), relative bind paths print relative:
 * neither is a path we can check from here, so only absolute paths are kept.
 *
 * Invariants of the listing.
 * - Only sockets a client could reach by path now: listening stream/seqpacket (__SO_ACCEPTCON) and
 *   datagram sockets without a peer of their own (one with a peer refuses everyone else), whose path
 *   is a socket file right now (lstat: not following a final symlink, so a link to a socket is not
 *   one).  The text's St field cannot say which datagram sockets have a peer on Linux >= 5.16 (the
 *   target of a connect() shows as connected too, e.g. /dev/log): unix_diag can, see below.
 * - A path crafted to contain a fake entry line can make the text name any path with any inode.  The
 *   lstat check keeps that from listing a non-socket; on the real /proc we also ask the kernel over
 *   NETLINK_SOCK_DIAG (UDIAG_SHOW_VFS, UDIAG_SHOW_PEER) which file each socket is bound to and
 *   whether it has a peer, and keep an entry only when that file is the one at its path: this drops
 *   forged entries, listeners whose path was unlinked and re-bound, and sockets bound in another
 *   mount namespace at a path that happens to exist here.  Without netlink (fixture roots, kernels
 *   without unix_diag) the lstat check stands alone and datagram sockets need St 01.
 *
 * Namespaces.  The kernel's list and unix_diag both answer for one network namespace, and containers
 * have their own, so every network namespace a process of the host is in is read once (netns.c:
 * <proc>/PID/net/unix, and a sock_diag socket made inside it), ours first so that our own socket wins
 * a tie on a path.  A socket whose bound file is not at its path here was bound in another mount
 * namespace (or unlinked): once its owner is known, it is looked for at the same path beneath the
 * owner's root, resolved without following any symlink (netns.h), and when the kernel's record says
 * that is its file it is listed as /proc/PID/root/PATH, the name that reaches it from here and that
 * swap.c interposes on.  Owners in another mount namespace get their container (container.c).
 *
 * Owners.  Wireshark lists interfaces at every start, so the owner scan is the hot path: only the
 * inodes we list are looked for, pids are visited in ascending order (so the first holder found is
 * the lowest pid), fds are read with getdents64/readlinkat into stack buffers (no allocation per
 * fd), and the scan stops as soon as every inode has an owner.  One exception to "lowest pid wins":
 * pid 1 (systemd socket activation holds every listener it hands out) yields to any other holder,
 * so docker.sock shows dockerd, not systemd.
 */
#include "discover.h"
#include "privilege.h"

#include "container.h"
#include "netns.h"
#include "wellknown.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>

#ifndef OVERLAYFS_SUPER_MAGIC
#define OVERLAYFS_SUPER_MAGIC 0x794c7630
#endif

#define SUN_PATH_MAX sizeof(((struct sockaddr_un *)NULL)->sun_path) /* 108: Linux binds unterminated */
#define FLAG_ACCEPTCON 0x00010000u                                 /* __SO_ACCEPTCON: listening */
#define STATE_UNCONNECTED 0x01                                     /* SS_UNCONNECTED */
#define TCP_STATE_ESTABLISHED 1                                    /* a datagram socket that has, or is, a peer */
#define TCP_STATE_CLOSE 7                                          /* sk_state of unconnected sockets */
#define TCP_STATE_LISTEN 10

void uds_socket_info_free(UdsSocketInfo *info)
{
  if (!info)
    return;
  g_free(info->path);
  g_free(info->comm);
  g_free(info->container_id);
  g_free(info->container_name);
  g_free(info);
}

const char *uds_proc_root(void)
{
  const char *env = g_getenv("UDSDUMP_PROC_ROOT");
  return env && *env ? env : "/proc";
}

/* ---- parsing <proc>/net/unix ---------------------------------------------------------------- */

typedef struct {
  guint64 inode;
  guint flags, type, state;
  gboolean has_path;   /* a space followed the inode: a name (maybe empty on this line) comes next */
} EntryHead;

/* n hex digits in the kernel's case (%08X: upper; %pK: lower) */
static gboolean hex_field(const char **pp, const char *end, int n, gboolean upper, guint *out)
{
  const char *p = *pp;
  guint v = 0;
  if (end - p < n)
    return FALSE;
  for (int i = 0; i < n; i++, p++) {
    int d;
    if (*p >= '0' && *p <= '9')
      d = *p - '0';
    else if (upper && *p >= 'A' && *p <= 'F')
      d = *p - 'A' + 10;
    else if (!upper && *p >= 'a' && *p <= 'f')
      d = *p - 'a' + 10;
    else
      return FALSE;
    v = v << 4 | (guint)d;
  }
  *out = v;
  *pp = p;
  return TRUE;
}

static gboolean expect(const char **pp, const char *end, char c)
{
  if (*pp >= end || **pp != c)
    return FALSE;
  (*pp)++;
  return TRUE;
}

/* Does [s, end) have the shape of an entry line,
 * ^[0-9a-f]+: [0-9A-F]{8} [0-9A-F]{8} [0-9A-F]{8} [0-9A-F]{4} [0-9A-F]{2} +[0-9]+( |$) ?
 * On success *path points just past the space that follows the inode (or at end). */
static gboolean parse_entry_line(const char *s, const char *end, EntryHead *h, const char **path)
{
  const char *p = s;
  guint ignored;
  while (p < end && ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
    p++;
  if (p == s || !expect(&p, end, ':') || !expect(&p, end, ' '))
    return FALSE;
  if (!hex_field(&p, end, 8, TRUE, &ignored) || !expect(&p, end, ' ') ||   /* refcount */
      !hex_field(&p, end, 8, TRUE, &ignored) || !expect(&p, end, ' ') ||   /* protocol */
      !hex_field(&p, end, 8, TRUE, &h->flags) || !expect(&p, end, ' ') ||
      !hex_field(&p, end, 4, TRUE, &h->type) || !expect(&p, end, ' ') ||
      !hex_field(&p, end, 2, TRUE, &h->state) || !expect(&p, end, ' '))
    return FALSE;
  while (p < end && *p == ' ')
    p++;
  guint64 ino = 0;
  const char *digits = p;
  for (; p < end && *p >= '0' && *p <= '9'; p++) {
    if (ino > (G_MAXUINT64 - 9) / 10)
      return FALSE;
    ino = ino * 10 + (guint64)(*p - '0');
  }
  if (p == digits)
    return FALSE;
  h->inode = ino;
  if (p == end) {
    h->has_path = FALSE;
    *path = p;
    return TRUE;
  }
  if (*p != ' ')
    return FALSE;
  h->has_path = TRUE;
  *path = p + 1;
  return TRUE;
}

/* One entry being assembled from its lines; the path never needs more than sun_path's bytes. */
typedef struct {
  gboolean active;
  EntryHead head;
  char path[SUN_PATH_MAX + 1];
  gsize len;
  gboolean too_long;   /* more bytes than any bound path can have: junk was glued on */
} Pending;

static void pending_append(Pending *e, const char *s, gsize n)
{
  if (e->too_long || n > SUN_PATH_MAX - e->len) {
    e->too_long = TRUE;
    return;
  }
  memcpy(e->path + e->len, s, n);
  e->len += n;
}

/* Datagram sockets: since Linux 5.16 connecting to a datagram socket marks the *target* connected
 * too (St 03), though it still takes datagrams from anyone.  Only unix_diag can tell a socket that
 * has a peer of its own (and refuses everyone else) from one that was merely connected to, so with
 * it every bound datagram socket is a candidate; without it only St 01 ones are. */
typedef enum { DGRAM_UNCONNECTED_ONLY, DGRAM_ANY_STATE } DgramPolicy;

static gboolean reachable_by_path(const EntryHead *h, DgramPolicy dgram)
{
  switch (h->type) {
  case SOCK_STREAM:
  case SOCK_SEQPACKET:
    return (h->flags & FLAG_ACCEPTCON) != 0;
  case SOCK_DGRAM:
    return dgram == DGRAM_ANY_STATE || h->state == STATE_UNCONNECTED;
  default:
    return FALSE;
  }
}

/* Which names a listing keeps: absolute paths, or abstract names ("@..."; observe mode only). */
typedef enum { NAMES_PATHS, NAMES_ABSTRACT } NameKind;

static void pending_finish(Pending *e, DgramPolicy dgram, NameKind kind, GPtrArray *out)
{
  if (!e->active)
    return;
  e->active = FALSE;
  /* '/' first: excludes unbound (no name), abstract ('@...') and relative bind paths. */
  if (!e->head.has_path || e->too_long || e->len == 0 || e->path[0] != (kind == NAMES_ABSTRACT ? '@' : '/') ||
      !reachable_by_path(&e->head, dgram))
    return;
  UdsSocketInfo *info = g_new0(UdsSocketInfo, 1);
  info->path = g_strndup(e->path, e->len);
  info->inode = e->head.inode;
  info->type = (int)e->head.type;
  g_ptr_array_add(out, info);
}

static GPtrArray *parse_text(const char *text, gsize len, DgramPolicy dgram, NameKind kind)
{
  GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)uds_socket_info_free);
  Pending e = { 0 };
  const char *p = text, *end = text + len;
  while (p < end) {
    const char *nl = memchr(p, '\n', (gsize)(end - p));
    if (!nl)
      break;   /* unterminated: a line cut anywhere, its own entry or a tail of the last path */
    const char *le = nl;
    EntryHead h;
    const char *path;
    if (parse_entry_line(p, le, &h, &path)) {
      pending_finish(&e, dgram, kind, out);
      e.active = TRUE;
      e.head = h;
      e.len = 0;
      e.too_long = FALSE;
      pending_append(&e, path, (gsize)(le - path));
    } else if (e.active && e.head.has_path) {
      pending_append(&e, "\n", 1);
      pending_append(&e, p, (gsize)(le - p));
    }
    /* else: the header, or junk that follows no named entry */
    p = nl + 1;
  }
  pending_finish(&e, dgram, kind, out);
  return out;
}

/* ---- reading files ---------------------------------------------------------------------------- */

/* Whole file into a NUL-terminated buffer; /proc files report size 0, so read until EOF. */
static char *read_all(const char *path, gsize *len_out, GError **error)
{
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "cannot read %s: %s", path, g_strerror(e));
    return NULL;
  }
  gsize cap = 256 * 1024, len = 0;
  char *buf = g_malloc(cap);
  for (;;) {
    if (cap - len < 64 * 1024) {
      cap *= 2;
      buf = g_realloc(buf, cap);
    }
    ssize_t n = read(fd, buf + len, cap - len - 1);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int e = errno;
      g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "cannot read %s: %s", path, g_strerror(e));
      g_free(buf);
      close(fd);
      return NULL;
    }
    if (n == 0)
      break;
    len += (gsize)n;
  }
  close(fd);
  buf[len] = '\0';
  *len_out = len;
  return buf;
}

GPtrArray *uds_discover_parse(const char *text, gsize len)
{
  return parse_text(text, len, DGRAM_UNCONNECTED_ONLY, NAMES_PATHS);
}

char *uds_proc_comm(const char *proc_root, pid_t pid)
{
  char path[PATH_MAX], buf[64];
  if (!proc_root)
    proc_root = uds_proc_root();
  if (snprintf(path, sizeof path, "%s/%d/comm", proc_root, (int)pid) >= (int)sizeof path)
    return NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return NULL;
  ssize_t n;
  do
    n = read(fd, buf, sizeof buf - 1);
  while (n < 0 && errno == EINTR);
  close(fd);
  if (n <= 0)
    return NULL;
  if (buf[n - 1] == '\n')
    n--;
  return g_strndup(buf, (gsize)n);
}

/* ---- which file each socket is bound to, from the kernel (NETLINK_SOCK_DIAG) -------------------- */

typedef struct {
  guint32 sock_ino;    /* sockfs inode, as in /proc/net/unix */
  guint32 vfs_dev;     /* kernel dev_t of the bound file's filesystem: major << 20 | minor */
  guint32 vfs_ino;     /* the bound file's inode, low 32 bits */
  gboolean has_peer;   /* connected itself: a datagram socket then refuses all but its peer */
} VfsRec;

typedef struct {
  VfsRec *recs;
  gsize n;
} VfsMap;

static void vfs_map_free(VfsMap *m)
{
  if (!m)
    return;
  g_free(m->recs);
  g_free(m);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VfsMap, vfs_map_free)

static int vfs_rec_cmp(const void *a, const void *b)
{
  guint32 x = ((const VfsRec *)a)->sock_ino, y = ((const VfsRec *)b)->sock_ino;
  return x < y ? -1 : x > y;
}

/* Dumps the bound file (and whether it has a peer) of every AF_UNIX socket bound to a file.  NULL when the kernel
 * cannot answer (no unix_diag, a sandbox): the caller then relies on lstat alone. */
static VfsMap *vfs_map_load(pid_t netns_pid)
{
  int fd = uds_netns_socket(netns_pid, AF_NETLINK, SOCK_DGRAM, NETLINK_SOCK_DIAG);
  if (fd < 0)
    return NULL;
  struct {
    struct nlmsghdr nlh;
    struct unix_diag_req req;
  } rq = {
    .nlh = { .nlmsg_len = sizeof rq, .nlmsg_type = SOCK_DIAG_BY_FAMILY,
             .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP, .nlmsg_seq = 1 },
    .req = { .sdiag_family = AF_UNIX,
             .udiag_states = (1u << TCP_STATE_LISTEN) | (1u << TCP_STATE_CLOSE) | (1u << TCP_STATE_ESTABLISHED),
             .udiag_show = UDIAG_SHOW_VFS | UDIAG_SHOW_PEER },
  };
  struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
  GArray *recs = g_array_new(FALSE, FALSE, sizeof(VfsRec));
  gboolean ok = FALSE, done = FALSE;
  long buf[8192];   /* 64 KiB, aligned for nlmsghdr */
  if (sendto(fd, &rq, sizeof rq, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0)
    goto bad;
  while (!done) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      goto bad;
    for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_type == NLMSG_DONE) {
        done = TRUE;
        break;
      }
      if (h->nlmsg_type == NLMSG_ERROR || h->nlmsg_type != SOCK_DIAG_BY_FAMILY)
        goto bad;
      const struct unix_diag_msg *m = NLMSG_DATA(h);
      int alen = (int)h->nlmsg_len - (int)NLMSG_LENGTH(sizeof *m);
      VfsRec r = { .sock_ino = m->udiag_ino };
      gboolean bound = FALSE;
      for (struct rtattr *a = (struct rtattr *)(m + 1); alen > 0 && RTA_OK(a, alen); a = RTA_NEXT(a, alen)) {
        if (a->rta_type == UNIX_DIAG_PEER) {
          r.has_peer = TRUE;
        } else if (a->rta_type == UNIX_DIAG_VFS && RTA_PAYLOAD(a) >= sizeof(struct unix_diag_vfs)) {
          const struct unix_diag_vfs *v = RTA_DATA(a);
          r.vfs_dev = v->udiag_vfs_dev;
          r.vfs_ino = v->udiag_vfs_ino;
          bound = TRUE;
        }
      }
      if (bound)
        g_array_append_val(recs, r);
    }
  }
  ok = TRUE;
bad:
  close(fd);
  if (!ok) {
    g_array_free(recs, TRUE);
    return NULL;
  }
  VfsMap *map = g_new0(VfsMap, 1);
  map->n = recs->len;
  map->recs = (VfsRec *)(void *)g_array_free(recs, FALSE);
  if (map->n)   /* a namespace with no bound socket: recs is NULL, which qsort may not be given */
    qsort(map->recs, map->n, sizeof(VfsRec), vfs_rec_cmp);
  return map;
}

/* The kernel's record of a socket bound to a file, when it is one a client could reach: a datagram
 * socket with a peer of its own refuses everyone else. */
static const VfsRec *vfs_map_reachable(const VfsMap *m, const UdsSocketInfo *e)
{
  if (e->inode > G_MAXUINT32)
    return NULL;
  VfsRec key = { .sock_ino = (guint32)e->inode };
  const VfsRec *r = m->n ? bsearch(&key, m->recs, m->n, sizeof(VfsRec), vfs_rec_cmp) : NULL;
  return r && !(e->type == SOCK_DGRAM && r->has_peer) ? r : NULL;
}

/* Is r the very file st describes (found at path, or open as fd when fd >= 0)?  Overlayfs may report a
 * file's st_dev as the upper layer's while the kernel names the overlay's: there the inode decides. */
static gboolean vfs_rec_matches(const VfsRec *r, const struct stat *st, const char *path, int fd)
{
  if (!r || r->vfs_ino != (guint32)st->st_ino)
    return FALSE;
  if ((r->vfs_dev >> 20) == major(st->st_dev) && (r->vfs_dev & 0xfffff) == minor(st->st_dev))
    return TRUE;
  struct statfs fs;
  return (fd >= 0 ? fstatfs(fd, &fs) : statfs(path, &fs)) == 0 && fs.f_type == OVERLAYFS_SUPER_MAGIC;
}

/* Only the real /proc describes the sockets the kernel would tell us about. */
static VfsMap *vfs_map_for(const char *root, pid_t netns_pid)
{
  return strcmp(root, "/proc") == 0 ? vfs_map_load(netns_pid) : NULL;
}

/* ---- owners ------------------------------------------------------------------------------------ */

typedef struct {
  guint64 inode;
  UdsSocketInfo *info;
  gboolean final;   /* owner is settled: a pid other than 1 found it */
} Need;

static int need_cmp(const void *a, const void *b)
{
  guint64 x = ((const Need *)a)->inode, y = ((const Need *)b)->inode;
  return x < y ? -1 : x > y;
}

static int pid_cmp(const void *a, const void *b)
{
  pid_t x = *(const pid_t *)a, y = *(const pid_t *)b;
  return x < y ? -1 : x > y;
}

/* Numeric entries of the proc root, ascending: readdir order is not a promise (and fixtures are
 * plain folders), but "lowest pid wins" needs the order. */
static GArray *list_pids(const char *root)
{
  GArray *pids = g_array_new(FALSE, FALSE, sizeof(pid_t));
  DIR *d = opendir(root);
  if (!d)
    return pids;
  struct dirent *de;
  while ((de = readdir(d))) {
    const char *s = de->d_name;
    if (*s < '1' || *s > '9')
      continue;
    char *endp;
    errno = 0;
    long v = strtol(s, &endp, 10);
    if (*endp || errno || v <= 0 || v > G_MAXINT32)
      continue;
    pid_t pid = (pid_t)v;
    g_array_append_val(pids, pid);
  }
  closedir(d);
  g_array_sort(pids, pid_cmp);
  return pids;
}

/* "socket:[12345]" -> 12345; 0 for any other link. */
static guint64 socket_link_inode(const char *link, gssize n)
{
  static const char prefix[] = "socket:[";
  if (n < (gssize)sizeof prefix + 1 || memcmp(link, prefix, sizeof prefix - 1) != 0 || link[n - 1] != ']')
    return 0;
  guint64 v = 0;
  for (gssize i = sizeof prefix - 1; i < n - 1; i++) {
    if (link[i] < '0' || link[i] > '9' || v > (G_MAXUINT64 - 9) / 10)
      return 0;
    v = v * 10 + (guint64)(link[i] - '0');
  }
  return v;
}

static void set_owner(UdsSocketInfo *info, pid_t pid, const char *comm)
{
  info->pid = pid;
  g_free(info->comm);
  info->comm = g_strdup(comm);
}

/* Marks every Need of this inode held by pid; returns how many became final. */
static gsize claim(Need *needs, gsize n, guint64 ino, pid_t pid, const char *root, char **comm)
{
  Need key = { .inode = ino };
  Need *hit = bsearch(&key, needs, n, sizeof(Need), need_cmp);
  if (!hit)
    return 0;
  while (hit > needs && hit[-1].inode == ino)
    hit--;
  gsize settled = 0;
  for (; hit < needs + n && hit->inode == ino; hit++) {
    if (hit->final || (pid == 1 && hit->info->pid != 0))
      continue;
    if (!*comm)
      *comm = uds_proc_comm(root, pid);
    set_owner(hit->info, pid, *comm);
    if (pid != 1) {
      hit->final = TRUE;
      settled++;
    }
  }
  return settled;
}

static void fill_owners(const char *root, UdsSocketInfo **infos, gsize n_infos)
{
  if (n_infos == 0)
    return;
  Need *needs = g_new0(Need, n_infos);
  for (gsize i = 0; i < n_infos; i++) {
    needs[i].inode = infos[i]->inode;
    needs[i].info = infos[i];
  }
  qsort(needs, n_infos, sizeof(Need), need_cmp);
  gsize remaining = n_infos;

  GArray *pids = list_pids(root);
  union {
    char bytes[32 * 1024];
    struct dirent64 align;
  } dents;
  char path[PATH_MAX], link[64];
  for (guint i = 0; i < pids->len && remaining > 0; i++) {
    pid_t pid = g_array_index(pids, pid_t, i);
    if (snprintf(path, sizeof path, "%s/%d/fd", root, (int)pid) >= (int)sizeof path)
      continue;
    int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
      continue;   /* gone, or not ours to read */
    g_autofree char *comm = NULL;
    ssize_t got;
    while (remaining > 0 && (got = getdents64(dfd, dents.bytes, sizeof dents.bytes)) > 0) {
      for (ssize_t off = 0; off < got && remaining > 0;) {
        struct dirent64 *de = (struct dirent64 *)(void *)(dents.bytes + off);
        off += de->d_reclen;
        if (de->d_name[0] == '.')
          continue;
        ssize_t ln = readlinkat(dfd, de->d_name, link, sizeof link);
        if (ln <= 0 || ln == (ssize_t)sizeof link)
          continue;
        guint64 ino = socket_link_inode(link, ln);
        if (ino)
          remaining -= claim(needs, n_infos, ino, pid, root, &comm);
      }
    }
    close(dfd);
  }
  g_array_free(pids, TRUE);
  g_free(needs);
}

/* ---- the listing ------------------------------------------------------------------------------- */

typedef struct {
  UdsSocketInfo *info;
  guint order;   /* position in the kernel's list: the tie-break between duplicate paths */
} Ranked;

static int ranked_cmp(const void *a, const void *b)
{
  const Ranked *x = a, *y = b;
  int c = strcmp(x->info->path, y->info->path);
  return c ? c : (x->order > y->order) - (x->order < y->order);
}

/* One socket of some network namespace, with the kernel's record of its bound file where the
 * namespace's sock_diag could be asked (has_map). */
typedef struct {
  UdsSocketInfo *info;
  VfsRec rec;
  gboolean has_map, has_rec;
} Cand;

/* Every path-bound candidate of every network namespace (see netns.h), in namespace order then the
 * kernel's; infos owned by the caller.  NULL with error only when our own namespace's list cannot be
 * read: another namespace's process may be gone by now. */
static GArray *collect(const char *root, GError **error)
{
  g_autoptr(GArray) nss = uds_netns_list(root);
  GArray *out = g_array_new(FALSE, FALSE, sizeof(Cand));
  for (guint n = 0; n < nss->len; n++) {
    const UdsNetns *ns = &g_array_index(nss, UdsNetns, n);
    g_autoptr(VfsMap) vfs = vfs_map_for(root, ns->pid);
    g_autofree char *file = ns->pid ? g_strdup_printf("%s/%d/net/unix", root, (int)ns->pid)
                                    : g_strdup_printf("%s/net/unix", root);
    gsize len = 0;
    g_autofree char *text = read_all(file, &len, ns->pid ? NULL : error);
    if (!text) {
      if (ns->pid)
        continue;
      for (guint i = 0; i < out->len; i++)
        uds_socket_info_free(g_array_index(out, Cand, i).info);
      g_array_free(out, TRUE);
      return NULL;
    }
    g_autoptr(GPtrArray) parsed = parse_text(text, len, vfs ? DGRAM_ANY_STATE : DGRAM_UNCONNECTED_ONLY, NAMES_PATHS);
    g_ptr_array_set_free_func(parsed, NULL);
    for (guint i = 0; i < parsed->len; i++) {
      UdsSocketInfo *info = g_ptr_array_index(parsed, i);
      info->netns = ns->ino;
      const VfsRec *r = vfs ? vfs_map_reachable(vfs, info) : NULL;
      if (vfs && !r) {
        uds_socket_info_free(info);   /* the kernel says no client could reach it */
        continue;
      }
      Cand c = { .info = info, .has_map = vfs != NULL, .has_rec = r != NULL };
      if (r)
        c.rec = *r;
      g_array_append_val(out, c);
    }
  }
  return out;
}

/* Is c's socket the file at its own path in our mount namespace? */
static gboolean at_host_path(const Cand *c)
{
  struct stat st;
  if (lstat(c->info->path, &st) != 0 || !S_ISSOCK(st.st_mode))
    return FALSE;
  return !c->has_map || vfs_rec_matches(&c->rec, &st, c->info->path, -1);
}

/* A socket bound in another mount namespace: when its owner's root holds it at the path it was bound
 * to (resolved beneath that root, no symlink followed), its name becomes /proc/PID/root/PATH, which
 * reaches it from here.  FALSE when it cannot be reached that way. */
static gboolean at_container_path(const char *root, Cand *c, guint64 our_mnt)
{
  UdsSocketInfo *info = c->info;
  if (!c->has_rec || info->pid <= 0 || our_mnt == 0 || uds_ns_ino(root, info->pid, "mnt") == our_mnt)
    return FALSE;
  g_autofree char *name = g_strdup_printf("/proc/%d/root%s", (int)info->pid, info->path);
  if (strlen(name) >= SUN_PATH_MAX)
    return FALSE;   /* interfaces are unix:PATH with PATH a socket address */
  g_autofree char *rootlink = g_strdup_printf("%s/%d/root", root, (int)info->pid);
  int rfd = open(rootlink, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (rfd < 0)
    return FALSE;
  int fd = uds_ns_root_open(rfd, info->path, O_PATH);
  close(rfd);
  struct stat st;
  gboolean ok = fd >= 0 && fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) && vfs_rec_matches(&c->rec, &st, NULL, fd);
  if (fd >= 0)
    close(fd);
  if (ok) {
    g_free(info->path);
    info->path = g_steal_pointer(&name);
  }
  return ok;
}

/* The container of each listed owner in a mount namespace other than ours (containers always have
 * their own), read once per pid. */
static void fill_containers(const char *root, UdsSocketInfo **infos, guint n, guint64 our_mnt)
{
  g_autoptr(GHashTable) seen = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, g_free);
  for (guint i = 0; i < n; i++) {
    UdsSocketInfo *info = infos[i];
    if (info->pid <= 0)
      continue;
    UdsContainer *c = g_hash_table_lookup(seen, GINT_TO_POINTER(info->pid));
    if (!c && !g_hash_table_contains(seen, GINT_TO_POINTER(info->pid))) {
      UdsContainer found;
      if (uds_ns_ino(root, info->pid, "mnt") != our_mnt && uds_container_of(root, info->pid, &found))
        c = g_memdup2(&found, sizeof found);
      g_hash_table_insert(seen, GINT_TO_POINTER(info->pid), c);
    }
    if (c) {
      info->container_id = g_strdup(c->id);
      info->container_name = g_strdup(c->name);
    }
  }
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, seen);
  while (g_hash_table_iter_next(&it, NULL, &v))
    if (v)
      g_free(((UdsContainer *)v)->name);
}

static GPtrArray *discover(const char *proc_root, gboolean with_owners, GError **error)
{
  const char *root = proc_root ? proc_root : uds_proc_root();
  g_autoptr(GArray) cands = collect(root, error);
  if (!cands)
    return NULL;
  guint64 our_mnt = uds_ns_ino(root, 0, "mnt");

  /* Sockets at their path here; the others, bound where we cannot see them, wait for their owners. */
  Ranked *kept = g_new(Ranked, cands->len ? cands->len : 1);
  UdsSocketInfo **away = g_new(UdsSocketInfo *, cands->len ? cands->len : 1);
  guint *away_at = g_new(guint, cands->len ? cands->len : 1);
  guint n = 0, n_away = 0;
  for (guint i = 0; i < cands->len; i++) {
    Cand *c = &g_array_index(cands, Cand, i);
    if (at_host_path(c)) {
      kept[n++] = (Ranked){ c->info, i };
    } else if (c->has_rec && our_mnt) {
      away_at[n_away] = i;
      away[n_away++] = c->info;
    } else {
      uds_socket_info_free(g_steal_pointer(&c->info));
    }
  }
  /* One owner scan for everything that needs one: it reads every process's descriptors. */
  UdsSocketInfo **need = g_new(UdsSocketInfo *, n + n_away + 1);
  guint nn = 0;
  for (guint i = 0; with_owners && i < n; i++)
    need[nn++] = kept[i].info;
  memcpy(need + nn, away, n_away * sizeof *away);
  fill_owners(root, need, nn + n_away);
  g_free(need);
  for (guint i = 0; i < n_away; i++) {
    Cand *c = &g_array_index(cands, Cand, away_at[i]);
    if (at_container_path(root, c, our_mnt))
      kept[n++] = (Ranked){ c->info, away_at[i] };
    else
      uds_socket_info_free(g_steal_pointer(&c->info));
  }
  g_free(away);
  g_free(away_at);
  qsort(kept, n, sizeof(Ranked), ranked_cmp);

  /* The first of each path survives into the result. */
  GPtrArray *out = g_ptr_array_new_full(n, (GDestroyNotify)uds_socket_info_free);
  for (guint i = 0; i < n; i++) {
    const UdsSocketInfo *last = out->len ? g_ptr_array_index(out, out->len - 1) : NULL;
    if (last && strcmp(kept[i].info->path, last->path) == 0)
      uds_socket_info_free(kept[i].info);
    else
      g_ptr_array_add(out, kept[i].info);
  }
  g_free(kept);

  if (with_owners && our_mnt)
    fill_containers(root, (UdsSocketInfo **)out->pdata, out->len, our_mnt);
  return out;
}

static int info_path_cmp(gconstpointer a, gconstpointer b)
{
  const UdsSocketInfo *x = *(UdsSocketInfo *const *)a, *y = *(UdsSocketInfo *const *)b;
  return strcmp(x->path, y->path);
}

/* Abstract names live in a network namespace of their own: ours is the one observe mode can see. */
GPtrArray *uds_discover_abstract(const char *proc_root, gboolean with_owners, GError **error)
{
  const char *root = proc_root ? proc_root : uds_proc_root();
  g_autofree char *file = g_strdup_printf("%s/net/unix", root);
  gsize len = 0;
  g_autofree char *text = read_all(file, &len, error);
  if (!text)
    return NULL;
  /* Datagram sockets are left out: observe mode captures stream and seqpacket traffic. */
  GPtrArray *all = parse_text(text, len, DGRAM_UNCONNECTED_ONLY, NAMES_ABSTRACT);
  for (guint i = all->len; i-- > 0;) {
    const UdsSocketInfo *e = g_ptr_array_index(all, i);
    if (e->type == SOCK_DGRAM)
      g_ptr_array_remove_index(all, i);
  }
  g_ptr_array_sort(all, info_path_cmp);
  for (guint i = 1; i < all->len;) {   /* a name has one listener; keep the first of a repeated one */
    const UdsSocketInfo *a = g_ptr_array_index(all, i - 1), *b = g_ptr_array_index(all, i);
    if (strcmp(a->path, b->path) == 0)
      g_ptr_array_remove_index(all, i);
    else
      i++;
  }
  if (with_owners)
    fill_owners(root, (UdsSocketInfo **)all->pdata, all->len);
  return all;
}

static gboolean discover_lookup(const char *proc_root, const char *path, UdsSocketInfo **out)
{
  const char *root = proc_root ? proc_root : uds_proc_root();
  if (out)
    *out = NULL;
  if (!path)
    return FALSE;
  if (path[0] == '@') {
    g_autoptr(GPtrArray) names = uds_discover_abstract(root, FALSE, NULL);
    for (guint i = 0; names && i < names->len; i++) {
      UdsSocketInfo *e = g_ptr_array_index(names, i);
      if (strcmp(e->path, path) != 0)
        continue;
      if (out) {
        UdsSocketInfo *info = g_ptr_array_steal_index(names, i);
        fill_owners(root, &info, 1);
        *out = info;
      }
      return TRUE;
    }
    return FALSE;
  }
  g_autoptr(GArray) cands = collect(root, NULL);
  if (!cands)
    return FALSE;
  struct stat st;
  gboolean have_file = lstat(path, &st) == 0 && S_ISSOCK(st.st_mode);

  /* The socket a client reaching `path` would get.  With the kernel's word on bound files, that is
   * exact whatever spelling of the path the server bound (/var/run vs /run); without it, the same
   * spelling first, then the same file by lstat.  When the file is gone nobody can connect, but the
   * caller may have moved it aside itself: report the live socket bound under that name. */
  guint found = G_MAXUINT;
  for (guint i = 0; i < cands->len && found == G_MAXUINT; i++) {
    const Cand *c = &g_array_index(cands, Cand, i);
    if (have_file ? (c->has_map ? vfs_rec_matches(c->has_rec ? &c->rec : NULL, &st, path, -1)
                                : strcmp(c->info->path, path) == 0)
                  : strcmp(c->info->path, path) == 0)
      found = i;
  }
  if (found == G_MAXUINT && have_file) {
    for (guint i = 0; i < cands->len && found == G_MAXUINT; i++) {
      const Cand *c = &g_array_index(cands, Cand, i);
      struct stat est;
      if (!c->has_map && lstat(c->info->path, &est) == 0 && est.st_dev == st.st_dev && est.st_ino == st.st_ino)
        found = i;
    }
  }
  for (guint i = 0; i < cands->len; i++) {
    UdsSocketInfo *info = g_array_index(cands, Cand, i).info;
    if (i == found && out) {
      fill_owners(root, &info, 1);
      *out = info;
    } else {
      uds_socket_info_free(info);
    }
  }
  return found != G_MAXUINT;
}

/* In capability mode (the group install) the listing sees every socket of the host and names its
 * owner, as root's does: other users' folders and /proc/PID/fd are read with UDS_PRIV_LIST. */
GPtrArray *uds_discover(const char *proc_root, gboolean with_owners, GError **error)
{
  UdsCaps was = uds_priv_raise(UDS_PRIV_LIST);
  GPtrArray *out = discover(proc_root, with_owners, error);
  uds_priv_restore(was);
  return out;
}

gboolean uds_discover_lookup(const char *proc_root, const char *path, UdsSocketInfo **out)
{
  UdsCaps was = uds_priv_raise(UDS_PRIV_LIST);
  gboolean found = discover_lookup(proc_root, path, out);
  uds_priv_restore(was);
  return found;
}

/* ---- names --------------------------------------------------------------------------------------- */

static void append_escaped(GString *s, const char *p, gsize len)
{
  static const char hex[] = "0123456789ABCDEF";
  const char *end = p + len;
  while (p < end) {
    gunichar c = g_utf8_get_char_validated(p, end - p);
    gsize clen = (c == (gunichar)-1 || c == (gunichar)-2) ? 0 : (gsize)(g_utf8_next_char(p) - p);
    gboolean escape = clen == 0 || c < 0x20 || c == 0x7f || (c >= 0x80 && c <= 0x9f) || c == '%' || c == '{' ||
                      c == '}';
    if (!escape) {
      g_string_append_len(s, p, (gssize)clen);
      p += clen;
      continue;
    }
    /* One %XX per byte: an invalid byte on its own, or each byte of an escaped character. */
    for (gsize i = 0; i < (clen ? clen : 1); i++, p++) {
      guchar b = (guchar)*p;
      g_string_append_c(s, '%');
      g_string_append_c(s, hex[b >> 4]);
      g_string_append_c(s, hex[b & 15]);
    }
  }
}

char *uds_iface_encode(const char *path)
{
  GString *s = g_string_new("unix:");
  append_escaped(s, path, strlen(path));
  return g_string_free(s, FALSE);
}

static int hex_value(char c)
{
  return g_ascii_xdigit_value(c);
}

char *uds_iface_decode(const char *value, GError **error)
{
  if (!value || !g_str_has_prefix(value, "unix:")) {
    g_autofree char *shown = NULL;
    if (value) {
      GString *s = g_string_new(NULL);
      append_escaped(s, value, strlen(value));
      shown = g_string_free(s, FALSE);
    }
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "interface \"%s\" is not a udsdump interface: expected unix:PATH", shown ? shown : "");
    return NULL;
  }
  const char *p = value + strlen("unix:");
  GString *out = g_string_sized_new(strlen(p));
  for (gsize i = 0; p[i]; i++) {
    if (p[i] != '%') {
      g_string_append_c(out, p[i]);
      continue;
    }
    int hi = p[i + 1] ? hex_value(p[i + 1]) : -1;
    int lo = hi >= 0 && p[i + 2] ? hex_value(p[i + 2]) : -1;
    if (hi < 0 || lo < 0) {
      g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                  "interface name: bad escape at byte %zu of the path (%% must be followed by two hex digits; "
                  "write %%25 for a literal %%)", i);
      g_string_free(out, TRUE);
      return NULL;
    }
    if (hi == 0 && lo == 0) {
      g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                  "interface name: %%00 at byte %zu: a socket path cannot contain a NUL byte", i);
      g_string_free(out, TRUE);
      return NULL;
    }
    g_string_append_c(out, (char)(hi << 4 | lo));
    i += 2;
  }
  if (out->len == 0) {
    g_set_error_literal(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "interface name: empty socket path after \"unix:\"");
    g_string_free(out, TRUE);
    return NULL;
  }
  return g_string_free(out, FALSE);
}

char *uds_socket_display(const UdsSocketInfo *info)
{
  GString *s = g_string_new(NULL);
  append_escaped(s, info->path, strlen(info->path));
  if (info->pid > 0) {
    g_string_append(s, " (");
    if (info->comm && *info->comm) {
      append_escaped(s, info->comm, strlen(info->comm));
      g_string_append(s, ", ");
    }
    g_string_append_printf(s, "pid %d", (int)info->pid);
    if (info->container_id) {
      const char *label = info->container_name ? info->container_name : info->container_id;
      g_string_append(s, ", container ");
      append_escaped(s, label, info->container_name ? strlen(label) : MIN(strlen(label), 12));
    }
    g_string_append_c(s, ')');
  }
  const char *label = uds_wellknown_label(info->path);
  if (label)
    g_string_append_printf(s, " - %s", label);
  return g_string_free(s, FALSE);
}
