/* Helpers shared by the capture tests: run the real tshark on a file and read what it says. */
#pragma once
#include <glib.h>
#include <glib/gstdio.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* A private HOME so that no personal Wireshark profile or plugin changes what tshark prints. */
static char *tshark_home;

static void tshark_setup(void)
{
  if (!tshark_home)
    tshark_home = g_dir_make_tmp("capture-tshark-XXXXXX", NULL);
  g_assert_nonnull(tshark_home);
}

static void tshark_teardown(void)
{
  if (tshark_home) {
    /* tshark may leave a profile folder behind: remove the whole tree. */
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", tshark_home);
    g_assert_cmpint(system(cmd), ==, 0);
    g_clear_pointer(&tshark_home, g_free);
  }
}

/* Runs `tshark ARGS...` (NULL-terminated), asserts it succeeded, returns its stdout. */
static char *tshark_run(const char *first, ...)
{
  tshark_setup();
  g_autoptr(GPtrArray) argv = g_ptr_array_new();
  g_ptr_array_add(argv, (char *)"timeout");
  g_ptr_array_add(argv, (char *)"120");
  g_ptr_array_add(argv, (char *)"tshark");
  va_list ap;
  va_start(ap, first);
  for (const char *a = first; a; a = va_arg(ap, const char *))
    g_ptr_array_add(argv, (char *)a);
  va_end(ap);
  g_ptr_array_add(argv, NULL);
  g_auto(GStrv) env = g_get_environ();
  env = g_environ_setenv(env, "HOME", tshark_home, TRUE);
  env = g_environ_unsetenv(env, "XDG_CONFIG_HOME");
  env = g_environ_unsetenv(env, "WIRESHARK_CONFIG_DIR");
  char *out = NULL, *err = NULL;
  int status = 0;
  g_autoptr(GError) error = NULL;
  gboolean ok = g_spawn_sync(NULL, (char **)argv->pdata, env, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err, &status, &error);
  g_assert_no_error(error);
  g_assert_true(ok);
  if (!g_spawn_check_wait_status(status, NULL))
    g_error("tshark failed (status %d): %s", status, err);
  g_free(err);
  return out;
}

/* Number of non-empty lines. */
static guint count_lines(const char *s)
{
  guint n = 0;
  g_auto(GStrv) lines = g_strsplit(s, "\n", -1);
  for (guint i = 0; lines[i]; i++)
    if (lines[i][0])
      n++;
  return n;
}

G_GNUC_UNUSED static char *sha256_hex(const guint8 *data, gsize len)
{
  return g_compute_checksum_for_data(G_CHECKSUM_SHA256, data, len);
}
