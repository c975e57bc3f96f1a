/* netns — the host's network and mount namespaces, as udsdump needs them.
 *
 * /proc/net/unix and NETLINK_SOCK_DIAG both answer only for the reader's own network namespace, yet a
 * server in a container (its own network namespace) may be bound on a host path (a bind-mounted
 * volume) or on its own filesystem.  So discovery and the listener check look in every network
 * namespace that some process of the host is in, each read once: <proc>/PID/net/unix for its text,
 * a sock_diag socket created inside it for the kernel's bound-file records.
 */
#pragma once
#include <glib.h>
#include <sys/types.h>

typedef struct {
  guint64 ino;   /* the namespace's inode, as in "net:[INO]": its identity */
  pid_t pid;     /* the lowest pid in it, through which it is reached; 0 for our own */
} UdsNetns;

/* Our own network namespace first (pid 0), then every other one a process under proc_root is in,
 * ascending by inode.  Never fails: an unreadable proc root gives just our own. */
GArray *uds_netns_list(const char *proc_root);

/* Inode of the namespace of `kind` ("net", "mnt", "user") that pid is in (pid 0: ourselves); 0 when
 * it cannot be read. */
guint64 uds_ns_ino(const char *proc_root, pid_t pid, const char *kind);

/* A socket created inside pid's network namespace (pid 0: ours), close-on-exec.  Only the calling
 * thread enters the namespace, and only for the socket() call.  -1 with errno when that is not
 * allowed (CAP_SYS_ADMIN is needed). */
int uds_netns_socket(pid_t pid, int domain, int type, int protocol);

/* Container filesystems are reached from the host as /proc/PID/root/INNER.  TRUE when path has that
 * form (PID all digits, INNER non-empty); *inner then points at INNER's leading '/' inside path. */
gboolean uds_ns_root_path(const char *path, pid_t *pid, const char **inner);

/* Opens inner (a path as the container sees it) beneath the root that rootfd is, never leaving it
 * and refusing every symlink on the way (ELOOP), magic links included: openat2 RESOLVE_IN_ROOT |
 * RESOLVE_NO_SYMLINKS, or where that is missing a walk of O_PATH|O_NOFOLLOW descriptors that refuses
 * "..".  flags: O_PATH, O_DIRECTORY...  -1 with errno. */
int uds_ns_root_open(int rootfd, const char *inner, int flags);
