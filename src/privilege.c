/* privilege — capability mode: see include/privilege.h for the model.
 *
 * Raw capget/capset (version 3: two 32-bit words) rather than libcap: seven capabilities and four
 * operations do not justify a dependency, and the guardian may call them after fork().
 *
 * Why keep-caps.  Connecting upstream as a root client makes the effective uid 0 for one connect();
 * on the way back (0 -> our uid, with real and saved uids non-zero) the kernel would clear the
 * permitted set for good.  PR_SET_KEEPCAPS keeps it; only the effective set is cleared, and the relay
 * raises again what it still needs (relay.c: identity_return).  The flag is not inherited across
 * execve, and udsdump executes nothing.
 *
 * Why the environment goes.  The kernel marks a capability-gaining exec AT_SECURE (getauxval): the
 * dynamic loader then ignores LD_PRELOAD, LD_LIBRARY_PATH and friends, but glib and udsdump read a few variables (UDSDUMP_PROC_ROOT
 * would point the socket-owner lookup at a fake /proc, G_DEBUG can make warnings fatal).  None of them
 * is needed by a capture, so capability mode starts with an empty environment.
 */
#include "privilege.h"

#include <config.h>
#include <errno.h>
#include <limits.h>

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_close_range
#define SYS_close_range 436
#endif

static gboolean cap_mode;
static UdsCaps permitted;
#ifdef UDSDUMP_CAPTURE_HELPER
static gboolean not_member;   /* the group install's helper exists, and we may not run it */
#endif

static int caps_get(UdsCaps *eff, UdsCaps *perm)
{
  struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
  struct __user_cap_data_struct d[2];
  memset(d, 0, sizeof d);
  if (syscall(SYS_capget, &h, d) < 0)
    return -1;
  if (eff)
    *eff = (UdsCaps)d[0].effective | (UdsCaps)d[1].effective << 32;
  if (perm)
    *perm = (UdsCaps)d[0].permitted | (UdsCaps)d[1].permitted << 32;
  return 0;
}

static int caps_set(UdsCaps eff, UdsCaps perm)
{
  struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
  struct __user_cap_data_struct d[2];
  memset(d, 0, sizeof d);
  d[0].effective = (guint32)eff;
  d[1].effective = (guint32)(eff >> 32);
  d[0].permitted = (guint32)perm;
  d[1].permitted = (guint32)(perm >> 32);
  return (int)syscall(SYS_capset, &h, d);  /* inheritable: always empty */
}

void uds_priv_init(void)
{
  UdsCaps perm = 0;
  if (geteuid() == 0 || caps_get(NULL, &perm) < 0 || perm == 0)
    return;
  cap_mode = TRUE;
  permitted = perm & (UDS_PRIV_ALL | UDS_PRIV_OBSERVE);
  /* A failure here leaves more than we want: refuse to run rather than run with it. */
  if (caps_set(0, permitted) < 0 || prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 ||
      prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0) {
    static const char msg[] = "udsdump: cannot drop capabilities at start, refusing to run\n";
    if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0) {
      /* nothing more to say */
    }
    _exit(1);
  }
  if (syscall(SYS_close_range, 3U, ~0U, 0) < 0)
    for (int fd = 3; fd < 1024; fd++)
      close(fd);
  clearenv();
  /* A closed 0, 1 or 2 would be taken by the next open() (the capture file, a socket) and written by
   * accident; glibc fills them under AT_SECURE, but capabilities may come without it (ambient). */
  for (int fd = 0; fd < 3; fd++)
    if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR) != fd)
      _exit(1);
}

gboolean uds_priv_capability_mode(void)
{
  return cap_mode;
}

gboolean uds_priv_has(UdsCaps caps)
{
  if (!cap_mode)
    return geteuid() == 0;
  return (permitted & caps) == caps;
}

UdsCaps uds_priv_raise(UdsCaps caps)
{
  if (!cap_mode)
    return 0;
  UdsCaps eff = 0;
  caps_get(&eff, NULL);
  caps_set(eff | (caps & permitted), permitted);
  return eff;
}

void uds_priv_restore(UdsCaps previous)
{
  if (!cap_mode)
    return;
  if (caps_set(previous & permitted, permitted) < 0)
    abort();  /* capabilities we cannot lower must not stay effective (the guardian restores PATH) */
}

void uds_priv_keep_only(UdsCaps caps)
{
  if (!cap_mode)
    return;
  permitted &= caps;
  if (caps_set(0, permitted) < 0)
    _exit(1);
}

void uds_priv_become_guardian(void)
{
  if (!cap_mode)
    return;
  /* uid 0 from a non-zero euid: the kernel makes the permitted set effective, so cut it first. */
  UdsCaps want = permitted & UDS_PRIV_GUARD;
  if (caps_set(want | UDS_CAP(CAP_SETUID), want | UDS_CAP(CAP_SETUID)) < 0 || setresuid(0, 0, 0) < 0 ||
      caps_set(want, want) < 0)
    _exit(1);
  permitted = want;
}

void uds_priv_delegate(char **argv)
{
#ifdef UDSDUMP_CAPTURE_HELPER
  if (cap_mode || geteuid() == 0)
    return;
  /* The helper itself, run without its capabilities (setcap lost, a nosuid mount): never again. */
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0)
    return;
  self[n] = '\0';
  if (strcmp(self, UDSDUMP_CAPTURE_HELPER) == 0)
    return;
  if (access(UDSDUMP_CAPTURE_HELPER, X_OK) == 0) {
    execv(UDSDUMP_CAPTURE_HELPER, argv);
    return;  /* could not: go on unprivileged (the refusals say what is missing) */
  }
  not_member = errno == EACCES;
#else
  (void)argv;
#endif
}

const char *uds_priv_refusal_hint(void)
{
#ifdef UDSDUMP_CAPTURE_HELPER
  if (not_member)
    return "; members of group " UDSDUMP_CAPTURE_GROUP " may capture it (udsdump's group install): you are not one";
#endif
  return "";
}

const char *uds_priv_observe_hint(void)
{
#if defined(UDSDUMP_CAPTURE_HELPER) && UDSDUMP_CAPTURE_OBSERVE
  if (not_member)
    return "; members of group " UDSDUMP_CAPTURE_GROUP " may observe (udsdump's group install): you are not one";
#endif
  return "";
}

const char *uds_priv_observe_not_granted(void)
{
#ifdef UDSDUMP_CAPTURE_GROUP
  return "observe mode is not enabled for group " UDSDUMP_CAPTURE_GROUP ": the administrator has not granted its "
         "capabilities (CAP_BPF, CAP_PERFMON: close to root's); to grant them: meson setup -Dcapture_group="
         UDSDUMP_CAPTURE_GROUP " -Dcapture_group_observe=true, then meson install";
#else
  return "observe mode needs CAP_BPF and CAP_PERFMON, which this udsdump's file capabilities do not include";
#endif
}
