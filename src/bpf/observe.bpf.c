/* observe.bpf — the kernel half of observe mode (user space: src/observe.c).
 *
 * Kernels without kprobes and without fentry (docs/guarantees.md, "Observe mode") still have the
 * syscall tracepoints, so this program sits on raw_tracepoint/sys_enter and sys_exit (no tracefs
 * needed) and sees what processes send: write, writev, send/sendto, sendmsg, sendmmsg.
 *
 * Enter.  For one of those calls, the descriptor is followed to its socket (task -> files -> fdtable ->
 * file; a socket only if the inode says S_IFSOCK) and kept when it is AF_UNIX and either it or its peer
 * is the chosen socket: for a path socket, the bound path's inode and device (an accepted socket shares
 * its listener's path); for an abstract one, the bound name.  Everything else leaves here, so observing
 * one socket costs the rest of the host a few memory reads per send.  A kept call's arguments and its
 * start time go into the thread's task storage, and its connection and direction count one more call
 * in progress (map "streams").
 *
 * Exit.  Only now is it known how much was really sent (a send may be partial, or fail); exactly that
 * many bytes are copied from the sender's buffers (still untouched: the thread is still in the call),
 * in records of at most UDS_OBS_CHUNK bytes, walking the iovecs and, for sendmmsg, the messages.  Each
 * record says when the call began, the connection (the client end's socket inode), the direction, the
 * sending process (pid, comm, uid: whoever made this call, a forked child included) and the offset of
 * its bytes in the stream, taken from a per-connection counter: a record the ring buffer had no room
 * for leaves a gap that user space reports as lost bytes, never silently.  When the other direction
 * has a call in progress that began earlier (perhaps the request this call answers, its sender not yet
 * back from its call), the records are marked UDS_OBS_F_WAIT, and user space waits for that call's
 * records before writing them.  The call stops counting as in progress only after its records are in
 * the ring.  Control data (SCM_RIGHTS, SCM_CREDENTIALS) given to sendmsg/sendmmsg becomes an
 * ANCILLARY record before the bytes it came with.
 *
 * Cost.  sys_enter and sys_exit run for every syscall of the host, so both leave at once unless the
 * syscall is a send (the exit reads the number from the saved registers).  Kernel structures are read
 * with plain loads through BTF-typed pointers (bpf_get_current_task_btf, bpf_rdonly_cast: the verifier
 * makes them fault-safe loads), not one bpf_probe_read_kernel helper call per field; the per-thread
 * state is task storage (one pointer lookup, freed with the thread, never full), not a hash map keyed
 * by thread that every syscall's exit would search.
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "observe-event.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define AF_UNIX 1
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define SOL_SOCKET 1
#define SCM_RIGHTS 1
#define SCM_CREDENTIALS 2
#define MAX_STEPS 4096   /* bpf_loop iterations per call: records + iovecs + messages */
#define MAX_CMSGS 4

/* The syscall's number and first three arguments in the user's registers (read directly: see
 * "Cost" above). */
#if defined(__TARGET_ARCH_x86)
enum { NR_WRITE = 1, NR_WRITEV = 20, NR_SENDTO = 44, NR_SENDMSG = 46, NR_SENDMMSG = 307 };
#define REG_NR(r) ((r)->orig_ax)
#define REG_ARG1(r) ((r)->di)
#define REG_ARG2(r) ((r)->si)
#define REG_ARG3(r) ((r)->dx)
#elif defined(__TARGET_ARCH_arm64)
enum { NR_WRITE = 64, NR_WRITEV = 66, NR_SENDTO = 206, NR_SENDMSG = 211, NR_SENDMMSG = 269 };
#define REG_NR(r) ((r)->syscallno)
#define REG_ARG1(r) ((r)->orig_x0)
#define REG_ARG2(r) ((r)->regs[1])
#define REG_ARG3(r) ((r)->regs[2])
#else
#error "observe.bpf.c: syscall numbers for this architecture are missing"
#endif

/* Set by user space before loading. */
const volatile __u64 target_ino = 0;    /* path socket: the socket file's inode ... */
const volatile __u32 target_dev = 0;    /* ... and the kernel's dev_t of its filesystem */
const volatile __u32 target_len = 0;    /* abstract socket: unix_address.len (2 + 1 + name) */
const volatile char target_name[UDS_OBS_NAME_MAX] = {};   /* sun_path: NUL, then the name */
const volatile __u32 self_tgid = 0;     /* udsdump itself is never observed (a pid of pidns_*) */
/* udsdump's pid namespace (nsfs dev_t and inode), or 0: the initial one.  Pids go into records as
 * udsdump names them: a udsdump in a container must not label frames with the host's pids, which
 * neither it nor its user can look up. */
const volatile __u64 pidns_dev = 0;
const volatile __u64 pidns_ino = 0;

/* One send in progress on an observed connection: its arguments from the enter, and the walk over its
 * bytes at the exit.  Per thread, in task storage: found with one pointer lookup, freed with the
 * thread, never full (a hash map keyed by thread would be a lookup on every syscall's exit, and could
 * fill up).  The walk is carried through bpf_loop here, not on the stack: the verifier then sees its
 * fields as unknown numbers and checks the loop's step once, where stack values that change every
 * round would make it explore every round. */
struct walk {
  __u64 ts, conn, peer, dir;
  __u64 mmsg;            /* sendmmsg: the mmsghdr array; 0 otherwise */
  __u32 nmsgs, msg_idx;
  __u64 iov;             /* the current message's iovec array (0: seg_* given directly) */
  __u32 niov, iov_idx;
  __u64 seg_base, seg_left;
  __u64 msg_left;        /* bytes of the current message not walked yet */
  __u64 off;             /* stream offset of the next byte */
  __u32 flags;           /* UDS_OBS_F_WAIT for every record of this call */
};

struct call {
  __u64 active;          /* set at the enter of a kept send, cleared at its exit */
  __u64 arg;
  __u32 count, nr;
  struct walk w;
};

struct {
  __uint(type, BPF_MAP_TYPE_TASK_STORAGE);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, int);
  __type(value, struct call);
} calls SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, UDS_OBS_RING_BYTES);
} events SEC(".maps");

/* Per connection and direction (user space reads it too, include/observe-event.h). */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 65536);
  __type(key, __u64);
  __type(value, struct uds_obs_stream);
} streams SEC(".maps");

/* kfunc: a pointer seen as the kernel type btf_id, for plain loads (the verifier turns it into a move) */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;
#define AS(type, p) ((type *)bpf_rdonly_cast((const void *)(p), bpf_core_type_id_kernel(type)))

static __always_inline int is_target(struct unix_sock *u)
{
  if (target_ino) {
    struct dentry *d = u->path.dentry;
    if (!d)
      return 0;
    struct inode *i = d->d_inode;
    return i && i->i_ino == target_ino && d->d_sb->s_dev == target_dev;
  }
  struct unix_address *a = u->addr;
  if (!a || a->len != (int)target_len)
    return 0;
  char name[UDS_OBS_NAME_MAX];
  if (bpf_probe_read_kernel(name, sizeof name, __builtin_preserve_access_index(&a->name[0].sun_path)))
    return 0;
  for (int i = 0; i < UDS_OBS_NAME_MAX; i++) {
    if (i + 2 >= (int)target_len)
      break;
    if (name[i] != target_name[i])
      return 0;
  }
  return 1;
}

static __always_inline __u64 socket_ino(struct socket *s)
{
  return s ? AS(struct socket_alloc, s)->vfs_inode.i_ino : 0;
}

/* The current process's pid in udsdump's pid namespace; 0 when it has none there (a process outside
 * it, or in a namespace nested below it: the kernel translates only into the task's own namespace). */
static __always_inline __u32 visible_tgid(void)
{
  if (!pidns_ino)
    return (__u32)(bpf_get_current_pid_tgid() >> 32);
  struct bpf_pidns_info ns;
  if (bpf_get_ns_current_pid_tgid(pidns_dev, pidns_ino, &ns, sizeof ns) != 0)
    return 0;
  return ns.tgid;
}

static __always_inline int is_send(long nr)
{
  return nr == NR_WRITE || nr == NR_WRITEV || nr == NR_SENDTO || nr == NR_SENDMSG || nr == NR_SENDMMSG;
}

SEC("raw_tracepoint/sys_enter")
int uds_enter(struct bpf_raw_tracepoint_args *ctx)
{
  long nr = (long)ctx->args[1];
  if (!is_send(nr))
    return 0;
  struct pt_regs *regs = AS(struct pt_regs, ctx->args[0]);
  int fd = (int)REG_ARG1(regs);
  if (fd < 0)
    return 0;

  struct task_struct *task = bpf_get_current_task_btf();
  struct files_struct *files = task->files;
  if (!files)
    return 0;
  struct fdtable *fdt = files->fdt;
  if (!fdt || (unsigned int)fd >= fdt->max_fds)
    return 0;
  struct file **fdarr = fdt->fd;
  struct file *fp = NULL;
  if (bpf_probe_read_kernel(&fp, sizeof fp, &fdarr[fd]) || !fp)
    return 0;
  struct file *f = AS(struct file, fp);
  struct inode *ino = f->f_inode;
  if (!ino || (ino->i_mode & S_IFMT) != S_IFSOCK)
    return 0;
  struct socket *sock = AS(struct socket, f->private_data);
  struct sock *sk = sock ? sock->sk : NULL;
  if (!sk || sk->__sk_common.skc_family != AF_UNIX)
    return 0;
  struct unix_sock *u = AS(struct unix_sock, sk);
  struct sock *peer_sk = u->peer;
  if (!peer_sk)
    return 0;   /* not connected: an unconnected datagram send, not covered */
  struct unix_sock *peer = AS(struct unix_sock, peer_sk);

  __u64 self = ino->i_ino, other = socket_ino(peer_sk->sk_socket), conn, peer_ino, dir;
  /* The connection is known by its client end: the server end has no socket (no inode) until the
   * server accepts it, and a client may send before that. */
  if (is_target(u)) {
    dir = 1;          /* the server's end sends: to the client */
    conn = other;
    peer_ino = self;
  } else if (is_target(peer)) {
    dir = 0;
    conn = self;
    peer_ino = other;
  } else {
    return 0;
  }
  if (!conn)
    return 0;
  if (visible_tgid() == self_tgid)
    return 0;   /* (checked only now: a pid namespace's lookup is not free, and most sends stop above) */
  struct call *c = bpf_task_storage_get(&calls, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
  if (!c)
    return 0;
  /* This direction has a call in progress: records of the other direction from calls begun later
   * are marked, and wait for this one's in user space (see "Order" in src/observe.c). */
  struct uds_obs_stream *st = bpf_map_lookup_elem(&streams, &conn);
  if (!st) {
    struct uds_obs_stream zero = {};
    bpf_map_update_elem(&streams, &conn, &zero, BPF_NOEXIST);
    st = bpf_map_lookup_elem(&streams, &conn);
    if (!st)
      return 0;
  }
  __u64 ts = bpf_ktime_get_ns();
  if (dir) {   /* the index is a constant in each branch: the verifier checks a fixed offset */
    if (__sync_fetch_and_add(&st->inflight[1], 1) == 0)
      st->since[1] = ts;
  } else {
    if (__sync_fetch_and_add(&st->inflight[0], 1) == 0)
      st->since[0] = ts;
  }
  c->active = 1;
  c->nr = (__u32)nr;
  c->arg = REG_ARG2(regs);
  c->count = (__u32)REG_ARG3(regs);
  c->w = (struct walk){ .ts = ts, .conn = conn, .peer = peer_ino, .dir = dir };
  return 0;
}

static __always_inline void fill(struct uds_obs_event *e, const struct walk *w, __u16 kind)
{
  /* the credentials' ids as bpf_get_current_uid_gid gives them (init namespace), by two loads */
  const struct cred *cred = bpf_get_current_task_btf()->cred;
  e->ts_ns = w->ts;
  e->conn = w->conn;
  e->peer = w->peer;
  e->off = w->off;
  e->tgid = visible_tgid();
  e->uid = cred->uid.val;
  e->gid = cred->gid.val;
  e->len = 0;
  e->kind = kind;
  e->dir = (__u8)w->dir;
  e->flags = (__u8)w->flags;
  bpf_get_current_comm(e->comm, sizeof e->comm);
  e->nfds = 0;
  e->has_creds = 0;
}

/* One record of n bytes (1..UDS_OBS_CHUNK) from seg_base, in a ring slot of one of two fixed sizes
 * (the ring takes only constant sizes; small sends would otherwise each hold a whole chunk's room).
 * Two functions, not one with two branches: merged, the compiler loses the size-to-bound link the
 * verifier checks.  No room in the ring: the bytes are not sent, and the next record's offset shows
 * the gap. */
/* User space is not woken for each record (on a busy socket that would be a context switch per send,
 * on the CPUs the observed processes need): it drains the ring on a short timer, and is woken only
 * by the record that fills the ring past a quarter.  Only that one: a wakeup is an interrupt raised on
 * this CPU (in a virtual machine, a trap to the hypervisor), and one per record while user space is
 * still catching up cost the sender more than the copy of its bytes. */
static __always_inline __u64 wakeup_flag(__u64 size)
{
  __u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA), mark = UDS_OBS_RING_BYTES / 4;
  return avail >= mark && avail < mark + size + 8 ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

#define EMIT_FN(name, ROOM)                                                                  \
  static __noinline void name(struct walk *w, __u32 n)                                       \
  {                                                                                          \
    struct uds_obs_event *e = bpf_ringbuf_reserve(&events, sizeof *e + (ROOM), 0);           \
    if (!e)                                                                                  \
      return;                                                                                \
    fill(e, w, UDS_OBS_DATA);                                                                \
    __u32 k = n;                                                                             \
    if (k > (ROOM))                                                                          \
      k = (ROOM);                                                                            \
    e->len = k;                                                                              \
    e->flags = (k == w->msg_left ? UDS_OBS_F_END : 0) | w->flags;                                       \
    if (k == 0 || bpf_probe_read_user(e->data, k, (const void *)w->seg_base))                \
      bpf_ringbuf_discard(e, 0);                                                             \
    else                                                                                     \
      bpf_ringbuf_submit(e, wakeup_flag(sizeof *e + (ROOM)));                                 \
  }
EMIT_FN(emit_small, UDS_OBS_SMALL)
EMIT_FN(emit_big, UDS_OBS_CHUNK)

/* SCM_RIGHTS / SCM_CREDENTIALS in a sendmsg's control data: one ANCILLARY record. */
static __always_inline void emit_control(struct walk *w, const struct user_msghdr *m)
{
  __u64 ctl = (__u64)m->msg_control, clen = m->msg_controllen, pos = 0;
  if (!ctl || clen < sizeof(struct cmsghdr))
    return;
  struct uds_obs_event *e = bpf_ringbuf_reserve(&events, sizeof *e, 0);
  if (!e)
    return;
  fill(e, w, UDS_OBS_ANCILLARY);
  for (int i = 0; i < MAX_CMSGS; i++) {
    struct cmsghdr c;
    if (pos + sizeof c > clen || bpf_probe_read_user(&c, sizeof c, (const void *)(ctl + pos)))
      break;
    if (c.cmsg_len < sizeof c || pos + c.cmsg_len > clen)
      break;
    __u64 body = c.cmsg_len - sizeof c;
    if (c.cmsg_level == SOL_SOCKET && c.cmsg_type == SCM_RIGHTS) {
      e->nfds += (__s32)(body / 4);
      __u32 k = body > sizeof e->fds ? sizeof e->fds : (__u32)body;
      barrier_var(k);
      if (k > sizeof e->fds)
        k = sizeof e->fds;
      if (k && bpf_probe_read_user(e->fds, k, (const void *)(ctl + pos + sizeof c)))
        e->nfds = 0;
    } else if (c.cmsg_level == SOL_SOCKET && c.cmsg_type == SCM_CREDENTIALS && body >= 12) {
      __u32 cr[3];
      if (!bpf_probe_read_user(cr, sizeof cr, (const void *)(ctl + pos + sizeof c))) {
        e->has_creds = 1;
        e->cred_pid = cr[0];
        e->cred_uid = cr[1];
        e->cred_gid = cr[2];
      }
    }
    pos += (c.cmsg_len + 7) & ~7ull;
  }
  if (e->nfds || e->has_creds)
    bpf_ringbuf_submit(e, wakeup_flag(sizeof *e));
  else
    bpf_ringbuf_discard(e, 0);
}

/* Claims `bytes` of the stream: the offset the first of them has. */
static __always_inline __u64 claim(struct walk *w, __u64 bytes)
{
  struct uds_obs_stream *st = bpf_map_lookup_elem(&streams, &w->conn);
  if (!st)
    return 0;
  return w->dir ? __sync_fetch_and_add(&st->off[1], bytes) : __sync_fetch_and_add(&st->off[0], bytes);
}

static __always_inline void start_msg(struct walk *w, const struct user_msghdr *m, __u64 sent)
{
  w->iov = (__u64)m->msg_iov;
  w->niov = (__u32)m->msg_iovlen;
  w->iov_idx = 0;
  w->seg_left = 0;
  w->msg_left = sent;
  w->off = claim(w, sent);
  emit_control(w, m);
}

struct step_ctx {
  struct walk *w;        /* bpf_loop's context must be on the stack: it points at the map's walk */
};

static long step(__u32 i, void *ctx)
{
  struct walk *w = ((struct step_ctx *)ctx)->w;
  if (w->msg_left == 0) {
    if (!w->mmsg || w->msg_idx >= w->nmsgs)
      return 1;
    struct mmsghdr mm;
    if (bpf_probe_read_user(&mm, sizeof mm, (const void *)(w->mmsg + (__u64)w->msg_idx * sizeof mm)))
      return 1;
    w->msg_idx++;
    start_msg(w, &mm.msg_hdr, mm.msg_len);
    return 0;
  }
  if (w->seg_left == 0) {
    struct iovec v;
    if (w->iov_idx >= w->niov || bpf_probe_read_user(&v, sizeof v, (const void *)(w->iov + (__u64)w->iov_idx * sizeof v)))
      return 1;
    w->iov_idx++;
    w->seg_base = (__u64)v.iov_base;
    w->seg_left = v.iov_len < w->msg_left ? v.iov_len : w->msg_left;
    return 0;
  }
  __u64 n = w->seg_left < UDS_OBS_CHUNK ? w->seg_left : UDS_OBS_CHUNK;
  if (n <= UDS_OBS_SMALL)
    emit_small(w, (__u32)n);
  else
    emit_big(w, (__u32)n);
  w->seg_base += n;
  w->seg_left -= n;
  w->msg_left -= n;
  w->off += n;
  return 0;
}

/* Ends the call: its records are in the ring before its direction stops counting it as in progress. */
static __always_inline void call_done(const struct walk *w, struct uds_obs_stream *st)
{
  if (!st)
    return;
  if (w->dir)
    __sync_fetch_and_add(&st->inflight[1], -1);
  else
    __sync_fetch_and_add(&st->inflight[0], -1);
}

SEC("raw_tracepoint/sys_exit")
int uds_exit(struct bpf_raw_tracepoint_args *ctx)
{
  struct pt_regs *regs = AS(struct pt_regs, ctx->args[0]);
  if (!is_send((long)REG_NR(regs)))
    return 0;   /* every other syscall of the host leaves here */
  struct call *c = bpf_task_storage_get(&calls, bpf_get_current_task_btf(), 0, 0);
  if (!c || !c->active)
    return 0;
  c->active = 0;
  struct walk *w = &c->w;
  struct uds_obs_stream *st = bpf_map_lookup_elem(&streams, &w->conn);
  long ret = (long)ctx->args[1];
  if (ret <= 0 || !st)
    goto out;

  /* The other direction has a call in progress that began before this one: it may be what this call
   * answers, so this call's records wait for it in user space. */
  __u64 other_n = w->dir ? st->inflight[0] : st->inflight[1];
  __u64 other_since = w->dir ? st->since[0] : st->since[1];
  w->flags = other_n > 0 && other_since <= w->ts ? UDS_OBS_F_WAIT : 0;
  if (c->nr == NR_WRITE || c->nr == NR_SENDTO) {
    w->seg_base = c->arg;
    w->seg_left = w->msg_left = (__u64)ret;
    w->off = w->dir ? __sync_fetch_and_add(&st->off[1], (__u64)ret) : __sync_fetch_and_add(&st->off[0], (__u64)ret);
    if (ret <= UDS_OBS_SMALL) {   /* the common small send: one record, no loop */
      emit_small(w, (__u32)ret);
      goto out;
    }
  } else if (c->nr == NR_WRITEV) {
    w->iov = c->arg;
    w->niov = c->count;
    w->msg_left = (__u64)ret;
    w->off = w->dir ? __sync_fetch_and_add(&st->off[1], (__u64)ret) : __sync_fetch_and_add(&st->off[0], (__u64)ret);
  } else if (c->nr == NR_SENDMSG) {
    struct user_msghdr m;
    if (bpf_probe_read_user(&m, sizeof m, (const void *)c->arg))
      goto out;
    start_msg(w, &m, (__u64)ret);
  } else {
    w->mmsg = c->arg;
    w->nmsgs = (__u32)ret;   /* messages sent; each mmsghdr's msg_len says how much of it */
  }
  struct step_ctx sc = { .w = w };
  bpf_loop(MAX_STEPS, step, &sc, 0);
out:
  call_done(w, st);
  return 0;
}
