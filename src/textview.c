/* textview — renders capture events as text for a person at a terminal (see include/textview.h).
 *
 * The text is written to a terminal, so what the relayed bytes contain must never reach it raw: an
 * ESC or a C1 control byte could move the cursor, retitle the window or worse.  Only printable ASCII,
 * tab, newline and well-formed UTF-8 of printable characters pass; everything else is \xNN.
 * Whether a chunk is text or binary is decided on its first 4 KiB (a large body is one or the other).
 */
#include "textview.h"

#include <stdarg.h>
#include <string.h>

#define SNIFF_BYTES 4096

char *uds_text_who(const char *comm, gint64 pid)
{
  if (comm && *comm && pid > 0)
    return g_strdup_printf("%s[%" G_GINT64_FORMAT "]", comm, pid);
  if (pid > 0)
    return g_strdup_printf("pid %" G_GINT64_FORMAT, pid);
  return g_strdup("?");
}

/* Appends s, escaping what a terminal must not see. */
static void append_safe(GString *out, const char *s)
{
  for (const guint8 *p = (const guint8 *)s; *p; p++) {
    if (*p >= 0x20 && *p < 0x7f)
      g_string_append_c(out, (char)*p);
    else
      g_string_append_printf(out, "\\x%02x", *p);
  }
}

void uds_text_event(GString *out, const struct timespec *ts, guint32 conn_id, const char *who, UdsTextDir dir,
                    const char *path, const char *fmt, ...)
{
  struct tm tm;
  time_t sec = ts->tv_sec;
  localtime_r(&sec, &tm);
  g_string_append_printf(out, "%02d:%02d:%02d.%06ld ", tm.tm_hour, tm.tm_min, tm.tm_sec, ts->tv_nsec / 1000);
  if (conn_id)
    g_string_append_printf(out, "#%u ", conn_id);
  if (who) {
    append_safe(out, who);
    g_string_append(out, dir == UDS_TEXT_C2S ? " -> " : dir == UDS_TEXT_S2C ? " <- " : " -- ");
  }
  append_safe(out, path);
  g_string_append(out, "  ");
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *what = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  append_safe(out, what);
  g_string_append_c(out, '\n');
}

/* Length of a well-formed UTF-8 sequence of a printable character at p (at most n bytes), else 0. */
static gsize utf8_printable(const guint8 *p, gsize n)
{
  gsize len = p[0] >= 0xf0 ? 4 : p[0] >= 0xe0 ? 3 : p[0] >= 0xc2 ? 2 : 0;
  if (len == 0 || len > n || p[0] > 0xf4)
    return 0;
  gunichar c = g_utf8_get_char_validated((const char *)p, (gssize)len);
  if (c == (gunichar)-1 || c == (gunichar)-2)
    return 0;
  if (c < 0xa0 || !g_unichar_isprint(c))   /* C1 controls are terminal escapes too */
    return 0;
  return len;
}

gboolean uds_text_is_binary(const guint8 *data, gsize len)
{
  gsize n = MIN(len, SNIFF_BYTES), odd = 0;
  for (gsize i = 0; i < n;) {
    guint8 b = data[i];
    if (b == 0)
      return TRUE;
    if ((b >= 0x20 && b < 0x7f) || b == '\n' || b == '\r' || b == '\t') {
      i++;
      continue;
    }
    gsize u = b >= 0x80 ? utf8_printable(data + i, n - i) : 0;
    if (u) {
      i += u;
      continue;
    }
    /* A multi-byte character cut by the sniff window is not evidence of binary. */
    if (b >= 0xc2 && n < len && n - i < 4)
      break;
    odd++;
    i++;
  }
  return odd * 4 > n;   /* over a quarter would be escapes: a hex dump reads better */
}

static void append_hex(GString *out, const guint8 *data, gsize len)
{
  for (gsize off = 0; off < len; off += 16) {
    gsize n = MIN(16, len - off);
    g_string_append_printf(out, "%08" G_GSIZE_MODIFIER "x  ", off);
    for (gsize i = 0; i < 16; i++) {
      if (i < n)
        g_string_append_printf(out, "%02x ", data[off + i]);
      else
        g_string_append(out, "   ");
      if (i == 7)
        g_string_append_c(out, ' ');
    }
    g_string_append(out, " |");
    for (gsize i = 0; i < n; i++) {
      guint8 b = data[off + i];
      g_string_append_c(out, b >= 0x20 && b < 0x7f ? (char)b : '.');
    }
    g_string_append(out, "|\n");
  }
}

static void append_text(GString *out, const guint8 *data, gsize len)
{
  for (gsize i = 0; i < len;) {
    guint8 b = data[i];
    if ((b >= 0x20 && b < 0x7f && b != '\\') || b == '\n' || b == '\t') {
      /* Runs of plain bytes in one append. */
      gsize j = i + 1;
      while (j < len && ((data[j] >= 0x20 && data[j] < 0x7f && data[j] != '\\') || data[j] == '\n' || data[j] == '\t'))
        j++;
      g_string_append_len(out, (const char *)data + i, (gssize)(j - i));
      i = j;
      continue;
    }
    if (b == '\\') {
      g_string_append(out, "\\\\");
      i++;
      continue;
    }
    if (b == '\r') {
      g_string_append(out, "\\r");
      i++;
      continue;
    }
    gsize u = b >= 0x80 ? utf8_printable(data + i, len - i) : 0;
    if (u) {
      g_string_append_len(out, (const char *)data + i, (gssize)u);
      i += u;
      continue;
    }
    g_string_append_printf(out, "\\x%02x", b);
    i++;
  }
  if (len > 0 && data[len - 1] != '\n')
    g_string_append_c(out, '\n');
}

void uds_text_payload(GString *out, const guint8 *data, gsize len, gboolean hex)
{
  if (hex || uds_text_is_binary(data, len))
    append_hex(out, data, len);
  else
    append_text(out, data, len);
}
