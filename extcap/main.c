/* udsdump — the executable: Wireshark's extcap entry point and a tcpdump-like command.
 *
 * A capture is: check everything (options, filter, the socket and its folder) while nothing has
 * changed; open the output; start the capture writer; start the guardian; interpose (or open the side
 * socket); run the relay until Wireshark's SIGTERM, the reader leaving, or -c; the relay puts the
 * socket back.  Under Wireshark, stderr is the user's error dialog: only real errors go there, one line
 * each, and a failed start opens and closes the FIFO so tshark does not wait forever for a header.
 */
#include "capture.h"
#include "discover.h"
#include "log.h"
#include "observe.h"
#include "options.h"
#include "privilege.h"
#include "protocol.h"
#include "relay.h"
#include "side.h"
#include "swap.h"
#include "wellknown.h"

#include <config.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* Wireshark waits on the FIFO for a pcap header: on a failed start, open it and close it so the
 * error reaches the user at once (as Wireshark's own example extcap does). */
static void release_fifo(const UdsOptions *o)
{
  if (!o->from_wireshark || !o->fifo || strcmp(o->fifo, "-") == 0)
    return;
  struct stat st;
  if (stat(o->fifo, &st) != 0 || !S_ISFIFO(st.st_mode))
    return;
  /* dumpcap may not have opened its end yet (ENXIO for a non-blocking writer): give it a few seconds
   * rather than block forever if nobody ever will. */
  for (int i = 0; i < 100; i++) {
    int fd = open(o->fifo, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) {
      close(fd);
      return;
    }
    if (errno != ENXIO)
      return;
    g_usleep(50 * 1000);
  }
}

static int list_interfaces(gboolean extcap)
{
  g_autoptr(GError) err = NULL;
  g_autoptr(GPtrArray) socks = uds_discover(NULL, TRUE, &err);
  if (!socks) {
    /* An extcap that fails here hides nothing but itself; still list the generic interface. */
    uds_warn("cannot list sockets: %s", err->message);
  }
#if UDS_HAVE_BPF
  /* Abstract sockets after the paths: only observe mode (built here) can capture them. */
  g_autoptr(GPtrArray) names = socks ? uds_discover_abstract(NULL, TRUE, NULL) : NULL;
  for (guint i = 0; names && i < names->len; i++)
    g_ptr_array_add(socks, g_steal_pointer(&g_ptr_array_index(names, i)));
  if (names)
    g_ptr_array_set_size(names, 0);
#endif
  if (extcap) {
    uds_extcap_print_interfaces(stdout, socks);
    return 0;
  }
  if (!socks) {
    fprintf(stderr, "udsdump: cannot list sockets: %s\n", err->message);
    return 1;
  }
  for (guint i = 0; i < socks->len; i++) {
    const UdsSocketInfo *s = g_ptr_array_index(socks, i);
    g_autofree char *value = uds_iface_encode(s->path);
    g_autofree char *disp = uds_socket_display(s);
    /* tcpdump -D style: number, name, then what it is. */
    const char *what = disp;
    if (g_str_has_prefix(disp, s->path))
      what = disp + strlen(s->path);
    while (*what == ' ')
      what++;
    printf("%u.%s%s%s%s\n", i + 1, value, *what ? " " : "", *what && *what != '(' ? "- " : "", what);
  }
  if (socks->len == 0)
    printf("(no Unix sockets are listening)\n");
  return 0;
}

/* The group install opens what the user names with the user's rights: say so when that fails. */
static const char *own_rights_note(gboolean denied)
{
  return uds_priv_capability_mode() && denied ? " (opened with your own rights)" : "";
}

static int open_output(const UdsOptions *o, UdsCaptureFormat *format, GError **error)
{
  const char *target = o->fifo ? o->fifo : o->write_file;
  *format = UDS_FORMAT_PCAP;
  if (!target) {
    *format = UDS_FORMAT_TEXT;
    target = "-";
  }
  int fd;
  if (strcmp(target, "-") == 0) {
    /* Keep the real stdout for the capture and point fd 1 at /dev/null, so nothing printed by
     * accident can corrupt the pcap stream. */
    fd = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
    int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (fd >= 0 && null >= 0) {
      fflush(stdout);
      dup2(null, STDOUT_FILENO);
    }
    if (null >= 0)
      close(null);
  } else if (o->fifo) {
    fd = open(target, O_WRONLY | O_CLOEXEC);
  } else {
    fd = open(target, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  }
  if (fd < 0) {
    int e = errno;
    g_set_error(error, UDS_ERROR, UDS_ERROR_SYSTEM, "cannot open %s for the capture: %s%s", target, g_strerror(e),
                own_rights_note(e == EACCES || e == EPERM));
  }
  return fd;
}

static void block_stop_signals(void)
{
  /* From here on a stop signal must reach the relay's signalfd, never kill us between interposing
   * and the loop (the guardian would restore, but the capture would end without its summary). */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  sigprocmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);
}

static void print_summary(const UdsOptions *o, const UdsRelayStats *rs, const UdsCaptureStats *cs)
{
  g_autofree char *line = g_strdup_printf(
    "%" G_GUINT64_FORMAT " connections, %" G_GUINT64_FORMAT " bytes relayed (%" G_GUINT64_FORMAT " to the server, %"
    G_GUINT64_FORMAT " back), %" G_GUINT64_FORMAT " frames captured, %" G_GUINT64_FORMAT " dropped (%" G_GUINT64_FORMAT
    " bytes)%s",
    rs->accepted, rs->bytes[0] + rs->bytes[1], rs->bytes[0], rs->bytes[1], cs->frames, cs->dropped_frames,
    cs->dropped_bytes, rs->refused ? " - some clients were refused, see the log" : "");
  if (o->from_wireshark)
    uds_log(UDS_LOG_MESSAGE, "%s", line);  /* stderr would become an error dialog */
  else
    fprintf(stderr, "udsdump: %s\n", line);
}

/* Observe mode (src/observe.c) when built with -Dbpf; otherwise the one line that says why not. */
#if UDS_HAVE_BPF
static UdsObserve *observe_start(const char *path, GError **error)
{
  return uds_observe_start(path, error);
}

static void observe_target(UdsObserve *obs, int *sock_type, pid_t *server_pid, char **server_comm)
{
  *sock_type = uds_observe_sock_type(obs);
  *server_pid = uds_observe_server_pid(obs);
  *server_comm = g_strdup(uds_observe_server_comm(obs));
}

static gboolean observe_run(const UdsOptions *o, UdsObserve *obs, UdsCapture *cap, GError **error)
{
  uds_info("capturing %s in observe mode", uds_observe_server_comm(obs) ? uds_observe_server_comm(obs) : "");
  UdsObserveStats st = { 0 };
  gboolean ok = uds_observe_run(obs, cap, &st, error);
  UdsCaptureStats cs;
  uds_capture_stats(cap, &cs);
  g_autofree char *line = g_strdup_printf(
    "observed %" G_GUINT64_FORMAT " connections, %" G_GUINT64_FORMAT " bytes sent (%" G_GUINT64_FORMAT " to the server, %"
    G_GUINT64_FORMAT " back), %" G_GUINT64_FORMAT " lost in the kernel, %" G_GUINT64_FORMAT " frames captured, %"
    G_GUINT64_FORMAT " dropped (%" G_GUINT64_FORMAT " bytes)", st.connections, st.bytes[0] + st.bytes[1], st.bytes[0],
    st.bytes[1], st.lost_bytes, cs.frames, cs.dropped_frames, cs.dropped_bytes);
  if (o->from_wireshark)
    uds_log(UDS_LOG_MESSAGE, "%s", line);
  else
    fprintf(stderr, "udsdump: %s\n", line);
  return ok;
}

static void observe_free(UdsObserve *obs)
{
  uds_observe_free(obs);
}
#else
static UdsObserve *observe_start(const char *path, GError **error)
{
  g_set_error(error, UDS_ERROR, UDS_ERROR_INVALID,
              "observe mode is not available: this udsdump was built without eBPF (meson setup -Dbpf=enabled)");
  return NULL;
}

static void observe_target(UdsObserve *obs, int *sock_type, pid_t *server_pid, char **server_comm)
{
}

static gboolean observe_run(const UdsOptions *o, UdsObserve *obs, UdsCapture *cap, GError **error)
{
  return FALSE;
}

static void observe_free(UdsObserve *obs)
{
}
#endif

static int capture(const UdsOptions *o)
{
  g_autoptr(GError) err = NULL;
  g_autofree char *path = uds_options_socket_path(o, &err);
  UdsSwap *swap = NULL;
  UdsSide *side = NULL;
  UdsObserve *observer = NULL;
  UdsCapture *cap = NULL;
  int out_fd = -1, listen_fd = -1, rc = 1;
  int sock_type = SOCK_STREAM;
  pid_t server_pid = 0;
  g_autofree char *server_comm = NULL;
  UdsProto proto_storage;
  const UdsProto *proto = NULL;

  if (!path)
    goto fail;
  if (o->protocol && g_ascii_strcasecmp(o->protocol, "auto") != 0)
    proto = uds_proto_by_name(o->protocol, &proto_storage);
  if (o->filter && *o->filter) {
    g_autofree char *msg = uds_capture_check_filter(o->filter);
    if (msg) {
      g_set_error(&err, UDS_ERROR, UDS_ERROR_INVALID, "invalid capture filter \"%s\": %s", o->filter, msg);
      goto fail;
    }
  }

  /* Every check before anything changes. */
  if (o->mode == UDS_MODE_OBSERVE) {
    observer = observe_start(path, &err);
    if (!observer)
      goto fail;
    observe_target(observer, &sock_type, &server_pid, &server_comm);
  } else if (o->mode == UDS_MODE_INTERPOSE) {
    swap = uds_swap_prepare(path, &err);
    if (!swap)
      goto fail;
    sock_type = uds_swap_sock_type(swap);
    server_pid = uds_swap_server_pid(swap);
    server_comm = g_strdup(uds_swap_server_comm(swap));
  } else {
    g_autoptr(UdsSocketInfo) info = NULL;
    if (!uds_discover_lookup(NULL, path, &info)) {
      g_set_error(&err, UDS_ERROR, UDS_ERROR_REFUSED, "%s: no server is listening on this socket", path);
      goto fail;
    }
    sock_type = info->type;
    server_pid = info->pid;
    server_comm = g_strdup(info->comm);
    struct stat st;
    if (lstat(o->side_path, &st) == 0) {
      g_set_error(&err, UDS_ERROR, UDS_ERROR_REFUSED, "side path %s already exists: choose a new path", o->side_path);
      goto fail;
    }
  }

  block_stop_signals();
  UdsCaptureFormat format;
  out_fd = open_output(o, &format, &err);
  if (out_fd < 0)
    goto fail;
  UdsCaptureOptions copts = {
    .path = path,
    .sock_type = sock_type,
    .proto = proto,
    .format = format,
    .snaplen = (guint)o->snaplen,
    .buffer_bytes = (gsize)o->buffer_mib << 20,
    /* Observe mode: the kernel's ring buffer is the bounded buffer (its losses are counted there); the
     * capture never drops, udsdump stops draining the ring instead (src/observe.c, "Losses"). */
    .lossless = o->lossless || observer,
    .filter = o->filter,
    .only_pid = o->only_pid,
    .only_comm = o->only_comm,
    .only_uid = o->only_uid,
    .max_frames = (guint64)o->count,
    .hex = o->hex,
    .source = observer ? "observe" : NULL,
  };
  cap = uds_capture_new(out_fd, &copts, &err);
  out_fd = -1;  /* the capture owns it now, even on failure */
  if (!cap)
    goto fail;
  if (observer) {
    rc = observe_run(o, observer, cap, &err) ? 0 : 1;
    if (rc)
      goto fail;
    goto out;
  }

  const char *upstream = path;
  if (swap) {
    if (!uds_swap_guard(swap, &err))
      goto fail;
    listen_fd = uds_swap_install(swap, &err);
    if (listen_fd < 0)
      goto fail;
    upstream = uds_swap_upstream(swap);
  } else {
    side = uds_side_open(o->side_path, path, sock_type, &listen_fd, &err);
    if (!side)
      goto fail;
  }
  uds_info("capturing %s (%s) as %s", path, sock_type == SOCK_STREAM ? "stream" : sock_type == SOCK_DGRAM ? "datagram" : "seqpacket",
           swap ? "interposed relay" : o->side_path);

  UdsRelayConfig rcfg = {
    .path = swap ? path : o->side_path,
    .upstream = upstream,
    .listen_fd = listen_fd,
    .sock_type = sock_type,
    .swap = swap,
    .capture = cap,
    .keep_inflight = !o->close_inflight,
    .server_pid = server_pid,
    .server_comm = server_comm,
    /* Only for a person at a terminal writing a pcap (the text view is its own progress). */
    .progress = !o->from_wireshark && isatty(STDERR_FILENO) && format == UDS_FORMAT_PCAP,
  };
  UdsRelayStats rstats = { 0 };
  listen_fd = -1;  /* the relay owns it */
  gboolean ok = uds_relay_run(&rcfg, &rstats, &err);
  UdsCaptureStats cstats;
  uds_capture_stats(cap, &cstats);
  print_summary(o, &rstats, &cstats);
  rc = ok ? 0 : 1;
  if (!ok)
    goto fail;
  goto out;

fail:
  if (err)
    uds_error("%s", err->message);
  if (swap) {
    /* install undoes itself on failure; this covers a failure after it (nothing to do otherwise). */
    g_autoptr(GError) rerr = NULL;
    if (!uds_swap_restore(swap, &rerr) && rerr)
      uds_error("%s", rerr->message);
  }
  release_fifo(o);
  rc = 1;
out:
  if (listen_fd >= 0)
    close(listen_fd);
  if (out_fd >= 0)
    close(out_fd);
  uds_side_close(side);
  if (cap)
    uds_capture_free(cap);
  observe_free(observer);
  if (swap)
    uds_swap_free(swap);
  return rc;
}

int main(int argc, char **argv)
{
  uds_priv_delegate(argv);  /* the group install: members run the helper */
  uds_priv_init();          /* before anything reads the environment or opens a file */
  UdsOptions o;
  g_autoptr(GError) err = NULL;
  if (!uds_options_parse(argc, argv, &o, &err)) {
    uds_error("%s", err->message);
    /* Even with bad options, a Wireshark capture start must not leave tshark waiting on its FIFO. */
    UdsOptions partial = { .from_wireshark = TRUE };
    for (int i = 1; i + 1 < argc; i++)
      if (strcmp(argv[i], "--fifo") == 0)
        partial.fifo = argv[i + 1];
    for (int i = 1; i < argc; i++)
      if (strcmp(argv[i], "--capture") == 0 && partial.fifo)
        release_fifo(&partial);
    return 1;
  }
  /* Capability mode: observe mode's capabilities serve an observe-mode capture only, which needs no
   * other but the listing's (no relay, no guardian, no interposing). */
  gboolean observing = o.action == UDS_ACTION_CAPTURE && o.mode == UDS_MODE_OBSERVE;
  uds_priv_keep_only(observing ? UDS_PRIV_OBSERVE | UDS_PRIV_LIST : UDS_PRIV_ALL);
  UdsLogLevel level = UDS_LOG_MESSAGE;
  if (o.log_level)
    uds_log_level_parse(o.log_level, &level);
  if (!uds_log_init(level, o.log_file, &err)) {
    uds_error("%s%s", err->message,
              own_rights_note(g_error_matches(err, G_FILE_ERROR, G_FILE_ERROR_ACCES) ||
                              g_error_matches(err, G_FILE_ERROR, G_FILE_ERROR_PERM)));
    release_fifo(&o);
    uds_options_clear(&o);
    return 1;
  }
  uds_log_set_warnings_to_stderr(!o.from_wireshark && o.action == UDS_ACTION_CAPTURE);

  int rc = 0;
  switch (o.action) {
  case UDS_ACTION_VERSION:
    printf("udsdump %s\n", UDSDUMP_VERSION);
    break;
  case UDS_ACTION_INTERFACES:
    rc = list_interfaces(TRUE);
    break;
  case UDS_ACTION_LIST:
    rc = list_interfaces(FALSE);
    break;
  case UDS_ACTION_DLTS:
    if (!uds_extcap_print_dlts(stdout, o.interface)) {
      fprintf(stderr, "udsdump: unknown interface \"%s\"\n", o.interface);
      rc = 1;
    }
    break;
  case UDS_ACTION_CONFIG:
    if (!uds_extcap_print_config(stdout, o.interface)) {
      fprintf(stderr, "udsdump: unknown interface \"%s\"\n", o.interface);
      rc = 1;
    }
    break;
  case UDS_ACTION_CHECK_FILTER: {
    g_autofree char *msg = uds_extcap_check_filter(o.filter);
    if (msg)
      printf("%s\n", msg);  /* Wireshark: output means invalid, its first line is the message */
    break;
  }
  case UDS_ACTION_RESTORE: {
    g_autoptr(GString) report = g_string_new(NULL);
    if (!uds_swap_repair(o.restore_path, report, &err)) {
      uds_error("%s", err->message);
      rc = 1;
    }
    if (report->len)
      printf("%s%s", report->str, g_str_has_suffix(report->str, "\n") ? "" : "\n");
    break;
  }
  case UDS_ACTION_CAPTURE:
    rc = capture(&o);
    break;
  case UDS_ACTION_NONE:
    rc = 1;
    break;
  }
  uds_options_clear(&o);
  uds_log_close();
  return rc;
}
