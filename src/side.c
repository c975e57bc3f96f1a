/* side — see include/side.h.  Unlike interposing, nothing of the server's is touched: the only file
 * created is the side socket, and it is removed on stop only when its inode is still ours, so a file
 * someone put there afterwards survives. */
#include "side.h"

#include "log.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

struct UdsSide {
  char *path;
  dev_t dev;
  ino_t ino;
};

UdsSide *uds_side_open(const char *side_path, const char *real_path, int sock_type, int *fd, GError **error)
{
  struct stat real, st;
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  *fd = -1;
  if (strlen(side_path) >= sizeof sa.sun_path) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_INVALID, "side path too long for a Unix socket address: %s", side_path);
    return NULL;
  }
  if (stat(real_path, &real) < 0) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_INVALID, "%s: %s", real_path, g_strerror(errno));
    return NULL;
  }
  if (lstat(side_path, &st) == 0) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_REFUSED, "side path %s already exists: choose a new path", side_path);
    return NULL;
  }
  strcpy(sa.sun_path, side_path);
  int s = socket(AF_UNIX, sock_type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (s < 0) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_SYSTEM, "socket: %s", g_strerror(errno));
    return NULL;
  }
  /* Born with mode 0: until chown and chmod have run, nobody but root can connect. */
  mode_t old = umask(0777);
  int rc = bind(s, (struct sockaddr *)&sa, sizeof sa);
  int e = errno;
  umask(old);
  if (rc < 0) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_REFUSED, "cannot create the side socket %s: %s", side_path, g_strerror(e));
    close(s);
    return NULL;
  }
  UdsSide *side = g_new0(UdsSide, 1);
  side->path = g_strdup(side_path);
  if (lstat(side_path, &st) == 0) {
    side->dev = st.st_dev;
    side->ino = st.st_ino;
  }
  if ((lchown(side_path, real.st_uid, real.st_gid) < 0 && (st.st_uid != real.st_uid || st.st_gid != real.st_gid)) ||
      chmod(side_path, real.st_mode & 07777) < 0 ||
      (sock_type != SOCK_DGRAM && listen(s, SOMAXCONN) < 0)) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_REFUSED,
                "cannot give the side socket %s the owner and mode of %s (%s): run as root or as its owner", side_path,
                real_path, g_strerror(errno));
    close(s);
    uds_side_close(side);
    return NULL;
  }
  *fd = s;
  return side;
}

void uds_side_close(UdsSide *side)
{
  if (!side)
    return;
  struct stat st;
  if (lstat(side->path, &st) == 0 && st.st_dev == side->dev && st.st_ino == side->ino)
    unlink(side->path);
  g_free(side->path);
  g_free(side);
}
