/* wellknown — what well-known sockets are, and which TCP port makes Wireshark pick their dissector.
 *
 * The synthetic TCP stream (see capture.h) puts the server on a port Wireshark associates with the
 * socket's protocol, so a capture of docker.sock decodes as HTTP with no user action.
 */
#pragma once
#include <glib.h>

typedef struct {
  const char *name;    /* protocol keyword, as accepted by --protocol: "http", "mysql", ... */
  guint16 port;        /* server port in the synthetic frames */
  const char *label;   /* human description, may be NULL */
} UdsProto;

/* Best guess from the path ("docker.sock" -> HTTP "Docker Engine API", ".s.PGSQL.5432" -> pgsql...).
 * Never NULL: unknown sockets get the generic default. */
const UdsProto *uds_proto_guess(const char *path);
/* By keyword (case-insensitive), or a bare port number "8080" as a protocol of its own.  NULL if
 * unknown; *static_storage receives a port-only entry when the keyword is a number. */
const UdsProto *uds_proto_by_name(const char *name, UdsProto *static_storage);
/* The table, NULL-name terminated, for --help, the config selector and the docs. */
const UdsProto *uds_proto_table(void);
/* A short label for well-known sockets by path ("Docker Engine API"), or NULL. */
const char *uds_wellknown_label(const char *path);
