/* observe-event — what the observe program (src/bpf/observe.bpf.c) hands to user space (src/observe.c)
 * through its ring buffer, and the settings user space gives it before loading.  Shared by both
 * sides, so plain fixed-size types only (the BPF side gets them from vmlinux.h, user space from
 * <linux/types.h>).
 */
#pragma once

#define UDS_OBS_CHUNK 32768        /* payload bytes per record at most: larger sends are split */
#define UDS_OBS_SMALL 512          /* records of small sends reserve only this much ring space */
#define UDS_OBS_MAX_FDS 16         /* SCM_RIGHTS descriptors recorded per message */
#define UDS_OBS_NAME_MAX 108       /* sizeof sun_path */
#define UDS_OBS_RING_BYTES (128u << 20)   /* charged to udsdump's memory cgroup while it runs */

enum { UDS_OBS_DATA = 1, UDS_OBS_ANCILLARY = 2 };
enum {
  UDS_OBS_F_END = 1,               /* the last record of one message (sendmmsg: of each message) */
  UDS_OBS_F_WAIT = 2,              /* the other direction had a call in progress, begun earlier */
};

/* The kernel's counts per connection (map "streams", keyed by the connection's client end inode),
 * both directions in one entry: a send's exit looks up one entry, not one per direction. */
struct uds_obs_stream {
  __u64 off[2];      /* bytes sent so far per direction: the offset the next record will have */
  __u64 inflight[2]; /* send calls in progress per direction */
  __u64 since[2];    /* when the oldest of them began (at least as early; bpf_ktime_get_ns) */
};

struct uds_obs_event {
  __u64 ts_ns;       /* when the send call began: CLOCK_MONOTONIC (bpf_ktime_get_ns) */
  __u64 conn;        /* inode of the client's end of the connection: the connection's identity */
  __u64 peer;        /* inode of the server's end (0 while the server has not accepted it yet) */
  __u64 off;         /* DATA: offset of the first byte in this connection and direction's stream */
  __u32 tgid, uid, gid, len;   /* the sending process; len: payload bytes that follow */
  __u16 kind;        /* UDS_OBS_DATA / UDS_OBS_ANCILLARY */
  __u8 dir;          /* 0: client to server, 1: server to client */
  __u8 flags;        /* UDS_OBS_F_* */
  char comm[16];
  /* UDS_OBS_ANCILLARY */
  __s32 nfds;        /* descriptors in SCM_RIGHTS (may exceed UDS_OBS_MAX_FDS: only that many in fds) */
  __s32 fds[UDS_OBS_MAX_FDS];   /* their numbers in the sender's process */
  __u32 has_creds, cred_pid, cred_uid, cred_gid;
  __u8 data[];       /* DATA: len bytes */
};
