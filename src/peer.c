/* peer — who is at the other end of a Unix socket connection (see include/peer.h).
 *
 * SO_PEERCRED is fixed at connect() time by the kernel, so it is the identity the client actually
 * had when it reached the socket; that is the identity the relay must not exceed upstream.
 */
#include "peer.h"

#include "discover.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59
#endif

static void fill_comm(UdsPeer *peer)
{
  peer->comm[0] = '\0';
  if (peer->pid <= 0)
    return;
  g_autofree char *comm = uds_proc_comm(uds_proc_root(), peer->pid);
  if (comm)
    g_strlcpy(peer->comm, comm, sizeof peer->comm);
}

gboolean uds_peer_from_fd(int fd, UdsPeer *peer)
{
  struct ucred cred;
  socklen_t len = sizeof cred;
  memset(peer, 0, sizeof *peer);
  peer->ngroups = -1;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
    return FALSE;
  peer->pid = cred.pid;
  peer->uid = cred.uid;
  peer->gid = cred.gid;
  socklen_t glen = sizeof peer->groups;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, peer->groups, &glen) == 0)
    peer->ngroups = (int)(glen / sizeof(gid_t));
  /* ERANGE: more than UDS_MAX_GROUPS groups; ngroups stays -1 ("unknown") and the relay fails
   * closed for such a client rather than connecting with a truncated group list. */
  fill_comm(peer);
  return TRUE;
}

void uds_peer_self(UdsPeer *peer)
{
  memset(peer, 0, sizeof *peer);
  peer->pid = getpid();
  peer->uid = geteuid();
  peer->gid = getegid();
  int n = getgroups(UDS_MAX_GROUPS, peer->groups);
  peer->ngroups = n < 0 ? -1 : n;
  fill_comm(peer);
}

static int cmp_gid(const void *a, const void *b)
{
  gid_t x = *(const gid_t *)a, y = *(const gid_t *)b;
  return x < y ? -1 : x > y;
}

gboolean uds_peer_same_identity(const UdsPeer *a, const UdsPeer *b)
{
  if (a->uid != b->uid || a->gid != b->gid || a->ngroups < 0 || a->ngroups != b->ngroups)
    return FALSE;
  gid_t x[UDS_MAX_GROUPS], y[UDS_MAX_GROUPS];
  memcpy(x, a->groups, a->ngroups * sizeof(gid_t));
  memcpy(y, b->groups, b->ngroups * sizeof(gid_t));
  qsort(x, a->ngroups, sizeof(gid_t), cmp_gid);
  qsort(y, b->ngroups, sizeof(gid_t), cmp_gid);
  return memcmp(x, y, a->ngroups * sizeof(gid_t)) == 0;
}

char *uds_describe_fd_link(const char *link, gboolean is_dir)
{
  if (g_str_has_prefix(link, "pipe:"))
    return g_strdup_printf("pipe %s", link + 5);
  if (g_str_has_prefix(link, "/memfd:"))
    return g_strdup(link + 1);
  if (g_str_has_prefix(link, "anon_inode:"))
    return g_strdup(link);
  return g_strdup_printf("%s %s", is_dir ? "directory" : "file", link);
}
