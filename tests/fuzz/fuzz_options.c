/* fuzz-options — udsdump's command line (uds_options_parse).
 *
 * The input is split at NUL bytes into argv words (at most 40).  Parsing must never crash or leak,
 * failures must come with a one-line message, and a parse that succeeds must leave consistent
 * options: a capture has an interface that names a socket path (or, observing, an abstract name),
 * numbers are in their documented ranges.  GOption's --help (and -h, -?) print and exit(0): those words are left out.
 */
#include "options.h"

#include <stdint.h>
#include <string.h>

#define CHECK(c) do { if (!(c)) { __builtin_trap(); } } while (0)
#define MAX_ARGS 40

static gboolean asks_for_help(const char *w)
{
  if (g_str_has_prefix(w, "--help"))
    return TRUE;
  /* a group of short options: "-xh" is -x -h */
  return w[0] == '-' && w[1] != '-' && (strchr(w, 'h') || strchr(w, '?'));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char *words[MAX_ARGS + 2];
  int argc = 0;
  words[argc++] = g_strdup("udsdump");
  const char *p = (const char *)data, *end = p + size;
  while (p < end && argc < MAX_ARGS) {
    const char *z = memchr(p, '\0', (size_t)(end - p));
    size_t n = z ? (size_t)(z - p) : (size_t)(end - p);
    char *w = g_strndup(p, n);
    if (asks_for_help(w))
      g_free(w);
    else
      words[argc++] = w;
    p += n + 1;
  }
  words[argc] = NULL;

  UdsOptions o;
  g_autoptr(GError) err = NULL;
  if (uds_options_parse(argc, words, &o, &err)) {
    CHECK(err == NULL);
    CHECK(o.action != UDS_ACTION_NONE);
    CHECK(o.buffer_mib >= 1 && o.buffer_mib <= 1024);
    CHECK(o.snaplen >= 0 && o.snaplen <= 262144);
    CHECK(o.count >= 0 && o.only_pid >= 0 && o.only_uid >= -1);
    if (o.action == UDS_ACTION_CAPTURE) {
      g_autoptr(GError) perr = NULL;
      g_autofree char *path = uds_options_socket_path(&o, &perr);
      /* an abstract name ("@...") only in observe mode, the one mode that can capture it */
      CHECK(path != NULL && (path[0] == '/' || (path[0] == '@' && o.mode == UDS_MODE_OBSERVE)) && strlen(path) < 108);
    }
  } else {
    CHECK(err != NULL && err->message && *err->message);
  }
  uds_options_clear(&o);   /* after a failure too: what was parsed so far must be freed */
  for (int i = 0; i < argc; i++)
    g_free(words[i]);
  return 0;
}
