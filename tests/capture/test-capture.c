/* The capture API end to end: connections simulated through uds_capture_* with real data, written as
 * pcap (or text) to a file or a pipe, then decoded by the real tshark.  Nothing is mocked: the frames
 * are what the relay would produce for the same events. */
#include "capture.h"
#include "frame.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pcap/pcap.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tshark-util.h"

/* ---- fixture ---- */

typedef struct {
  char *dir;
  char *file;
  GRand *rand;
  struct timespec now;   /* the events' clock: strictly increasing */
} Fixture;

static void fixture_setup(Fixture *f, gconstpointer data)
{
  f->dir = g_dir_make_tmp("capture-test-XXXXXX", NULL);
  g_assert_nonnull(f->dir);
  f->file = g_build_filename(f->dir, "out.pcap", NULL);
  f->rand = g_rand_new_with_seed(1234);
  f->now.tv_sec = 1700000000;
  f->now.tv_nsec = 0;
  alarm(240);
}

static void fixture_teardown(Fixture *f, gconstpointer data)
{
  g_autoptr(GDir) d = g_dir_open(f->dir, 0, NULL);
  const char *name;
  while (d && (name = g_dir_read_name(d))) {
    g_autofree char *p = g_build_filename(f->dir, name, NULL);
    g_unlink(p);
  }
  g_rmdir(f->dir);
  g_free(f->dir);
  g_free(f->file);
  g_rand_free(f->rand);
  alarm(0);
}

static const struct timespec *tick(Fixture *f)
{
  f->now.tv_nsec += 1000;
  if (f->now.tv_nsec >= 1000000000) {
    f->now.tv_sec++;
    f->now.tv_nsec -= 1000000000;
  }
  return &f->now;
}

static UdsProto http_proto = { "http", 80, NULL };
static UdsProto data_proto = { "data", 4, NULL };

static UdsCaptureOptions default_options(const char *path)
{
  return (UdsCaptureOptions){
    .path = path,
    .sock_type = SOCK_STREAM,
    .proto = &http_proto,
    .format = UDS_FORMAT_PCAP,
    .buffer_bytes = 64 * 1024 * 1024,
    .only_uid = -1,
  };
}

static UdsCapture *capture_to_file(const char *file, const UdsCaptureOptions *opt)
{
  int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  g_assert_cmpint(fd, >=, 0);
  g_autoptr(GError) error = NULL;
  UdsCapture *cap = uds_capture_new(fd, opt, &error);
  g_assert_no_error(error);
  g_assert_nonnull(cap);
  return cap;
}

static void capture_end(UdsCapture *cap, UdsCaptureStats *stats)
{
  uds_capture_finish(cap, 5000);
  g_assert_false(uds_capture_wants_write(cap));
  if (stats)
    uds_capture_stats(cap, stats);
  uds_capture_free(cap);
}

static UdsPeer make_peer(pid_t pid, uid_t uid, const char *comm)
{
  UdsPeer p = { .pid = pid, .uid = uid, .gid = uid, .ngroups = 2, .groups = { uid, 27 } };
  g_strlcpy(p.comm, comm, sizeof p.comm);
  return p;
}

static GBytes *random_bytes(GRand *r, gsize n)
{
  guint8 *p = g_malloc(n ? n : 1);
  for (gsize i = 0; i < n; i++)
    p[i] = (guint8)g_rand_int(r);
  return g_bytes_new_take(p, n);
}

/* ---- reading results ---- */

typedef struct {
  guint8 type, dir;
  guint32 conn_id;
  guint64 dropped;
  guint32 pid, fd_count;
  char *path, *comm, *fd_desc;
  gboolean has_version, has_start;
} Meta;

static void meta_free(gpointer p)
{
  Meta *m = p;
  g_free(m->path);
  g_free(m->comm);
  g_free(m->fd_desc);
  g_free(m);
}

static guint64 be_uint(const guint8 *v, guint16 len)
{
  guint64 x = 0;
  for (guint16 i = 0; i < len; i++)
    x = x << 8 | v[i];
  return x;
}

static gboolean meta_tlv(guint16 type, const guint8 *v, guint16 len, gpointer user_data)
{
  Meta *m = user_data;
  switch (type) {
  case UDS_TLV_PATH: m->path = g_strndup((const char *)v, len); break;
  case UDS_TLV_CLIENT_COMM: m->comm = g_strndup((const char *)v, len); break;
  case UDS_TLV_CLIENT_PID: m->pid = (guint32)be_uint(v, len); break;
  case UDS_TLV_DROPPED_BYTES: m->dropped = be_uint(v, len); break;
  case UDS_TLV_FD_COUNT: m->fd_count = (guint32)be_uint(v, len); break;
  case UDS_TLV_FD_DESC: {
    g_autofree char *old = m->fd_desc;
    g_autofree char *d = g_strndup((const char *)v, len);
    m->fd_desc = old ? g_strdup_printf("%s,%s", old, d) : g_strdup(d);
    break;
  }
  case UDS_TLV_VERSION: m->has_version = TRUE; break;
  case UDS_TLV_CAPTURE_START: m->has_start = TRUE; break;
  default: break;
  }
  return TRUE;
}

/* All metadata frames of a pcap file, in order (read with libpcap, parsed with frame.c). */
static GPtrArray *read_meta(const char *file, guint *frames)
{
  char err[PCAP_ERRBUF_SIZE];
  pcap_t *p = pcap_open_offline_with_tstamp_precision(file, PCAP_TSTAMP_PRECISION_NANO, err);
  g_assert_nonnull(p);
  g_assert_cmpint(pcap_datalink(p), ==, DLT_EN10MB);
  GPtrArray *out = g_ptr_array_new_with_free_func(meta_free);
  struct pcap_pkthdr *h;
  const u_char *data;
  guint n = 0;
  while (pcap_next_ex(p, &h, &data) == 1) {
    n++;
    if (h->caplen >= 14 && data[12] == 0x88 && data[13] == 0xb5) {
      Meta *m = g_new0(Meta, 1);
      UdsMetaHeader mh;
      g_assert_true(uds_meta_parse(data, h->caplen, &mh, meta_tlv, m));
      g_assert_cmpuint(h->caplen, ==, h->len);
      m->type = mh.type;
      m->dir = mh.dir;
      m->conn_id = mh.conn_id;
      g_ptr_array_add(out, m);
    }
  }
  pcap_close(p);
  if (frames)
    *frames = n;
  return out;
}

static guint count_meta(GPtrArray *metas, guint8 type)
{
  guint n = 0;
  for (guint i = 0; i < metas->len; i++)
    n += ((Meta *)metas->pdata[i])->type == type;
  return n;
}

/* The bytes tshark reassembles for one TCP stream, per direction (follow,tcp,raw). */
static void follow_stream(const char *file, const char *proto, guint stream, GByteArray *out[2], guint16 *client_port)
{
  g_autofree char *z = g_strdup_printf("follow,%s,raw,%u", proto, stream);
  g_autofree char *text = tshark_run("-r", file, "-q", "-z", z, NULL);
  g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
  gboolean body = FALSE;
  for (guint i = 0; lines[i]; i++) {
    const char *l = lines[i];
    if (g_str_has_prefix(l, "Node 0: ") && client_port)
      *client_port = (guint16)atoi(strrchr(l, ':') + 1);
    if (g_str_has_prefix(l, "Node 1: ")) {
      body = TRUE;
      continue;
    }
    if (!body || g_str_has_prefix(l, "====") || !*l)
      continue;
    int dir = l[0] == '\t' ? 1 : 0;
    const char *hex = l + dir;
    gsize n = strlen(hex);
    g_assert_cmpuint(n % 2, ==, 0);
    for (gsize k = 0; k < n; k += 2) {
      guint8 b = (guint8)(g_ascii_xdigit_value(hex[k]) << 4 | g_ascii_xdigit_value(hex[k + 1]));
      g_byte_array_append(out[dir], &b, 1);
    }
  }
}

static guint tshark_count(const char *file, const char *filter)
{
  g_autofree char *out = tshark_run("-r", file, "-Y", filter, "-T", "fields", "-e", "frame.number", NULL);
  return count_lines(out);
}

/* The bytes missing between the server's (port 80) data segments, by their sequence numbers; *seen
 * (may be NULL) receives the bytes the segments carry. */
static guint64 seq_gaps(const char *file, guint64 *seen)
{
  g_autofree char *segs = tshark_run("-r", file, "-Y", "tcp.srcport == 80 && tcp.len > 0", "-T", "fields",
                                     "-e", "tcp.seq", "-e", "tcp.len", NULL);
  g_auto(GStrv) lines = g_strsplit(segs, "\n", -1);
  guint64 next = 0, gap = 0, total = 0;
  for (guint i = 0; lines[i] && *lines[i]; i++) {
    g_auto(GStrv) fld = g_strsplit(lines[i], "\t", -1);
    guint64 seq = g_ascii_strtoull(fld[0], NULL, 10), len = g_ascii_strtoull(fld[1], NULL, 10);
    if (next && seq != next)
      gap += seq - next;
    next = seq + len;
    total += len;
  }
  if (seen)
    *seen = total;
  return gap;
}

/* ---- a scripted HTTP/1.1 workload ---- */

typedef struct {
  int dir;
  GBytes *bytes;
} Msg;

typedef struct {
  UdsFlow flow;
  UdsPeer peer;
  GArray *script;     /* Msg */
  guint step;
  gsize off;
  GByteArray *fed[2];
  gboolean half_close_first;   /* the client shuts down right after its last request */
  gboolean reset_at_end;
  guint16 port;
} Conn;

static void conn_add(Conn *c, int dir, GBytes *b)
{
  Msg m = { dir, b };
  g_array_append_val(c->script, m);
}

static GBytes *http_request(guint id, guint k)
{
  char *s = g_strdup_printf("GET /conn%u/req%u HTTP/1.1\r\nHost: udsdump.test\r\nUser-Agent: test\r\n\r\n", id, k);
  return g_bytes_new_take(s, strlen(s));
}

static GBytes *http_response(GRand *r, gsize body)
{
  g_autofree char *head = g_strdup_printf("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                                          "Content-Length: %" G_GSIZE_FORMAT "\r\n\r\n", body);
  g_autoptr(GBytes) b = random_bytes(r, body);
  GByteArray *a = g_byte_array_new();
  g_byte_array_append(a, (const guint8 *)head, strlen(head));
  g_byte_array_append(a, g_bytes_get_data(b, NULL), body);
  return g_byte_array_free_to_bytes(a);
}

static Conn *conns_new(guint n)
{
  Conn *c = g_new0(Conn, n);
  for (guint i = 0; i < n; i++) {
    c[i].script = g_array_new(FALSE, TRUE, sizeof(Msg));
    c[i].fed[0] = g_byte_array_new();
    c[i].fed[1] = g_byte_array_new();
    c[i].peer = make_peer(1000 + i, 1000, i % 2 ? "curl" : "docker");
  }
  return c;
}

static void conns_free(Conn *c, guint n)
{
  for (guint i = 0; i < n; i++) {
    for (guint k = 0; k < c[i].script->len; k++)
      g_bytes_unref(g_array_index(c[i].script, Msg, k).bytes);
    g_array_free(c[i].script, TRUE);
    g_byte_array_free(c[i].fed[0], TRUE);
    g_byte_array_free(c[i].fed[1], TRUE);
  }
  g_free(c);
}

/* Opens every connection, then feeds random-sized reads (like the relay's, up to 256 KiB) of
 * randomly chosen connections until every script is done; ends each connection as scripted. */
static void run_workload(Fixture *f, UdsCapture *cap, Conn *c, guint n, gboolean flush)
{
  for (guint i = 0; i < n; i++) {
    UdsConnMeta meta = { .client = &c[i].peer, .server_pid = 77, .server_comm = "dockerd" };
    uds_capture_conn_open(cap, &c[i].flow, &meta, tick(f));
    g_assert_true(c[i].flow.captured);
    c[i].port = c[i].flow.client_port;
  }
  guint live = n;
  while (live > 0) {
    Conn *k = &c[g_rand_int_range(f->rand, 0, (gint32)n)];
    if (k->step >= k->script->len)
      continue;
    Msg *m = &g_array_index(k->script, Msg, k->step);
    gsize total;
    const guint8 *p = g_bytes_get_data(m->bytes, &total);
    gsize want = (gsize)g_rand_int_range(f->rand, 1, 256 * 1024 + 1);   /* not inside MIN(): evaluated once */
    gsize chunk = MIN(total - k->off, want);
    uds_capture_conn_data(cap, &k->flow, m->dir, p + k->off, chunk, tick(f));
    g_byte_array_append(k->fed[m->dir], p + k->off, chunk);
    k->off += chunk;
    if (k->off == total) {
      k->off = 0;
      k->step++;
      if (k->half_close_first && k->step == k->script->len - 1)
        uds_capture_conn_shutdown(cap, &k->flow, UDS_DIR_C2S, tick(f));
      if (k->step == k->script->len) {
        live--;
        if (k->reset_at_end) {
          uds_capture_conn_reset(cap, &k->flow, UDS_DIR_C2S, tick(f));
        } else {
          if (!k->half_close_first)
            uds_capture_conn_shutdown(cap, &k->flow, UDS_DIR_C2S, tick(f));
          uds_capture_conn_shutdown(cap, &k->flow, UDS_DIR_S2C, tick(f));
        }
        uds_capture_conn_close(cap, &k->flow, tick(f));
      }
    }
    if (flush)
      g_assert_cmpint(uds_capture_flush(cap), ==, 0);
  }
}

/* The standard mix: 6 connections, a 1 MB body, pipelined requests, a half-close, a reset. */
static Conn *http_mix(Fixture *f, guint *n, guint *requests)
{
  *n = 6;
  Conn *c = conns_new(*n);
  *requests = 0;
  gsize bodies[] = { 1024 * 1024, 0, 12345, 70000, 1, 200000 };
  for (guint i = 0; i < *n; i++) {
    conn_add(&c[i], UDS_DIR_C2S, http_request(i, 0));
    conn_add(&c[i], UDS_DIR_S2C, http_response(f->rand, bodies[i]));
    (*requests)++;
  }
  conn_add(&c[2], UDS_DIR_C2S, http_request(2, 1));   /* keep-alive: a second exchange */
  conn_add(&c[2], UDS_DIR_S2C, http_response(f->rand, 300000));
  (*requests)++;
  c[3].half_close_first = TRUE;
  c[5].reset_at_end = TRUE;
  return c;
}

static void check_follow(const char *file, Conn *c, guint n)
{
  for (guint s = 0; s < n; s++) {
    GByteArray *got[2] = { g_byte_array_new(), g_byte_array_new() };
    guint16 port = 0;
    follow_stream(file, "tcp", s, got, &port);
    Conn *k = NULL;
    for (guint i = 0; i < n; i++)
      if (c[i].port == port)
        k = &c[i];
    g_assert_nonnull(k);
    for (int d = 0; d < 2; d++) {
      g_autofree char *want = sha256_hex(k->fed[d]->data, k->fed[d]->len);
      g_autofree char *have = sha256_hex(got[d]->data, got[d]->len);
      g_assert_cmpuint(got[d]->len, ==, k->fed[d]->len);
      g_assert_cmpstr(have, ==, want);
      g_byte_array_free(got[d], TRUE);
    }
  }
}

/* ---- tests ---- */

static void test_http(Fixture *f, gconstpointer data)
{
  UdsCaptureOptions opt = default_options("/run/test/docker.sock");
  UdsCapture *cap = capture_to_file(f->file, &opt);
  guint n, requests;
  Conn *c = http_mix(f, &n, &requests);
  run_workload(f, cap, c, n, TRUE);
  UdsCaptureStats st;
  capture_end(cap, &st);
  g_assert_cmpuint(st.connections, ==, n);
  g_assert_cmpuint(st.dropped_frames, ==, 0);
  g_assert_cmpuint(st.filtered_frames, ==, 0);
  guint64 fed = 0;
  for (guint i = 0; i < n; i++)
    fed += c[i].fed[0]->len + c[i].fed[1]->len;
  g_assert_cmpuint(st.bytes, ==, fed);

  g_assert_cmpuint(tshark_count(f->file, "http.request"), ==, requests);
  g_assert_cmpuint(tshark_count(f->file, "http.response"), ==, requests);
  g_autofree char *uris = tshark_run("-r", f->file, "-Y", "http.request", "-T", "fields", "-e", "http.request.uri", NULL);
  g_assert_nonnull(strstr(uris, "/conn2/req1"));
  g_assert_nonnull(strstr(uris, "/conn0/req0"));
  g_autofree char *lengths = tshark_run("-r", f->file, "-Y", "http.response", "-T", "fields", "-e", "http.content_length", NULL);
  g_assert_nonnull(strstr(lengths, "1048576"));
  /* Clean traffic: no TCP analysis remark at all, and every checksum right. */
  g_autofree char *flags = tshark_run("-r", f->file, "-Y", "tcp.analysis.flags", "-T", "fields", "-e", "frame.number",
                                      "-e", "_ws.expert.message", NULL);
  g_assert_cmpstr(flags, ==, "");
  g_autofree char *bad = tshark_run("-r", f->file, "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
                                    "-Y", "tcp.checksum.status != 1 || ip.checksum.status != 1 || _ws.malformed",
                                    "-T", "fields", "-e", "frame.number", NULL);
  g_assert_cmpstr(bad, ==, "");
  g_assert_cmpuint(tshark_count(f->file, "tcp.flags.syn == 1 && tcp.flags.ack == 0"), ==, n);
  g_assert_cmpuint(tshark_count(f->file, "tcp.flags.reset == 1"), ==, 1);
  g_assert_cmpuint(tshark_count(f->file, "tcp.flags.fin == 1"), ==, 2 * (n - 1));
  g_autofree char *streams = tshark_run("-r", f->file, "-T", "fields", "-e", "tcp.stream", "-Y", "tcp", NULL);
  g_autoptr(GHashTable) set = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  g_auto(GStrv) sl = g_strsplit(streams, "\n", -1);
  for (guint i = 0; sl[i]; i++)
    if (*sl[i])
      g_hash_table_add(set, g_strdup(sl[i]));
  g_assert_cmpuint(g_hash_table_size(set), ==, n);
  check_follow(f->file, c, n);

  /* Metadata: INFO first, then one OPEN and one CLOSE per connection, labelled. */
  guint frames;
  g_autoptr(GPtrArray) metas = read_meta(f->file, &frames);
  g_assert_cmpuint(frames, ==, st.frames);
  Meta *info = metas->pdata[0];
  g_assert_cmpuint(info->type, ==, UDS_META_INFO);
  g_assert_true(info->has_version && info->has_start);
  g_assert_cmpstr(info->path, ==, "/run/test/docker.sock");
  g_assert_cmpuint(count_meta(metas, UDS_META_OPEN), ==, n);
  g_assert_cmpuint(count_meta(metas, UDS_META_CLOSE), ==, n);
  g_assert_cmpuint(count_meta(metas, UDS_META_DROP), ==, 0);
  for (guint i = 0; i < metas->len; i++) {
    Meta *m = metas->pdata[i];
    if (m->type != UDS_META_OPEN)
      continue;
    g_assert_cmpuint(m->pid, ==, 1000 + (m->conn_id - 1));
    g_assert_cmpstr(m->comm, ==, (m->conn_id - 1) % 2 ? "curl" : "docker");
    g_assert_cmpstr(m->path, ==, "/run/test/docker.sock");
  }
  conns_free(c, n);
}

/* The same workload through a pipe read by tshark as it is written (lossless: the writer waits). */
static void test_live_pipe(Fixture *f, gconstpointer data)
{
  tshark_setup();
  const char *argv[] = { "timeout", "120", "tshark", "-r", "-", "-Y", "http.request", "-T", "fields", "-e",
                         "http.request.uri", NULL };
  g_auto(GStrv) env = g_environ_setenv(g_get_environ(), "HOME", tshark_home, TRUE);
  GPid pid;
  int in_fd, out_fd;
  g_autoptr(GError) error = NULL;
  g_assert_true(g_spawn_async_with_pipes(NULL, (char **)argv, env, G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD
                                         | G_SPAWN_STDERR_TO_DEV_NULL, NULL, NULL, &pid, &in_fd, &out_fd, NULL, &error));
  g_assert_no_error(error);
  UdsCaptureOptions opt = default_options("/run/test/live.sock");
  opt.buffer_bytes = 256 * 1024;
  opt.lossless = TRUE;
  UdsCapture *cap = uds_capture_new(in_fd, &opt, &error);
  g_assert_no_error(error);
  g_assert_true(fcntl(in_fd, F_GETFL) & O_NONBLOCK);
  guint n = 20;
  Conn *c = conns_new(n);
  for (guint i = 0; i < n; i++) {
    conn_add(&c[i], UDS_DIR_C2S, http_request(i, 0));
    conn_add(&c[i], UDS_DIR_S2C, http_response(f->rand, g_rand_int_range(f->rand, 0, 300000)));
  }
  /* As the relay does: flush after each event, and while full, wait for the reader. */
  guint waited = 0;
  for (guint i = 0; i < n; i++) {
    UdsConnMeta meta = { .client = &c[i].peer };
    uds_capture_conn_open(cap, &c[i].flow, &meta, tick(f));
    for (guint s = 0; s < c[i].script->len; s++) {
      Msg *m = &g_array_index(c[i].script, Msg, s);
      gsize len;
      const guint8 *p = g_bytes_get_data(m->bytes, &len);
      uds_capture_conn_data(cap, &c[i].flow, m->dir, p, len, tick(f));
      g_assert_cmpint(uds_capture_flush(cap), ==, 0);
      while (uds_capture_full(cap)) {
        struct pollfd pfd = { .fd = in_fd, .events = POLLOUT };
        g_assert_cmpint(poll(&pfd, 1, 10000), ==, 1);
        g_assert_cmpint(uds_capture_flush(cap), ==, 0);
        waited++;
      }
    }
    uds_capture_conn_shutdown(cap, &c[i].flow, UDS_DIR_C2S, tick(f));
    uds_capture_conn_shutdown(cap, &c[i].flow, UDS_DIR_S2C, tick(f));
    uds_capture_conn_close(cap, &c[i].flow, tick(f));
  }
  UdsCaptureStats st;
  capture_end(cap, &st);   /* closes the pipe: tshark sees the end */
  g_assert_cmpuint(st.dropped_frames, ==, 0);
  g_assert_cmpuint(waited, >, 0);   /* the reader was slower than the writer at least once */
  GString *out = g_string_new(NULL);
  char buf[4096];
  ssize_t r;
  while ((r = read(out_fd, buf, sizeof buf)) > 0)
    g_string_append_len(out, buf, r);
  close(out_fd);
  int status;
  g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
  g_spawn_close_pid(pid);
  g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  g_assert_cmpuint(count_lines(out->str), ==, n);
  g_assert_nonnull(strstr(out->str, "/conn19/req0"));
  g_string_free(out, TRUE);
  conns_free(c, n);
}

/* A tiny buffer and a reader that does not keep up: frames are dropped whole, Wireshark sees the gap,
 * a DROP metadata frame says how much, and the stats agree. */
static void test_drop(Fixture *f, gconstpointer data)
{
  UdsCaptureOptions opt = default_options("/run/test/drop.sock");
  opt.buffer_bytes = 256 * 1024;
  UdsCapture *cap = capture_to_file(f->file, &opt);
  g_assert_cmpint(uds_capture_flush(cap), ==, 0);
  UdsPeer peer = make_peer(42, 0, "slow");
  UdsConnMeta meta = { .client = &peer };
  UdsFlow flow;
  uds_capture_conn_open(cap, &flow, &meta, tick(f));
  g_autoptr(GBytes) req = http_request(1, 0);
  uds_capture_conn_data(cap, &flow, UDS_DIR_C2S, g_bytes_get_data(req, NULL), g_bytes_get_size(req), tick(f));
  gsize body = 3 * 1024 * 1024 + 100000;
  g_autoptr(GBytes) resp = http_response(f->rand, body);
  gsize total;
  const guint8 *p = g_bytes_get_data(resp, &total);
  /* Phase 1: 2 MB while nobody reads, in full-size segments (a smaller one could still fit, and
   * would carry the drop report at once). */
  gsize off = 0;
  while (off < 2 * 1000 * 1000) {
    uds_capture_conn_data(cap, &flow, UDS_DIR_S2C, p + off, UDS_FRAME_TCP_MSS, tick(f));
    off += UDS_FRAME_TCP_MSS;
    g_assert_false(uds_capture_full(cap));   /* not lossless: never asks the relay to wait */
  }
  UdsCaptureStats st;
  uds_capture_stats(cap, &st);
  g_assert_cmpuint(st.dropped_frames, >, 0);
  g_assert_cmpuint(flow.dropped[UDS_DIR_S2C], ==, st.dropped_bytes);
  guint64 dropped = st.dropped_bytes;
  /* Phase 2: the reader catches up; the rest is captured. */
  g_assert_cmpint(uds_capture_flush(cap), ==, 0);
  while (off < total) {
    gsize k = MIN(total - off, 65536);
    uds_capture_conn_data(cap, &flow, UDS_DIR_S2C, p + off, k, tick(f));
    off += k;
    g_assert_cmpint(uds_capture_flush(cap), ==, 0);
  }
  g_assert_cmpuint(flow.dropped[UDS_DIR_S2C], ==, 0);
  uds_capture_conn_shutdown(cap, &flow, UDS_DIR_C2S, tick(f));
  uds_capture_conn_shutdown(cap, &flow, UDS_DIR_S2C, tick(f));
  uds_capture_conn_close(cap, &flow, tick(f));
  capture_end(cap, &st);
  g_assert_cmpuint(st.dropped_bytes, ==, dropped);
  g_assert_cmpuint(st.bytes + st.dropped_bytes, ==, total + g_bytes_get_size(req));

  g_autoptr(GPtrArray) metas = read_meta(f->file, NULL);
  g_assert_cmpuint(count_meta(metas, UDS_META_DROP), ==, 1);
  for (guint i = 0; i < metas->len; i++) {
    Meta *m = metas->pdata[i];
    if (m->type == UDS_META_DROP) {
      g_assert_cmpuint(m->dropped, ==, dropped);
      g_assert_cmpuint(m->dir, ==, UDS_DIR_S2C);
    }
  }
  /* Wireshark: "previous segment not captured" where the gap is, and the gap is the dropped bytes. */
  g_assert_cmpuint(tshark_count(f->file, "tcp.analysis.lost_segment"), ==, 1);
  g_assert_cmpuint(seq_gaps(f->file, NULL), ==, dropped);
  /* The handshake and both FINs survived the flood (control frames have a reserve). */
  g_assert_cmpuint(tshark_count(f->file, "tcp.flags.syn == 1"), ==, 2);
  g_assert_cmpuint(tshark_count(f->file, "tcp.flags.fin == 1"), ==, 2);
}

static void test_filters(Fixture *f, gconstpointer data)
{
  struct {
    const char *filter;
    gboolean requests, responses;
  } cases[] = {
    { "tcp port 80", TRUE, TRUE },
    { "dst port 80", TRUE, FALSE },
    { "tcp port 9999", FALSE, FALSE },
  };
  for (guint k = 0; k < G_N_ELEMENTS(cases); k++) {
    UdsCaptureOptions opt = default_options("/run/test/filter.sock");
    opt.filter = cases[k].filter;
    UdsCapture *cap = capture_to_file(f->file, &opt);
    guint n = 3;
    Conn *c = conns_new(n);
    for (guint i = 0; i < n; i++) {
      conn_add(&c[i], UDS_DIR_C2S, http_request(i, 0));
      conn_add(&c[i], UDS_DIR_S2C, http_response(f->rand, 5000));
    }
    run_workload(f, cap, c, n, TRUE);
    UdsCaptureStats st;
    capture_end(cap, &st);
    g_assert_cmpuint(tshark_count(f->file, "http.request"), ==, cases[k].requests ? n : 0);
    g_assert_cmpuint(tshark_count(f->file, "http.response"), ==, cases[k].responses ? n : 0);
    if (!cases[k].responses)
      g_assert_cmpuint(tshark_count(f->file, "tcp.srcport == 80"), ==, 0);
    if (cases[k].requests && cases[k].responses)
      g_assert_cmpuint(st.filtered_frames, ==, 0);
    else
      g_assert_cmpuint(st.filtered_frames, >, 0);
    if (!cases[k].requests)
      g_assert_cmpuint(tshark_count(f->file, "tcp"), ==, 0);
    /* Metadata of captured connections passes any filter. */
    g_autoptr(GPtrArray) metas = read_meta(f->file, NULL);
    g_assert_cmpuint(count_meta(metas, UDS_META_OPEN), ==, n);
    g_assert_cmpuint(count_meta(metas, UDS_META_CLOSE), ==, n);
    conns_free(c, n);
  }

  /* Invalid: fails with libpcap's own message, writes nothing, leaves the fd as it was. */
  g_autofree char *msg = uds_capture_check_filter("tcp port");
  g_assert_nonnull(msg);
  g_assert_null(uds_capture_check_filter("tcp port 80 and not host 10.1.2.3"));
  g_assert_null(uds_capture_check_filter(""));
  int fd = open(f->file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  UdsCaptureOptions opt = default_options("/run/test/filter.sock");
  opt.filter = "tcp port";
  g_autoptr(GError) error = NULL;
  UdsCapture *cap = uds_capture_new(fd, &opt, &error);
  g_assert_null(cap);
  g_assert_error(error, UDS_ERROR, UDS_ERROR_INVALID);
  g_assert_nonnull(strstr(error->message, msg));
  g_assert_null(strchr(error->message, '\n'));
  g_assert_false(fcntl(fd, F_GETFL) & O_NONBLOCK);
  struct stat sb;
  g_assert_cmpint(fstat(fd, &sb), ==, 0);
  g_assert_cmpint(sb.st_size, ==, 0);
  close(fd);
}

/* Client filters exclude whole connections: not one frame of them. */
static void test_client_filters(Fixture *f, gconstpointer data)
{
  UdsCaptureOptions opt = default_options("/run/test/clients.sock");
  opt.only_comm = "curl";
  opt.only_uid = 1000;
  UdsCapture *cap = capture_to_file(f->file, &opt);
  UdsPeer a = make_peer(10, 1000, "curl"), b = make_peer(11, 1000, "wget"), c = make_peer(12, 0, "curl");
  UdsPeer *peers[] = { &a, &b, &c, NULL };
  UdsFlow flows[4];
  for (guint i = 0; i < 4; i++) {
    UdsConnMeta meta = { .client = peers[i] };
    uds_capture_conn_open(cap, &flows[i], &meta, tick(f));
    g_assert_cmpint(flows[i].captured, ==, i == 0);
    g_assert_cmpuint(flows[i].id, ==, i + 1);
    /* Even if called (the relay does not), nothing of an excluded connection is written. */
    uds_capture_conn_data(cap, &flows[i], UDS_DIR_C2S, (const guint8 *)"GET / HTTP/1.1\r\n\r\n", 18, tick(f));
    uds_capture_conn_close(cap, &flows[i], tick(f));
  }
  UdsCaptureStats st;
  capture_end(cap, &st);
  g_assert_cmpuint(st.connections, ==, 1);
  g_assert_cmpuint(tshark_count(f->file, "http.request"), ==, 1);
  g_assert_cmpuint(tshark_count(f->file, "tcp.flags.syn == 1 && tcp.flags.ack == 0"), ==, 1);
  g_autoptr(GPtrArray) metas = read_meta(f->file, NULL);
  g_assert_cmpuint(count_meta(metas, UDS_META_OPEN), ==, 1);

  opt = default_options("/run/test/clients.sock");
  opt.only_pid = 11;
  cap = capture_to_file(f->file, &opt);
  UdsFlow fl;
  uds_capture_conn_open(cap, &fl, &(UdsConnMeta){ .client = &a }, tick(f));
  g_assert_false(fl.captured);
  uds_capture_conn_open(cap, &fl, &(UdsConnMeta){ .client = &b }, tick(f));
  g_assert_true(fl.captured);
  uds_capture_conn_open(cap, &fl, &(UdsConnMeta){ .client = NULL }, tick(f));
  g_assert_false(fl.captured);   /* unknown client: a pid filter cannot match it */
  capture_end(cap, NULL);
}

/* Two captures of two sockets, merged: their conversations stay apart. */
static void test_mergecap(Fixture *f, gconstpointer data)
{
  const char *paths[2] = { "/run/test/a.sock", "/var/run/docker.sock" };
  g_assert_cmpuint(uds_frame_path_hash(paths[0], strlen(paths[0])), !=, uds_frame_path_hash(paths[1], strlen(paths[1])));
  guint counts[2] = { 3, 4 };
  char *files[2];
  for (int k = 0; k < 2; k++) {
    files[k] = g_strdup_printf("%s/cap%d.pcap", f->dir, k);
    UdsCaptureOptions opt = default_options(paths[k]);
    UdsCapture *cap = capture_to_file(files[k], &opt);
    Conn *c = conns_new(counts[k]);
    for (guint i = 0; i < counts[k]; i++) {
      conn_add(&c[i], UDS_DIR_C2S, http_request(i, 0));
      conn_add(&c[i], UDS_DIR_S2C, http_response(f->rand, 1000));
    }
    f->now.tv_sec = 1700000000;   /* both at the same time: the merge interleaves them */
    f->now.tv_nsec = 0;
    run_workload(f, cap, c, counts[k], TRUE);
    capture_end(cap, NULL);
    conns_free(c, counts[k]);
  }
  g_autofree char *merged = g_strdup_printf("%s/merged.pcap", f->dir);
  const char *argv[] = { "timeout", "60", "mergecap", "-w", merged, files[0], files[1], NULL };
  int status;
  g_autoptr(GError) error = NULL;
  g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDERR_TO_DEV_NULL, NULL, NULL,
                             NULL, NULL, &status, &error));
  g_assert_true(g_spawn_check_wait_status(status, NULL));
  g_autofree char *streams = tshark_run("-r", merged, "-Y", "tcp", "-T", "fields", "-e", "tcp.stream", NULL);
  g_autoptr(GHashTable) set = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  g_auto(GStrv) sl = g_strsplit(streams, "\n", -1);
  for (guint i = 0; sl[i]; i++)
    if (*sl[i])
      g_hash_table_add(set, g_strdup(sl[i]));
  g_assert_cmpuint(g_hash_table_size(set), ==, counts[0] + counts[1]);
  g_assert_cmpuint(tshark_count(merged, "http.request"), ==, counts[0] + counts[1]);
  g_autofree char *flags = tshark_run("-r", merged, "-Y", "tcp.analysis.flags", "-T", "fields", "-e", "frame.number", NULL);
  g_assert_cmpstr(flags, ==, "");
  for (int k = 0; k < 2; k++)
    g_free(files[k]);
}

/* Datagrams from 1 byte to 200 KB: each arrives whole, with its length, in order. */
static void test_datagrams(Fixture *f, gconstpointer data)
{
  UdsCaptureOptions opt = default_options("/run/test/dgram.sock");
  opt.sock_type = SOCK_DGRAM;
  opt.proto = &data_proto;
  UdsCapture *cap = capture_to_file(f->file, &opt);
  UdsPeer peer = make_peer(5, 5, "logger");
  UdsFlow flow;
  uds_capture_conn_open(cap, &flow, &(UdsConnMeta){ .client = &peer, .client_addr = "/tmp/client.sock" }, tick(f));
  gsize sizes[] = { 1, 2, 100, 1472, 1473, 65507, 65508, 100000, 131035, 200000, 3 };
  GPtrArray *sent = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
  for (guint i = 0; i < G_N_ELEMENTS(sizes); i++) {
    GBytes *b = random_bytes(f->rand, sizes[i]);
    int dir = i % 2;
    uds_capture_message(cap, &flow, dir, g_bytes_get_data(b, NULL), sizes[i], tick(f));
    g_ptr_array_add(sent, b);
    g_assert_cmpint(uds_capture_flush(cap), ==, 0);
  }
  uds_capture_conn_close(cap, &flow, tick(f));
  UdsCaptureStats st;
  capture_end(cap, &st);
  g_assert_cmpuint(st.dropped_frames, ==, 0);
  /* Over 65507 bytes the datagram is UDP-Lite (its length cannot fit UDP's field) in two fragments. */
  g_autofree char *out = tshark_run("-r", f->file, "-Y", "udp || udplite", "-T", "fields", "-e", "udp.length",
                                    "-e", "data.len", "-e", "data.data", "-e", "udp.srcport", NULL);
  g_auto(GStrv) lines = g_strsplit(out, "\n", -1);
  guint k = 0;
  for (guint i = 0; lines[i] && *lines[i]; i++, k++) {
    g_assert_cmpuint(k, <, G_N_ELEMENTS(sizes));
    g_auto(GStrv) fld = g_strsplit(lines[i], "\t", -1);
    g_assert_cmpuint(g_ascii_strtoull(fld[0], NULL, 10), ==, sizes[k] + 8);
    g_assert_cmpuint(g_ascii_strtoull(fld[1], NULL, 10), ==, sizes[k]);
    gsize hexlen = strlen(fld[2]);
    g_assert_cmpuint(hexlen, ==, 2 * sizes[k]);
    const guint8 *want = g_bytes_get_data(sent->pdata[k], NULL);
    for (gsize j = 0; j < sizes[k]; j++)
      g_assert_cmpuint((guint)(g_ascii_xdigit_value(fld[2][2 * j]) << 4 | g_ascii_xdigit_value(fld[2][2 * j + 1])), ==,
                       want[j]);
    g_assert_cmpuint(g_ascii_strtoull(fld[3], NULL, 10), ==, k % 2 ? 4 : flow.client_port);
  }
  g_assert_cmpuint(k, ==, G_N_ELEMENTS(sizes));
  /* Filters see a datagram as plain UDP, whole or not at all. */
  opt.filter = "udp and greater 1000";
  cap = capture_to_file(f->file, &opt);
  uds_capture_conn_open(cap, &flow, &(UdsConnMeta){ .client = &peer }, tick(f));
  for (guint i = 0; i < G_N_ELEMENTS(sizes); i++)
    uds_capture_message(cap, &flow, 0, g_bytes_get_data(sent->pdata[i], NULL), sizes[i], tick(f));
  capture_end(cap, &st);
  guint big = 0;
  for (guint i = 0; i < G_N_ELEMENTS(sizes); i++)
    big += sizes[i] + 42 >= 1000;
  g_assert_cmpuint(tshark_count(f->file, "udp || udplite"), ==, big);
  g_assert_cmpuint(st.filtered_frames, ==, G_N_ELEMENTS(sizes) - big);
  g_ptr_array_unref(sent);
}

static void test_snaplen(Fixture *f, gconstpointer data)
{
  UdsCaptureOptions opt = default_options("/run/test/snap.sock");
  opt.snaplen = 100;
  UdsCapture *cap = capture_to_file(f->file, &opt);
  guint n = 2;
  Conn *c = conns_new(n);
  for (guint i = 0; i < n; i++) {
    conn_add(&c[i], UDS_DIR_C2S, http_request(i, 0));
    conn_add(&c[i], UDS_DIR_S2C, http_response(f->rand, 150000));
  }
  run_workload(f, cap, c, n, TRUE);
  UdsCaptureStats st;
  capture_end(cap, &st);
  g_autofree char *out = tshark_run("-r", f->file, "-Y", "tcp.len > 0", "-T", "fields", "-e", "frame.cap_len",
                                    "-e", "frame.len", "-e", "tcp.len", NULL);
  g_auto(GStrv) lines = g_strsplit(out, "\n", -1);
  guint truncated = 0;
  for (guint i = 0; lines[i] && *lines[i]; i++) {
    g_auto(GStrv) fld = g_strsplit(lines[i], "\t", -1);
    guint64 caplen = g_ascii_strtoull(fld[0], NULL, 10), len = g_ascii_strtoull(fld[1], NULL, 10),
            tlen = g_ascii_strtoull(fld[2], NULL, 10);
    g_assert_cmpuint(len, ==, 54 + tlen);
    g_assert_cmpuint(caplen, ==, 54 + MIN(tlen, 100));
    truncated += caplen < len;
  }
  g_assert_cmpuint(truncated, >, 0);
  g_autofree char *flags = tshark_run("-r", f->file, "-Y", "tcp.analysis.flags", "-T", "fields", "-e", "frame.number", NULL);
  g_assert_cmpstr(flags, ==, "");
  g_assert_cmpuint(st.bytes, ==, c[0].fed[0]->len + c[0].fed[1]->len + c[1].fed[0]->len + c[1].fed[1]->len);
  conns_free(c, n);
}

/* Lossless: over the bound nothing is dropped; full() tells the relay to wait. */
static void test_lossless(Fixture *f, gconstpointer data)
{
  UdsCaptureOptions opt = default_options("/run/test/lossless.sock");
  opt.buffer_bytes = 128 * 1024;
  opt.lossless = TRUE;
  UdsCapture *cap = capture_to_file(f->file, &opt);
  g_assert_cmpint(uds_capture_flush(cap), ==, 0);
  g_assert_false(uds_capture_full(cap));
  guint n = 1;
  Conn *c = conns_new(n);
  conn_add(&c[0], UDS_DIR_C2S, http_request(0, 0));
  conn_add(&c[0], UDS_DIR_S2C, http_response(f->rand, 1024 * 1024));
  run_workload(f, cap, c, n, FALSE);   /* the reader never reads meanwhile */
  g_assert_true(uds_capture_full(cap));
  g_assert_true(uds_capture_wants_write(cap));
  g_assert_cmpint(uds_capture_flush(cap), ==, 0);
  g_assert_false(uds_capture_full(cap));
  UdsCaptureStats st;
  capture_end(cap, &st);
  g_assert_cmpuint(st.dropped_frames, ==, 0);
  g_assert_cmpuint(tshark_count(f->file, "http.response"), ==, 1);
  check_follow(f->file, c, n);
  conns_free(c, n);
}

/* The reader goes away: flush says EPIPE, and keeps saying it. */
static void test_epipe(Fixture *f, gconstpointer data)
{
  signal(SIGPIPE, SIG_IGN);   /* as the relay does */
  int p[2];
  g_assert_cmpint(pipe2(p, O_CLOEXEC), ==, 0);
  UdsCaptureOptions opt = default_options("/run/test/epipe.sock");
  g_autoptr(GError) error = NULL;
  UdsCapture *cap = uds_capture_new(p[1], &opt, &error);
  g_assert_no_error(error);
  g_assert_true(uds_capture_wants_write(cap));   /* the pcap header and INFO frame */
  g_assert_cmpint(uds_capture_flush(cap), ==, 0);
  char hdr[4];
  g_assert_cmpint(read(p[0], hdr, 4), ==, 4);
  g_assert_cmpmem(hdr, 4, "\x4d\x3c\xb2\xa1", 4);   /* nanosecond pcap, little-endian host */
  close(p[0]);
  UdsFlow flow;
  UdsPeer peer = make_peer(1, 0, "x");
  uds_capture_conn_open(cap, &flow, &(UdsConnMeta){ .client = &peer }, tick(f));
  uds_capture_conn_data(cap, &flow, UDS_DIR_C2S, (const guint8 *)"hello", 5, tick(f));
  errno = 0;
  g_assert_cmpint(uds_capture_flush(cap), ==, -1);
  g_assert_cmpint(errno, ==, EPIPE);
  g_assert_false(uds_capture_wants_write(cap));
  uds_capture_conn_data(cap, &flow, UDS_DIR_C2S, (const guint8 *)"more", 4, tick(f));
  errno = 0;
  g_assert_cmpint(uds_capture_flush(cap), ==, -1);
  g_assert_cmpint(errno, ==, EPIPE);
  uds_capture_finish(cap, 100);   /* returns at once */
  uds_capture_free(cap);
}

static void test_max_frames(Fixture *f, gconstpointer data)
{
  UdsCaptureOptions opt = default_options("/run/test/count.sock");
  opt.max_frames = 3;
  UdsCapture *cap = capture_to_file(f->file, &opt);
  UdsFlow flow;
  UdsPeer peer = make_peer(1, 0, "x");
  uds_capture_conn_open(cap, &flow, &(UdsConnMeta){ .client = &peer }, tick(f));
  for (int i = 0; i < 10; i++) {
    g_assert_cmpint(uds_capture_done(cap), ==, i >= 3);
    uds_capture_conn_data(cap, &flow, i % 2, (const guint8 *)"0123456789", 10, tick(f));
  }
  g_assert_true(uds_capture_done(cap));
  capture_end(cap, NULL);
  g_assert_cmpuint(tshark_count(f->file, "tcp.len > 0"), ==, 3);
}

static void test_ancillary(Fixture *f, gconstpointer data)
{
  UdsCaptureOptions opt = default_options("/run/test/anc.sock");
  UdsCapture *cap = capture_to_file(f->file, &opt);
  UdsFlow flow;
  UdsPeer peer = make_peer(1, 0, "x");
  uds_capture_conn_open(cap, &flow, &(UdsConnMeta){ .client = &peer }, tick(f));
  const char *desc[] = { "file /etc/hosts", "socket" };
  UdsAncillary anc = { .nfds = 2, .fd_desc = desc, .has_creds = TRUE, .pid = 9, .uid = 8, .gid = 7 };
  uds_capture_conn_ancillary(cap, &flow, UDS_DIR_S2C, &anc, tick(f));
  uds_capture_conn_data(cap, &flow, UDS_DIR_S2C, (const guint8 *)"x", 1, tick(f));
  capture_end(cap, NULL);
  g_autoptr(GPtrArray) metas = read_meta(f->file, NULL);
  g_assert_cmpuint(count_meta(metas, UDS_META_ANCILLARY), ==, 1);
  Meta *m = metas->pdata[2];
  g_assert_cmpuint(m->type, ==, UDS_META_ANCILLARY);
  g_assert_cmpuint(m->dir, ==, UDS_DIR_S2C);
  g_assert_cmpuint(m->fd_count, ==, 2);
  g_assert_cmpstr(m->fd_desc, ==, "file /etc/hosts,socket");
  /* Without the dissector, Wireshark shows it as the local experimental EtherType's data. */
  g_assert_cmpuint(tshark_count(f->file, "eth.type == 0x88b5"), ==, metas->len);
}

static char *read_file_text(const char *file)
{
  char *s = NULL;
  g_assert_true(g_file_get_contents(file, &s, NULL, NULL));
  return s;
}

static void test_text(Fixture *f, gconstpointer data)
{
  UdsCaptureOptions opt = default_options("/run/test/text.sock");
  opt.format = UDS_FORMAT_TEXT;
  opt.only_comm = "curl";
  UdsCapture *cap = capture_to_file(f->file, &opt);
  UdsPeer a = make_peer(4242, 1000, "curl"), b = make_peer(5, 0, "wget");
  UdsFlow fa, fb;
  uds_capture_conn_open(cap, &fa, &(UdsConnMeta){ .client = &a, .server_pid = 7, .server_comm = "dockerd" }, tick(f));
  uds_capture_conn_open(cap, &fb, &(UdsConnMeta){ .client = &b }, tick(f));
  g_assert_false(fb.captured);
  const char *req = "GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n";
  uds_capture_conn_data(cap, &fa, UDS_DIR_C2S, (const guint8 *)req, strlen(req), tick(f));
  const guint8 bin[] = { 0, 1, 2, 3, 0xff, 'A', 'B' };
  uds_capture_conn_data(cap, &fa, UDS_DIR_S2C, bin, sizeof bin, tick(f));
  const char *evil = "title \x1b]0;pwned\x07 caf\xc3\xa9 \xc2\x9b done";
  uds_capture_conn_data(cap, &fa, UDS_DIR_S2C, (const guint8 *)evil, strlen(evil), tick(f));
  const char *desc[] = { "pipe" };
  uds_capture_conn_ancillary(cap, &fa, UDS_DIR_C2S, &(UdsAncillary){ .nfds = 1, .fd_desc = desc }, tick(f));
  uds_capture_conn_shutdown(cap, &fa, UDS_DIR_C2S, tick(f));
  uds_capture_conn_reset(cap, &fa, UDS_DIR_S2C, tick(f));
  uds_capture_conn_close(cap, &fa, tick(f));
  UdsCaptureStats st;
  capture_end(cap, &st);
  g_autofree char *text = read_file_text(f->file);
  g_test_message("text view:\n%s", text);
  g_assert_nonnull(strstr(text, "/run/test/text.sock  capturing (stream, http)\n"));
  g_assert_nonnull(strstr(text, "#1 curl[4242] -- /run/test/text.sock  connected (uid 1000 gid 1000), server dockerd[7]\n"));
  g_assert_nonnull(strstr(text, "#1 curl[4242] -> /run/test/text.sock  37 bytes\nGET /_ping HTTP/1.1\\r\nHost: docker\\r\n\\r\n"));
  g_assert_nonnull(strstr(text, "#1 curl[4242] <- /run/test/text.sock  7 bytes (binary)\n"
                                "00000000  00 01 02 03 ff 41 42                              |.....AB|\n"));
  g_assert_nonnull(strstr(text, "title \\x1b]0;pwned\\x07 caf\xc3\xa9 \\xc2\\x9b done\n"));
  g_assert_null(strchr(text, '\x1b'));
  g_assert_nonnull(strstr(text, "-> /run/test/text.sock  passes 1 descriptor: pipe\n"));
  g_assert_nonnull(strstr(text, "-> /run/test/text.sock  end of data\n"));
  g_assert_nonnull(strstr(text, "<- /run/test/text.sock  reset\n"));
  g_assert_nonnull(strstr(text, "-- /run/test/text.sock  closed\n"));
  g_assert_null(strstr(text, "wget"));
  /* Each event line starts with the time. */
  g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
  g_assert_true(g_regex_match_simple("^\\d\\d:\\d\\d:\\d\\d\\.\\d{6} ", lines[0], 0, 0));
  g_assert_cmpuint(st.dropped_frames, ==, 0);

  /* Hex everywhere with -x; a slow terminal drops events and says so. */
  opt = default_options("/run/test/text.sock");
  opt.format = UDS_FORMAT_TEXT;
  opt.hex = TRUE;
  opt.buffer_bytes = 64 * 1024;
  cap = capture_to_file(f->file, &opt);
  uds_capture_conn_open(cap, &fa, &(UdsConnMeta){ .client = &a }, tick(f));
  uds_capture_conn_data(cap, &fa, UDS_DIR_C2S, (const guint8 *)"AB", 2, tick(f));
  g_autoptr(GBytes) big = random_bytes(f->rand, 40000);
  for (int i = 0; i < 10; i++)
    uds_capture_conn_data(cap, &fa, UDS_DIR_S2C, g_bytes_get_data(big, NULL), 40000, tick(f));
  uds_capture_stats(cap, &st);
  g_assert_cmpuint(st.dropped_frames, >, 0);
  g_assert_cmpint(uds_capture_flush(cap), ==, 0);
  uds_capture_conn_data(cap, &fa, UDS_DIR_S2C, (const guint8 *)"Z", 1, tick(f));
  capture_end(cap, &st);
  g_autofree char *text2 = read_file_text(f->file);
  g_assert_nonnull(strstr(text2, "-> /run/test/text.sock  2 bytes\n00000000  41 42 "));
  g_autofree char *lost = g_strdup_printf("<- /run/test/text.sock  lost %" G_GUINT64_FORMAT " bytes (capture buffer full)\n",
                                          st.dropped_bytes);
  g_assert_nonnull(strstr(text2, lost));
  g_assert_nonnull(strstr(text2, "<- /run/test/text.sock  1 bytes\n00000000  5a "));
}

/* ---- zero copy: payload captured from a pipe (uds_capture_conn_tee) ---- */

/* Puts n bytes in a pipe, as the relay's splice from a socket would. */
static int pipe_with(const guint8 *p, gsize n)
{
  int fds[2];
  g_assert_cmpint(pipe2(fds, O_CLOEXEC | O_NONBLOCK), ==, 0);
  g_assert_cmpint(fcntl(fds[1], F_SETPIPE_SZ, 1 << 20), >=, (int)n);
  g_assert_cmpint(write(fds[1], p, n), ==, (gssize)n);
  close(fds[1]);
  return fds[0];
}

/* What the relay does with one splice's bytes: the capture tees what it can, the relay forwards them
 * (here: reads them out of the pipe) and hands the rest to the copy path. */
static gsize tee_or_copy(Fixture *f, UdsCapture *cap, UdsFlow *flow, int dir, const guint8 *p, gsize n)
{
  int rd = pipe_with(p, n);
  gsize t = uds_capture_conn_tee(cap, flow, dir, rd, n, tick(f));
  g_assert_cmpuint(t, <=, n);
  g_autofree guint8 *out = g_malloc(n);
  g_assert_cmpint(read(rd, out, n), ==, (gssize)n);   /* tee left the bytes where they were */
  g_assert_cmpmem(out, n, p, n);
  close(rd);
  if (t < n)
    uds_capture_conn_data(cap, flow, dir, p + t, n - t, tick(f));
  return t;
}

/* tshark follows TCP stream 0 of file to exactly these bytes each way, with no analysis remark and
 * nothing malformed. */
static void assert_clean_stream(const char *file, const GByteArray *c2s, const GByteArray *s2c)
{
  GByteArray *got[2] = { g_byte_array_new(), g_byte_array_new() };
  follow_stream(file, "tcp", 0, got, NULL);
  g_assert_cmpmem(got[0]->data, got[0]->len, c2s->data, c2s->len);
  g_assert_cmpmem(got[1]->data, got[1]->len, s2c->data, s2c->len);
  g_byte_array_unref(got[0]);
  g_byte_array_unref(got[1]);
  g_autofree char *flags = tshark_run("-r", file, "-Y", "tcp.analysis.flags || _ws.malformed", "-T", "fields",
                                      "-e", "frame.number", NULL);
  g_assert_cmpstr(flags, ==, "");
}

/* A capture into the fixture's file with one connection of a "bulk" client open. */
static UdsCapture *bulk_capture(Fixture *f, const char *path, pid_t pid, UdsFlow *flow)
{
  UdsCaptureOptions opt = default_options(path);
  UdsCapture *cap = capture_to_file(f->file, &opt);
  UdsPeer peer = make_peer(pid, 0, "bulk");
  UdsConnMeta meta = { .client = &peer };
  uds_capture_conn_open(cap, flow, &meta, tick(f));
  return cap;
}

static void test_tee(Fixture *f, gconstpointer data)
{
  UdsFlow flow;
  UdsCapture *cap = bulk_capture(f, "/run/test/tee.sock", 77, &flow);
  g_autoptr(GByteArray) want0 = g_byte_array_new(), want1 = g_byte_array_new();
  gsize teed = 0;
  for (guint i = 0; i < 12; i++) {
    /* A small request by copy, then a reply of up to 300 kB by tee: both kinds interleave in the
     * stream, and records written from memory and from the staging pipe keep their order. */
    g_autoptr(GBytes) req = http_request(1, i);
    uds_capture_conn_data(cap, &flow, UDS_DIR_C2S, g_bytes_get_data(req, NULL), g_bytes_get_size(req), tick(f));
    g_byte_array_append(want0, g_bytes_get_data(req, NULL), g_bytes_get_size(req));
    g_autoptr(GBytes) body = random_bytes(f->rand, 65536 + i * 20000);
    gsize n;
    const guint8 *p = g_bytes_get_data(body, &n);
    teed += tee_or_copy(f, cap, &flow, UDS_DIR_S2C, p, n);
    g_byte_array_append(want1, p, n);
    if (i % 3 == 0)
      g_assert_cmpint(uds_capture_flush(cap), ==, 0);
  }
  g_assert_cmpuint(teed, ==, want1->len);   /* a reader that keeps up: all of it by tee */
  uds_capture_conn_shutdown(cap, &flow, UDS_DIR_C2S, tick(f));
  uds_capture_conn_shutdown(cap, &flow, UDS_DIR_S2C, tick(f));
  uds_capture_conn_close(cap, &flow, tick(f));
  UdsCaptureStats st;
  capture_end(cap, &st);
  g_assert_cmpuint(st.dropped_frames, ==, 0);
  g_assert_cmpuint(st.bytes, ==, want0->len + want1->len);

  /* tshark: the same bytes, no analysis remark, nothing malformed; checksums right on copied frames
   * and 0 (unverified) exactly on the teed ones. */
  assert_clean_stream(f->file, want0, want1);
  g_autofree char *bad = tshark_run("-r", f->file, "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
                                    "-Y", "ip.checksum.status != 1 || (tcp.checksum.status != 1 && tcp.checksum != 0) || "
                                    "(tcp.checksum == 0 && !(tcp.srcport == 80 && tcp.len > 0))",
                                    "-T", "fields", "-e", "frame.number", NULL);
  g_assert_cmpstr(bad, ==, "");
  guint frames;
  g_autoptr(GPtrArray) metas = read_meta(f->file, &frames);
  g_assert_cmpuint(frames, ==, st.frames);
  g_assert_cmpuint(tshark_count(f->file, "tcp.checksum == 0"), >=, 12);
}

/* Past the bound, teed bytes are dropped and reported like copied ones: counted, a DROP frame before
 * the next frame that fits, and a sequence gap of exactly the bytes lost. */
static void test_tee_drop(Fixture *f, gconstpointer data)
{
  UdsCaptureOptions opt = default_options("/run/test/teedrop.sock");
  opt.buffer_bytes = 256 * 1024;
  int pfd[2];
  g_assert_cmpint(pipe2(pfd, O_CLOEXEC), ==, 0);
  g_autoptr(GError) error = NULL;
  UdsCapture *cap = uds_capture_new(pfd[1], &opt, &error);
  g_assert_no_error(error);
  /* The reader: a child copying the pipe to the file (started later: nobody reads at first). */
  UdsPeer peer = make_peer(78, 0, "bulk");
  UdsConnMeta meta = { .client = &peer };
  UdsFlow flow;
  uds_capture_conn_open(cap, &flow, &meta, tick(f));
  g_autoptr(GBytes) body = random_bytes(f->rand, 6 * 1000 * 1000);
  gsize total;
  const guint8 *p = g_bytes_get_data(body, &total);
  gsize off = 0;
  while (off < 3 * 1000 * 1000) {   /* nobody reads: the pipe (1 MiB) and the bound fill, then drops */
    tee_or_copy(f, cap, &flow, UDS_DIR_S2C, p + off, 200000);
    off += 200000;
    uds_capture_flush(cap);
  }
  UdsCaptureStats st;
  uds_capture_stats(cap, &st);
  g_assert_cmpuint(st.dropped_bytes, >, 0);
  guint64 dropped = st.dropped_bytes;
  pid_t child = fork();
  g_assert_cmpint(child, >=, 0);
  if (child == 0) {
    close(pfd[1]);
    int out = open(f->file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    char buf[65536];
    ssize_t k;
    while ((k = read(pfd[0], buf, sizeof buf)) > 0)
      if (write(out, buf, (size_t)k) != k)
        _exit(1);
    _exit(0);
  }
  close(pfd[0]);
  while (off < total) {   /* the reader keeps up now: captured again, after the DROP report */
    gsize k = MIN(total - off, 200000);
    while (uds_capture_wants_write(cap)) {
      struct pollfd q = { .fd = uds_capture_fd(cap), .events = POLLOUT };
      g_assert_cmpint(poll(&q, 1, 10000), ==, 1);
      g_assert_cmpint(uds_capture_flush(cap), ==, 0);
    }
    tee_or_copy(f, cap, &flow, UDS_DIR_S2C, p + off, k);
    off += k;
  }
  uds_capture_conn_close(cap, &flow, tick(f));
  capture_end(cap, &st);
  int status;
  g_assert_cmpint(waitpid(child, &status, 0), ==, child);
  g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  g_assert_cmpuint(st.dropped_bytes, ==, dropped);
  g_assert_cmpuint(st.bytes + st.dropped_bytes, ==, total);
  g_autoptr(GPtrArray) metas = read_meta(f->file, NULL);
  g_assert_cmpuint(count_meta(metas, UDS_META_DROP), ==, 1);
  guint64 seen;
  g_assert_cmpuint(seq_gaps(f->file, &seen), ==, dropped);
  g_assert_cmpuint(seen, ==, st.bytes);
}

/* The short way's one awkward case (capture.c, "The short way"): a batch of many small messages, a
 * pipe buffer each (here: a packet-mode pipe, as a splice of many small socket messages makes), teed
 * while the assembly pipe holds an unflushed earlier batch, so that it has fewer buffers left than the
 * batch needs and takes only part of it.  The rest must follow through the staging pipe: the capture
 * holds every byte once, in order, with the frames Wireshark expects. */
static void test_tee_short(Fixture *f, gconstpointer data)
{
  UdsFlow flow;
  UdsCapture *cap = bulk_capture(f, "/run/test/teeshort.sock", 79, &flow);
  g_assert_cmpint(uds_capture_flush(cap), ==, 0);
  g_autoptr(GByteArray) want = g_byte_array_new();
  for (guint round = 0; round < 3; round++) {
    /* Two batches of 250 kB in page-sized buffers: about 130 of the assembly pipe's 256, not flushed. */
    gsize n;
    for (guint i = 0; i < 2; i++) {
      g_autoptr(GBytes) big = random_bytes(f->rand, 250000);
      const guint8 *p = g_bytes_get_data(big, &n);
      g_assert_cmpuint(tee_or_copy(f, cap, &flow, UDS_DIR_S2C, p, n), ==, n);
      g_byte_array_append(want, p, n);
    }
    /* 250 messages of 200 bytes, one buffer each. */
    int fds[2];
    g_assert_cmpint(pipe2(fds, O_CLOEXEC | O_NONBLOCK | O_DIRECT), ==, 0);
    g_assert_cmpint(fcntl(fds[1], F_SETPIPE_SZ, 1 << 20), >=, 1 << 20);
    g_autoptr(GBytes) small = random_bytes(f->rand, 250 * 200);
    const guint8 *q = g_bytes_get_data(small, &n);
    for (gsize off = 0; off < n; off += 200)
      g_assert_cmpint(write(fds[1], q + off, 200), ==, 200);
    close(fds[1]);
    UdsCaptureStats before;
    uds_capture_stats(cap, &before);
    g_assert_cmpuint(uds_capture_conn_tee(cap, &flow, UDS_DIR_S2C, fds[0], n, tick(f)), ==, n);
    UdsCaptureStats after;
    uds_capture_stats(cap, &after);
    g_assert_cmpuint(after.short_tees, ==, before.short_tees + 1);
    g_autofree guint8 *out = g_malloc(n);
    for (gsize off = 0; off < n; off += 200)   /* tee left the bytes where they were; a read per message */
      g_assert_cmpint(read(fds[0], out + off, n - off), ==, 200);
    g_assert_cmpmem(out, n, q, n);
    close(fds[0]);
    g_byte_array_append(want, q, n);
    g_assert_cmpint(uds_capture_flush(cap), ==, 0);
  }
  uds_capture_conn_close(cap, &flow, tick(f));
  UdsCaptureStats st;
  capture_end(cap, &st);
  g_assert_cmpuint(st.dropped_frames, ==, 0);
  g_assert_cmpuint(st.short_tees, ==, 3);
  g_autoptr(GByteArray) none = g_byte_array_new();
  assert_clean_stream(f->file, none, want);
  /* Every batch one frame: the big ones past 64 KiB (IPv4 total length 0, which tshark shows as the
   * frame's), the small ones whole although their payload came in two parts. */
  g_assert_cmpuint(tshark_count(f->file, "tcp.len == 250000 && tcp.checksum == 0"), ==, 6);
  g_assert_cmpuint(tshark_count(f->file, "tcp.len == 50000 && tcp.checksum == 0"), ==, 3);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_autofree char *tshark = g_find_program_in_path("tshark");
  g_autofree char *mergecap = g_find_program_in_path("mergecap");
  if (!tshark || !mergecap)
    g_error("tshark and mergecap are needed (Debian: tshark, wireshark-common)");
#define ADD(name, fn) g_test_add("/capture/" name, Fixture, NULL, fixture_setup, fn, fixture_teardown)
  ADD("http", test_http);
  ADD("tee-short", test_tee_short);
  ADD("live-pipe", test_live_pipe);
  ADD("drop", test_drop);
  ADD("filters", test_filters);
  ADD("client-filters", test_client_filters);
  ADD("mergecap", test_mergecap);
  ADD("datagrams", test_datagrams);
  ADD("snaplen", test_snaplen);
  ADD("lossless", test_lossless);
  ADD("epipe", test_epipe);
  ADD("max-frames", test_max_frames);
  ADD("ancillary", test_ancillary);
  ADD("text", test_text);
  ADD("tee", test_tee);
  ADD("tee-drop", test_tee_drop);
  int rc = g_test_run();
  tshark_teardown();
  return rc;
}
