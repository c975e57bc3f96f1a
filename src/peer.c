/* peer — who is at the other end of a Unix socket connection (see include/peer.h).
 *
 * SO_PEERCRED is fixed at connect() time by the kernel, so it is the identity the client actually
 * had when it reached the socket; that is the identity the relay must not exceed upstream.
 *
 * User namespaces.  The kernel translates SO_PEERCRED into the reader's user namespace.  In the
 * initial one every id has a name, so taking the client's ids for connect() gives the server (in a
 * container's user namespace or not) exactly the view a direct connection would: the kernel maps the
 * same kernel ids into the server's namespace either way.  Only a udsdump inside a user namespace can
 * meet a client whose ids it cannot name (shown as the overflow id); that client is refused.
 */
#include "peer.h"

#include "discover.h"

#include <errno.h>
#include <stdio.h>
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

/* One map file covers every id ("0 0 4294967295"): the initial user namespace. */
static gboolean map_is_identity(const char *file)
{
  g_autofree char *text = NULL;
  if (!g_file_get_contents(file, &text, NULL, NULL))
    return TRUE;   /* no /proc: no user namespaces we could tell apart */
  unsigned long inside, outside, count;
  char rest;
  return sscanf(text, " %lu %lu %lu %c", &inside, &outside, &count, &rest) == 3 && inside == 0 && outside == 0 &&
         count == 4294967295UL;
}

static guint32 overflow_id(const char *file)
{
  g_autofree char *text = NULL;
  return g_file_get_contents(file, &text, NULL, NULL) ? (guint32)strtoul(text, NULL, 10) : 65534;
}

gboolean uds_peer_unmapped(const UdsPeer *peer)
{
  static gsize once;
  static gboolean initial;
  static guint32 ouid, ogid;
  if (g_once_init_enter(&once)) {
    initial = map_is_identity("/proc/self/uid_map") && map_is_identity("/proc/self/gid_map");
    ouid = overflow_id("/proc/sys/kernel/overflowuid");
    ogid = overflow_id("/proc/sys/kernel/overflowgid");
    g_once_init_leave(&once, 1);
  }
  if (initial)
    return FALSE;
  if (peer->uid == ouid || peer->gid == ogid)
    return TRUE;
  for (int i = 0; i < peer->ngroups; i++)
    if (peer->groups[i] == ogid)
      return TRUE;
  return FALSE;
}
