/* protocol — the lines of Wireshark's extcap protocol that udsdump prints: interfaces, DLTs, the
 * options dialog, and the capture-filter check.  Pure formatting over data, so tests can check every
 * line Wireshark would parse. */
#pragma once
#include <glib.h>
#include <stdio.h>

#define UDS_GENERIC_IFACE "udsdump"

/* --extcap-interfaces: the extcap line, one interface per socket, the generic interface. */
void uds_extcap_print_interfaces(FILE *out, GPtrArray *sockets /* UdsSocketInfo* */);
/* --extcap-dlts for one interface.  FALSE (nothing printed) for an unknown interface name. */
gboolean uds_extcap_print_dlts(FILE *out, const char *iface);
/* --extcap-config for one interface. */
gboolean uds_extcap_print_config(FILE *out, const char *iface);
/* Capture-filter check (Wireshark's GUI): NULL when valid, else the message to print. */
char *uds_extcap_check_filter(const char *filter);
/* Is this a name udsdump serves ("unix:..." or the generic one)? */
gboolean uds_extcap_iface_valid(const char *iface);
