/* log — one place for udsdump's diagnostics.
 *
 * Wireshark shows anything an extcap writes to stderr during a capture as an error dialog
 * ("Error by extcap pipe"), so only real errors go to stderr, one clear line each.  Information and
 * debug output go to the log file given by --log-file (or nowhere), filtered by --log-level.
 * uds_error() always reaches stderr as well as the log file.
 */
#pragma once
#include <glib.h>

typedef enum { UDS_LOG_ERROR = 0, UDS_LOG_WARNING, UDS_LOG_MESSAGE, UDS_LOG_INFO, UDS_LOG_DEBUG } UdsLogLevel;

/* level: the most verbose level written to the log file; file: NULL or "" for none.
 * Returns FALSE with error set when the file cannot be opened. */
gboolean uds_log_init(UdsLogLevel level, const char *file, GError **error);
/* Parses "error", "warning", "message", "info", "debug" (Wireshark's --log-level words). */
gboolean uds_log_level_parse(const char *word, UdsLogLevel *level);
/* Warnings also go to stderr when set (the command-line front end; not under Wireshark). */
void uds_log_set_warnings_to_stderr(gboolean on);
void uds_log_close(void);

void uds_log(UdsLogLevel level, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
#define uds_error(...) uds_log(UDS_LOG_ERROR, __VA_ARGS__)
#define uds_warn(...) uds_log(UDS_LOG_WARNING, __VA_ARGS__)
#define uds_info(...) uds_log(UDS_LOG_INFO, __VA_ARGS__)
#define uds_debug(...) uds_log(UDS_LOG_DEBUG, __VA_ARGS__)

/* The error domain of udsdump's GErrors (glib only: no GIO). */
#define UDS_ERROR (uds_error_quark())
GQuark uds_error_quark(void);
typedef enum { UDS_ERROR_FAILED, UDS_ERROR_INVALID, UDS_ERROR_REFUSED, UDS_ERROR_SYSTEM } UdsErrorCode;
