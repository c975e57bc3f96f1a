/* Unit tests of the extcap protocol lines: every line udsdump prints must be one Wireshark 4.0's
 * parser accepts (sentence + {key=value} pairs, valid UTF-8, no "}{" or "} " inside a value), and
 * interface values must lead back to the exact socket path, whatever bytes it holds. */
#include "discover.h"
#include "options.h"
#include "protocol.h"

#include <glib.h>
#include <stdio.h>
#include <string.h>

/* Parses one line the way Wireshark's extcap_tokenize_sentence does; returns the pairs or NULL. */
static GHashTable *parse_line(const char *line, char **sentence)
{
  if (!g_utf8_validate(line, -1, NULL))
    return NULL;
  const char *sp = strchr(line, ' ');
  if (!sp)
    return NULL;
  *sentence = g_strndup(line, sp - line);
  GHashTable *kv = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  const char *p = sp + 1;
  while (*p) {
    if (*p != '{')
      goto bad;
    const char *eq = strchr(p, '=');
    if (!eq)
      goto bad;
    /* A value ends at a '}' followed by '{', white space or the end. */
    const char *end = eq + 1;
    while ((end = strchr(end, '}')) && end[1] && end[1] != '{' && !g_ascii_isspace(end[1]))
      end++;
    if (!end)
      goto bad;
    g_hash_table_insert(kv, g_strndup(p + 1, eq - p - 1), g_strndup(eq + 1, end - eq - 1));
    p = end + 1;
  }
  return kv;
bad:
  g_hash_table_destroy(kv);
  g_clear_pointer(sentence, g_free);
  return NULL;
}

static char **capture_lines(void (*fn)(FILE *, gpointer), gpointer data)
{
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  fn(f, data);
  fclose(f);
  char **lines = g_strsplit(buf, "\n", -1);
  free(buf);
  return lines;
}

static UdsSocketInfo *info(const char *path, int pid, const char *comm)
{
  UdsSocketInfo *s = g_new0(UdsSocketInfo, 1);
  s->path = g_strdup(path);
  s->type = 1;
  s->pid = pid;
  s->comm = g_strdup(comm);
  return s;
}

static void print_ifaces(FILE *f, gpointer socks)
{
  uds_extcap_print_interfaces(f, socks);
}

static void test_interfaces_parse(void)
{
  const char *paths[] = {
    "/var/run/docker.sock", "/tmp/with space.sock", "/tmp/new\nline.sock", "/tmp/brace}{.sock", "/tmp/brace} x",
    "/tmp/latin1-\xe9\xff.sock", "/tmp/percent%41.sock", "/tmp/tab\t.sock",
    "/tmp/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa107",
  };
  g_autoptr(GPtrArray) socks = g_ptr_array_new_with_free_func((GDestroyNotify)uds_socket_info_free);
  for (guint i = 0; i < G_N_ELEMENTS(paths); i++)
    g_ptr_array_add(socks, info(paths[i], 100 + i, i % 2 ? "dockerd" : NULL));
  g_auto(GStrv) lines = capture_lines(print_ifaces, socks);
  guint ifaces = 0;
  gboolean saw_extcap = FALSE, saw_generic = FALSE;
  for (char **l = lines; *l; l++) {
    if (!**l)
      continue;
    g_autofree char *sentence = NULL;
    GHashTable *kv = parse_line(*l, &sentence);
    g_assert_nonnull(kv);
    if (strcmp(sentence, "extcap") == 0) {
      g_assert_nonnull(g_hash_table_lookup(kv, "version"));
      g_assert_nonnull(g_hash_table_lookup(kv, "help"));
      saw_extcap = TRUE;
    } else {
      g_assert_cmpstr(sentence, ==, "interface");
      const char *value = g_hash_table_lookup(kv, "value");
      g_assert_nonnull(value);
      g_assert_nonnull(g_hash_table_lookup(kv, "display"));
      if (strcmp(value, UDS_GENERIC_IFACE) == 0) {
        saw_generic = TRUE;
      } else {
        g_autoptr(GError) err = NULL;
        g_autofree char *path = uds_iface_decode(value, &err);
        g_assert_no_error(err);
        g_assert_cmpstr(path, ==, paths[ifaces]);
        ifaces++;
      }
    }
    g_hash_table_destroy(kv);
  }
  g_assert_true(saw_extcap);
  g_assert_true(saw_generic);
  g_assert_cmpuint(ifaces, ==, G_N_ELEMENTS(paths));
}

static void print_cfg(FILE *f, gpointer iface)
{
  g_assert_true(uds_extcap_print_config(f, iface));
}

static void print_dlts(FILE *f, gpointer iface)
{
  g_assert_true(uds_extcap_print_dlts(f, iface));
}

static void test_config_parses(void)
{
  const char *ifaces[] = { "unix:/var/run/docker.sock", UDS_GENERIC_IFACE };
  for (guint i = 0; i < G_N_ELEMENTS(ifaces); i++) {
    g_auto(GStrv) lines = capture_lines(print_cfg, (gpointer)ifaces[i]);
    GHashTable *numbers = g_hash_table_new(g_str_hash, g_str_equal);
    guint args = 0;
    for (char **l = lines; *l; l++) {
      if (!**l)
        continue;
      g_autofree char *sentence = NULL;
      GHashTable *kv = parse_line(*l, &sentence);
      g_assert_nonnull(kv);
      if (strcmp(sentence, "arg") == 0) {
        /* Wireshark needs number, call, display and type, and knows only these types. */
        const char *types[] = { "integer", "unsigned", "long", "double", "boolean", "boolflag", "selector", "radio",
                                "string", "password", "fileselect", "multicheck", "timestamp", NULL };
        const char *type = g_hash_table_lookup(kv, "type");
        g_assert_nonnull(g_hash_table_lookup(kv, "number"));
        g_assert_nonnull(g_hash_table_lookup(kv, "call"));
        g_assert_true(g_str_has_prefix(g_hash_table_lookup(kv, "call"), "--"));
        g_assert_nonnull(g_hash_table_lookup(kv, "display"));
        g_assert_nonnull(type);
        g_assert_true(g_strv_contains(types, type));
        g_hash_table_add(numbers, (gpointer)g_intern_string(g_hash_table_lookup(kv, "number")));
        args++;
      } else {
        g_assert_cmpstr(sentence, ==, "value");
        g_assert_true(g_hash_table_contains(numbers, g_intern_string(g_hash_table_lookup(kv, "arg"))));
        g_assert_nonnull(g_hash_table_lookup(kv, "value"));
      }
      g_hash_table_destroy(kv);
    }
    g_assert_cmpuint(args, >=, 9);
    g_hash_table_destroy(numbers);
  }
}

static void test_dlts(void)
{
  g_auto(GStrv) lines = capture_lines(print_dlts, "unix:/run/x.sock");
  g_autofree char *sentence = NULL;
  GHashTable *kv = parse_line(lines[0], &sentence);
  g_assert_nonnull(kv);
  g_assert_cmpstr(sentence, ==, "dlt");
  g_assert_cmpstr(g_hash_table_lookup(kv, "number"), ==, "1");  /* DLT_EN10MB */
  g_hash_table_destroy(kv);
  g_assert_false(uds_extcap_print_dlts(stdout, "eth0"));
}

static void test_filter_check(void)
{
  g_assert_null(uds_extcap_check_filter("tcp port 80"));
  g_assert_null(uds_extcap_check_filter(""));
  g_autofree char *msg = uds_extcap_check_filter("tcp port banana");
  g_assert_nonnull(msg);
  g_assert_cmpstr(msg, !=, "");
}

static gboolean parse(const char *const *argv, UdsOptions *o, GError **err)
{
  return uds_options_parse((int)g_strv_length((char **)argv), (char **)argv, o, err);
}

static void test_options(void)
{
  UdsOptions o;
  g_autoptr(GError) err = NULL;
  const char *cap[] = { "udsdump", "--capture", "--extcap-interface", "unix:/run/a.sock", "--fifo", "/tmp/f",
                        "--extcap-capture-filter", "tcp port 80", "--buffer-size", "8", "--lossless", NULL };
  g_assert_true(parse(cap, &o, &err));
  g_assert_cmpint(o.action, ==, UDS_ACTION_CAPTURE);
  g_assert_true(o.from_wireshark);
  g_assert_cmpint(o.buffer_mib, ==, 8);
  g_assert_true(o.lossless);
  g_assert_cmpstr(o.filter, ==, "tcp port 80");
  uds_options_clear(&o);

  const char *check[] = { "udsdump", "--extcap-capture-filter", "tcp", "--extcap-interface", "unix:/x", NULL };
  g_assert_true(parse(check, &o, &err));
  g_assert_cmpint(o.action, ==, UDS_ACTION_CHECK_FILTER);
  uds_options_clear(&o);

  const char *cli[] = { "udsdump", "-i", "unix:/run/a.sock", "-w", "-", "-c", "5", "tcp", "port", "80", NULL };
  g_assert_true(parse(cli, &o, &err));
  g_assert_cmpint(o.action, ==, UDS_ACTION_CAPTURE);
  g_assert_false(o.from_wireshark);
  g_assert_cmpstr(o.filter, ==, "tcp port 80");
  g_assert_cmpint(o.count, ==, 5);
  uds_options_clear(&o);

  struct { const char *argv[8]; const char *needle; } bad[] = {
    { { "udsdump", "--capture", "--extcap-interface", "unix:/a", NULL }, "--fifo" },
    { { "udsdump", "--capture", "--fifo", "/x", NULL }, "--extcap-interface" },
    { { "udsdump", "-i", "eth0", NULL }, "unknown interface" },
    { { "udsdump", "-i", "unix:/a", "--buffer-size", "0", NULL }, "--buffer-size" },
    { { "udsdump", "-i", "unix:/a", "--snaplen", "x", NULL }, "snaplen" },
    { { "udsdump", "-i", "unix:/a", "--mode", "side", NULL }, "--side-path" },
    { { "udsdump", "-i", "unix:/a", "--mode", "side", "--side-path", "rel", NULL }, "absolute" },
    { { "udsdump", "-i", "unix:relative", NULL }, "absolute" },
    { { "udsdump", "-i", "unix:@abstract", "--mode", "interpose", NULL }, "abstract" },
    { { "udsdump", "--bogus", NULL }, "bogus" },
    { { "udsdump", NULL }, "nothing to do" },
    { { "udsdump", "-i", "unix:/a", "--protocol", "klingon", NULL }, "klingon" },
    { { "udsdump", "-i", "unix:/a", "--log-level", "loud", NULL }, "log-level" },
  };
  for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_autoptr(GError) e = NULL;
    g_assert_false(parse(bad[i].argv, &o, &e));
    g_assert_nonnull(e);
    if (!strstr(e->message, bad[i].needle))
      g_error("case %u: \"%s\" does not name %s", i, e->message, bad[i].needle);
    g_assert_null(strchr(e->message, '\n'));
    uds_options_clear(&o);
  }
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/extcap/interfaces-parse", test_interfaces_parse);
  g_test_add_func("/extcap/config-parses", test_config_parses);
  g_test_add_func("/extcap/dlts", test_dlts);
  g_test_add_func("/extcap/filter-check", test_filter_check);
  g_test_add_func("/extcap/options", test_options);
  return g_test_run();
}
