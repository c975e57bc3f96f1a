/* Frame builders (src/frame.c): every checksum recomputed here the slow, obvious way (big-endian
 * words, RFC 1071), every header field read back, metadata written and parsed, and a file of frames
 * checked by tshark with checksum validation on. */
#include "frame.h"

#include <pcap/pcap.h>
#include <string.h>
#include <unistd.h>

#include "tshark-util.h"

/* ---- references ---- */

static guint64 ref_sum(const guint8 *p, gsize n, guint64 s)
{
  for (gsize i = 0; i + 1 < n; i += 2)
    s += (guint64)(p[i] << 8 | p[i + 1]);
  if (n & 1)
    s += (guint64)p[n - 1] << 8;
  return s;
}

static guint16 ref_fold(guint64 s)
{
  while (s >> 16)
    s = (s & 0xffff) + (s >> 16);
  return (guint16)s;
}

static guint16 be16(const guint8 *p)
{
  return (guint16)(p[0] << 8 | p[1]);
}

static guint32 be32(const guint8 *p)
{
  return (guint32)p[0] << 24 | (guint32)p[1] << 16 | (guint32)p[2] << 8 | p[3];
}

static void fill_random(GRand *r, guint8 *p, gsize n)
{
  for (gsize i = 0; i < n; i++)
    p[i] = (guint8)g_rand_int(r);
}

/* IPv4 header at ip: checksum verifies (sum of all words is 0xffff). */
static void assert_ip_ok(const guint8 *ip)
{
  g_assert_cmpint(ip[0], ==, 0x45);
  g_assert_cmpuint(ref_fold(ref_sum(ip, 20, 0)), ==, 0xffff);
}

/* Transport checksum over pseudo-header + segment (length as Wireshark sums it). */
static guint16 transport_sum(const guint8 *ip, guint8 proto, const guint8 *seg, gsize seglen)
{
  guint64 s = ref_sum(ip + 12, 8, 0);
  s += proto;
  s += seglen >> 16;
  s += seglen & 0xffff;
  s += ref_sum(seg, seglen, 0);
  return ref_fold(s);
}

/* ---- tests ---- */

static void test_addressing(void)
{
  /* FNV-1a 32-bit test vectors, xor-folded. */
  g_assert_cmphex(uds_frame_path_hash("", 0), ==, 0x811c ^ 0x9dc5);
  g_assert_cmphex(uds_frame_path_hash("a", 1), ==, 0xe40c ^ 0x292c);
  g_assert_cmphex(uds_frame_path_hash("foobar", 6), ==, 0xbf9c ^ 0xf968);
  guint16 h = 0xab12;
  g_assert_cmphex(uds_frame_server_ip(h), ==, 0x0aab1201);
  g_assert_cmphex(uds_frame_client_ip(h, 0), ==, 0x0aab1202);
  g_assert_cmpuint(uds_frame_client_port(0), ==, 37009);
  g_assert_cmpuint(uds_frame_client_port(4160), ==, 41169);
  g_assert_cmpuint(uds_frame_client_port(4161), ==, 41171);
  g_assert_cmpuint(uds_frame_client_port(4161 + 3150), ==, 50000);
  g_assert_cmpuint(uds_frame_client_port(UDS_CLIENT_PORTS - 1), ==, 54327);
  g_assert_cmphex(uds_frame_client_ip(h, UDS_CLIENT_PORTS), ==, 0x0aab1203);
  g_assert_cmpuint(uds_frame_client_port(UDS_CLIENT_PORTS), ==, 37009);
  g_assert_cmphex(uds_frame_client_ip(h, UDS_CLIENT_PORTS * 252), ==, 0x0aab12fe);   /* .254, the last */
  g_assert_cmphex(uds_frame_client_ip(h, UDS_CLIENT_PORTS * 253), ==, 0x0aab1202);   /* wraps */
  guint8 mac[6];
  uds_frame_mac(0x0aab1201, mac);
  const guint8 want[6] = { 2, 0, 10, 0xab, 0x12, 1 };
  g_assert_cmpmem(mac, 6, want, 6);
}

static void test_checksum(void)
{
  g_autoptr(GRand) r = g_rand_new_with_seed(42);
  guint8 *src = g_malloc(300000), *dst = g_malloc(300000);
  fill_random(r, src, 300000);
  gsize sizes[] = { 0, 1, 2, 3, 7, 8, 15, 16, 31, 32, 33, 63, 64, 65, 127, 1500, 65495, 65507, 131070, 262144 };
  for (guint k = 0; k < G_N_ELEMENTS(sizes); k++) {
    for (gsize off = 0; off < 4; off++) {
      gsize n = sizes[k];
      guint16 want = (guint16)~ref_fold(ref_sum(src + off, n, 0));
      guint16 got = uds_frame_csum_finish(uds_frame_csum_partial(src + off, n, 0));
      guint8 b[2];
      memcpy(b, &got, 2);
      g_assert_cmphex(be16(b), ==, want);
      /* Fused copy, with every kind of copy length: whole, odd, even, none. */
      gsize copies[] = { n, n / 2, n / 2 | 1, 0 };
      for (guint c = 0; c < G_N_ELEMENTS(copies); c++) {
        gsize cl = MIN(copies[c], n);
        memset(dst, 0xee, n + 8);
        got = uds_frame_csum_finish(uds_frame_csum_copy(dst + 1 + off, src + off, n, cl, 0));
        memcpy(b, &got, 2);
        g_assert_cmphex(be16(b), ==, want);
        g_assert_cmpmem(dst + 1 + off, cl, src + off, cl);
        g_assert_cmpuint(dst[1 + off + cl], ==, 0xee);   /* not one byte more */
      }
    }
  }
  g_free(src);
  g_free(dst);
}

static void test_tcp_frame(void)
{
  g_autoptr(GRand) r = g_rand_new_with_seed(7);
  guint8 *payload = g_malloc(UDS_FRAME_TCP_MSS + 10);
  guint8 *out = g_malloc(UDS_FRAME_MAX);
  fill_random(r, payload, UDS_FRAME_TCP_MSS + 10);
  UdsFrameEnds e = { 0x0a010203, 0x0a010201, 40000, 80 };
  gsize sizes[] = { 0, 1, 2, 3, 100, 1461, 65494, UDS_FRAME_TCP_MSS };
  for (guint k = 0; k < G_N_ELEMENTS(sizes); k++) {
    for (int syn = 0; syn < 2; syn++) {
      gsize n = syn ? 0 : sizes[k];
      UdsTcpFields t = { .seq = 0xfffffff0u, .ack = 12345, .flags = syn ? UDS_TCP_SYN : (UDS_TCP_ACK | UDS_TCP_PSH),
                         .window = 65535, .syn_options = syn };
      gsize wire;
      gsize cap = uds_frame_tcp(out, &e, 77, &t, payload, n, n, &wire);
      gsize thl = 20 + (syn ? 8 : 0);
      g_assert_cmpuint(cap, ==, 14 + 20 + thl + n);
      g_assert_cmpuint(wire, ==, cap);
      g_assert_cmpuint(uds_frame_tcp_header_len(&t), ==, 14 + 20 + thl);
      g_assert_cmphex(be16(out + 12), ==, 0x0800);
      const guint8 *ip = out + 14, *tcp = ip + 20;
      assert_ip_ok(ip);
      g_assert_cmpuint(be16(ip + 2), ==, 20 + thl + n);
      g_assert_cmpuint(be16(ip + 4), ==, 77);
      g_assert_cmpuint(ip[9], ==, 6);
      g_assert_cmphex(be32(ip + 12), ==, e.src_ip);
      g_assert_cmphex(be32(ip + 16), ==, e.dst_ip);
      g_assert_cmpuint(be16(tcp), ==, 40000);
      g_assert_cmpuint(be16(tcp + 2), ==, 80);
      g_assert_cmphex(be32(tcp + 4), ==, t.seq);
      g_assert_cmpuint(be32(tcp + 8), ==, t.ack);
      g_assert_cmpuint(tcp[12] >> 4, ==, thl / 4);
      g_assert_cmphex(tcp[13], ==, t.flags);
      g_assert_cmpuint(transport_sum(ip, 6, tcp, thl + n), ==, 0xffff);
      g_assert_cmpmem(tcp + thl, n, payload, n);
      if (syn) {
        g_assert_cmpuint(tcp[20], ==, 2);
        g_assert_cmpuint(be16(tcp + 22), ==, UDS_FRAME_TCP_MSS);
        g_assert_cmpuint(tcp[25], ==, 3);
        g_assert_cmpuint(tcp[27], ==, UDS_FRAME_TCP_WSCALE);
      }
    }
  }
  /* Snap length: fewer bytes kept, the checksum still the whole segment's. */
  UdsTcpFields t = { .seq = 1, .ack = 2, .flags = UDS_TCP_ACK, .window = 65535 };
  memset(out, 0, UDS_FRAME_MAX);
  gsize wire;
  gsize cap = uds_frame_tcp(out, &e, 1, &t, payload, 5001, 33, &wire);
  g_assert_cmpuint(cap, ==, 54 + 33);
  g_assert_cmpuint(wire, ==, 54 + 5001);
  g_assert_cmpuint(out[cap], ==, 0);
  memcpy(out + cap, payload + 33, 5001 - 33);   /* complete it: the checksum must verify */
  g_assert_cmpuint(transport_sum(out + 14, 6, out + 34, 20 + 5001), ==, 0xffff);
  g_free(payload);
  g_free(out);
}

static void test_dgram_frames(void)
{
  g_autoptr(GRand) r = g_rand_new_with_seed(9);
  guint8 *payload = g_malloc(UDS_FRAME_DGRAM_MAX);
  guint8 *out = g_malloc(UDS_FRAME_MAX);
  guint8 *whole = g_malloc(UDS_FRAME_DGRAM_MAX + 8);
  fill_random(r, payload, UDS_FRAME_DGRAM_MAX);
  UdsFrameEnds e = { 0x0a010203, 0x0a010201, 40000, 514 };
  gsize sizes[] = { 0, 1, 2, 1000, 65506, UDS_FRAME_UDP_MAX, UDS_FRAME_UDP_MAX + 1, 100000, 131035, 131036, 200001,
                    UDS_FRAME_DGRAM_MAX };
  for (guint k = 0; k < G_N_ELEMENTS(sizes); k++) {
    gsize n = sizes[k];
    guint nf = uds_frame_dgram_count(n);
    g_assert_cmpuint(nf, ==, n <= 65507 ? 1 : 2);
    gsize covered = 0, ip_payload = 0;
    guint8 proto0 = 0;
    for (guint i = 0; i < nf; i++) {
      gsize off, span, wire;
      uds_frame_dgram_span(n, i, &off, &span);
      g_assert_cmpuint(off, ==, covered);
      gsize cap = uds_frame_dgram(out, &e, 5, i, payload, n, G_MAXSIZE, &wire);
      gsize hl = uds_frame_dgram_header_len(n, i);
      g_assert_cmpuint(cap, ==, hl + span);
      g_assert_cmpuint(wire, ==, cap);
      g_assert_cmpuint(cap, <=, UDS_FRAME_MAX);
      const guint8 *ip = out + 14;
      assert_ip_ok(ip);
      g_assert_cmpuint(be16(ip + 4), ==, 5);
      gsize iplen = cap - 14;
      g_assert_cmpuint(be16(ip + 2), ==, iplen <= 65535 ? iplen : 0);
      guint16 frag = be16(ip + 6);
      if (nf == 1) {
        g_assert_cmphex(frag, ==, 0x4000);
        g_assert_cmpuint(ip[9], ==, 17);
        g_assert_cmpuint(be16(ip + 20 + 4), ==, n + 8);
      } else {
        g_assert_cmpuint((frag & 0x1fff) * 8, ==, ip_payload);
        g_assert_cmpuint(!!(frag & 0x2000), ==, i == 0);
        g_assert_cmpuint(ip[9], ==, 136);
      }
      if (i == 0) {
        proto0 = ip[9];
        memcpy(whole, ip + 20, 8);
      }
      g_assert_cmpmem(out + hl, span, payload + off, span);
      memcpy(whole + 8 + off, payload + off, span);
      covered += span;
      ip_payload += iplen - 20;
    }
    g_assert_cmpuint(covered, ==, n);
    /* The reassembled datagram's checksum (UDP, or UDP-Lite over everything). */
    g_assert_cmpuint(transport_sum(out + 14, proto0, whole, n + 8), ==, 0xffff);
  }
  /* Snap: fewer bytes kept per frame, wire length unchanged. */
  gsize wire;
  gsize cap = uds_frame_dgram(out, &e, 5, 1, payload, 100000, 10, &wire);
  g_assert_cmpuint(cap, ==, 34 + 10);
  g_assert_cmpuint(wire, ==, 34 + 100000 - (65512 - 8));
  g_free(payload);
  g_free(out);
  g_free(whole);
}

typedef struct {
  guint n;
  guint16 types[16];
  GString *values;
} Tlvs;

static gboolean collect(guint16 type, const guint8 *value, guint16 len, gpointer user_data)
{
  Tlvs *t = user_data;
  if (t->n < G_N_ELEMENTS(t->types))
    t->types[t->n++] = type;
  g_string_append_len(t->values, (const char *)value, len);
  g_string_append_c(t->values, '|');
  return TRUE;
}

static void test_meta(void)
{
  guint8 buf[256];
  guint8 a[6] = { 2, 0, 10, 0, 0, 2 }, b[6] = { 2, 0, 10, 0, 0, 1 };
  UdsMetaHeader h = { .type = UDS_META_OPEN, .dir = 0, .conn_id = 0x01020304, .client_ip = 0x0a000002,
                      .server_ip = 0x0a000001, .client_port = 1025, .server_port = 80 };
  UdsMetaWriter w;
  g_assert_true(uds_meta_begin(&w, buf, sizeof buf, b, a, &h));
  uds_meta_str(&w, UDS_TLV_PATH, "/run/x.sock");
  uds_meta_u32(&w, UDS_TLV_CLIENT_PID, 4242);
  uds_meta_u64(&w, UDS_TLV_DROPPED_BYTES, G_GUINT64_CONSTANT(0x0102030405060708));
  uds_meta_u8(&w, UDS_TLV_SOCK_TYPE, 1);
  uds_meta_str(&w, UDS_TLV_SERVER_COMM, NULL);   /* left out */
  uds_meta_tlv(&w, UDS_TLV_FD_DESC, "", 0);
  g_assert_false(w.overflow);
  g_assert_cmpuint(w.len, ==, 14 + 24 + (4 + 11) + (4 + 4) + (4 + 8) + (4 + 1) + 4);
  /* The exact layout of format.md. */
  g_assert_cmpmem(buf, 6, b, 6);
  g_assert_cmpmem(buf + 6, 6, a, 6);
  g_assert_cmphex(be16(buf + 12), ==, 0x88b5);
  g_assert_cmpmem(buf + 14, 4, "UDSD", 4);
  g_assert_cmpuint(buf[18], ==, 1);
  g_assert_cmpuint(buf[19], ==, UDS_META_OPEN);
  g_assert_cmphex(be32(buf + 22), ==, 0x01020304);
  g_assert_cmpuint(be16(buf + 34), ==, 1025);
  g_assert_cmpuint(be16(buf + 38), ==, UDS_TLV_PATH);
  g_assert_cmpuint(be16(buf + 40), ==, 11);

  Tlvs t = { .values = g_string_new(NULL) };
  UdsMetaHeader back;
  g_assert_true(uds_meta_parse(buf, w.len, &back, collect, &t));
  g_assert_cmpuint(back.type, ==, h.type);
  g_assert_cmpuint(back.dir, ==, h.dir);
  g_assert_cmphex(back.conn_id, ==, h.conn_id);
  g_assert_cmphex(back.client_ip, ==, h.client_ip);
  g_assert_cmphex(back.server_ip, ==, h.server_ip);
  g_assert_cmpuint(back.client_port, ==, h.client_port);
  g_assert_cmpuint(back.server_port, ==, h.server_port);
  g_assert_cmpuint(t.n, ==, 5);
  g_assert_cmpuint(t.types[0], ==, UDS_TLV_PATH);
  g_assert_cmpuint(t.types[2], ==, UDS_TLV_DROPPED_BYTES);
  g_assert_cmpmem(t.values->str, 12, "/run/x.sock|", 12);
  g_string_free(t.values, TRUE);

  /* Truncated anywhere inside a TLV: rejected; on a TLV boundary: still well-formed. */
  for (gsize n = 0; n < w.len; n++) {
    gboolean boundary = n == 38 || n == 38 + 15 || n == 38 + 23 || n == 38 + 35 || n == 38 + 40;
    g_assert_cmpint(uds_meta_parse(buf, n, NULL, NULL, NULL), ==, boundary);
  }
  buf[14] = 'X';
  g_assert_false(uds_meta_parse(buf, w.len, NULL, NULL, NULL));

  /* Too small a buffer: TLVs left out, overflow set, the frame stays valid. */
  guint8 small[50];
  g_assert_true(uds_meta_begin(&w, small, sizeof small, b, a, &h));
  uds_meta_str(&w, UDS_TLV_PATH, "/a/rather/long/path/that/does/not/fit");
  uds_meta_u32(&w, UDS_TLV_CLIENT_PID, 1);
  g_assert_true(w.overflow);
  g_assert_cmpuint(w.len, ==, 38 + 8);
  g_assert_true(uds_meta_parse(small, w.len, NULL, NULL, NULL));
  g_assert_false(uds_meta_begin(&w, small, 20, b, a, &h));

  /* Arbitrary bytes never crash the parser (a cheap stand-in for the fuzz target). */
  g_autoptr(GRand) r = g_rand_new_with_seed(3);
  for (int i = 0; i < 20000; i++) {
    gsize n = g_rand_int_range(r, 0, sizeof buf);
    fill_random(r, buf, n);
    if (n >= 38 && g_rand_boolean(r)) {
      buf[12] = 0x88;
      buf[13] = 0xb5;
      memcpy(buf + 14, "UDSD\x01", 5);
    }
    uds_meta_parse(buf, n, NULL, NULL, NULL);
  }
}

/* Frames of every kind into a pcap file; tshark validates every checksum. */
static void test_tshark_checksums(void)
{
  g_autoptr(GRand) r = g_rand_new_with_seed(11);
  guint8 *payload = g_malloc(UDS_FRAME_DGRAM_MAX);
  guint8 *out = g_malloc(UDS_FRAME_MAX);
  fill_random(r, payload, UDS_FRAME_DGRAM_MAX);
  g_autofree char *dir = g_dir_make_tmp("capture-frame-XXXXXX", NULL);
  g_autofree char *file = g_build_filename(dir, "frames.pcap", NULL);
  pcap_t *p = pcap_open_dead_with_tstamp_precision(DLT_EN10MB, 262144, PCAP_TSTAMP_PRECISION_NANO);
  pcap_dumper_t *d = pcap_dump_open(p, file);
  g_assert_nonnull(d);
  struct pcap_pkthdr h = { 0 };
  guint tcp_frames = 0, udp_dgrams = 0, ip_frames = 0;
  /* TCP: a stream of segments of many sizes (odd ones too), so the conversation is consistent. */
  guint32 seq = 1000;
  /* Port 4: no dissector, so random payload is not reported as a malformed protocol. */
  UdsFrameEnds e = { 0x0a010202, 0x0a010201, 1025, 4 };
  for (int i = 0; i < 300; i++) {
    gsize n = i < 200 ? (gsize)i : (gsize)g_rand_int_range(r, 0, UDS_FRAME_TCP_MSS + 1);
    UdsTcpFields t = { .seq = seq, .ack = 1, .flags = UDS_TCP_ACK, .window = 65535 };
    gsize wire;
    h.caplen = (bpf_u_int32)uds_frame_tcp(out, &e, (guint16)i, &t, payload + (i % 7), n, n, &wire);
    h.len = (bpf_u_int32)wire;
    h.ts.tv_sec = i;
    pcap_dump((u_char *)d, &h, out);
    seq += (guint32)n;
    tcp_frames++;
    ip_frames++;
  }
  /* Datagrams, small to fragmented. */
  UdsFrameEnds u = { 0x0a010203, 0x0a010201, 1026, 4 };
  /* Not above ~128 KiB: tshark 4.0's own checksum sum overflows 32 bits on larger datagrams (it
   * then reports a good checksum as bad; test_dgram_frames checks those by recomputation). */
  gsize dsizes[] = { 0, 1, 3, 512, 1473, 65507, 65508, 70001, 100000, 131035 };
  for (guint k = 0; k < G_N_ELEMENTS(dsizes); k++) {
    for (guint i = 0; i < uds_frame_dgram_count(dsizes[k]); i++) {
      gsize wire;
      h.caplen = (bpf_u_int32)uds_frame_dgram(out, &u, (guint16)(500 + k), i, payload, dsizes[k], G_MAXSIZE, &wire);
      h.len = (bpf_u_int32)wire;
      pcap_dump((u_char *)d, &h, out);
      ip_frames++;
    }
    udp_dgrams++;
  }
  pcap_dump_close(d);
  pcap_close(p);

  g_autofree char *ipgood = tshark_run("-r", file, "-o", "ip.check_checksum:TRUE", "-Y", "ip.checksum.status == 1",
                                       "-T", "fields", "-e", "frame.number", NULL);
  g_assert_cmpuint(count_lines(ipgood), ==, ip_frames);
  g_autofree char *tcpgood = tshark_run("-r", file, "-o", "tcp.check_checksum:TRUE", "-Y", "tcp.checksum.status == 1",
                                        "-T", "fields", "-e", "frame.number", NULL);
  g_assert_cmpuint(count_lines(tcpgood), ==, tcp_frames);
  g_autofree char *udpgood = tshark_run("-r", file, "-o", "udp.check_checksum:TRUE", "-o", "udplite.check_checksum:TRUE",
                                        "-Y", "udp.checksum.status == 1", "-T", "fields", "-e", "udp.length", NULL);
  g_assert_cmpuint(count_lines(udpgood), ==, udp_dgrams);
  g_autofree char *bad = tshark_run("-r", file, "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
                                    "-o", "udp.check_checksum:TRUE", "-o", "udplite.check_checksum:TRUE",
                                    "-Y", "_ws.expert.severity >= warning || _ws.malformed", "-T", "fields",
                                    "-e", "frame.number", "-e", "_ws.expert.message", NULL);
  g_assert_cmpstr(bad, ==, "");
  g_unlink(file);
  g_rmdir(dir);
  g_free(payload);
  g_free(out);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  alarm(300);
  g_test_add_func("/frame/addressing", test_addressing);
  g_test_add_func("/frame/checksum", test_checksum);
  g_test_add_func("/frame/tcp", test_tcp_frame);
  g_test_add_func("/frame/dgram", test_dgram_frames);
  g_test_add_func("/frame/meta", test_meta);
  g_test_add_func("/frame/tshark-checksums", test_tshark_checksums);
  int rc = g_test_run();
  tshark_teardown();
  return rc;
}
