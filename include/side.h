/* side — side mode: the relay listens on a path of its own that clients opt in to, and forwards to
 * the real socket, which stays untouched.  The side socket gets the real socket's owner, group and mode
 * (born mode 0, so it is never more permissive), and is removed on stop if it is still ours. */
#pragma once
#include <glib.h>

typedef struct UdsSide UdsSide;

/* Creates the side socket at side_path (which must not exist) for a server socket at real_path of
 * the given type.  The listening fd is returned in *fd (non-blocking, close-on-exec). */
UdsSide *uds_side_open(const char *side_path, const char *real_path, int sock_type, int *fd, GError **error);
/* Removes the side socket if it is still the one we made. */
void uds_side_close(UdsSide *side);
