/* peer — who is at the other end of a Unix socket connection.
 *
 * SO_PEERCRED gives pid/uid/gid as of connect(); SO_PEERGROUPS the supplementary groups; /proc
 * the command name.  The relay uses it to label captures and to connect upstream as the client.
 */
#pragma once
#include <glib.h>
#include <sys/types.h>

#define UDS_MAX_GROUPS 256

typedef struct {
  pid_t pid;
  uid_t uid;
  gid_t gid;
  int ngroups;                    /* -1 when unknown */
  gid_t groups[UDS_MAX_GROUPS];
  char comm[32];                  /* "" when unknown */
} UdsPeer;

/* Fills *peer from a connected Unix socket.  FALSE with errno when SO_PEERCRED fails. */
gboolean uds_peer_from_fd(int fd, UdsPeer *peer);
/* Our own identity, in the same shape. */
void uds_peer_self(UdsPeer *peer);
/* TRUE when some of the peer's ids have no name in our user namespace: the kernel then shows them as
 * the overflow id (65534), and that is not who the peer is.  Never in the initial user namespace,
 * where every id is mapped.  The relay refuses such a client: connecting it as the overflow id (or as
 * ourselves) would show the server another identity. */
gboolean uds_peer_unmapped(const UdsPeer *peer);
/* TRUE when a and b have the same uid, gid and supplementary groups. */
gboolean uds_peer_same_identity(const UdsPeer *a, const UdsPeer *b);

/* What a descriptor is, from its /proc/PID/fd link text (not a socket's: callers say more about
 * those): "pipe [456]", "memfd:x", "anon_inode:[eventfd]", "directory /tmp", "file /etc/hosts". */
char *uds_describe_fd_link(const char *link, gboolean is_dir);
