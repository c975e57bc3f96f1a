/* log — see include/log.h.  Errors always reach stderr (under Wireshark that becomes the dialog the
 * user reads); everything else goes only to the --log-file, so a successful capture shows no dialog. */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static FILE *log_file;
static UdsLogLevel log_level = UDS_LOG_MESSAGE;
static gboolean warnings_to_stderr;

static const char *const level_names[] = { "error", "warning", "message", "info", "debug" };

gboolean uds_log_level_parse(const char *word, UdsLogLevel *level)
{
  for (guint i = 0; i < G_N_ELEMENTS(level_names); i++)
    if (g_ascii_strcasecmp(word, level_names[i]) == 0) {
      *level = (UdsLogLevel)i;
      return TRUE;
    }
  /* Wireshark also passes "noisy"; treat it as the most verbose. */
  if (g_ascii_strcasecmp(word, "noisy") == 0) {
    *level = UDS_LOG_DEBUG;
    return TRUE;
  }
  return FALSE;
}

gboolean uds_log_init(UdsLogLevel level, const char *file, GError **error)
{
  log_level = level;
  if (file && *file) {
    FILE *f = fopen(file, "ae");
    if (!f) {
      g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(errno), "cannot open log file %s: %s", file,
                  g_strerror(errno));
      return FALSE;
    }
    setvbuf(f, NULL, _IOLBF, 0);
    uds_log_close();
    log_file = f;
  }
  return TRUE;
}

void uds_log_set_warnings_to_stderr(gboolean on)
{
  warnings_to_stderr = on;
}

void uds_log_close(void)
{
  if (log_file)
    fclose(log_file);
  log_file = NULL;
}

void uds_log(UdsLogLevel level, const char *fmt, ...)
{
  int saved = errno;
  gboolean to_stderr = level == UDS_LOG_ERROR || (warnings_to_stderr && level == UDS_LOG_WARNING);
  gboolean to_file = log_file && level <= log_level;
  if (!to_stderr && !to_file) {
    errno = saved;
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  if (to_stderr) {
    /* one line, whatever the message quotes (a filter, a path): control characters as "?" */
    for (char *p = msg; *p; p++)
      if ((guchar)*p < 0x20 || *p == 0x7f)
        *p = '?';
    fprintf(stderr, "udsdump: %s\n", msg);
  }
  if (to_file) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    localtime_r(&ts.tv_sec, &tm);
    fprintf(log_file, "%02d:%02d:%02d.%06ld [%d] %s: %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
            ts.tv_nsec / 1000, (int)getpid(), level_names[level], msg);
  }
  errno = saved;
}

G_DEFINE_QUARK(udsdump-error-quark, uds_error)
