/* options — see options.h.
 *
 * One GOptionContext serves both callers: Wireshark (which passes --extcap-* and the dialog's options
 * as "--name value") and a person at a terminal (tcpdump's -i, -w, -c, -D, and a trailing filter
 * expression).  Every value is checked here, before anything is opened or created, so that bad input
 * changes nothing.
 */
#include "options.h"

#include "discover.h"
#include "log.h"
#include "wellknown.h"

#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#define BUFFER_MIB_MAX 1024
#define SNAPLEN_MAX 262144

typedef struct {
  gboolean interfaces, dlts, config, capture, list, version;
  char *mode;
  gint only_uid;
  char **rest;
} Raw;

static GOptionContext *make_context(UdsOptions *o, Raw *raw)
{
  GOptionEntry extcap[] = {
    { "extcap-interfaces", 0, 0, G_OPTION_ARG_NONE, &raw->interfaces, "List the Unix sockets as capture interfaces", NULL },
    { "extcap-version", 0, 0, G_OPTION_ARG_STRING, &o->extcap_version, "Wireshark's extcap version", "VERSION" },
    { "extcap-dlts", 0, 0, G_OPTION_ARG_NONE, &raw->dlts, "List the link types of an interface", NULL },
    { "extcap-config", 0, 0, G_OPTION_ARG_NONE, &raw->config, "List the options of an interface", NULL },
    { "extcap-interface", 'i', 0, G_OPTION_ARG_FILENAME, &o->interface, "The interface: unix:PATH, or udsdump with --socket-path", "IFACE" },
    { "extcap-capture-filter", 'f', 0, G_OPTION_ARG_FILENAME, &o->filter, "A libpcap capture filter on the synthetic frames", "FILTER" },
    { "capture", 0, 0, G_OPTION_ARG_NONE, &raw->capture, "Capture (as Wireshark asks)", NULL },
    { "fifo", 0, 0, G_OPTION_ARG_FILENAME, &o->fifo, "Where the pcap goes (Wireshark's FIFO; - for stdout)", "PATH" },
    { "log-level", 0, 0, G_OPTION_ARG_STRING, &o->log_level, "error, warning, message, info, debug", "LEVEL" },
    { "log-file", 0, 0, G_OPTION_ARG_FILENAME, &o->log_file, "Write the log there", "FILE" },
    { "mode", 0, 0, G_OPTION_ARG_STRING, &raw->mode, "interpose (default: clients change nothing), side, or observe (eBPF: nothing touched; abstract sockets)", "MODE" },
    { "side-path", 0, 0, G_OPTION_ARG_FILENAME, &o->side_path, "Side mode: the path clients opt in to", "PATH" },
    { "socket-path", 0, 0, G_OPTION_ARG_FILENAME, &o->socket_path, "The socket, for the generic udsdump interface", "PATH" },
    { "protocol", 0, 0, G_OPTION_ARG_STRING, &o->protocol, "auto, a protocol keyword, or a TCP port for Wireshark's dissector choice", "PROTO" },
    { "only-pid", 0, 0, G_OPTION_ARG_INT, &o->only_pid, "Capture only connections of this client pid", "PID" },
    { "only-comm", 0, 0, G_OPTION_ARG_FILENAME, &o->only_comm, "Capture only connections of clients with this command name", "NAME" },
    { "only-uid", 0, 0, G_OPTION_ARG_INT, &raw->only_uid, "Capture only connections of clients with this uid", "UID" },
    { "buffer-size", 'B', 0, G_OPTION_ARG_INT, &o->buffer_mib, "Capture buffer in MiB (1-1024, default 4)", "MIB" },
    { "lossless", 0, 0, G_OPTION_ARG_NONE, &o->lossless, "Never drop capture data: slow the relayed traffic instead", NULL },
    { "snaplen", 's', 0, G_OPTION_ARG_INT, &o->snaplen, "Bytes of payload kept per frame (0: all)", "BYTES" },
    { "close-inflight", 0, 0, G_OPTION_ARG_NONE, &o->close_inflight, "On stop, close open connections instead of letting them finish", NULL },
    { "restore", 0, 0, G_OPTION_ARG_FILENAME, &o->restore_path, "Put back a socket a crash or power cut left interposed", "PATH" },
    { "write", 'w', 0, G_OPTION_ARG_FILENAME, &o->write_file, "Write the pcap to FILE (- for stdout) instead of the text view", "FILE" },
    { "count", 'c', 0, G_OPTION_ARG_INT64, &o->count, "Stop after COUNT data frames", "COUNT" },
    { "list-interfaces", 'D', 0, G_OPTION_ARG_NONE, &raw->list, "List the sockets that can be captured", NULL },
    { "hex", 'x', 0, G_OPTION_ARG_NONE, &o->hex, "Text view: show all payload as hex", NULL },
    { "version", 'v', 0, G_OPTION_ARG_NONE, &raw->version, "Print the version", NULL },
    { G_OPTION_REMAINING, 0, 0, G_OPTION_ARG_STRING_ARRAY, &raw->rest, NULL, "[FILTER...]" },
    G_OPTION_ENTRY_NULL,
  };
  GOptionContext *ctx = g_option_context_new("- capture Unix domain socket traffic (Wireshark extcap)");
  g_option_context_set_summary(ctx,
    "  udsdump -D                                 list the sockets that can be captured\n"
    "  udsdump -i unix:/run/docker.sock           show the traffic in this terminal\n"
    "  udsdump -i unix:/run/docker.sock -w x.pcap write it for Wireshark (- for stdout)\n"
    "  udsdump -i unix:@/tmp/.X11-unix/X0         observe an abstract socket (eBPF, as root)\n"
    "  udsdump -i unix:/run/app.sock --mode observe  observe without touching the socket\n"
    "  udsdump --restore /run/docker.sock         repair what a crash left behind\n"
    "In Wireshark, pick the socket in the interface list; with tshark: tshark -i unix:PATH.");
  g_option_context_set_description(ctx, "See udsdump(1) and README.md.");
  g_option_context_add_main_entries(ctx, extcap, NULL);
  g_option_context_set_help_enabled(ctx, TRUE);
  return ctx;
}

char *uds_options_help(void)
{
  UdsOptions o = { 0 };
  Raw raw = { 0 };
  GOptionContext *ctx = make_context(&o, &raw);
  char *help = g_option_context_get_help(ctx, TRUE, NULL);
  g_option_context_free(ctx);
  return help;
}

static gboolean fail(GError **error, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static gboolean fail(GError **error, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_set_error_literal(error, UDS_ERROR, UDS_ERROR_INVALID, msg);
  return FALSE;
}

static gboolean check_socket_path(const char *what, const char *path, GError **error)
{
  if (!*path)
    return fail(error, "%s is empty", what);
  if (path[0] == '@' && strcmp(what, "--side-path") != 0 && strcmp(what, "--restore") != 0) {
    if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
      return fail(error, "%s is too long for an abstract socket name (%zu bytes, at most %zu): %s", what, strlen(path),
                  sizeof(((struct sockaddr_un *)0)->sun_path) - 1, path);
    return TRUE;
  }
  if (path[0] != '/')
    return fail(error, "%s must be an absolute path: %s", what, path);
  if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
    return fail(error, "%s is too long for a Unix socket address (%zu bytes, at most %zu): %s", what, strlen(path),
                sizeof(((struct sockaddr_un *)0)->sun_path) - 1, path);
  return TRUE;
}

static gboolean argv_has_prefix(int argc, char **argv, const char *opt)
{
  for (int i = 1; i < argc; i++)
    if (g_str_has_prefix(argv[i], opt))
      return TRUE;
  return FALSE;
}

static gboolean parse(int argc, char **argv, UdsOptions *o, GError **error);

gboolean uds_options_parse(int argc, char **argv, UdsOptions *o, GError **error)
{
  if (parse(argc, argv, o, error))
    return TRUE;
  uds_options_clear(o);   /* what was parsed before the failure */
  return FALSE;
}

static gboolean parse(int argc, char **argv, UdsOptions *o, GError **error)
{
  memset(o, 0, sizeof *o);
  o->only_uid = -1;
  o->buffer_mib = 4;
  o->count = 0;
  Raw raw = { .only_uid = -1 };
  GOptionContext *ctx = make_context(o, &raw);
  g_autofree char **args = g_new0(char *, argc + 1);
  memcpy(args, argv, sizeof(char *) * argc);
  int n = argc;
  char **a = args;
  GError *perr = NULL;
  gboolean ok = g_option_context_parse(ctx, &n, &a, &perr);
  g_option_context_free(ctx);
  if (!ok) {
    g_set_error(error, UDS_ERROR, UDS_ERROR_INVALID, "%s (see udsdump --help)", perr->message);
    g_error_free(perr);
    g_free(raw.mode);
    g_strfreev(raw.rest);
    return FALSE;
  }
  o->only_uid = raw.only_uid;

  /* tcpdump's habit: the words after the options are the filter. */
  if (raw.rest && raw.rest[0]) {
    if (raw.rest[0][0] == '-') {
      fail(error, "unknown option %s (see udsdump --help)", raw.rest[0]);   /* before the free */
      g_strfreev(raw.rest);
      g_free(raw.mode);
      return FALSE;
    }
    if (o->filter) {
      g_strfreev(raw.rest);
      g_free(raw.mode);
      return fail(error, "a capture filter was given twice (with -f and as trailing words)");
    }
    o->filter = g_strjoinv(" ", raw.rest);
  }
  g_strfreev(raw.rest);

  if (raw.mode) {
    if (g_ascii_strcasecmp(raw.mode, "interpose") == 0)
      o->mode = UDS_MODE_INTERPOSE;
    else if (g_ascii_strcasecmp(raw.mode, "side") == 0)
      o->mode = UDS_MODE_SIDE;
    else if (g_ascii_strcasecmp(raw.mode, "observe") == 0)
      o->mode = UDS_MODE_OBSERVE;
    else {
      g_autofree char *m = raw.mode;
      return fail(error, "--mode must be interpose, side or observe, not \"%s\"", m);
    }
    g_free(raw.mode);
  } else if ((o->interface && g_str_has_prefix(o->interface, "unix:@")) || (o->socket_path && o->socket_path[0] == '@')) {
    o->mode = UDS_MODE_OBSERVE;   /* the only mode that can take an abstract socket */
  }

  int actions = raw.interfaces + raw.dlts + raw.config + raw.list + raw.version + (o->restore_path != NULL);
  if (actions > 1)
    return fail(error, "choose one of --extcap-interfaces, --extcap-dlts, --extcap-config, -D, --restore, --version");
  if (raw.interfaces)
    o->action = UDS_ACTION_INTERFACES;
  else if (raw.list)
    o->action = UDS_ACTION_LIST;
  else if (raw.version)
    o->action = UDS_ACTION_VERSION;
  else if (o->restore_path)
    o->action = UDS_ACTION_RESTORE;
  else if (raw.dlts || raw.config) {
    if (!o->interface)
      return fail(error, "%s needs --extcap-interface", raw.dlts ? "--extcap-dlts" : "--extcap-config");
    o->action = raw.dlts ? UDS_ACTION_DLTS : UDS_ACTION_CONFIG;
  } else if (raw.capture) {
    o->from_wireshark = TRUE;
    o->action = UDS_ACTION_CAPTURE;
    if (!o->interface)
      return fail(error, "--capture needs --extcap-interface");
    if (!o->fifo)
      return fail(error, "--capture needs --fifo");
  } else if (o->interface && o->filter && !o->write_file && !o->fifo && argv_has_prefix(argc, argv, "--extcap-capture-filter")) {
    /* Wireshark's GUI checking a filter as it is typed: the long extcap option without --capture. */
    o->action = UDS_ACTION_CHECK_FILTER;
  } else if (o->interface) {
    o->action = UDS_ACTION_CAPTURE;
  } else if (o->fifo) {
    return fail(error, "--fifo needs --capture and --extcap-interface");
  } else {
    return fail(error, "nothing to do: give -i unix:PATH, -D, or --extcap-interfaces (see udsdump --help)");
  }

  if (o->log_level) {
    UdsLogLevel lv;
    if (!uds_log_level_parse(o->log_level, &lv))
      return fail(error, "--log-level must be one of error, warning, message, info, debug; not \"%s\"", o->log_level);
  }
  if (o->buffer_mib < 1 || o->buffer_mib > BUFFER_MIB_MAX)
    return fail(error, "--buffer-size must be between 1 and %d MiB, not %d", BUFFER_MIB_MAX, o->buffer_mib);
  if (o->snaplen < 0 || o->snaplen > SNAPLEN_MAX)
    return fail(error, "--snaplen must be between 0 (everything) and %d, not %d", SNAPLEN_MAX, o->snaplen);
  if (o->only_pid < 0)
    return fail(error, "--only-pid must be a process id, not %d", o->only_pid);
  if (o->only_uid < -1)
    return fail(error, "--only-uid must be a user id, not %" G_GINT64_FORMAT, o->only_uid);
  if (o->only_comm && (!*o->only_comm || strlen(o->only_comm) > 15))
    return fail(error, "--only-comm must be a command name of 1 to 15 characters (as in /proc/PID/comm), not \"%s\"",
                o->only_comm);
  if (o->count < 0)
    return fail(error, "-c must be a positive count, not %" G_GINT64_FORMAT, o->count);
  if (o->protocol && g_ascii_strcasecmp(o->protocol, "auto") != 0) {
    UdsProto tmp;
    if (!uds_proto_by_name(o->protocol, &tmp))
      return fail(error, "--protocol: unknown protocol \"%s\" (a keyword from udsdump --help, or a port 1-65535)",
                  o->protocol);
  }
  if (o->mode == UDS_MODE_SIDE) {
    if (!o->side_path)
      return fail(error, "--mode side needs --side-path (where clients that opt in connect)");
    if (!check_socket_path("--side-path", o->side_path, error))
      return FALSE;
  } else if (o->side_path && *o->side_path) {
    return fail(error, "--side-path is only used with --mode side");
  }
  if (o->mode == UDS_MODE_OBSERVE && o->lossless)
    return fail(error, "--lossless cannot be kept in observe mode: udsdump cannot slow the processes it observes");
  if (o->socket_path && *o->socket_path && !check_socket_path("--socket-path", o->socket_path, error))
    return FALSE;
  if (o->write_file && o->fifo)
    return fail(error, "-w and --fifo both name an output: give one");
  if (o->action == UDS_ACTION_CAPTURE || o->action == UDS_ACTION_DLTS || o->action == UDS_ACTION_CONFIG ||
      o->action == UDS_ACTION_CHECK_FILTER) {
    if (!g_str_has_prefix(o->interface, "unix:") && strcmp(o->interface, "udsdump") != 0)
      return fail(error, "unknown interface \"%s\": udsdump captures unix:PATH (see udsdump -D)", o->interface);
  }
  if (o->action == UDS_ACTION_CAPTURE) {
    g_autofree char *p = uds_options_socket_path(o, error);
    if (!p)
      return FALSE;
    if (o->mode == UDS_MODE_SIDE && strcmp(p, o->side_path) == 0)
      return fail(error, "--side-path must differ from the captured socket's path");
  }
  if (o->action == UDS_ACTION_RESTORE && !check_socket_path("--restore", o->restore_path, error))
    return FALSE;
  return TRUE;
}

char *uds_options_socket_path(const UdsOptions *o, GError **error)
{
  if (!o->interface) {
    fail(error, "no interface given");
    return NULL;
  }
  char *path = NULL;
  if (strcmp(o->interface, "udsdump") == 0) {
    if (!o->socket_path || !*o->socket_path) {
      fail(error, "the udsdump interface needs --socket-path (the socket to capture)");
      return NULL;
    }
    path = g_strdup(o->socket_path);
  } else {
    path = uds_iface_decode(o->interface, error);
    if (!path)
      return NULL;
  }
  if (path[0] == '@' && o->mode != UDS_MODE_OBSERVE) {
    fail(error, "%s is an abstract socket name: it has no file to interpose on (use --mode observe)", path);
    g_free(path);
    return NULL;
  }
  if (!check_socket_path("the socket path", path, error)) {
    g_free(path);
    return NULL;
  }
  return path;
}

void uds_options_clear(UdsOptions *o)
{
  g_free(o->extcap_version);
  g_free(o->interface);
  g_free(o->fifo);
  g_free(o->write_file);
  g_free(o->filter);
  g_free(o->log_level);
  g_free(o->log_file);
  g_free(o->side_path);
  g_free(o->socket_path);
  g_free(o->protocol);
  g_free(o->only_comm);
  g_free(o->restore_path);
  memset(o, 0, sizeof *o);
}
