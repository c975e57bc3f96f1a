/* discover — which Unix sockets on this host a client could connect to by path.
 *
 * The kernel's own list, <proc>/net/unix, is the source.  Kept: path-bound listening SOCK_STREAM and
 * SOCK_SEQPACKET sockets, and path-bound unconnected SOCK_DGRAM sockets, whose path still exists as a
 * socket in this mount namespace.  Dropped: client ends, unbound and abstract sockets, and dead ones.
 * Every network namespace of the host is read; a socket bound in another mount namespace (a
 * container's filesystem) is listed as /proc/PID/root/PATH, PID its owner.
 * Owners are found by matching socket inodes against <proc>/PID/fd links.
 *
 * <proc> is "/proc" unless $UDSDUMP_PROC_ROOT names another folder, so tests feed fixture files.
 */
#pragma once
#include <glib.h>
#include <sys/types.h>

typedef struct {
  char *path;     /* filesystem path as the kernel printed it: raw bytes, may be non-UTF-8 */
  guint64 inode;  /* the socket's inode (sockfs), as in <proc>/net/unix */
  int type;       /* SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET */
  pid_t pid;      /* a process holding the socket (the lowest pid), 0 when not known */
  char *comm;     /* that process's command name, NULL when not known */
  guint64 netns;  /* inode of the network namespace the socket lives in (0: not known) */
  char *container_id;    /* the owner's container (see container.h), NULL when none */
  char *container_name;  /* its name when the runtime's state says it, else NULL */
} UdsSocketInfo;

void uds_socket_info_free(UdsSocketInfo *info);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(UdsSocketInfo, uds_socket_info_free)

/* The proc root in force: $UDSDUMP_PROC_ROOT or "/proc". */
const char *uds_proc_root(void);

/* Parses the text of <proc>/net/unix.  Returns the listening / bound path sockets it names (owners
 * not filled, the filesystem not consulted), in the kernel's order.  Copes with paths holding spaces,
 * newlines (the kernel prints them raw, splitting the entry over lines) and non-UTF-8 bytes.
 * Abstract names (@...) and unbound sockets are dropped.  Never fails: junk lines are skipped. */
GPtrArray *uds_discover_parse(const char *text, gsize len);

/* The whole listing: parse <proc_root>/net/unix (proc_root NULL: uds_proc_root()), keep the entries
 * whose path is a socket in the filesystem now (deduplicated by path), sorted by path, with owners
 * when with_owners.  Element type UdsSocketInfo*, freed with the array. */
GPtrArray *uds_discover(const char *proc_root, gboolean with_owners, GError **error);

/* The listening abstract stream and seqpacket sockets, as "@name" (NULs in a name print as '@', as the
 * kernel prints them), sorted, each name once, with owners when with_owners.  Only observe mode can
 * capture them: they have no file to interpose on. */
GPtrArray *uds_discover_abstract(const char *proc_root, gboolean with_owners, GError **error);

/* Looks up one path ("@name": an abstract socket) in the kernel's list: its type and listening socket inode.  FALSE when no
 * listening/bound socket has that path (a stale socket file, or no socket at all). */
gboolean uds_discover_lookup(const char *proc_root, const char *path, UdsSocketInfo **out);

/* Command name of a pid from <proc_root>/PID/comm, NULL when gone. */
char *uds_proc_comm(const char *proc_root, pid_t pid);

/* Interface names.  "unix:" + the path, with '%', '{', '}', control characters and bytes that are not
 * valid UTF-8 written as %XX, so every path survives Wireshark's extcap line format. */
char *uds_iface_encode(const char *path);
/* The inverse: "unix:PATH" -> PATH, %XX decoded.  NULL with error when not "unix:..." or when the
 * decoded path has a NUL byte or is empty. */
char *uds_iface_decode(const char *value, GError **error);

/* What a person sees in the interface list, e.g. "/var/run/docker.sock (dockerd, pid 812) - Docker
 * Engine API".  Valid UTF-8 whatever the path holds. */
char *uds_socket_display(const UdsSocketInfo *info);
