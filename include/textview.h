/* textview — the human text view of a capture (UDS_FORMAT_TEXT), in the spirit of `socat -v`.
 *
 * Pure renderers: they append to a GString and touch nothing else, so capture.c queues their output
 * with the same bounded buffer as pcap records, and tests can check them directly.
 *
 *   12:01:02.000100 #3 curl[4242] -> /var/run/docker.sock  83 bytes
 *   GET /_ping HTTP/1.1\r
 *   Host: docker\r
 *   \r
 *   12:01:02.000300 #3 curl[4242] <- /var/run/docker.sock  5 bytes (binary)
 *   00000000  00 01 02 03 04                                    |.....|
 *
 * Every line is safe for a terminal: control bytes, escape sequences and invalid UTF-8 are shown
 * escaped (\xNN), never written raw.
 */
#pragma once
#include <glib.h>
#include <time.h>

/* The arrow of an event line: client to server, server to client, or no direction. */
typedef enum { UDS_TEXT_C2S = 0, UDS_TEXT_S2C = 1, UDS_TEXT_NONE = 2 } UdsTextDir;

/* "comm[pid]", "pid 123" or "?" (no credentials), from what is known of the client. */
char *uds_text_who(const char *comm, gint64 pid);

/* One event line: time (local), #conn, who, arrow, path, then what (printf-style), newline. */
void uds_text_event(GString *out, const struct timespec *ts, guint32 conn_id, const char *who, UdsTextDir dir,
                    const char *path, const char *fmt, ...) G_GNUC_PRINTF(7, 8);

/* TRUE when the bytes read better as a hex dump than as escaped text. */
gboolean uds_text_is_binary(const guint8 *data, gsize len);

/* The bytes themselves: escaped text lines (\r shown, \n ends a line) or a hex dump with offsets
 * (hex, or binary content).  Always ends with a newline when len > 0. */
void uds_text_payload(GString *out, const guint8 *data, gsize len, gboolean hex);
