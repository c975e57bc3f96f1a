/* protocol — the extcap lines Wireshark parses (see protocol.h).
 *
 * Format, from Wireshark 4.0's extcap parser: `{key=value}` sentences, one per line; values must be
 * valid UTF-8 and must not contain "}" followed by "{" or white space - interface values are
 * %-escaped by uds_iface_encode and display names made valid UTF-8 by uds_socket_display, and "{}" are
 * kept out of both.  Option numbers are stable: Wireshark stores preferences per option name, and
 * tests check that every advertised interface's --extcap-config parses.
 */
#include "protocol.h"

#include "capture.h"
#include "discover.h"
#include "wellknown.h"

#include <config.h>
#include <string.h>

/* Braces would end a sentence early; they cannot appear in our display strings otherwise. */
static char *sanitize(const char *s)
{
  char *out = g_strdup(s);
  for (char *p = out; *p; p++)
    if (*p == '{' || *p == '}' || *p == '\n' || *p == '\r')
      *p = *p == '{' ? '(' : *p == '}' ? ')' : ' ';
  return out;
}

void uds_extcap_print_interfaces(FILE *out, GPtrArray *sockets)
{
  fprintf(out, "extcap {version=%s}{help=file:///usr/share/doc/udsdump/README.md}\n", UDSDUMP_VERSION);
  for (guint i = 0; sockets && i < sockets->len; i++) {
    const UdsSocketInfo *s = g_ptr_array_index(sockets, i);
    g_autofree char *value = uds_iface_encode(s->path);
    g_autofree char *disp = uds_socket_display(s);
    g_autofree char *clean = sanitize(disp);
    fprintf(out, "interface {value=%s}{display=%s}\n", value, clean);
  }
  fprintf(out, "interface {value=%s}{display=Unix socket by path (type it in the options)}\n", UDS_GENERIC_IFACE);
}

gboolean uds_extcap_iface_valid(const char *iface)
{
  return iface && (g_str_has_prefix(iface, "unix:") || strcmp(iface, UDS_GENERIC_IFACE) == 0);
}

gboolean uds_extcap_print_dlts(FILE *out, const char *iface)
{
  if (!uds_extcap_iface_valid(iface))
    return FALSE;
  fprintf(out, "dlt {number=1}{name=EN10MB}{display=Ethernet (Unix socket traffic as synthetic TCP/IP)}\n");
  return TRUE;
}

gboolean uds_extcap_print_config(FILE *out, const char *iface)
{
  if (!uds_extcap_iface_valid(iface))
    return FALSE;
  gboolean generic = strcmp(iface, UDS_GENERIC_IFACE) == 0;
  int n = 0;
  if (generic)
    fprintf(out, "arg {number=%d}{call=--socket-path}{display=Socket path}{type=string}{required=true}"
                 "{tooltip=The Unix socket to capture, e.g. /proc/1234/root/run/app.sock for another mount namespace}"
                 "{placeholder=/run/app.sock}{validation=^/.+}{group=Socket}\n", n);
  n = 1;
  /* An abstract socket has no file to interpose on: observe is its only mode, and its default. */
  gboolean abstract = g_str_has_prefix(iface, "unix:@");
  fprintf(out, "arg {number=%d}{call=--mode}{display=Mode}{type=selector}{default=%s}"
               "{tooltip=Interpose: the relay takes the socket's place, clients change nothing. Side: the relay "
               "listens on another path that clients opt in to. Observe: eBPF sees what processes send, nothing "
               "is touched, connections already open are seen (root)}{group=Relay}\n", n,
          abstract ? "observe" : "interpose");
  fprintf(out, "value {arg=%d}{value=interpose}{display=Interpose (clients change nothing)}{default=%s}\n", n,
          abstract ? "false" : "true");
  fprintf(out, "value {arg=%d}{value=side}{display=Side path (clients opt in)}{default=false}\n", n);
  fprintf(out, "value {arg=%d}{value=observe}{display=Observe (eBPF: nothing touched, open connections too)}"
               "{default=%s}\n", n, abstract ? "true" : "false");
  fprintf(out, "arg {number=2}{call=--side-path}{display=Side path}{type=string}"
               "{tooltip=Side mode: the path the relay listens on (must not exist)}{placeholder=/tmp/app-capture.sock}"
               "{validation=^(/.+)?$}{group=Relay}\n");
  fprintf(out, "arg {number=3}{call=--close-inflight}{display=Close open connections on stop}{type=boolflag}"
               "{default=false}{tooltip=By default connections open when the capture stops go on, uncaptured, "
               "until they end (docker logs -f)}{group=Relay}\n");
  fprintf(out, "arg {number=4}{call=--protocol}{display=Protocol}{type=selector}{default=auto}"
               "{tooltip=Which dissector Wireshark uses: it picks by the synthetic server port}{group=Decode}\n");
  fprintf(out, "value {arg=4}{value=auto}{display=Guess from the socket path}{default=true}\n");
  for (const UdsProto *p = uds_proto_table(); p->name; p++) {
    g_autofree char *label = sanitize(p->label ? p->label : p->name);
    fprintf(out, "value {arg=4}{value=%s}{display=%s (port %u)}{default=false}\n", p->name, label, p->port);
  }
  fprintf(out, "arg {number=5}{call=--only-pid}{display=Only client pid}{type=unsigned}{default=0}{range=0,4194304}"
               "{tooltip=Capture only connections made by this process (0: all)}{group=Clients}\n");
  fprintf(out, "arg {number=6}{call=--only-comm}{display=Only client command}{type=string}"
               "{tooltip=Capture only connections of clients with this command name, e.g. docker}"
               "{validation=^.{0,15}$}{group=Clients}\n");
  fprintf(out, "arg {number=7}{call=--only-uid}{display=Only client uid}{type=integer}{default=-1}{range=-1,4294967294}"
               "{tooltip=Capture only connections of clients running as this user id (-1: all)}{group=Clients}\n");
  fprintf(out, "arg {number=8}{call=--buffer-size}{display=Capture buffer (MiB)}{type=unsigned}{default=4}{range=1,1024}"
               "{tooltip=Capture data waiting for Wireshark; past it, capture data is dropped (and marked), never "
               "the relayed traffic}{group=Capture}\n");
  fprintf(out, "arg {number=9}{call=--lossless}{display=Lossless (slow the socket rather than drop)}{type=boolflag}"
               "{default=false}{tooltip=When Wireshark falls behind, pause the relayed traffic instead of dropping "
               "capture data}{group=Capture}\n");
  fprintf(out, "arg {number=10}{call=--snaplen}{display=Snap length}{type=unsigned}{default=0}{range=0,262144}"
               "{tooltip=Bytes of payload kept per frame (0: all)}{group=Capture}\n");
  return TRUE;
}

char *uds_extcap_check_filter(const char *filter)
{
  if (!filter || !*filter)
    return NULL;
  return uds_capture_check_filter(filter);
}
