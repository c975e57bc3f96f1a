/* fuzz-discover — the /proc/net/unix parser and the interface names built from what it returns.
 *
 * The input is the text of <proc>/net/unix (the kernel prints socket paths raw, so a local user
 * chooses these bytes).  Checked for every entry: an absolute path that fits sun_path; its interface
 * name is valid UTF-8 without the characters that end an extcap sentence, and decodes back to the
 * exact path; its display string is valid UTF-8.  The input is also fed to uds_iface_decode directly:
 * a value that decodes must re-encode to something that decodes to the same path.
 */
#include "discover.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(c) do { if (!(c)) { __builtin_trap(); } } while (0)

static void check_name(const char *path)
{
  g_autofree char *value = uds_iface_encode(path);
  CHECK(g_str_has_prefix(value, "unix:"));
  CHECK(g_utf8_validate(value, -1, NULL));
  for (const char *p = value; *p; p++)
    CHECK(*p != '{' && *p != '}' && *p != '\n' && *p != '\r' && *p != '\0');
  g_autoptr(GError) err = NULL;
  g_autofree char *back = uds_iface_decode(value, &err);
  CHECK(back != NULL);
  CHECK(strcmp(back, path) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  g_autoptr(GPtrArray) socks = uds_discover_parse((const char *)data, size);
  for (guint i = 0; i < socks->len; i++) {
    UdsSocketInfo *info = g_ptr_array_index(socks, i);
    size_t len = strlen(info->path);
    CHECK(len > 0 && len <= 108 && info->path[0] == '/');
    check_name(info->path);
    /* a hostile command name too: the display must stay valid UTF-8 */
    info->pid = (pid_t)(i + 1);
    info->comm = g_strndup((const char *)data, MIN(size, 16));
    g_autofree char *disp = uds_socket_display(info);
    CHECK(g_utf8_validate(disp, -1, NULL));
  }
  /* the bytes as an interface value (NUL-terminated copy) */
  g_autofree char *value = g_strndup((const char *)data, size);
  g_autoptr(GError) err = NULL;
  g_autofree char *path = uds_iface_decode(value, &err);
  if (path) {
    CHECK(*path != '\0');
    check_name(path);
  } else {
    CHECK(err != NULL && err->message != NULL);
  }
  return 0;
}
