/* Tests for discover: the /proc/net/unix parser on hand-written entries (what the kernel prints for
 * odd paths), the listing against a fixture proc root naming real socket files (and hostile entries
 * naming things that are not), owners from a fixture <proc>/PID/fd tree, interface names, and the
 * live listing of sockets this process creates, read from the real /proc.
 */
#include "discover.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>

#define ACCEPTCON 0x00010000u

/* ---- helpers ----------------------------------------------------------------------------------- */

/* One entry line as the kernel prints it: the path's bytes raw (newlines included), abstract names
 * already with '@' for NULs.  path NULL: an unbound socket. */
static void entry(GString *s, guint flags, guint type, guint state, guint64 inode, const char *path)
{
  g_string_append_printf(s, "%016x: %08X %08X %08X %04X %02X %5" G_GUINT64_FORMAT, 0x1234abcdu, 2u, 0u, flags,
                         type, state, inode);
  if (path) {
    g_string_append_c(s, ' ');
    g_string_append(s, path);
  }
  g_string_append_c(s, '\n');
}

static void header(GString *s)
{
  g_string_append(s, "Num       RefCount Protocol Flags    Type St Inode Path\n");
}

static GPtrArray *parse_gstring(const GString *s)
{
  return uds_discover_parse(s->str, s->len);
}

static const UdsSocketInfo *find_path(GPtrArray *a, const char *path)
{
  for (guint i = 0; i < a->len; i++) {
    const UdsSocketInfo *s = g_ptr_array_index(a, i);
    if (strcmp(s->path, path) == 0)
      return s;
  }
  return NULL;
}

static const UdsSocketInfo *must_find(GPtrArray *a, const char *path)
{
  const UdsSocketInfo *s = find_path(a, path);
  if (!s)
    g_error("%s not listed", path);
  return s;
}

static guint count_path(GPtrArray *a, const char *path)
{
  guint n = 0;
  for (guint i = 0; i < a->len; i++)
    n += strcmp(((const UdsSocketInfo *)g_ptr_array_index(a, i))->path, path) == 0;
  return n;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
  return remove(p) == 0 || errno == ENOENT ? 0 : -1;
}

static void rm_rf(const char *dir)
{
  g_assert_cmpint(nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS), ==, 0);
}

static void write_file(const char *path, const char *data, gsize len)
{
  g_autoptr(GError) err = NULL;
  g_assert_true(g_file_set_contents(path, data, (gssize)len, &err));
  g_assert_no_error(err);
}

/* A socket bound at path (any length up to the full 108 bytes of sun_path), listening if asked. */
static int make_socket(int type, const char *path, gboolean listening)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  gsize len = strlen(path);
  g_assert_cmpuint(len, <=, sizeof sa.sun_path);
  memcpy(sa.sun_path, path, len);
  int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
  g_assert_cmpint(fd, >=, 0);
  if (bind(fd, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) != 0)
    g_error("bind %s: %s", path, g_strerror(errno));
  if (listening)
    g_assert_cmpint(listen(fd, 8), ==, 0);
  return fd;
}

static guint64 socket_inode(int fd)
{
  struct stat st;
  g_assert_cmpint(fstat(fd, &st), ==, 0);
  return st.st_ino;
}

static char *self_comm(void)
{
  char *comm = NULL;
  g_assert_true(g_file_get_contents("/proc/self/comm", &comm, NULL, NULL));
  g_strchomp(comm);
  return comm;
}

/* ---- fixture: a temp dir with a fake proc root; live sockets closed in teardown ------------------ */

typedef struct {
  char *dir;
  char *proc;
  GArray *fds;
} Fx;

static void fx_setup(Fx *f, gconstpointer data)
{
  g_autoptr(GError) err = NULL;
  f->dir = g_dir_make_tmp("udsdisc-XXXXXX", &err);
  g_assert_no_error(err);
  f->proc = g_build_filename(f->dir, "proc", NULL);
  g_autofree char *net = g_build_filename(f->proc, "net", NULL);
  g_assert_cmpint(g_mkdir_with_parents(net, 0755), ==, 0);
  f->fds = g_array_new(FALSE, FALSE, sizeof(int));
}

static void fx_teardown(Fx *f, gconstpointer data)
{
  for (guint i = 0; i < f->fds->len; i++)
    close(g_array_index(f->fds, int, i));
  g_array_free(f->fds, TRUE);
  rm_rf(f->dir);
  g_free(f->proc);
  g_free(f->dir);
}

static int fx_socket(Fx *f, int type, const char *path, gboolean listening)
{
  int fd = make_socket(type, path, listening);
  g_array_append_val(f->fds, fd);
  return fd;
}

static char *fx_path(Fx *f, const char *name)
{
  return g_build_filename(f->dir, name, NULL);
}

static void fx_write_net_unix(Fx *f, const GString *s)
{
  g_autofree char *p = g_build_filename(f->proc, "net", "unix", NULL);
  write_file(p, s->str, s->len);
}

/* ---- parser ------------------------------------------------------------------------------------ */

static void test_parse_kinds(void)
{
  g_autoptr(GString) s = g_string_new(NULL);
  header(s);
  entry(s, ACCEPTCON, SOCK_STREAM, 1, 101, "/run/listen.sock");       /* kept */
  entry(s, 0, SOCK_STREAM, 3, 102, "/run/listen.sock");               /* accepted end: has the path */
  entry(s, 0, SOCK_STREAM, 3, 103, NULL);                              /* client end */
  entry(s, 0, SOCK_STREAM, 1, 104, NULL);                              /* unbound */
  entry(s, 0, SOCK_STREAM, 1, 105, "/run/bound-not-listening.sock");  /* dead */
  entry(s, ACCEPTCON, SOCK_SEQPACKET, 1, 106, "/run/seq.sock");       /* kept */
  entry(s, 0, SOCK_SEQPACKET, 1, 107, "/run/seq-not-listening.sock");
  entry(s, 0, SOCK_DGRAM, 1, 108, "/run/dgram.sock");                 /* kept: bound, unconnected */
  entry(s, 0, SOCK_DGRAM, 3, 109, "/run/dgram-connected.sock");       /* refuses all but its peer */
  entry(s, 0, SOCK_DGRAM, 1, 110, NULL);                               /* unbound datagram */
  entry(s, ACCEPTCON, 3 /* SOCK_RAW: not AF_UNIX */, 1, 111, "/run/raw.sock");
  entry(s, ACCEPTCON, SOCK_STREAM, 1, 4294967297ull, "/run/big-inode.sock");
  g_autoptr(GPtrArray) a = parse_gstring(s);
  g_assert_cmpuint(a->len, ==, 4);
  const UdsSocketInfo *i0 = g_ptr_array_index(a, 0), *i1 = g_ptr_array_index(a, 1);
  const UdsSocketInfo *i2 = g_ptr_array_index(a, 2), *i3 = g_ptr_array_index(a, 3);
  g_assert_cmpstr(i0->path, ==, "/run/listen.sock");
  g_assert_cmpint(i0->type, ==, SOCK_STREAM);
  g_assert_cmpuint(i0->inode, ==, 101);
  g_assert_cmpint(i0->pid, ==, 0);
  g_assert_null(i0->comm);
  g_assert_cmpstr(i1->path, ==, "/run/seq.sock");
  g_assert_cmpint(i1->type, ==, SOCK_SEQPACKET);
  g_assert_cmpstr(i2->path, ==, "/run/dgram.sock");
  g_assert_cmpint(i2->type, ==, SOCK_DGRAM);
  g_assert_cmpuint(i2->inode, ==, 108);
  g_assert_cmpstr(i3->path, ==, "/run/big-inode.sock");
  g_assert_cmpuint(i3->inode, ==, 4294967297ull);
}

static void test_parse_odd_paths(void)
{
  char p107[108], p108[109], p109[110];
  /* "/" + 'a'... : exactly n bytes */
  memset(p107, 'a', sizeof p107);
  p107[0] = '/';
  p107[107] = '\0';
  memset(p108, 'b', sizeof p108);
  p108[0] = '/';
  p108[108] = '\0';
  memset(p109, 'c', sizeof p109);
  p109[0] = '/';
  p109[109] = '\0';

  g_autoptr(GString) s = g_string_new(NULL);
  header(s);
  entry(s, ACCEPTCON, SOCK_STREAM, 1, 1, "/tmp/with space.sock");
  entry(s, ACCEPTCON, SOCK_STREAM, 1, 2, "/tmp/trailing space ");
  entry(s, ACCEPTCON, SOCK_STREAM, 1, 3, "/tmp/new\nline.sock");
  entry(s, ACCEPTCON, SOCK_STREAM, 1, 4, "/tmp/two\n\nnewlines\n");
  /* A continuation that almost has the entry-line shape is still a continuation. */
  entry(s, ACCEPTCON, SOCK_STREAM, 1, 5, "/tmp/x\n0000: 00000002 00000000 00010000 0001 01 12x");
  entry(s, ACCEPTCON, SOCK_STREAM, 1, 6, "/tmp/\xff\xfe\x80 latin1-\xe9.sock");
  entry(s, ACCEPTCON, SOCK_STREAM, 1, 7, p107);
  entry(s, ACCEPTCON, SOCK_STREAM, 1, 8, p108);
  entry(s, ACCEPTCON, SOCK_STREAM, 1, 9, p109);   /* longer than any bound path: junk, dropped */
  entry(s, ACCEPTCON, SOCK_STREAM, 1, 10, "@abstract");
  entry(s, ACCEPTCON, SOCK_STREAM, 1, 11, "@");
  entry(s, ACCEPTCON, SOCK_STREAM, 1, 12, "@/tmp/looks-like-a-path@with@nuls");
  entry(s, 0, SOCK_DGRAM, 1, 13, "@\n/tmp/abstract-with-newline");
  entry(s, ACCEPTCON, SOCK_STREAM, 1, 14, "relative.sock");
  entry(s, ACCEPTCON, SOCK_STREAM, 1, 15, "");   /* a space, then a name that starts with '\n' */
  g_string_append(s, "/tmp/after-leading-newline\n");
  g_autoptr(GPtrArray) a = parse_gstring(s);

  g_assert_nonnull(find_path(a, "/tmp/with space.sock"));
  g_assert_nonnull(find_path(a, "/tmp/trailing space "));
  g_assert_cmpuint(must_find(a, "/tmp/new\nline.sock")->inode, ==, 3);
  g_assert_cmpuint(must_find(a, "/tmp/two\n\nnewlines\n")->inode, ==, 4);
  g_assert_cmpuint(must_find(a, "/tmp/x\n0000: 00000002 00000000 00010000 0001 01 12x")->inode, ==, 5);
  g_assert_cmpuint(must_find(a, "/tmp/\xff\xfe\x80 latin1-\xe9.sock")->inode, ==, 6);
  g_assert_cmpuint(must_find(a, p107)->inode, ==, 7);
  g_assert_cmpuint(must_find(a, p108)->inode, ==, 8);
  g_assert_null(find_path(a, p109));
  /* Nothing abstract, relative or split off a longer name. */
  for (guint i = 0; i < a->len; i++) {
    const UdsSocketInfo *e = g_ptr_array_index(a, i);
    g_assert_cmpint(e->path[0], ==, '/');
    g_assert_cmpuint(e->inode, <, 9);
  }
  g_assert_cmpuint(a->len, ==, 8);
}

static void test_parse_duplicates_truncation_junk(void)
{
  g_autoptr(GString) s = g_string_new(NULL);
  g_string_append(s, "junk before the header\n\n");
  header(s);
  entry(s, ACCEPTCON, SOCK_STREAM, 1, 21, "/run/dup.sock");
  entry(s, 0, SOCK_STREAM, 3, 22, NULL);
  g_string_append(s, "junk after an unnamed entry is skipped\n");
  g_string_append(s, "0000000000000000: 0000002 00000000 00010000 0001 01 23 /run/short-field.sock\n");
  g_string_append(s, "0000000000000000: 00000002 00000000 00010000 0001 01 /run/no-inode.sock\n");
  g_string_append(s, "0000000000000000: 00000002 00000000 0001000a 0001 01 24 /run/lowercase-hex.sock\n");
  entry(s, ACCEPTCON, SOCK_STREAM, 1, 25, "/run/dup.sock");
  entry(s, ACCEPTCON, SOCK_STREAM, 1, 26, "/run/before-junk.sock");
  g_string_append(s, "junk after a named entry becomes part of its name\n");
  entry(s, 0, SOCK_DGRAM, 1, 27, "/run/last-complete.sock");
  g_string_append(s, "0000000000000000: 00000002 00000000 00010000 0001 01 28 /run/trunc");   /* no '\n' */
  g_autoptr(GPtrArray) a = parse_gstring(s);

  g_assert_cmpuint(count_path(a, "/run/dup.sock"), ==, 2);   /* the parser keeps the kernel's order */
  const UdsSocketInfo *first = must_find(a, "/run/dup.sock");
  g_assert_cmpuint(first->inode, ==, 21);
  g_assert_null(find_path(a, "/run/short-field.sock"));
  g_assert_null(find_path(a, "/run/no-inode.sock"));
  g_assert_null(find_path(a, "/run/lowercase-hex.sock"));
  g_assert_null(find_path(a, "/run/before-junk.sock"));
  g_assert_nonnull(find_path(a, "/run/before-junk.sock\njunk after a named entry becomes part of its name"));
  g_assert_nonnull(find_path(a, "/run/last-complete.sock"));
  g_assert_null(find_path(a, "/run/trunc"));
  g_assert_cmpuint(a->len, ==, 4);

  /* Cut inside the fields, inside the path, right before the final newline. */
  g_autoptr(GString) t = g_string_new(NULL);
  entry(t, ACCEPTCON, SOCK_STREAM, 1, 31, "/run/ok.sock");
  gsize keep = t->len;
  entry(t, ACCEPTCON, SOCK_STREAM, 1, 32, "/run/cut.sock");
  for (gsize cut = keep; cut < t->len; cut++) {
    g_autoptr(GPtrArray) b = uds_discover_parse(t->str, cut);
    g_assert_cmpuint(b->len, ==, 1);
    g_assert_cmpstr(((UdsSocketInfo *)g_ptr_array_index(b, 0))->path, ==, "/run/ok.sock");
  }
  g_autoptr(GPtrArray) whole = parse_gstring(t);
  g_assert_cmpuint(whole->len, ==, 2);

  g_autoptr(GPtrArray) empty = uds_discover_parse("", 0);
  g_assert_cmpuint(empty->len, ==, 0);
  static const char bytes[] = "\0\0\n\xff\xff\n: \n";
  g_autoptr(GPtrArray) binary = uds_discover_parse(bytes, sizeof bytes - 1);
  g_assert_cmpuint(binary->len, ==, 0);
}

/* The parser on this machine's real list: every entry it returns is one the kernel printed. */
static void test_parse_real_proc(void)
{
  g_autofree char *text = NULL;
  gsize len = 0;
  g_assert_true(g_file_get_contents("/proc/net/unix", &text, &len, NULL));
  g_autoptr(GPtrArray) a = uds_discover_parse(text, len);
  for (guint i = 0; i < a->len; i++) {
    const UdsSocketInfo *e = g_ptr_array_index(a, i);
    g_autofree char *needle = g_strdup_printf(" %" G_GUINT64_FORMAT " %s\n", e->inode, e->path);
    g_assert_nonnull(g_strstr_len(text, (gssize)len, needle));
  }
}

/* ---- the listing against a fixture proc root ---------------------------------------------------- */

static void test_discover_fixture(Fx *f, gconstpointer data)
{
  g_autofree char *listen = fx_path(f, "listen.sock");
  g_autofree char *seq = fx_path(f, "seq.sock");
  g_autofree char *dgram = fx_path(f, "dgram.sock");
  g_autofree char *space = fx_path(f, "with space.sock");
  g_autofree char *newline = fx_path(f, "new\nline.sock");
  g_autofree char *latin = fx_path(f, "caf\xe9.sock");
  g_autofree char *file = fx_path(f, "regular-file");
  g_autofree char *dir = fx_path(f, "a-directory");
  g_autofree char *link = fx_path(f, "symlink-to-socket.sock");
  g_autofree char *fifo = fx_path(f, "fifo");
  g_autofree char *gone = fx_path(f, "gone.sock");
  g_autofree char *dead = fx_path(f, "dead.sock");
  /* Real socket files; the fixture decides what the "kernel" says about them. */
  const char *const socks[] = { listen, seq, dgram, space, newline, latin, gone, dead };
  for (guint i = 0; i < G_N_ELEMENTS(socks); i++)
    close(make_socket(SOCK_STREAM, socks[i], FALSE));
  g_assert_cmpint(unlink(gone), ==, 0);
  write_file(file, "x", 1);
  g_assert_cmpint(mkdir(dir, 0700), ==, 0);
  g_assert_cmpint(symlink(listen, link), ==, 0);
  g_assert_cmpint(mkfifo(fifo, 0600), ==, 0);

  g_autoptr(GString) s = g_string_new(NULL);
  header(s);
  entry(s, ACCEPTCON, SOCK_STREAM, 1, 1001, listen);
  entry(s, ACCEPTCON, SOCK_STREAM, 1, 1002, listen);   /* a duplicate: the first in kernel order wins */
  entry(s, ACCEPTCON, SOCK_SEQPACKET, 1, 1003, seq);
  entry(s, 0, SOCK_DGRAM, 1, 1004, dgram);
  entry(s, ACCEPTCON, SOCK_STREAM, 1, 1005, space);
  entry(s, ACCEPTCON, SOCK_STREAM, 1, 1006, newline);
  entry(s, 0, SOCK_DGRAM, 1, 1007, latin);
  entry(s, 0, SOCK_STREAM, 1, 1008, dead);   /* bound, not listening */
  /* Hostile or stale entries: none names a socket file. */
  entry(s, ACCEPTCON, SOCK_STREAM, 1, 1010, file);
  entry(s, ACCEPTCON, SOCK_STREAM, 1, 1011, dir);
  entry(s, ACCEPTCON, SOCK_STREAM, 1, 1012, link);
  entry(s, ACCEPTCON, SOCK_STREAM, 1, 1013, fifo);
  entry(s, ACCEPTCON, SOCK_STREAM, 1, 1014, gone);
  entry(s, ACCEPTCON, SOCK_STREAM, 1, 1015, "/etc/passwd");
  entry(s, ACCEPTCON, SOCK_STREAM, 1, 1016, "/");
  entry(s, ACCEPTCON, SOCK_STREAM, 1, 1017, "listen.sock");   /* relative: exists from our cwd below */
  g_autofree char *abstract = g_strconcat("@", listen, NULL);
  entry(s, ACCEPTCON, SOCK_STREAM, 1, 1018, abstract);
  g_autofree char *forged = g_strconcat(f->dir, "/x\n0: 00000002 00000000 00010000 0001 01 1019 /etc/shadow", NULL);
  entry(s, ACCEPTCON, SOCK_STREAM, 1, 1020, forged);
  fx_write_net_unix(f, s);

  g_autofree char *cwd = g_get_current_dir();
  g_assert_cmpint(chdir(f->dir), ==, 0);
  g_autoptr(GError) err = NULL;
  g_autoptr(GPtrArray) a = uds_discover(f->proc, FALSE, &err);
  g_assert_cmpint(chdir(cwd), ==, 0);
  g_assert_no_error(err);

  /* Exactly the live sockets, sorted by path bytes. */
  const char *want[] = { listen, seq, dgram, space, newline, latin };
  g_assert_cmpuint(a->len, ==, G_N_ELEMENTS(want));
  for (guint i = 0; i + 1 < a->len; i++)
    g_assert_cmpint(strcmp(((UdsSocketInfo *)a->pdata[i])->path, ((UdsSocketInfo *)a->pdata[i + 1])->path), <, 0);
  for (guint i = 0; i < G_N_ELEMENTS(want); i++)
    g_assert_nonnull(find_path(a, want[i]));
  g_assert_cmpuint(must_find(a, listen)->inode, ==, 1001);
  g_assert_cmpint(must_find(a, seq)->type, ==, SOCK_SEQPACKET);
  g_assert_cmpint(must_find(a, dgram)->type, ==, SOCK_DGRAM);
  g_assert_cmpuint(must_find(a, newline)->inode, ==, 1006);

  /* The environment names the default root. */
  g_setenv("UDSDUMP_PROC_ROOT", f->proc, TRUE);
  g_assert_cmpstr(uds_proc_root(), ==, f->proc);
  g_autoptr(GPtrArray) b = uds_discover(NULL, FALSE, &err);
  g_assert_no_error(err);
  g_assert_cmpuint(b->len, ==, a->len);
  g_unsetenv("UDSDUMP_PROC_ROOT");
  g_assert_cmpstr(uds_proc_root(), ==, "/proc");

  /* No net/unix: one clear error. */
  g_autofree char *nowhere = fx_path(f, "no-proc-here");
  g_autoptr(GPtrArray) c = uds_discover(nowhere, FALSE, &err);
  g_assert_null(c);
  g_assert_error(err, G_FILE_ERROR, G_FILE_ERROR_NOENT);
  g_assert_nonnull(strstr(err->message, "net/unix"));
}

static void fake_fd(Fx *f, int pid, int fd, const char *target)
{
  g_autofree char *d = g_strdup_printf("%s/%d/fd", f->proc, pid);
  g_assert_cmpint(g_mkdir_with_parents(d, 0755), ==, 0);
  g_autofree char *l = g_strdup_printf("%s/%d", d, fd);
  g_assert_cmpint(symlink(target, l), ==, 0);
}

static void fake_comm(Fx *f, int pid, const char *comm)
{
  g_autofree char *d = g_strdup_printf("%s/%d", f->proc, pid);
  g_assert_cmpint(g_mkdir_with_parents(d, 0755), ==, 0);
  g_autofree char *p = g_strdup_printf("%s/comm", d);
  write_file(p, comm, strlen(comm));
}

static void test_owners_fixture(Fx *f, gconstpointer data)
{
  const char *names[] = { "docker.sock", "two-holders.sock", "no-comm.sock", "init-only.sock", "orphan.sock",
                          "odd comm.sock" };
  const guint64 inodes[] = { 100, 200, 300, 400, 500, 600 };
  g_autoptr(GString) s = g_string_new(NULL);
  header(s);
  for (guint i = 0; i < G_N_ELEMENTS(names); i++) {
    g_autofree char *p = fx_path(f, names[i]);
    close(make_socket(SOCK_STREAM, p, FALSE));
    entry(s, ACCEPTCON, SOCK_STREAM, 1, inodes[i], p);
  }
  fx_write_net_unix(f, s);

  fake_comm(f, 1, "systemd\n");
  fake_fd(f, 1, 3, "socket:[100]");   /* socket activation: pid 1 holds it too */
  fake_fd(f, 1, 9, "socket:[400]");
  fake_comm(f, 812, "dockerd\n");
  fake_fd(f, 812, 0, "/dev/null");
  fake_fd(f, 812, 1, "pipe:[100]");
  fake_fd(f, 812, 2, "socket:[100");
  fake_fd(f, 812, 4, "socket:[abc]");
  fake_fd(f, 812, 7, "socket:[100]");
  fake_fd(f, 812, 8, "socket:[200]");
  fake_comm(f, 20, "first\n");
  fake_fd(f, 20, 4, "socket:[200]");
  fake_fd(f, 30, 5, "socket:[300]");   /* no comm file: the pid is still known */
  fake_comm(f, 9999, "x}{\n\x01\xff\n");
  fake_fd(f, 9999, 3, "socket:[600]");
  fake_fd(f, 1000, 3, "socket:[18446744073709551616]");   /* overflows: ignored */
  g_autofree char *notdir = g_strdup_printf("%s/40", f->proc);
  write_file(notdir, "", 0);   /* a pid whose fd folder cannot be opened */
  g_autofree char *self = g_strdup_printf("%s/self", f->proc);
  g_assert_cmpint(symlink("812", self), ==, 0);   /* not a pid: not scanned twice */

  g_autoptr(GError) err = NULL;
  g_autoptr(GPtrArray) a = uds_discover(f->proc, TRUE, &err);
  g_assert_no_error(err);
  g_assert_cmpuint(a->len, ==, G_N_ELEMENTS(names));
  g_autofree char *p0 = fx_path(f, names[0]), *p1 = fx_path(f, names[1]), *p2 = fx_path(f, names[2]);
  g_autofree char *p3 = fx_path(f, names[3]), *p4 = fx_path(f, names[4]), *p5 = fx_path(f, names[5]);
  const UdsSocketInfo *docker = must_find(a, p0), *two = must_find(a, p1), *nocomm = must_find(a, p2);
  const UdsSocketInfo *init = must_find(a, p3), *orphan = must_find(a, p4), *odd = must_find(a, p5);
  g_assert_cmpint(docker->pid, ==, 812);
  g_assert_cmpstr(docker->comm, ==, "dockerd");
  g_assert_cmpint(two->pid, ==, 20);
  g_assert_cmpstr(two->comm, ==, "first");
  g_assert_cmpint(nocomm->pid, ==, 30);
  g_assert_null(nocomm->comm);
  g_assert_cmpint(init->pid, ==, 1);
  g_assert_cmpstr(init->comm, ==, "systemd");
  g_assert_cmpint(orphan->pid, ==, 0);
  g_assert_null(orphan->comm);
  g_assert_cmpint(odd->pid, ==, 9999);

  /* What a person sees: owner, well-known label, and always valid UTF-8 without braces or newlines. */
  g_autofree char *d0 = uds_socket_display(docker);
  g_autofree char *want0 = g_strdup_printf("%s (dockerd, pid 812) - Docker Engine API", p0);
  g_assert_cmpstr(d0, ==, want0);
  g_autofree char *d2 = uds_socket_display(nocomm);
  g_autofree char *want2 = g_strdup_printf("%s (pid 30)", p2);
  g_assert_cmpstr(d2, ==, want2);
  g_autofree char *d4 = uds_socket_display(orphan);
  g_assert_cmpstr(d4, ==, p4);
  g_autofree char *d5 = uds_socket_display(odd);
  g_assert_true(g_utf8_validate(d5, -1, NULL));
  g_assert_null(strpbrk(d5, "{}\n\x01"));
  g_assert_nonnull(strstr(d5, "(x%7D%7B%0A%01%FF, pid 9999)"));

  g_autofree char *c = uds_proc_comm(f->proc, 812);
  g_assert_cmpstr(c, ==, "dockerd");
  g_assert_null(uds_proc_comm(f->proc, 30));
  g_assert_null(uds_proc_comm(f->proc, 424242));

  /* Without owners nothing is looked up. */
  g_autoptr(GPtrArray) b = uds_discover(f->proc, FALSE, &err);
  g_assert_no_error(err);
  for (guint i = 0; i < b->len; i++) {
    g_assert_cmpint(((UdsSocketInfo *)b->pdata[i])->pid, ==, 0);
    g_assert_null(((UdsSocketInfo *)b->pdata[i])->comm);
  }
}

static void test_lookup_fixture(Fx *f, gconstpointer data)
{
  g_autofree char *listen = fx_path(f, "listen.sock");
  g_autofree char *dgram = fx_path(f, "dgram.sock");
  g_autofree char *dead = fx_path(f, "dead.sock");
  g_autofree char *moved = fx_path(f, "moved-aside.sock");
  g_autofree char *alias = fx_path(f, "alias");
  g_autofree char *via_alias = g_build_filename(alias, "listen.sock", NULL);
  close(make_socket(SOCK_STREAM, listen, FALSE));
  close(make_socket(SOCK_STREAM, dgram, FALSE));
  close(make_socket(SOCK_STREAM, dead, FALSE));
  g_assert_cmpint(symlink(f->dir, alias), ==, 0);   /* /var/run -> /run, in small */
  g_autoptr(GString) s = g_string_new(NULL);
  header(s);
  entry(s, ACCEPTCON, SOCK_STREAM, 1, 77, listen);
  entry(s, 0, SOCK_DGRAM, 1, 78, dgram);
  entry(s, 0, SOCK_STREAM, 1, 79, dead);
  entry(s, ACCEPTCON, SOCK_SEQPACKET, 1, 80, moved);
  fx_write_net_unix(f, s);
  fake_comm(f, 5, "server\n");
  fake_fd(f, 5, 3, "socket:[78]");

  UdsSocketInfo *raw = NULL;
  g_assert_true(uds_discover_lookup(f->proc, listen, &raw));
  g_autoptr(UdsSocketInfo) l = raw;
  g_assert_cmpint(l->type, ==, SOCK_STREAM);
  g_assert_cmpuint(l->inode, ==, 77);
  g_assert_true(uds_discover_lookup(f->proc, dgram, &raw));
  g_autoptr(UdsSocketInfo) d = raw;
  g_assert_cmpint(d->type, ==, SOCK_DGRAM);
  g_assert_cmpint(d->pid, ==, 5);
  g_assert_cmpstr(d->comm, ==, "server");
  /* Another spelling of the same file finds the same socket. */
  g_assert_true(uds_discover_lookup(f->proc, via_alias, &raw));
  g_autoptr(UdsSocketInfo) v = raw;
  g_assert_cmpuint(v->inode, ==, 77);
  /* A stale socket file (bound, not listening) has no listener; neither has a path never bound. */
  raw = (UdsSocketInfo *)0x1;
  g_assert_false(uds_discover_lookup(f->proc, dead, &raw));
  g_assert_null(raw);
  g_autofree char *never = fx_path(f, "never.sock");
  g_assert_false(uds_discover_lookup(f->proc, never, NULL));
  /* The listener's file is gone (the caller may have moved it aside): the kernel still has it. */
  g_assert_true(uds_discover_lookup(f->proc, moved, &raw));
  g_autoptr(UdsSocketInfo) m = raw;
  g_assert_cmpint(m->type, ==, SOCK_SEQPACKET);
  g_assert_true(uds_discover_lookup(f->proc, listen, NULL));
  g_autofree char *nowhere = fx_path(f, "no-proc-here");
  g_assert_false(uds_discover_lookup(nowhere, listen, NULL));
}

/* ---- live: sockets of this process, the real /proc --------------------------------------------- */

/* Does this kernel answer NETLINK_SOCK_DIAG for AF_UNIX (the exact check behind forged entries)? */
static gboolean unix_diag_available(void)
{
  int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0)
    return FALSE;
  struct {
    struct nlmsghdr nlh;
    struct unix_diag_req req;
  } rq = {
    .nlh = { .nlmsg_len = sizeof rq, .nlmsg_type = SOCK_DIAG_BY_FAMILY, .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP },
    .req = { .sdiag_family = AF_UNIX, .udiag_states = 1u << 10, .udiag_show = UDIAG_SHOW_VFS },
  };
  struct sockaddr_nl k = { .nl_family = AF_NETLINK };
  union {
    struct nlmsghdr h;
    char bytes[16384];
  } buf;
  gboolean ok = sendto(fd, &rq, sizeof rq, 0, (struct sockaddr *)&k, sizeof k) == sizeof rq;
  ssize_t n = ok ? recv(fd, &buf, sizeof buf, 0) : -1;
  ok = n > 0 && buf.h.nlmsg_type != NLMSG_ERROR;
  close(fd);
  return ok;
}

static void test_live(Fx *f, gconstpointer data)
{
  g_unsetenv("UDSDUMP_PROC_ROOT");
  g_autofree char *stream = fx_path(f, "stream.sock");
  g_autofree char *seq = fx_path(f, "seq.sock");
  g_autofree char *dgram = fx_path(f, "dgram.sock");
  g_autofree char *receiver = fx_path(f, "dgram-receiver.sock");
  g_autofree char *dgconn = fx_path(f, "dgram-connected.sock");
  g_autofree char *odd = fx_path(f, "sp ace\nnew\xff line.sock");
  g_autofree char *bound = fx_path(f, "bound-not-listening.sock");
  g_autofree char *removed = fx_path(f, "removed.sock");
  int fs = fx_socket(f, SOCK_STREAM, stream, TRUE);
  int fq = fx_socket(f, SOCK_SEQPACKET, seq, TRUE);
  int fd = fx_socket(f, SOCK_DGRAM, dgram, FALSE);
  int frecv = fx_socket(f, SOCK_DGRAM, receiver, FALSE);
  int fdc = fx_socket(f, SOCK_DGRAM, dgconn, FALSE);
  int fo = fx_socket(f, SOCK_STREAM, odd, TRUE);
  fx_socket(f, SOCK_STREAM, bound, FALSE);
  fx_socket(f, SOCK_STREAM, removed, TRUE);
  g_assert_cmpint(unlink(removed), ==, 0);
  /* A datagram socket connected to another refuses everyone else; the one it connected to (like
   * /dev/log, which every syslog() connects to) still takes datagrams from anyone. */
  struct sockaddr_un to = { .sun_family = AF_UNIX };
  g_strlcpy(to.sun_path, receiver, sizeof to.sun_path);
  g_assert_cmpint(connect(fdc, (struct sockaddr *)&to, sizeof to), ==, 0);
  /* A client and its accepted end: neither is a listener. */
  int client = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  g_array_append_val(f->fds, client);
  g_strlcpy(to.sun_path, stream, sizeof to.sun_path);
  g_assert_cmpint(connect(client, (struct sockaddr *)&to, sizeof to), ==, 0);
  int accepted = accept4(fs, NULL, NULL, SOCK_CLOEXEC);
  g_assert_cmpint(accepted, >=, 0);
  g_array_append_val(f->fds, accepted);
  /* The longest paths a socket can have: 107 bytes, and 108 bound without a terminating NUL. */
  GString *longp = g_string_new(f->dir);
  g_string_append(longp, "/long");
  g_assert_cmpint(mkdir(longp->str, 0700), ==, 0);
  g_string_append_c(longp, '/');
  while (longp->len < 107)
    g_string_append_c(longp, 'x');
  g_autofree char *p107 = g_string_free(longp, FALSE);
  g_autofree char *p108 = g_strconcat(p107, "y", NULL);
  int f107 = fx_socket(f, SOCK_STREAM, p107, TRUE);
  int f108 = fx_socket(f, SOCK_DGRAM, p108, FALSE);

  g_autoptr(GError) err = NULL;
  g_autoptr(GPtrArray) a = uds_discover(NULL, TRUE, &err);
  g_assert_no_error(err);
  g_autofree char *comm = self_comm();
  struct { const char *path; int fd, type; } want[] = {
    { stream, fs, SOCK_STREAM }, { seq, fq, SOCK_SEQPACKET }, { dgram, fd, SOCK_DGRAM },
    { odd, fo, SOCK_STREAM },    { p107, f107, SOCK_STREAM }, { p108, f108, SOCK_DGRAM },
  };
  for (guint i = 0; i < G_N_ELEMENTS(want); i++) {
    const UdsSocketInfo *s = must_find(a, want[i].path);
    g_assert_cmpuint(count_path(a, want[i].path), ==, 1);
    g_assert_cmpint(s->type, ==, want[i].type);
    g_assert_cmpuint(s->inode, ==, socket_inode(want[i].fd));
    g_assert_cmpint(s->pid, ==, getpid());
    g_assert_cmpstr(s->comm, ==, comm);
    g_autofree char *disp = uds_socket_display(s);
    g_assert_true(g_utf8_validate(disp, -1, NULL));
    g_autofree char *tail = g_strdup_printf("(%s, pid %d)", comm, (int)getpid());
    g_assert_true(g_str_has_suffix(disp, tail));
  }
  g_assert_null(find_path(a, dgconn));
  g_assert_null(find_path(a, bound));
  g_assert_null(find_path(a, removed));
  if (unix_diag_available()) {
    const UdsSocketInfo *r = must_find(a, receiver);
    g_assert_cmpint(r->type, ==, SOCK_DGRAM);
    g_assert_cmpuint(r->inode, ==, socket_inode(frecv));
    g_assert_true(uds_discover_lookup(NULL, receiver, NULL));
  } else {
    g_test_message("no NETLINK_SOCK_DIAG: %s is not listed when the kernel marks it connected", receiver);
  }

  UdsSocketInfo *raw = NULL;
  g_assert_true(uds_discover_lookup(NULL, seq, &raw));
  g_autoptr(UdsSocketInfo) l = raw;
  g_assert_cmpint(l->type, ==, SOCK_SEQPACKET);
  g_assert_cmpuint(l->inode, ==, socket_inode(fq));
  g_assert_cmpint(l->pid, ==, getpid());
  g_assert_false(uds_discover_lookup(NULL, bound, NULL));
  g_assert_false(uds_discover_lookup(NULL, dgconn, NULL));
}

/* A server may bind a path that holds a fake entry line; the kernel prints it raw.  Such a line can
 * never make us list a non-socket, and with the kernel's own word on bound files (unix_diag) it
 * cannot stand in for the real socket at the path it names either. */
static void test_live_forged_entries(Fx *f, gconstpointer data)
{
  g_unsetenv("UDSDUMP_PROC_ROOT");
  g_autofree char *real = fx_path(f, "real.sock");
  int fr = fx_socket(f, SOCK_STREAM, real, TRUE);
  g_autofree char *forge_real = g_strdup_printf("%s/a\n0: 00000002 00000000 00000000 0002 01 4000000000 %s",
                                                f->dir, real);
  g_autofree char *forge_file = g_strdup_printf("%s/b\n0: 00000002 00000000 00010000 0001 01 4000000001 /etc/passwd",
                                                f->dir);
  if (strlen(forge_real) > 108 || strlen(forge_file) > 108) {
    g_test_skip("temporary folder path too long for a forged entry");
    return;
  }
  const char *forged[] = { forge_real, forge_file };
  for (guint i = 0; i < G_N_ELEMENTS(forged); i++) {
    g_autofree char *parent = g_path_get_dirname(forged[i]);
    g_assert_cmpint(g_mkdir_with_parents(parent, 0700), ==, 0);
    fx_socket(f, SOCK_STREAM, forged[i], TRUE);
  }
  g_autofree char *text = NULL;
  g_assert_true(g_file_get_contents("/proc/net/unix", &text, NULL, NULL));
  g_assert_nonnull(strstr(text, "\n0: 00000002 00000000 00000000 0002 01 4000000000 "));   /* the kernel printed it */

  g_autoptr(GError) err = NULL;
  g_autoptr(GPtrArray) a = uds_discover(NULL, TRUE, &err);
  g_assert_no_error(err);
  g_assert_null(find_path(a, "/etc/passwd"));
  for (guint i = 0; i < a->len; i++)
    g_assert_cmpuint(((UdsSocketInfo *)a->pdata[i])->inode, <, 4000000000ull);
  if (!unix_diag_available()) {
    g_test_message("no NETLINK_SOCK_DIAG: which duplicate of %s is listed is up to the kernel's order", real);
    return;
  }
  g_assert_cmpuint(count_path(a, real), ==, 1);
  const UdsSocketInfo *s = must_find(a, real);
  g_assert_cmpint(s->type, ==, SOCK_STREAM);
  g_assert_cmpuint(s->inode, ==, socket_inode(fr));
  UdsSocketInfo *raw = NULL;
  g_assert_true(uds_discover_lookup(NULL, real, &raw));
  g_autoptr(UdsSocketInfo) l = raw;
  g_assert_cmpuint(l->inode, ==, socket_inode(fr));
  g_assert_cmpint(l->type, ==, SOCK_STREAM);
}

/* A path unlinked and bound again by a new listener: two kernel entries, one file. */
static void test_live_rebound(Fx *f, gconstpointer data)
{
  g_unsetenv("UDSDUMP_PROC_ROOT");
  if (!unix_diag_available()) {
    g_test_skip("no NETLINK_SOCK_DIAG: the kernel's list alone cannot tell an old listener from the new one");
    return;
  }
  g_autofree char *p = fx_path(f, "rebound.sock");
  int old_fd = fx_socket(f, SOCK_DGRAM, p, FALSE);
  g_assert_cmpint(unlink(p), ==, 0);
  int new_fd = fx_socket(f, SOCK_STREAM, p, TRUE);
  g_assert_cmpuint(socket_inode(old_fd), !=, socket_inode(new_fd));
  g_autoptr(GError) err = NULL;
  g_autoptr(GPtrArray) a = uds_discover(NULL, FALSE, &err);
  g_assert_no_error(err);
  g_assert_cmpuint(count_path(a, p), ==, 1);
  g_assert_cmpuint(must_find(a, p)->inode, ==, socket_inode(new_fd));
  g_assert_cmpint(must_find(a, p)->type, ==, SOCK_STREAM);
}

/* ---- interface names ----------------------------------------------------------------------------- */

static void check_encoded(const char *path)
{
  g_autofree char *enc = uds_iface_encode(path);
  g_assert_true(g_str_has_prefix(enc, "unix:"));
  g_assert_true(g_utf8_validate(enc, -1, NULL));
  for (const char *p = enc; *p; p = g_utf8_next_char(p)) {
    gunichar c = g_utf8_get_char(p);
    g_assert_true(c >= 0x20 && c != 0x7f && !(c >= 0x80 && c <= 0x9f) && c != '{' && c != '}');
  }
  g_autoptr(GError) err = NULL;
  g_autofree char *dec = uds_iface_decode(enc, &err);
  g_assert_no_error(err);
  g_assert_cmpstr(dec, ==, path);
}

static void test_iface_roundtrip(void)
{
  char all[256];
  for (int b = 1; b < 256; b++) {
    char one[] = { '/', 't', (char)b, 'x', '\0' };
    check_encoded(one);
    all[b - 1] = (char)b;
  }
  all[255] = '\0';
  check_encoded(all);
  /* Every byte value in every position of random strings, including broken UTF-8 sequences. */
  for (int i = 0; i < 2000; i++) {
    char buf[40];
    int n = g_test_rand_int_range(1, (int)sizeof buf);
    for (int j = 0; j < n; j++)
      buf[j] = (char)g_test_rand_int_range(1, 256);
    buf[n] = '\0';
    check_encoded(buf);
  }
  const char *samples[] = { "/run/docker.sock", "/tmp/a b", "/tmp/é€😀", "/x%25y", "/x%", "/{}{",
                            "/\xc2\x85", "/\xed\xa0\x80", "/\xc0\xaf", "/\xf4\x90\x80\x80", "/\xe2\x82" };
  for (guint i = 0; i < G_N_ELEMENTS(samples); i++)
    check_encoded(samples[i]);

  g_autofree char *e1 = uds_iface_encode("/run/docker.sock");
  g_assert_cmpstr(e1, ==, "unix:/run/docker.sock");
  g_autofree char *e2 = uds_iface_encode("/a b%{}\n\x7f\xff/é\xc2\x85");
  g_assert_cmpstr(e2, ==, "unix:/a b%25%7B%7D%0A%7F%FF/é%C2%85");
  /* Decoding is lenient about what encode would have escaped, and about hex case. */
  g_autofree char *d1 = uds_iface_decode("unix:/a{b}%7b%7D", NULL);
  g_assert_cmpstr(d1, ==, "/a{b}{}");
}

static void test_iface_decode_errors(void)
{
  struct { const char *value, *needle; } bad[] = {
    { "", "expected unix:PATH" },
    { "tcp:/run/x.sock", "expected unix:PATH" },
    { "UNIX:/run/x.sock", "expected unix:PATH" },
    { "/run/x.sock", "expected unix:PATH" },
    { "unix:", "empty" },
    { "unix:/a%", "%25" },
    { "unix:/a%4", "%25" },
    { "unix:/a%zz", "%25" },
    { "unix:/a%4g", "%25" },
    { "unix:/a%00b", "NUL" },
    { "x\n\xff{", "expected unix:PATH" },
  };
  for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_autoptr(GError) err = NULL;
    g_autofree char *p = uds_iface_decode(bad[i].value, &err);
    g_assert_null(p);
    g_assert_error(err, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE);
    g_assert_true(g_utf8_validate(err->message, -1, NULL));
    g_assert_null(strchr(err->message, '\n'));
    if (!strstr(err->message, bad[i].needle))
      g_error("decode(\"%s\"): message \"%s\" lacks \"%s\"", bad[i].value, err->message, bad[i].needle);
  }
  g_autoptr(GError) err = NULL;
  g_assert_null(uds_iface_decode(NULL, &err));
  g_assert_nonnull(err);
}

static void test_display(void)
{
  UdsSocketInfo info = { .path = (char *)"/var/run/docker.sock", .pid = 812, .comm = (char *)"dockerd" };
  g_autofree char *d = uds_socket_display(&info);
  g_assert_cmpstr(d, ==, "/var/run/docker.sock (dockerd, pid 812) - Docker Engine API");
  UdsSocketInfo plain = { .path = (char *)"/tmp/app.sock" };
  g_autofree char *p = uds_socket_display(&plain);
  g_assert_cmpstr(p, ==, "/tmp/app.sock");
  for (int b = 1; b < 256; b++) {
    char path[] = { '/', 'p', (char)b, '\0' }, comm[] = { 'c', (char)b, '\0' };
    UdsSocketInfo odd = { .path = path, .pid = 7, .comm = comm };
    g_autofree char *o = uds_socket_display(&odd);
    g_assert_true(g_utf8_validate(o, -1, NULL));
    g_assert_null(strpbrk(o, "{}\n\r\t"));
  }
}

int main(int argc, char **argv)
{
  alarm(120);
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/discover/parse/kinds", test_parse_kinds);
  g_test_add_func("/discover/parse/odd-paths", test_parse_odd_paths);
  g_test_add_func("/discover/parse/duplicates-truncation-junk", test_parse_duplicates_truncation_junk);
  g_test_add_func("/discover/parse/real-proc", test_parse_real_proc);
  g_test_add("/discover/fixture/listing", Fx, NULL, fx_setup, test_discover_fixture, fx_teardown);
  g_test_add("/discover/fixture/owners", Fx, NULL, fx_setup, test_owners_fixture, fx_teardown);
  g_test_add("/discover/fixture/lookup", Fx, NULL, fx_setup, test_lookup_fixture, fx_teardown);
  g_test_add("/discover/live/own-sockets", Fx, NULL, fx_setup, test_live, fx_teardown);
  g_test_add("/discover/live/forged-entries", Fx, NULL, fx_setup, test_live_forged_entries, fx_teardown);
  g_test_add("/discover/live/rebound-path", Fx, NULL, fx_setup, test_live_rebound, fx_teardown);
  g_test_add_func("/discover/iface/roundtrip", test_iface_roundtrip);
  g_test_add_func("/discover/iface/decode-errors", test_iface_decode_errors);
  g_test_add_func("/discover/display", test_display);
  return g_test_run();
}
