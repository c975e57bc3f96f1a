#!/usr/bin/env python3
"""gen_capture — writes captures in udsdump's format without udsdump, for the dissector's tests.

An independent implementation of the wire format (docs/capture-format.md): a nanosecond pcap of
Ethernet/IPv4 frames, TCP for stream sockets and UDP for datagram sockets (UDP-Lite in two IPv4
fragments past 65507 bytes), between synthetic addresses derived from the socket path, plus metadata
frames (EtherType 0x88B5, "UDSD" header and TLVs) written before the frames they describe.  Written from the format
document alone, it checks the dissector against the document rather than against the C writer, and
its addressing helpers let the end-to-end test check the writer against the document too.

Every frame written is also recorded (Capture.frames) with what it is and which flow and direction it
belongs to, so a test can compute the expected dissection of every frame instead of hard-coding it.

  gen_capture.py demo OUT.pcap      the scenario the tests use, and a JSON summary on stdout
  gen_capture.py plain OUT.pcap     the same TCP traffic with no metadata frames at all
  gen_capture.py malformed OUT.pcap metadata frames a reader must survive
"""
import json
import struct
import sys

# Metadata event types, directions and TLV types (format.md).
OPEN, CLOSE, DROP, ANCILLARY, INFO = 1, 2, 3, 4, 5
C2S, S2C, NODIR = 0, 1, 255
T_PATH, T_SOCK_TYPE, T_CLIENT_PID, T_CLIENT_UID, T_CLIENT_GID, T_CLIENT_COMM = 1, 2, 3, 4, 5, 6
T_SERVER_PID, T_SERVER_COMM, T_PROTO, T_DROPPED, T_FD_COUNT, T_FD_DESC = 7, 8, 9, 10, 11, 12
T_CRED_PID, T_CRED_UID, T_CRED_GID, T_CTRUNC, T_CLIENT_ADDR, T_CLIENT_GROUPS = 13, 14, 15, 16, 17, 18
T_VERSION, T_CAPTURE_START = 19, 20
SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET = 1, 2, 5

ETH_IPV4, ETH_UDSD = 0x0800, 0x88B5
MSS = 65495                  # 65535 - IPv4 header - TCP header
TCP_MAX_PAYLOAD = MSS        # data segments carry no TCP options
UDP_MAX_PAYLOAD = 65507      # 65535 - IPv4 header - UDP header
FRAG1_PAYLOAD = 65512        # first fragment of an oversized datagram: a multiple of 8 that fits IPv4


def fnv1a32(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def path_hash16(path: bytes) -> int:
    """FNV-1a 32-bit of the path, xor-folded to 16 bits."""
    h = fnv1a32(path)
    return ((h >> 16) ^ h) & 0xFFFF


def server_ip(path: bytes) -> str:
    h = path_hash16(path)
    return "10.%d.%d.1" % (h >> 8, h & 0xFF)


CLIENT_PORT_RANGES = ((37009, 4161), (41171, 3150), (50000, 4328))
CLIENT_PORTS = sum(c for _, c in CLIENT_PORT_RANGES)


def client_addr(path: bytes, n: int):
    """(ip, port) of client number n (the capture's random start + connection id)."""
    h = path_hash16(path)
    k = n % CLIENT_PORTS
    for first, count in CLIENT_PORT_RANGES:
        if k < count:
            port = first + k
            break
        k -= count
    return "10.%d.%d.%d" % (h >> 8, h & 0xFF, 2 + (n // CLIENT_PORTS) % 253), port


def ip_bytes(ip: str) -> bytes:
    return bytes(int(x) for x in ip.split("."))


def mac(ip: str) -> bytes:
    return b"\x02\x00" + ip_bytes(ip)


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def tlv(t: int, value: bytes) -> bytes:
    return struct.pack("!HH", t, len(value)) + value


def tlv_u8(t, v):
    return tlv(t, struct.pack("!B", v))


def tlv_u32(t, v):
    return tlv(t, struct.pack("!I", v))


def tlv_u64(t, v):
    return tlv(t, struct.pack("!Q", v))


def tlv_str(t, s):
    return tlv(t, s if isinstance(s, bytes) else s.encode())


class Capture:
    def __init__(self, start_ns=1_700_000_000_123_456_789):
        self.records = []
        self.frames = []      # one dict per frame: kind, flow, dir, event, ...
        self.now = start_ns

    def tick(self, ns=1000):
        self.now += ns
        return self.now

    def add(self, frame: bytes, **what):
        self.records.append((self.tick(), frame))
        what["number"] = len(self.records)
        self.frames.append(what)
        return what["number"]

    def write(self, path):
        with open(path, "wb") as f:
            # pcap, nanosecond magic, version 2.4, snaplen 262144, LINKTYPE_ETHERNET
            f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 1))
            for ts, frame in self.records:
                f.write(struct.pack("<IIII", ts // 1_000_000_000, ts % 1_000_000_000, len(frame), len(frame)))
                f.write(frame)

    # -- raw frame builders ------------------------------------------------------------------
    def ipv4(self, src, dst, proto, payload, ident, frag_off=0, more=False):
        flags = (0x2000 if more else 0) | (frag_off // 8)
        total = 20 + len(payload)
        if total > 0xFFFF:
            total = 0     # the writer's convention for an oversized last fragment (Wireshark: ip.tso_support)
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, ident, flags, 64, proto, 0,
                          ip_bytes(src), ip_bytes(dst))
        hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
        return mac(dst) + mac(src) + struct.pack("!H", ETH_IPV4) + hdr + payload

    def info(self, path: bytes, sock_type=SOCK_STREAM, proto="http", version="0.1.0-gen"):
        body = b"UDSD" + struct.pack("!BBBBI4s4sHH", 1, INFO, NODIR, 0, 0, bytes(4), bytes(4), 0, 0)
        body += tlv_str(T_PATH, path) + tlv_u8(T_SOCK_TYPE, sock_type) + tlv_str(T_PROTO, proto)
        body += tlv_str(T_VERSION, version) + tlv_u64(T_CAPTURE_START, self.now)
        frame = bytes(6) + bytes(6) + struct.pack("!H", ETH_UDSD) + body
        return self.add(frame, kind="meta", event=INFO, flow=None, dir=NODIR, path=path, sock_type=sock_type,
                        proto=proto, version=version, start=self.now + 1000)


class Flow:
    """One connection (stream) or one datagram sender; the fields are what the OPEN frame says."""

    def __init__(self, cap, path: bytes, conn, n, sock_type=SOCK_STREAM, port=80, pid=0, uid=0, gid=0,
                 comm="", server_pid=0, server_comm="", proto="http", groups=None, addr=None,
                 extra_tlvs=b"", with_meta=True):
        self.cap, self.path, self.conn, self.sock_type = cap, path, conn, sock_type
        self.sip, self.sport = server_ip(path), port
        self.cip, self.cport = client_addr(path, n)
        self.pid, self.uid, self.gid, self.comm = pid, uid, gid, comm
        self.server_pid, self.server_comm, self.proto = server_pid, server_comm, proto
        self.groups, self.addr, self.extra_tlvs = groups, addr, extra_tlvs
        self.with_meta = with_meta   # False: traffic only, as another tool would capture it
        self.open_frame = None
        self.seq = [1000, 50000]
        self.ip_id = 1
        self.unacked = [0, 0]

    def ends(self, d):
        """(src ip, src port, dst ip, dst port) of direction d."""
        if d == C2S:
            return self.cip, self.cport, self.sip, self.sport
        return self.sip, self.sport, self.cip, self.cport

    def meta(self, event, d, tlvs):
        if not self.with_meta:
            return None
        body = b"UDSD" + struct.pack("!BBBBI4s4sHH", 1, event, d, 0, self.conn, ip_bytes(self.cip),
                                     ip_bytes(self.sip), self.cport, self.sport) + tlvs
        src, dst = (self.sip, self.cip) if d == S2C else (self.cip, self.sip)
        frame = mac(dst) + mac(src) + struct.pack("!H", ETH_UDSD) + body
        return self.cap.add(frame, kind="meta", event=event, flow=self, dir=d)

    def open(self):
        t = tlv_str(T_PATH, self.path) + tlv_u8(T_SOCK_TYPE, self.sock_type)
        t += tlv_u32(T_CLIENT_PID, self.pid) + tlv_u32(T_CLIENT_UID, self.uid) + tlv_u32(T_CLIENT_GID, self.gid)
        if self.groups is not None:
            t += tlv(T_CLIENT_GROUPS, b"".join(struct.pack("!I", g) for g in self.groups))
        t += tlv_str(T_CLIENT_COMM, self.comm)
        if self.addr:
            t += tlv_str(T_CLIENT_ADDR, self.addr)
        t += tlv_u32(T_SERVER_PID, self.server_pid) + tlv_str(T_SERVER_COMM, self.server_comm)
        t += tlv_str(T_PROTO, self.proto) + self.extra_tlvs
        n = self.open_frame = self.meta(OPEN, C2S, t)
        if self.sock_type == SOCK_STREAM:
            self.tcp(C2S, 0x02, opts=self.syn_opts())
            self.seq[C2S] += 1
            self.tcp(S2C, 0x12, opts=self.syn_opts())
            self.seq[S2C] += 1
            self.tcp(C2S, 0x10)
        return n

    @staticmethod
    def syn_opts():
        # MSS, NOP, window scale 7: 8 bytes, a multiple of 4 as the data offset needs
        return struct.pack("!BBH", 2, 4, MSS) + b"\x01" + struct.pack("!BBB", 3, 3, 7)

    def close(self):
        return self.meta(CLOSE, NODIR, b"")

    def drop(self, d, nbytes):
        n = self.meta(DROP, d, tlv_u64(T_DROPPED, nbytes))
        if n is not None:
            self.cap.frames[-1]["dropped"] = nbytes
        if self.sock_type == SOCK_STREAM:
            self.seq[d] = (self.seq[d] + nbytes) & 0xFFFFFFFF   # the gap Wireshark will show
        return n

    def ancillary(self, d, fds=(), cred=None, ctrunc=False):
        t = b""
        if fds:
            t += tlv_u32(T_FD_COUNT, len(fds)) + b"".join(tlv_str(T_FD_DESC, x) for x in fds)
        if cred:
            t += tlv_u32(T_CRED_PID, cred[0]) + tlv_u32(T_CRED_UID, cred[1]) + tlv_u32(T_CRED_GID, cred[2])
        if ctrunc:
            t += tlv_u8(T_CTRUNC, 1)
        n = self.meta(ANCILLARY, d, t)
        if n is not None:
            self.cap.frames[-1].update(fds=list(fds), cred=cred, ctrunc=ctrunc)
        return n

    # -- stream ------------------------------------------------------------------------------
    def tcp(self, d, flags, payload=b"", opts=b""):
        sip, sport, dip, dport = self.ends(d)
        ack = self.seq[1 - d] if flags & 0x10 else 0
        off = (20 + len(opts)) // 4
        hdr = struct.pack("!HHIIBBHHH", sport, dport, self.seq[d], ack, off << 4, flags, 0xFFFF, 0, 0) + opts
        pseudo = ip_bytes(sip) + ip_bytes(dip) + struct.pack("!BBH", 0, 6, len(hdr) + len(payload))
        c = csum(pseudo + hdr + payload)
        hdr = hdr[:16] + struct.pack("!H", c) + hdr[18:]
        self.ip_id += 1
        frame = self.cap.ipv4(sip, dip, 6, hdr + payload, self.ip_id)
        self.seq[d] = (self.seq[d] + len(payload)) & 0xFFFFFFFF
        return self.cap.add(frame, kind="tcp", flow=self, dir=d, payload=len(payload))

    def send(self, d, data: bytes):
        """Data from one side, in segments; returns the frame numbers."""
        out = []
        for i in range(0, len(data), TCP_MAX_PAYLOAD):
            out.append(self.tcp(d, 0x18, data[i:i + TCP_MAX_PAYLOAD]))
        self.unacked[d] += len(data)
        return out

    def ack(self, d):
        """A bare ACK from side d for what the other side sent."""
        self.unacked[1 - d] = 0
        return self.tcp(d, 0x10)

    def fin(self, d):
        n = self.tcp(d, 0x11)
        self.seq[d] = (self.seq[d] + 1) & 0xFFFFFFFF
        self.tcp(1 - d, 0x10)
        return n

    # -- datagram ----------------------------------------------------------------------------
    def message(self, d, data: bytes):
        """One datagram, whole.  Up to 65507 bytes: one UDP frame.  Above, a UDP length field cannot say
        the size, so (as the writer does, include/frame.h) UDP-Lite, checksum coverage 0 (all), in two
        IPv4 fragments: 65512 bytes at offset 0, then the rest."""
        sip, sport, dip, dport = self.ends(d)
        lite = len(data) > UDP_MAX_PAYLOAD
        proto = 136 if lite else 17
        udp = struct.pack("!HHHH", sport, dport, 0 if lite else 8 + len(data), 0) + data
        # pseudo-header: the length is the IP payload's, which may pass 65535 here; its high part joins
        # the one's complement sum as one more word
        pseudo = ip_bytes(sip) + ip_bytes(dip) + struct.pack("!HHH", proto, len(udp) & 0xFFFF, len(udp) >> 16)
        c = csum(pseudo + udp) or 0xFFFF
        udp = udp[:6] + struct.pack("!H", c) + udp[8:]
        self.ip_id += 1
        if not lite:
            return [self.cap.add(self.cap.ipv4(sip, dip, 17, udp, self.ip_id), kind="udp", flow=self, dir=d,
                                 payload=len(data))]
        first, rest = udp[:FRAG1_PAYLOAD], udp[FRAG1_PAYLOAD:]
        return [self.cap.add(self.cap.ipv4(sip, dip, proto, first, self.ip_id, more=True), kind="udp", flow=self,
                             dir=d, payload=len(data), fragment=1),
                self.cap.add(self.cap.ipv4(sip, dip, proto, rest, self.ip_id, frag_off=FRAG1_PAYLOAD), kind="frag",
                             flow=self, dir=d, payload=0, fragment=2)]


DOCKER = b"/var/run/docker.sock"
LOG = b"/run/demo/log.sock"


def demo(cap=None):
    """Two clients of one HTTP socket, interleaved (one with fds and credentials passed, one with lost
    capture data), and a datagram client whose second message is too big for UDP."""
    cap = cap or Capture()
    cap.info(DOCKER)
    a = Flow(cap, DOCKER, conn=1, n=4242, pid=4242, uid=1000, gid=1000, comm="curl", server_pid=99,
             server_comm="dockerd", groups=[27, 100], extra_tlvs=tlv(999, b"future"))
    b = Flow(cap, DOCKER, conn=2, n=4243, pid=5151, uid=0, gid=0, comm="python3", server_pid=99,
             server_comm="dockerd")
    a.open()
    b.open()
    a.send(C2S, b"GET /containers/json HTTP/1.1\r\nHost: docker\r\nUser-Agent: curl/7.88.1\r\n\r\n")
    b.send(C2S, b"GET /version HTTP/1.1\r\nHost: docker\r\n\r\n")
    body = b'{"Version":"24.0.7"}\n'
    b.send(S2C, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
           % (len(body), body))
    b.ack(C2S)
    a.send(S2C, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 3\r\n\r\n[]\n")
    a.ancillary(C2S, fds=["file /etc/hosts", "socket"], cred=(4242, 1000, 1000))
    a.ack(C2S)    # a bare ACK first: the descriptors belong to the next bytes, not to the next frame
    a.send(C2S, b"POST /echo HTTP/1.1\r\nHost: docker\r\nContent-Length: 4\r\n\r\nping")
    body = b"x" * 70000
    a.send(S2C, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    a.ack(C2S)
    a.ancillary(S2C, ctrunc=True)
    a.send(S2C, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
    a.ack(C2S)
    b.drop(S2C, 12345)
    b.send(S2C, b"tail of a response the reader was too slow for\n")
    b.ack(C2S)
    a.fin(C2S)
    a.fin(S2C)
    a.close()
    b.fin(C2S)
    b.fin(S2C)
    b.close()
    g = Flow(cap, LOG, conn=3, n=9, sock_type=SOCK_DGRAM, port=514, pid=777, uid=33, gid=33, comm="logger",
             server_pid=12, server_comm="rsyslogd", proto="syslog", addr=b"/tmp/logger.sock")
    g.open()
    g.message(C2S, b"<13>hello from logger")
    g.message(C2S, b"<13>" + bytes(70000))
    g.message(S2C, b"ack")
    g.close()
    return cap


def plain(cap=None):
    """The same kind of traffic as demo(), with no metadata frame at all (another tool's capture)."""
    cap = cap or Capture()
    f = Flow(cap, DOCKER, conn=1, n=4242, with_meta=False)
    f.open()
    f.send(C2S, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    f.send(S2C, b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\n")
    f.ack(C2S)
    f.fin(C2S)
    f.fin(S2C)
    g = Flow(cap, LOG, conn=2, n=9, sock_type=SOCK_DGRAM, port=514, with_meta=False)
    g.message(C2S, b"<13>plain")
    # another tool's use of the experimental EtherType: not "UDSD", must be left alone
    cap.add(mac("10.0.0.2") + mac("10.0.0.1") + struct.pack("!H", ETH_UDSD) + b"XXXX\x01\x02\x03\x04" * 4,
            kind="other", flow=None, dir=NODIR)
    return cap


def malformed(cap=None):
    """Metadata a reader must survive: empty strings, wrong TLV sizes, a TLV running past the frame,
    stray bytes, a truncated header, a future format version.  Each bad frame is marked "bad"."""
    cap = cap or Capture()
    f = Flow(cap, DOCKER, conn=7, n=100, pid=4242, comm="", server_comm="")   # empty strings are valid
    f.open()
    f.send(C2S, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    f.meta(ANCILLARY, C2S, tlv(T_FD_COUNT, b"\0\2"))                          # u32 in 2 bytes
    cap.frames[-1]["bad"] = True
    f.meta(ANCILLARY, C2S, tlv_u32(T_FD_COUNT, 1) + struct.pack("!HH", T_FD_DESC, 200) + b"short")
    cap.frames[-1]["bad"] = True
    f.meta(DROP, S2C, tlv_u64(T_DROPPED, 5) + b"\0\1\0")                     # 3 stray bytes
    cap.frames[-1]["bad"] = True
    f.meta(CLOSE, NODIR, tlv(T_CLIENT_GROUPS, b"\0\0\0\1\0") + tlv(4242, b""))  # not a multiple of 4; an
                                                                            # empty TLV ending the frame
    cap.frames[-1]["bad"] = True
    head = mac(f.sip) + mac(f.cip) + struct.pack("!H", ETH_UDSD)
    cap.add(head + b"UDSD\x01\x01\x00", kind="meta", flow=None, dir=NODIR, bad=True)   # truncated header
    cap.add(head + b"UDSD" + struct.pack("!BBBBI", 2, OPEN, 0, 0, 9) + bytes(16) + b"\xff" * 9,
            kind="meta", flow=None, dir=NODIR, bad=True, future=True)           # a later format version
    return cap


def summary(cap):
    out = []
    for fr in cap.frames:
        f = fr.get("flow")
        d = {k: v for k, v in fr.items() if k != "flow"}
        if f is not None:
            d.update(conn=f.conn, comm=f.comm, pid=f.pid, path=f.path.decode())
        if "path" in d and isinstance(d["path"], bytes):
            d["path"] = d["path"].decode()
        out.append(d)
    return out


def main():
    scenarios = {"demo": demo, "plain": plain, "malformed": malformed}
    if len(sys.argv) != 3 or sys.argv[1] not in scenarios:
        sys.stderr.write(__doc__)
        return 2
    cap = scenarios[sys.argv[1]]()
    cap.write(sys.argv[2])
    json.dump(summary(cap), sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
