/* options — udsdump's command line: Wireshark's extcap protocol, the capture options its dialog
 * offers, and tcpdump-style habits for a terminal.  Parsing only validates and fills UdsOptions;
 * nothing on disk is touched here. */
#pragma once
#include <glib.h>

typedef enum {
  UDS_ACTION_NONE = 0,
  UDS_ACTION_INTERFACES,    /* --extcap-interfaces */
  UDS_ACTION_DLTS,          /* --extcap-dlts */
  UDS_ACTION_CONFIG,        /* --extcap-config */
  UDS_ACTION_CHECK_FILTER,  /* --extcap-capture-filter without --capture */
  UDS_ACTION_CAPTURE,       /* --capture (Wireshark) or -i (terminal) */
  UDS_ACTION_LIST,          /* -D */
  UDS_ACTION_RESTORE,       /* --restore PATH */
  UDS_ACTION_VERSION,
} UdsAction;

typedef enum { UDS_MODE_INTERPOSE = 0, UDS_MODE_SIDE, UDS_MODE_OBSERVE } UdsMode;

typedef struct {
  UdsAction action;
  gboolean from_wireshark;   /* --capture given: output is the --fifo, errors are Wireshark dialogs */
  char *extcap_version;
  char *interface;           /* "unix:PATH" or "udsdump" */
  char *fifo;                /* --fifo PATH, "-" = stdout */
  char *write_file;          /* -w FILE, "-" = stdout (terminal use) */
  char *filter;              /* --extcap-capture-filter, or trailing words as in tcpdump */
  char *log_level, *log_file;
  /* capture options (the Wireshark dialog) */
  UdsMode mode;
  char *side_path;
  char *socket_path;         /* for the generic "udsdump" interface */
  char *protocol;            /* "auto", a keyword, or a port */
  gint only_pid;             /* 0: any */
  char *only_comm;
  gint64 only_uid;           /* -1: any */
  gint buffer_mib;
  gboolean lossless;
  gint snaplen;
  gboolean close_inflight;
  /* terminal */
  gint64 count;              /* -c */
  gboolean hex;              /* -x: hex dump in the text view */
  char *restore_path;
} UdsOptions;

/* Parses argv.  FALSE with a one-line error naming the problem. */
gboolean uds_options_parse(int argc, char **argv, UdsOptions *o, GError **error);
void uds_options_clear(UdsOptions *o);
/* The socket path the options designate (interface or --socket-path), or NULL with error. */
char *uds_options_socket_path(const UdsOptions *o, GError **error);
/* The --help text. */
char *uds_options_help(void);
