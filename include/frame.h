/* frame — pure builders for the synthetic frames of the capture (see docs/capture-format.md).
 *
 * Everything here is a pure function of its arguments: no allocation, no I/O, no global state, so a
 * fuzz target can call any of it directly (build a frame from arbitrary header values and payload into
 * a buffer of UDS_FRAME_MAX bytes, or feed arbitrary bytes to uds_frame_meta_parse) and tests can
 * check it byte for byte.  Integers in the structs are in host order; the builders write network order.
 *
 * Frames are Ethernet II + IPv4 + TCP/UDP with correct IPv4 header and TCP/UDP checksums (but for
 * the TCP checksum of a payload spliced past user space, left 0), or Ethernet
 * II metadata frames (EtherType 0x88B5).  Payload is copied once into the frame while its checksum is
 * computed over the source in the same pass; a builder can keep fewer payload bytes than it checksums
 * (snap length), so a truncated frame still carries the checksum of the real segment.
 */
#pragma once
#include <glib.h>

#define UDS_FRAME_ETH_LEN 14
#define UDS_FRAME_IP_LEN 20
#define UDS_FRAME_TCP_LEN 20
#define UDS_FRAME_TCP_SYN_OPT_LEN 8            /* MSS, NOP, window scale */
#define UDS_FRAME_UDP_LEN 8
#define UDS_FRAME_IP_MAX 65535                 /* IPv4 total length */
#define UDS_FRAME_TCP_MSS (UDS_FRAME_IP_MAX - UDS_FRAME_IP_LEN - UDS_FRAME_TCP_LEN)   /* 65495 */
#define UDS_FRAME_UDP_MAX (UDS_FRAME_IP_MAX - UDS_FRAME_IP_LEN - UDS_FRAME_UDP_LEN)   /* 65507 */
/* Wireshark (dumpcap) and libpcap refuse pcap records longer than this. */
#define UDS_FRAME_RECORD_MAX 262144
/* A spliced segment (uds_frame_tcp_unsummed) may carry this much: one frame per spliced batch. */
#define UDS_FRAME_TCP_SPLICE_MSS (UDS_FRAME_RECORD_MAX - UDS_FRAME_ETH_LEN - UDS_FRAME_IP_LEN - UDS_FRAME_TCP_LEN)
#define UDS_FRAME_TCP_WSCALE 14                /* window 65535 << 14: never "window full" */
#define UDS_FRAME_TCP_WINDOW 65535
/* The first fragment of a large datagram carries this many IP payload bytes (a multiple of 8). */
#define UDS_FRAME_FRAG1_PAYLOAD 65512
/* Largest message kept whole (longer ones are truncated like a snap length would). */
#define UDS_FRAME_DGRAM_MAX (256 * 1024)
/* The longest frame built here (the second fragment of the largest datagram); Wireshark refuses pcap
 * records above 262144 bytes. */
#define UDS_FRAME_MAX (UDS_FRAME_ETH_LEN + UDS_FRAME_IP_LEN + UDS_FRAME_UDP_LEN + UDS_FRAME_DGRAM_MAX - UDS_FRAME_FRAG1_PAYLOAD)

#define UDS_FRAME_ETHERTYPE_IPV4 0x0800
#define UDS_FRAME_ETHERTYPE_META 0x88B5         /* IEEE 802 local experimental 1 */
#define UDS_FRAME_PROTO_TCP 6
#define UDS_FRAME_PROTO_UDP 17
#define UDS_FRAME_PROTO_UDPLITE 136

enum { UDS_TCP_FIN = 0x01, UDS_TCP_SYN = 0x02, UDS_TCP_RST = 0x04, UDS_TCP_PSH = 0x08, UDS_TCP_ACK = 0x10 };

/* One direction's addressing: the sender is src. */
typedef struct {
  guint32 src_ip, dst_ip;
  guint16 src_port, dst_port;
} UdsFrameEnds;

/* ---- addressing (format.md "Addressing") ---- */

/* FNV-1a 32-bit of the path, xor-folded to 16 bits. */
guint16 uds_frame_path_hash(const char *path, gsize len);
/* 10.h1.h2.1 */
guint32 uds_frame_server_ip(guint16 hash);
/* Client number n: 10.h1.h2.(2 + (n / UDS_CLIENT_PORTS) % 253), port number n % UDS_CLIENT_PORTS of
 * the ranges 37009-41169, 41171-44320, 50000-54327 (no Wireshark dissector is registered there). */
#define UDS_CLIENT_PORTS 11639u
guint32 uds_frame_client_ip(guint16 hash, guint32 n);
guint16 uds_frame_client_port(guint32 n);
/* 02:00 followed by the IPv4 address. */
void uds_frame_mac(guint32 ip, guint8 mac[6]);

/* ---- checksums ---- */

/* The 16-bit one's complement sum (RFC 1071) of len bytes, folded, not inverted: the word order is
 * the host's, so combine only with other values from these functions. */
guint32 uds_frame_csum_partial(const guint8 *data, gsize len, guint32 sum);
/* Same, copying copy_len (<= len) bytes to dst in the same pass.  dst and data must not overlap. */
guint32 uds_frame_csum_copy(guint8 *dst, const guint8 *data, gsize len, gsize copy_len, guint32 sum);
/* Folds and inverts: the value to store (already in network order in memory via memcpy). */
guint16 uds_frame_csum_finish(guint32 sum);

/* ---- frames ---- */

typedef struct {
  guint32 seq, ack;
  guint8 flags;              /* UDS_TCP_* */
  guint16 window;
  gboolean syn_options;      /* MSS UDS_FRAME_TCP_MSS and window scale UDS_FRAME_TCP_WSCALE */
} UdsTcpFields;

/* Ethernet + IPv4 + TCP with len payload bytes (len <= UDS_FRAME_TCP_MSS), of which only the first
 * copy_len are written.  out needs room for the headers + copy_len.  Returns the frame's captured
 * length (headers + copy_len); *wire_len (may be NULL) receives headers + len. */
gsize uds_frame_tcp(guint8 *out, const UdsFrameEnds *e, guint16 ip_id, const UdsTcpFields *t,
                    const guint8 *payload, gsize len, gsize copy_len, gsize *wire_len);
/* The headers of such a segment for a payload that is not in memory (the relay spliced it from one
 * socket to the other and into the capture without reading it): the same frame as uds_frame_tcp but
 * with TCP checksum 0, which Wireshark shows as unverified, and len up to UDS_FRAME_TCP_SPLICE_MSS:
 * past UDS_FRAME_TCP_MSS the IPv4 total length is 0 (as captured with TCP segmentation offload), which
 * Wireshark reads as the frame's.  Writes and returns the header length; the payload follows it in the
 * capture. */
gsize uds_frame_tcp_unsummed(guint8 *out, const UdsFrameEnds *e, guint16 ip_id, const UdsTcpFields *t, gsize len);
/* Header bytes uds_frame_tcp writes before the payload. */
gsize uds_frame_tcp_header_len(const UdsTcpFields *t);

/* A datagram of len bytes as IPv4 frames: how many (1 or 2) for this len (len <= UDS_FRAME_DGRAM_MAX).
 * Up to UDS_FRAME_UDP_MAX bytes: one UDP frame.  Above, a UDP length field cannot say the size, so
 * the datagram is UDP-Lite (IP protocol 136, checksum coverage 0 = all, its length is the IP payload's)
 * in two IPv4 fragments: UDS_FRAME_FRAG1_PAYLOAD bytes at offset 0, the rest at that offset; when
 * the rest is over 65515 bytes its IPv4 total length is written as 0, which Wireshark reads as "the
 * frame's length" (its ip.tso_support preference, on by default). */
guint uds_frame_dgram_count(gsize len);
/* Builds frame index (0-based) of that datagram into out (room: uds_frame_dgram_header_len(len, index)
 * + the payload bytes of that frame kept, at most snap of them; snap G_MAXSIZE for all).  The
 * checksum covers the whole datagram, so building index 0 reads all of payload.  Returns the captured
 * length; *wire_len receives the untruncated length. */
gsize uds_frame_dgram(guint8 *out, const UdsFrameEnds *e, guint16 ip_id, guint index,
                      const guint8 *payload, gsize len, gsize snap, gsize *wire_len);
gsize uds_frame_dgram_header_len(gsize len, guint index);
/* Offset in payload and length of the message bytes frame index carries. */
void uds_frame_dgram_span(gsize len, guint index, gsize *offset, gsize *span);

/* ---- metadata frames (format.md "Metadata frames") ---- */

enum {
  UDS_META_OPEN = 1, UDS_META_CLOSE = 2, UDS_META_DROP = 3, UDS_META_ANCILLARY = 4, UDS_META_INFO = 5,
  UDS_META_SENDER = 6,
};
enum { UDS_META_DIR_NONE = 255 };
enum {
  UDS_TLV_PATH = 1, UDS_TLV_SOCK_TYPE = 2, UDS_TLV_CLIENT_PID = 3, UDS_TLV_CLIENT_UID = 4,
  UDS_TLV_CLIENT_GID = 5, UDS_TLV_CLIENT_COMM = 6, UDS_TLV_SERVER_PID = 7, UDS_TLV_SERVER_COMM = 8,
  UDS_TLV_PROTO = 9, UDS_TLV_DROPPED_BYTES = 10, UDS_TLV_FD_COUNT = 11, UDS_TLV_FD_DESC = 12,
  UDS_TLV_CRED_PID = 13, UDS_TLV_CRED_UID = 14, UDS_TLV_CRED_GID = 15, UDS_TLV_CTRUNC = 16,
  UDS_TLV_CLIENT_ADDR = 17, UDS_TLV_CLIENT_GROUPS = 18, UDS_TLV_VERSION = 19, UDS_TLV_CAPTURE_START = 20,
  UDS_TLV_SENDER_PID = 21, UDS_TLV_SENDER_UID = 22, UDS_TLV_SENDER_GID = 23, UDS_TLV_SENDER_COMM = 24,
  UDS_TLV_SOURCE = 25,
};
#define UDS_META_HDR_LEN 24   /* after the Ethernet header */
#define UDS_META_MAGIC "UDSD"
#define UDS_META_VERSION 1

/* A metadata frame being written into a caller's buffer.  A TLV that does not fit (or a value over
 * 65535 bytes) is left out and sets overflow: the frame stays well-formed. */
typedef struct {
  guint8 *buf;
  gsize cap, len;
  gboolean overflow;
} UdsMetaWriter;

typedef struct {
  guint8 type, dir;
  guint32 conn_id;
  guint32 client_ip, server_ip;
  guint16 client_port, server_port;
} UdsMetaHeader;

/* Ethernet header (from src_mac to dst_mac) and the fixed part; FALSE if cap is too small. */
gboolean uds_meta_begin(UdsMetaWriter *w, guint8 *buf, gsize cap, const guint8 dst_mac[6],
                        const guint8 src_mac[6], const UdsMetaHeader *h);
void uds_meta_tlv(UdsMetaWriter *w, guint16 type, const void *value, gsize len);
void uds_meta_u8(UdsMetaWriter *w, guint16 type, guint8 v);
void uds_meta_u32(UdsMetaWriter *w, guint16 type, guint32 v);
void uds_meta_u64(UdsMetaWriter *w, guint16 type, guint64 v);
void uds_meta_str(UdsMetaWriter *w, guint16 type, const char *s);   /* NULL: left out */

/* Parses a whole Ethernet frame as a metadata frame.  FALSE if it is not one (EtherType, magic,
 * version, or a TLV running past the end).  tlv (may be NULL) is called for each TLV in order; it
 * returns FALSE to stop. */
typedef gboolean (*UdsMetaTlvFunc)(guint16 type, const guint8 *value, guint16 len, gpointer user_data);
gboolean uds_meta_parse(const guint8 *frame, gsize len, UdsMetaHeader *h, UdsMetaTlvFunc tlv, gpointer user_data);
