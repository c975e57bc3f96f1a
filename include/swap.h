/* swap — interposing the relay on a live socket path, and always putting it back.
 *
 * prepare: every check, nothing changed.  install: bind the relay at an unpredictable name in the
 * socket's folder (umask 0777 while binding), copy the original's owner, group, mode and SELinux label,
 * hard-link the original to a backup name, rename() the relay over PATH: PATH never missing, never
 * more permissive.  restore: rename() the backup over PATH if PATH is still the relay; if the server
 * re-created PATH meanwhile, leave it and remove only udsdump's leftovers.  All operations go through
 * a descriptor of the folder and never follow a symlink planted in it.
 * PATH may be /proc/PID/root/INNER, a socket in a container's filesystem: the folder is then opened
 * beneath that root without following any symlink, and every later step goes through its descriptor.
 * The guardian (a process in its own session, stdio closed) restores if this process dies, SIGKILL
 * included.
 */
#pragma once
#include <glib.h>
#include <sys/types.h>

typedef struct UdsSwap UdsSwap;

/* Checks, changing nothing: absolute path; fits sun_path; exists; is a socket, not a symlink; not
 * abstract; has a live listener (per the kernel's list); folder writable by us; no other capture
 * interposed (names the pid holding it).  Errors are one line naming the problem. */
UdsSwap *uds_swap_prepare(const char *path, GError **error);
int uds_swap_sock_type(const UdsSwap *s);            /* SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET */
pid_t uds_swap_server_pid(const UdsSwap *s);         /* listener's pid, 0 if unknown */
const char *uds_swap_server_comm(const UdsSwap *s);  /* NULL if unknown */

/* Starts the guardian; call before install.  It exits by itself once restore has run or this
 * process has died and it has restored. */
gboolean uds_swap_guard(UdsSwap *s, GError **error);

/* Interposes.  Returns the relay's socket (bound, listening for stream/seqpacket; non-blocking,
 * close-on-exec), or -1 with error and nothing changed. */
int uds_swap_install(UdsSwap *s, GError **error);

/* Address where the real server is reached while interposed (valid for any path length). */
const char *uds_swap_upstream(const UdsSwap *s);

/* Puts PATH back; idempotent; tells the guardian it is done.  FALSE only when something could not be
 * put back (error says what, and what the user should run). */
gboolean uds_swap_restore(UdsSwap *s, GError **error);

/* inotify descriptor on the folder; readable when PATH may have changed.  -1 if none. */
int uds_swap_watch_fd(UdsSwap *s);
/* After watch_fd became readable: TRUE when the server re-created PATH (the relay is no longer in
 * front).  When *new_listen_fd is non-NULL, udsdump re-interposes on the new socket and returns the
 * new relay socket there (-1 if it could not: the capture then continues only for open connections). */
gboolean uds_swap_path_replaced(UdsSwap *s, int *new_listen_fd, GError **error);

/* For PATH = /proc/PID/root/...: why the capture must end, once PID (the container's process whose
 * filesystem PATH is in) has exited; watch_fd becomes readable then.  NULL while it runs, and always
 * for other paths. */
const char *uds_swap_ended(UdsSwap *s);

void uds_swap_free(UdsSwap *s);   /* releases memory and fds; does NOT restore */

/* `udsdump --restore PATH`: repair what a power cut (or a killed guardian) left.  Puts the backup back
 * when no live udsdump holds PATH; removes leftovers.  report receives what was done. */
gboolean uds_swap_repair(const char *path, GString *report, GError **error);
