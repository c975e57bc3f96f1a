/* privilege — file capabilities for the group install (meson -Dcapture_group=NAME), kept effective
 * only around the operations that need them.
 *
 * Three ways to run: as root (every capability, always; nothing here changes anything), unprivileged
 * (no capability: interposing works only where the user could do it by hand), and "capability mode":
 * a non-root user running the group-install executable, whose *permitted* set holds the few
 * capabilities below and whose *effective* set is empty except inside uds_priv_raise() /
 * uds_priv_restore() pairs.  Everything else — the files the user names (-w, --fifo, --log-file, the
 * side path) — is opened with the user's own rights, because no capability is effective then.
 *
 * The group install has two files, as Wireshark has wireshark and dumpcap: the extcap Wireshark runs
 * (world-executable, no capability) and a helper with file capabilities that only root and the group
 * may run.  The extcap hands every command to the helper when the user may run it (uds_priv_delegate),
 * and otherwise works as an unprivileged udsdump whose refusals say why (uds_priv_refusal_hint).
 */
#pragma once
#include <glib.h>
#include <linux/capability.h>

typedef guint64 UdsCaps;
#define UDS_CAP(c) ((UdsCaps)1 << (c))

/* Interposing on PATH (swap.c): write in its folder (DAC_OVERRIDE), give the relay socket PATH's owner
 * (CHOWN), then its mode, ACL and a rename in a sticky folder (FOWNER), and name the processes that
 * hold the sockets (SYS_PTRACE for other users' /proc/PID/fd). */
#define UDS_PRIV_SWAP (UDS_CAP(CAP_DAC_OVERRIDE) | UDS_CAP(CAP_CHOWN) | UDS_CAP(CAP_FOWNER) | UDS_CAP(CAP_SYS_PTRACE))
/* Listing: other users' /proc/PID/fd (DAC_READ_SEARCH to read the folder, SYS_PTRACE for its links). */
#define UDS_PRIV_LIST (UDS_CAP(CAP_DAC_READ_SEARCH) | UDS_CAP(CAP_SYS_PTRACE))
/* Speaking as a client: connect() upstream with its uid, gid and groups; forward SCM_CREDENTIALS. */
#define UDS_PRIV_IDENTITY (UDS_CAP(CAP_SETUID) | UDS_CAP(CAP_SETGID))
/* The guardian: rename in the folder, even a sticky one. */
#define UDS_PRIV_GUARD (UDS_CAP(CAP_DAC_OVERRIDE) | UDS_CAP(CAP_FOWNER))
/* What the group install grants (the install script's setcap list is the same set). */
#define UDS_PRIV_ALL (UDS_PRIV_SWAP | UDS_PRIV_LIST | UDS_PRIV_IDENTITY)
/* Observe mode (observe.c), granted only when the administrator asks for it (meson
 * -Dcapture_group_observe=true: the install script adds these two): create the maps, load the BTF and the
 * programs, attach them (CAP_BPF); programs of a tracing type that read what any process sends
 * (CAP_PERFMON).  Close to root: such a program may read any process's memory. */
#define UDS_PRIV_OBSERVE (UDS_CAP(CAP_BPF) | UDS_CAP(CAP_PERFMON))

/* First thing in main().  In capability mode: effective, inheritable and ambient sets emptied,
 * permitted cut to UDS_PRIV_ALL | UDS_PRIV_OBSERVE, keep-caps set (see privilege.c), every descriptor above 2 closed and
 * the environment emptied, so nothing inherited steers a privileged operation. */
void uds_priv_init(void);
/* TRUE in capability mode. */
gboolean uds_priv_capability_mode(void);
/* TRUE when we run as root or may raise every capability in caps. */
gboolean uds_priv_has(UdsCaps caps);
/* Makes caps (those permitted) effective; returns the previous effective set for uds_priv_restore.
 * Outside capability mode both do nothing. */
UdsCaps uds_priv_raise(UdsCaps caps);
void uds_priv_restore(UdsCaps previous);
/* Keeps only caps, permitted and effective (no-op outside capability mode): in a forked child, and once
 * the options say what this run does (main.c). */
void uds_priv_keep_only(UdsCaps caps);
/* In the forked guardian: becomes uid 0 (so the user who started the capture cannot signal it away
 * before it has put PATH back) with only UDS_PRIV_GUARD.  Plain syscalls only. */
void uds_priv_become_guardian(void);
/* The group install's extcap: exec()s the helper with argv when the user may run it (returns
 * otherwise).  Before uds_priv_init's effects matter: nothing opened yet.  No-op in other builds. */
void uds_priv_delegate(char **argv);
/* "" or "; members of group G may capture it ...: you are not one" for a refusal for lack of rights. */
const char *uds_priv_refusal_hint(void);
/* The same for observe mode: said only when the group install grants observe mode. */
const char *uds_priv_observe_hint(void);
/* Capability mode without UDS_PRIV_OBSERVE: the one line saying the administrator has not granted
 * observe mode to the group, and how to. */
const char *uds_priv_observe_not_granted(void);
