/* Tests for wellknown: keyword lookup, bare ports, guesses and labels for the sockets people capture.
 * (That Wireshark really decodes each keyword's port as that protocol is checked against tshark by
 * check-ports.py, fed by the `--dump` mode of this program.)
 */
#include "wellknown.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void test_table(void)
{
  const UdsProto *t = uds_proto_table();
  gboolean has_data = FALSE;
  guint n = 0;
  for (const UdsProto *p = t; p->name; p++, n++) {
    g_assert_cmpuint(p->port, >, 0);
    g_assert_nonnull(p->label);
    g_assert_null(strpbrk(p->label, "{}\n"));
    for (const UdsProto *q = t; q < p; q++)
      g_assert_cmpstr(q->name, !=, p->name);
    g_assert_true(uds_proto_by_name(p->name, NULL) == p);
    has_data |= strcmp(p->name, "data") == 0;
  }
  g_assert_cmpuint(n, >=, 8);
  g_assert_true(has_data);
}

static void test_by_name(void)
{
  UdsProto tmp;
  g_assert_cmpuint(uds_proto_by_name("http", NULL)->port, ==, 80);
  g_assert_true(uds_proto_by_name("HTTP", NULL) == uds_proto_by_name("http", NULL));
  g_assert_true(uds_proto_by_name("MySQL", NULL) == uds_proto_by_name("mysql", NULL));
  g_assert_cmpuint(uds_proto_by_name("mysql", NULL)->port, ==, 3306);
  g_assert_cmpuint(uds_proto_by_name("pgsql", NULL)->port, ==, 5432);
  g_assert_cmpuint(uds_proto_by_name("redis", NULL)->port, ==, 6379);
  g_assert_cmpuint(uds_proto_by_name("memcached", NULL)->port, ==, 11211);
  g_assert_cmpstr(uds_proto_by_name("Postgres", NULL)->name, ==, "pgsql");
  g_assert_cmpstr(uds_proto_by_name("gRPC", NULL)->name, ==, "http2");
  g_assert_cmpstr(uds_proto_by_name("mariadb", NULL)->name, ==, "mysql");

  const UdsProto *p = uds_proto_by_name("8080", &tmp);
  g_assert_true(p == &tmp);
  g_assert_cmpuint(p->port, ==, 8080);
  g_assert_nonnull(p->name);
  g_assert_cmpuint(uds_proto_by_name("1", &tmp)->port, ==, 1);
  g_assert_cmpuint(uds_proto_by_name("65535", &tmp)->port, ==, 65535);
  g_assert_cmpuint(uds_proto_by_name("00080", &tmp)->port, ==, 80);
  const char *bad[] = { "", "0", "65536", "99999999999", "-1", "+80", " 80", "80 ", "80x", "0x50", "8e1",
                        "gopher", "http ", "auto" };
  for (guint i = 0; i < G_N_ELEMENTS(bad); i++)
    if (uds_proto_by_name(bad[i], &tmp))
      g_error("\"%s\" accepted as a protocol", bad[i]);
  g_assert_null(uds_proto_by_name("8080", NULL));   /* a port needs storage to live in */
  g_assert_null(uds_proto_by_name(NULL, &tmp));
}

static void test_guess(void)
{
  struct { const char *path, *proto, *label; } cases[] = {
    { "/var/run/docker.sock", "http", "Docker Engine API" },
    { "/run/docker.sock", "http", "Docker Engine API" },
    { "/run/user/1000/docker.sock", "http", "Docker Engine API" },
    { "/run/podman/podman.sock", "http", "Podman API" },
    { "/run/containerd/containerd.sock", "http2", "containerd gRPC API" },
    { "/run/containerd/containerd.sock.ttrpc", "data", "containerd ttrpc" },
    { "/var/run/crio/crio.sock", "http2", "CRI-O gRPC API" },
    { "/run/snapd.socket", "http", "snapd REST API" },
    { "/run/snapd-snap.socket", "http", "snapd REST API (for snaps)" },
    { "/run/cups/cups.sock", "http", "CUPS (IPP over HTTP)" },
    { "/var/run/libvirt/libvirt-sock", "data", "libvirt" },
    { "/var/run/libvirt/libvirt-sock-ro", "data", "libvirt (read-only)" },
    { "/run/mysqld/mysqld.sock", "mysql", "MySQL server" },
    { "/tmp/mysql.sock", "mysql", "MySQL server" },
    { "/run/mysqld/mysqlx.sock", "data", "MySQL X protocol" },
    { "/var/run/postgresql/.s.PGSQL.5432", "pgsql", "PostgreSQL server" },
    { "/run/redis/redis-server.sock", "redis", "Redis server" },
    { "/var/run/redis/redis.sock", "redis", "Redis server" },
    { "/run/memcached/memcached.sock", "memcached", "memcached" },
    { "/run/dbus/system_bus_socket", "dbus", "D-Bus system bus" },
    { "/var/run/dbus/system_bus_socket", "dbus", "D-Bus system bus" },
    { "/run/user/1000/bus", "dbus", "D-Bus session bus" },
    { "/run/systemd/private", "dbus", "systemd manager (private D-Bus)" },
    { "/run/systemd/journal/dev-log", "syslog", "journald (syslog)" },
    { "/run/systemd/journal/socket", "data", "journald (native)" },
    { "/run/systemd/journal/stdout", "data", "journald (stdout streams)" },
    { "/run/systemd/notify", "data", "systemd notify" },
    { "/run/systemd/userdb/io.systemd.DynamicUser", "data", "systemd Varlink service" },
    { "/dev/log", "syslog", "syslog" },
    { "/tmp/.X11-unix/X0", "x11", "X11 display server" },
    { "/run/user/1000/wayland-0", "data", "Wayland compositor" },
    { "/run/user/1000/pulse/native", "data", "PulseAudio" },
    { "/run/user/1000/pipewire-0", "data", "PipeWire" },
    { "/tmp/ssh-XXXXabcd/agent.1234", "data", "ssh-agent" },
    { "/run/user/1000/gnupg/S.gpg-agent", "data", "GnuPG agent" },
    { "/var/run/nscd/socket", "data", "nscd name service cache" },
  };
  for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
    const UdsProto *p = uds_proto_guess(cases[i].path);
    g_assert_nonnull(p);
    if (strcmp(p->name, cases[i].proto) != 0 || g_strcmp0(p->label, cases[i].label) != 0)
      g_error("%s: guessed %s \"%s\", expected %s \"%s\"", cases[i].path, p->name, p->label, cases[i].proto,
              cases[i].label);
    /* A well-known socket's port is its keyword's port. */
    g_assert_cmpuint(p->port, ==, uds_proto_by_name(p->name, NULL)->port);
    g_assert_cmpstr(uds_wellknown_label(cases[i].path), ==, cases[i].label);
  }
  /* Unknown sockets get the generic default, and no label. */
  const char *unknown[] = { "/tmp/app.sock", "/home/u/redisproj/app.sock", "/run/docker.sock.bak",
                            "/run/user/1000/x/bus", "/tmp/.X11-unix/sub/X0", "relative/docker.sockx",
                            "/tmp/\xff\xfe", "" };
  for (guint i = 0; i < G_N_ELEMENTS(unknown); i++) {
    const UdsProto *p = uds_proto_guess(unknown[i]);
    g_assert_true(p == uds_proto_by_name("data", NULL));
    if (uds_wellknown_label(unknown[i]))
      g_error("%s labelled \"%s\"", unknown[i], uds_wellknown_label(unknown[i]));
  }
  g_assert_true(uds_proto_guess(NULL) == uds_proto_by_name("data", NULL));
}

int main(int argc, char **argv)
{
  if (argc == 2 && strcmp(argv[1], "--dump") == 0) {
    for (const UdsProto *p = uds_proto_table(); p->name; p++)
      printf("%s %u\n", p->name, p->port);
    return 0;
  }
  alarm(60);
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/wellknown/table", test_table);
  g_test_add_func("/wellknown/by-name", test_by_name);
  g_test_add_func("/wellknown/guess", test_guess);
  return g_test_run();
}
