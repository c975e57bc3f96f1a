/* wellknown — protocol keywords, their synthetic TCP/UDP server ports, and what well-known sockets are.
 *
 * Wireshark picks a dissector by port: for TCP it tries the server port seen in the SYN first, so the
 * port of the synthetic server decides the decode.  Choices, all checked against tshark 4.0.17
 * (`tshark -G decodes` and hand-made captures):
 * - http 80.  http2 also 80: Wireshark 4.0 registers HTTP/2 on no TCP port; its HTTP dissector hands
 *   a stream that opens with the h2c preface ("PRI * HTTP/2.0") to HTTP/2, and gRPC rides on that.
 *   (On a port without a dissector the preface stays undecoded: the http2 heuristic hangs off HTTP
 *   and TLS only.)
 * - dbus 6: honest data.  Wireshark 4.0's D-Bus dissector can be put on a TCP port (Decode As), but
 *   it expects a message at the first byte, while every D-Bus connection starts with the SASL text
 *   handshake ("\0AUTH EXTERNAL ...", "BEGIN"), so the whole stream would decode as garbage.  Port 6
 *   has no dissector; its own port keeps D-Bus captures apart for a later dissector.
 * - data 4: the default for unknown sockets.  No dissector claims TCP or UDP port 4, so the payload
 *   shows as data unless a heuristic dissector recognises it (an HTTP stream still decodes as HTTP).
 * - syslog 514 for the datagram log sockets (/dev/log): UDP 514 is syslog.  (TCP 514 is rsh: do not
 *   pick syslog for a stream socket.)
 * - mysql 3306, pgsql 5432, redis 6379 (RESP), memcached 11211, x11 6000: Wireshark's own ports.
 *
 * Well-known sockets are matched by a byte-wise glob on the whole path ('*' stays within one name; a
 * leading "*\/" means "in any folder"); first match wins, so specific patterns come first.  Each entry
 * carries its own UdsProto whose label is the socket's label; a test checks that every entry's port
 * agrees with its keyword's.
 */
#include "wellknown.h"

#include <stdlib.h>
#include <string.h>

#define P_HTTP "http", 80
#define P_HTTP2 "http2", 80
#define P_MYSQL "mysql", 3306
#define P_PGSQL "pgsql", 5432
#define P_REDIS "redis", 6379
#define P_MEMCACHED "memcached", 11211
#define P_X11 "x11", 6000
#define P_SYSLOG "syslog", 514
#define P_DBUS "dbus", 6
#define P_DATA "data", 4

static const UdsProto protocols[] = {
  { P_HTTP, "HTTP/1.x" },
  { P_HTTP2, "HTTP/2 cleartext, gRPC" },
  { P_MYSQL, "MySQL / MariaDB" },
  { P_PGSQL, "PostgreSQL" },
  { P_REDIS, "Redis (RESP)" },
  { P_MEMCACHED, "memcached" },
  { P_X11, "X11" },
  { P_SYSLOG, "syslog datagrams" },
  { P_DBUS, "D-Bus (shown as data)" },
  { P_DATA, "Other: data" },
  { NULL, 0, NULL },
};

static const struct {
  const char *keyword, *alias_of;
} aliases[] = {
  { "grpc", "http2" },      { "h2c", "http2" },       { "mariadb", "mysql" }, { "postgres", "pgsql" },
  { "postgresql", "pgsql" }, { "resp", "redis" },      { "memcache", "memcached" },
};

static const struct {
  const char *pattern;
  UdsProto proto;
} sockets[] = {
  { "*/docker.sock", { P_HTTP, "Docker Engine API" } },
  { "*/podman.sock", { P_HTTP, "Podman API" } },
  { "*/containerd.sock", { P_HTTP2, "containerd gRPC API" } },
  { "*/containerd.sock.ttrpc", { P_DATA, "containerd ttrpc" } },
  { "*/crio.sock", { P_HTTP2, "CRI-O gRPC API" } },
  { "*/cri-dockerd.sock", { P_HTTP2, "cri-dockerd gRPC API" } },
  { "*/snapd.socket", { P_HTTP, "snapd REST API" } },
  { "*/snapd-snap.socket", { P_HTTP, "snapd REST API (for snaps)" } },
  { "*/cups.sock", { P_HTTP, "CUPS (IPP over HTTP)" } },
  { "*/libvirt-sock-ro", { P_DATA, "libvirt (read-only)" } },
  { "*/libvirt-sock", { P_DATA, "libvirt" } },
  { "*/virtqemud-sock*", { P_DATA, "libvirt QEMU driver" } },
  { "*/mysqlx.sock", { P_DATA, "MySQL X protocol" } },
  { "*/mysqld.sock", { P_MYSQL, "MySQL server" } },
  { "*/mysql.sock", { P_MYSQL, "MySQL server" } },
  { "*/.s.PGSQL.*", { P_PGSQL, "PostgreSQL server" } },
  { "*/redis*.sock", { P_REDIS, "Redis server" } },
  { "*/memcached*.sock", { P_MEMCACHED, "memcached" } },
  { "*/system_bus_socket", { P_DBUS, "D-Bus system bus" } },
  { "/run/user/*/bus", { P_DBUS, "D-Bus session bus" } },
  { "/run/systemd/private", { P_DBUS, "systemd manager (private D-Bus)" } },
  { "/run/systemd/journal/dev-log", { P_SYSLOG, "journald (syslog)" } },
  { "/run/systemd/journal/syslog", { P_SYSLOG, "journald syslog forwarding" } },
  { "/run/systemd/journal/socket", { P_DATA, "journald (native)" } },
  { "/run/systemd/journal/stdout", { P_DATA, "journald (stdout streams)" } },
  { "/run/systemd/journal/*", { P_DATA, "journald" } },
  { "/run/systemd/notify", { P_DATA, "systemd notify" } },
  { "*/io.systemd.*", { P_DATA, "systemd Varlink service" } },
  { "/dev/log", { P_SYSLOG, "syslog" } },
  { "/tmp/.X11-unix/X*", { P_X11, "X11 display server" } },
  { "*/wayland-*", { P_DATA, "Wayland compositor" } },
  { "*/pulse/native", { P_DATA, "PulseAudio" } },
  { "*/pipewire-*", { P_DATA, "PipeWire" } },
  { "/tmp/ssh-*/agent.*", { P_DATA, "ssh-agent" } },
  { "*/ssh-agent.sock*", { P_DATA, "ssh-agent" } },
  { "*/S.gpg-agent*", { P_DATA, "GnuPG agent" } },
  { "*/nscd/socket", { P_DATA, "nscd name service cache" } },
};

/* '*': any bytes but '/'; '?': one byte.  Byte-wise, so non-UTF-8 paths match safely. */
static gboolean glob_match(const char *pat, const char *s)
{
  const char *star = NULL, *resume = NULL;
  while (*s) {
    if (*pat == '*') {
      star = pat++;
      resume = s;
    } else if (*pat == '?' || *pat == *s) {
      pat++;
      s++;
    } else if (star && *resume != '/') {
      pat = star + 1;
      s = ++resume;
    } else {
      return FALSE;
    }
  }
  while (*pat == '*')
    pat++;
  return *pat == '\0';
}

/* A leading "*\/" stands for any folder: the rest must match a tail of the path that starts a name. */
static gboolean path_match(const char *pat, const char *path)
{
  if (pat[0] != '*' || pat[1] != '/')
    return glob_match(pat, path);
  for (const char *p = strchr(path, '/'); p; p = strchr(p + 1, '/'))
    if (glob_match(pat + 2, p + 1))
      return TRUE;
  return FALSE;
}

static const UdsProto *wellknown_match(const char *path)
{
  if (!path)
    return NULL;
  for (gsize i = 0; i < G_N_ELEMENTS(sockets); i++)
    if (path_match(sockets[i].pattern, path))
      return &sockets[i].proto;
  return NULL;
}

const UdsProto *uds_proto_guess(const char *path)
{
  const UdsProto *p = wellknown_match(path);
  return p ? p : uds_proto_by_name("data", NULL);
}

const UdsProto *uds_proto_by_name(const char *name, UdsProto *static_storage)
{
  if (!name || !*name)
    return NULL;
  for (gsize i = 0; i < G_N_ELEMENTS(aliases); i++)
    if (g_ascii_strcasecmp(name, aliases[i].keyword) == 0)
      name = aliases[i].alias_of;
  for (const UdsProto *p = protocols; p->name; p++)
    if (g_ascii_strcasecmp(name, p->name) == 0)
      return p;
  /* A bare port: digits only, 1-65535 (no sign, space or hex that strtoul would let through). */
  if (!static_storage || strspn(name, "0123456789") != strlen(name) || strlen(name) > 5)
    return NULL;
  unsigned long port = strtoul(name, NULL, 10);
  if (port < 1 || port > 65535)
    return NULL;
  *static_storage = (UdsProto){ .name = "port", .port = (guint16)port, .label = NULL };
  return static_storage;
}

const UdsProto *uds_proto_table(void)
{
  return protocols;
}

const char *uds_wellknown_label(const char *path)
{
  const UdsProto *p = wellknown_match(path);
  return p ? p->label : NULL;
}
