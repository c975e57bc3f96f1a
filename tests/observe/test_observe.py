#!/usr/bin/env python3
"""Observe mode (eBPF) against real processes on the real kernel: nothing is interposed, so the client
here connects BEFORE the capture starts, and the socket's inode must never change.

Readiness is a signal: udsdump writes its pcap header only once its programs are attached; tshark prints
"Capturing on" only after it has read that header; a client says "connected" on its stdout and waits for
"go" on its stdin.  Every test checks that no BPF program of ours stays loaded.

These tests need root (or CAP_BPF + CAP_PERFMON) and a kernel with BTF; they are registered only when
udsdump is built with -Dbpf, and skip with the reason when not run as root.
"""
import ctypes
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "dissector"))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
from udstest import PATH_EVENTS, DirWatch, SRCDIR, UDSDUMP, UdsTestCase, ident, main, read_exactly, sha256  # noqa: E402
from test_e2e_real import pcap_frames, parse_meta  # noqa: E402
from test_e2e import LineReader  # noqa: E402
import wireshark as W  # noqa: E402

FORK_SERVER = os.path.join(SRCDIR, "tests", "reliability", "fork_server.py")
META_OPEN, META_DROP, META_ANCILLARY, META_SENDER = 1, 3, 4, 6
TLV_CLIENT_PID, TLV_DROPPED_BYTES, TLV_FD_COUNT, TLV_FD_DESC, TLV_SENDER_PID, TLV_SENDER_COMM = 3, 10, 11, 12, 21, 24
OUR_PROGS = ("uds_enter", "uds_exit")
IN_MODIFY = 0x2

# A client in its own process: connects, says "connected PID", waits for "go", then per line of LINES
# sends it and reads the reply line; prints each reply; exits at the end.  With a greeting, it first
# reads one line from the server (fork_server.py sends the child's pid).
CLIENT = r"""
import socket, sys, os
path, n, greet = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(path if not path.startswith("@") else "\0" + path[1:])
f = s.makefile("rb")
first = f.readline().decode().strip() if greet else ""
if greet:
    s.sendall(b"echo\n")
print("connected", os.getpid(), first, flush=True)
sys.stdin.readline()
for i in range(n):
    line = b"line %d from %d\n" % (i, os.getpid())
    s.sendall(line)
    print(f.readline().decode(), end="", flush=True)
s.close()
"""


class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class MsgHdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.c_void_p),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", MsgHdr), ("len", ctypes.c_uint)]


def u32(b):
    return struct.unpack("!I", b)[0]


def bpf_progs():
    """Names of the BPF programs loaded on the host (bpftool prog show)."""
    r = subprocess.run(["bpftool", "prog", "show"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    return re.findall(r"^\d+: \S+\s+name (\S+)", r.stdout.decode(errors="replace"), re.M)


def ours_loaded(timeout=10):
    """Our programs still loaded after timeout: the kernel frees them once the last descriptor closes
    (asynchronously, after an RCU grace period), so this waits for that to happen."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in bpf_progs() if p in OUR_PROGS]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def flows(pcap):
    """Per connection id: its OPEN metadata, the bytes of each direction, the senders of each direction
    (in order, from SENDER frames), the DROP count, the bytes the DROPs report per direction, the
    ANCILLARY frames, and the data frames' directions and sizes in capture order."""
    out, by_tuple = {}, {}
    for _, fr in pcap_frames(pcap):
        m = parse_meta(fr)
        if m is not None:
            if m["event"] == 5:
                continue
            f = out.setdefault(m["conn"], {"open": None, "data": [bytearray(), bytearray()], "senders": [[], []], "drops": 0,
                                           "dropped": [0, 0], "anc": [], "msgs": [[], []], "order": []})
            by_tuple[(m["cip"], m["cport"])] = f
            if m["event"] == META_OPEN:
                f["open"] = m
            elif m["event"] == META_SENDER:
                f["senders"][m["dir"]].append((u32(m["tlv"][TLV_SENDER_PID][0]),
                                               m["tlv"].get(TLV_SENDER_COMM, [b""])[0].decode()))
            elif m["event"] == META_DROP:
                f["drops"] += 1
                f["dropped"][m["dir"]] += sum(int.from_bytes(v, "big") for v in m["tlv"].get(TLV_DROPPED_BYTES, []))
            elif m["event"] == META_ANCILLARY:
                f["anc"].append(m)
            continue
        if fr[12:14] != b"\x08\x00" or fr[23] not in (6, 17):
            continue
        ihl = (fr[14] & 15) * 4
        t = 14 + ihl
        hl = (fr[t + 12] >> 4) * 4 if fr[23] == 6 else 8
        # IPv4 total length 0: a segment longer than 16 bits can say, the rest of the frame (TSO's way)
        total = struct.unpack("!H", fr[16:18])[0] or len(fr) - 14
        payload = fr[t + hl:14 + total]
        src = ".".join(str(b) for b in fr[26:30])
        sport = struct.unpack("!H", fr[t:t + 2])[0]
        dst = ".".join(str(b) for b in fr[30:34])
        dport = struct.unpack("!H", fr[t + 2:t + 4])[0]
        for key, d in (((src, sport), 0), ((dst, dport), 1)):
            if key in by_tuple:
                by_tuple[key]["data"][d] += payload
                if payload:
                    by_tuple[key]["order"].append((d, len(payload)))
                if fr[23] == 17:
                    by_tuple[key]["msgs"][d].append(payload)
                break
    for f in out.values():
        f["data"] = [bytes(d) for d in f["data"]]   # built in place: a large capture is no quadratic copy
    return out


@unittest.skipUnless(os.geteuid() == 0, "observe mode needs root (or CAP_BPF and CAP_PERFMON): run as root")
class ObserveTest(UdsTestCase):
    def setUp(self):
        super().setUp()
        self.client_py = os.path.join(self.tmp, "client.py")
        with open(self.client_py, "w") as f:
            f.write(CLIENT)

    def tearDown(self):
        super().tearDown()
        self.assertEqual(ours_loaded(), [], "BPF programs of udsdump left loaded")

    def client(self, path, n, greet=False):
        p = self.spawn([sys.executable, self.client_py, path, str(n), "1" if greet else "0"],
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        words = p.stdout.readline().decode().split()
        self.assertEqual(words[:1], ["connected"], p.stderr.read().decode(errors="replace") if not words else words)
        p.client_pid = int(words[1])
        p.greeting = words[2] if len(words) > 2 else None
        return p

    def exchange(self, p, n):
        """Lets a connected client go; returns what it sent and the replies it read."""
        p.stdin.write(b"go\n")
        p.stdin.flush()
        replies = [p.stdout.readline() for _ in range(n)]
        self.assertEqual(p.wait(timeout=30), 0, p.stderr.read().decode(errors="replace"))
        sent = [b"line %d from %d\n" % (i, p.client_pid) for i in range(n)]
        return sent, replies

    def observe(self, iface, *args):
        return self.start_udsdump(None, "--mode", "observe", *args, iface=iface)

    def observed_connection(self, name, kind, type_=socket.SOCK_STREAM):
        """A test server of that kind, a client socket connected to it, then the capture started."""
        path = os.path.join(self.tmp, name)
        self.start_echo(path, kind)
        s = socket.socket(socket.AF_UNIX, type_)
        s.connect(path)
        return s, self.observe("unix:" + path)

    def check_lines(self, pcap, client, sent, replies, server_sender=None):
        f = flows(pcap)
        self.assertEqual(len(f), 1, f)
        (flow,) = f.values()
        self.assertEqual(u32(flow["open"]["tlv"][TLV_CLIENT_PID][0]), client.client_pid,
                         "the connection is labelled with the client's pid")
        self.assertEqual(flow["data"][0], b"".join(sent), "every line, exact")
        self.assertEqual(b"".join(replies), b"".join(sent), "the echo server answered each line")
        self.assertTrue(flow["data"][1].endswith(b"".join(replies)), "every reply, exact")
        self.assertEqual({pid for pid, _ in flow["senders"][0]}, {client.client_pid}, "each chunk's sender")
        if server_sender is not None:
            self.assertEqual({pid for pid, _ in flow["senders"][1]}, {server_sender})
        self.assertEqual(flow["drops"], 0)
        return flow

    def test_connected_before_capture_lines_exact(self):
        path = os.path.join(self.tmp, "echo.sock")
        server = self.start_echo(path, "echo")
        before, listing = ident(path), self.listing()
        c = self.client(path, 20)
        p = self.observe("unix:" + path)
        self.assertEqual(ident(path), before, "observe mode touches nothing")
        sent, replies = self.exchange(c, 20)
        pcap, err = self.stop_udsdump(p)
        self.assertEqual(p.returncode, 0, err)
        self.check_lines(pcap, c, sent, replies, server_sender=server.pid)
        self.assertEqual(ident(path), before, "the socket's inode never changed")
        self.assertEqual(self.listing(), listing)

    def test_pid_namespace_of_its_own_names_no_host_pid(self):
        """udsdump in a pid namespace of its own, as in a container: the host's client has no pid there,
        so its connection and its chunks are labelled 0 ("none"), never with a host pid that udsdump
        and its user cannot look up; the bytes are exact all the same."""
        path = os.path.join(self.tmp, "echo.sock")
        self.start_echo(path, "echo")
        c = self.client(path, 5)
        p = self.start_udsdump(None, "--mode", "observe", iface="unix:" + path,
                               prefix=["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"])
        sent, replies = self.exchange(c, 5)
        # unshare waits out SIGTERM; udsdump (its child, pid 1 of the new namespace) is stopped with it
        with open("/proc/%d/task/%d/children" % (p.pid, p.pid)) as f:
            (ud,) = [int(x) for x in f.read().split()]
        os.kill(ud, signal.SIGTERM)
        pcap, err = self.stop_udsdump(p, sig=None)
        f = flows(pcap)
        self.assertEqual(len(f), 1, (f, err))
        (flow,) = f.values()
        self.assertEqual(u32(flow["open"]["tlv"][TLV_CLIENT_PID][0]), 0, "no host pid in the label")
        self.assertLessEqual({pid for pid, _ in flow["senders"][0]}, {0}, "nor in the chunks' senders")
        self.assertEqual(flow["data"][0], b"".join(sent), "every line, exact")
        self.assertTrue(flow["data"][1].endswith(b"".join(replies)), "every reply, exact")

    def test_abstract_socket(self):
        name = "@udsdump-test-" + uuid.uuid4().hex
        # echo_server.py binds paths: the abstract listener is this test's own socket.
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind("\0" + name[1:])
        srv.listen(4)
        c = self.client(name, 5)
        conn, _ = srv.accept()
        listed = subprocess.run([UDSDUMP, "--extcap-interfaces"], stdout=subprocess.PIPE, timeout=60).stdout.decode()
        self.assertIn("{value=unix:%s}" % name, listed, "abstract sockets are listed as unix:@NAME")
        p = self.observe("unix:" + name)
        c.stdin.write(b"go\n")
        c.stdin.flush()
        sent = [b"line %d from %d\n" % (i, c.client_pid) for i in range(5)]
        f = conn.makefile("rb")
        for line in sent:
            self.assertEqual(f.readline(), line)
            conn.sendall(line)
        replies = [c.stdout.readline() for _ in range(5)]
        self.assertEqual(c.wait(timeout=30), 0)
        pcap, err = self.stop_udsdump(p)
        conn.close()
        srv.close()
        self.assertEqual(p.returncode, 0, err)
        self.check_lines(pcap, c, sent, replies, server_sender=os.getpid())

    def test_forking_server_children_answer(self):
        path = os.path.join(self.tmp, "fork.sock")
        fifo = self._ready_fifo("fork")
        server = self.spawn([sys.executable, FORK_SERVER, path, "--ready", fifo], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
        self._wait_ready(fifo, server, "the forking server")
        try:
            clients = [self.client(path, 10, greet=True) for _ in range(3)]
            p = self.observe("unix:" + path)
            done = [self.exchange(c, 10) for c in clients]
            pcap, err = self.stop_udsdump(p)
        finally:
            os.killpg(server.pid, signal.SIGKILL)
        self.assertEqual(p.returncode, 0, err)
        f = flows(pcap)
        self.assertEqual(len(f), 3)
        for c, (sent, replies) in zip(clients, done):
            (flow,) = [x for x in f.values() if u32(x["open"]["tlv"][TLV_CLIENT_PID][0]) == c.client_pid]
            self.assertEqual(flow["data"][0], b"".join(sent))
            self.assertEqual(flow["data"][1], b"".join(replies))
            child = int(c.greeting)
            self.assertNotEqual(child, server.pid)
            self.assertEqual({pid for pid, _ in flow["senders"][1]}, {child}, "the forked child is the sender")

    def test_writev_sendmsg_and_descriptors(self):
        s, p = self.observed_connection("fd.sock", "fdecho")
        parts = [b"a" * 100, b"b" * 70000, b"c" * 5]
        os.writev(s.fileno(), parts)                       # writev: one record per iovec piece, in order
        hosts = open("/etc/hosts", "rb")
        s.sendmsg([b"with-fd", b"-and-more"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", hosts.fileno()))])
        got = b""
        s.shutdown(socket.SHUT_WR)
        while True:
            b = s.recv(1 << 20)
            if not b:
                break
            got += b
        s.close()
        pcap, err = self.stop_udsdump(p)
        # Descriptors are described from the sender's /proc when their record arrives: the sender still
        # holds this one (docs/guarantees.md says what a sender that closes it at once leaves).
        hosts.close()
        self.assertEqual(p.returncode, 0, err)
        (flow,) = flows(pcap).values()
        self.assertEqual(flow["data"][0], b"".join(parts) + b"with-fd-and-more")
        self.assertEqual(flow["data"][1], got, "the replies, exact")
        anc = [a for a in flow["anc"] if a["dir"] == 0]
        self.assertEqual(len(anc), 1, flow["anc"])
        self.assertEqual(u32(anc[0]["tlv"][TLV_FD_COUNT][0]), 1)
        self.assertEqual(anc[0]["tlv"][TLV_FD_DESC][0], b"file /etc/hosts")

    def test_sendmmsg(self):
        """sendmmsg: several messages of several iovecs each, in one call (glibc's sendmmsg, via ctypes)."""
        s, p = self.observed_connection("mm.sock", "stream")
        parts = [[b"first-", os.urandom(50000)], [b"second"], [os.urandom(70000), b"-third"]]
        keep = [[ctypes.create_string_buffer(b, len(b)) for b in m] for m in parts]
        msgs = (MMsgHdr * len(parts))()
        iovs = []
        for i, m in enumerate(keep):
            iov = (IoVec * len(m))(*[IoVec(ctypes.cast(b, ctypes.c_void_p), len(b)) for b in m])
            iovs.append(iov)
            msgs[i].hdr.iov = ctypes.cast(iov, ctypes.c_void_p)
            msgs[i].hdr.iovlen = len(m)
        libc = ctypes.CDLL(None, use_errno=True)
        sent = libc.sendmmsg(s.fileno(), msgs, len(parts), 0)
        self.assertEqual(sent, len(parts), os.strerror(ctypes.get_errno()))
        self.assertEqual([msgs[i].len for i in range(len(parts))], [sum(map(len, m)) for m in parts])
        s.shutdown(socket.SHUT_WR)
        reply = s.makefile("rb").readline()
        s.close()
        data = b"".join(b"".join(m) for m in parts)
        self.assertEqual(reply.strip().decode(), sha256(data))
        pcap, err = self.stop_udsdump(p)
        self.assertEqual(p.returncode, 0, err)
        (flow,) = flows(pcap).values()
        self.assertEqual(flow["data"][0], data, "every message of the call, every iovec, in order")

    def test_seqpacket_messages_whole(self):
        s, p = self.observed_connection("seq.sock", "seqpacket", socket.SOCK_SEQPACKET)
        msgs = [b"hello", os.urandom(40000), b"end"]   # the middle one leaves the kernel in two records
        replies = []
        for m in msgs:
            s.send(m)
            replies.append(s.recv(1 << 17))
        s.close()
        pcap, err = self.stop_udsdump(p)
        self.assertEqual(p.returncode, 0, err)
        self.assertEqual(replies, [struct.pack("!I", len(m)) + m for m in msgs])
        (flow,) = flows(pcap).values()
        self.assertEqual(flow["msgs"][0], msgs, "each message whole, as one datagram")
        self.assertEqual(flow["msgs"][1], replies)

    def test_sigkill_during_bulk_transfer(self):
        data = os.urandom(1 << 20) * 48
        s, p = self.observed_connection("bulk.sock", "stream")
        s.sendall(data[:len(data) // 2])
        p.kill()                                          # SIGKILL mid-transfer
        p.wait(timeout=30)
        s.sendall(data[len(data) // 2:])
        s.shutdown(socket.SHUT_WR)
        reply = s.makefile("rb").readline()
        s.close()
        self.assertEqual(reply.strip().decode(), sha256(data), "the transfer completes untouched")
        self.assertEqual(ours_loaded(), [], "nothing stays attached after SIGKILL")

    def test_bulk_every_write_size_exact(self):
        # Bulk in the sizes real programs write, each path of the fast path taken (copied into the queue,
        # written straight into the assembly pipe, through the payload pipe when the capture is behind):
        # the capture holds every byte once, in order.
        data = os.urandom(24 << 20)
        s, p = self.observed_connection("bulkx.sock", "stream")
        off, sizes = 0, [100, 4096, 9000, 16384, 32768, 65536, 200000, 1 << 20]
        while off < len(data):
            n = sizes[(off // 7) % len(sizes)]
            s.sendall(data[off:off + n])
            off += n
        s.shutdown(socket.SHUT_WR)
        reply = s.makefile("rb").readline()
        s.close()
        self.assertEqual(reply.strip().decode(), sha256(data), "the transfer is untouched")
        pcap, err = self.stop_udsdump(p)
        self.assertEqual(p.returncode, 0, err)
        (flow,) = flows(pcap).values()
        self.assertEqual(flow["drops"], 0)
        self.assertEqual(len(flow["data"][0]), len(data))
        self.assertTrue(flow["data"][0] == data, "every byte, exact and in order")

    def test_reply_never_before_its_request(self):
        # A reply's send can end before its request's send has (the requester was merely slow to be
        # scheduled again); the capture still shows every request before the reply it caused.
        path = os.path.join(self.tmp, "pingpong.sock")
        self.start_echo(path, "echo")
        c = self.client(path, 300)
        p = self.observe("unix:" + path)
        sent, replies = self.exchange(c, 300)
        pcap, _ = self.stop_udsdump(p)
        flow = self.check_lines(pcap, c, sent, replies)
        seen = [0, 0]
        for d, n in flow["order"]:
            seen[d] += n
            self.assertLessEqual(seen[1], seen[0], "an echo reply before the request it echoes")

    def test_losses_are_drop_frames(self):
        # The reader reads nothing while a transfer larger than the kernel's ring passes: udsdump stops
        # draining the ring, the ring overflows, and the bytes it had no room for are DROP frames with
        # their count, never silent; the transfer itself is untouched.
        block = os.urandom(1 << 20)
        total = 192 << 20
        path = os.path.join(self.tmp, "overflow.sock")
        self.start_echo(path, "stream")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        p = self.start_udsdump(None, "--mode", "observe", iface="unix:" + path, drain=False)
        for _ in range(total // len(block)):
            s.sendall(block)
        s.shutdown(socket.SHUT_WR)
        reply = s.makefile("rb").readline()
        s.close()
        self.assertEqual(reply.strip().decode(), sha256(block * (total // len(block))), "the transfer is untouched")
        p.chunks = []
        p.reader = threading.Thread(target=self._drain, args=(p,), daemon=True)
        p.reader.start()
        pcap, _ = self.stop_udsdump(p)
        (flow,) = flows(pcap).values()
        got = flow["data"][0]
        self.assertGreater(flow["drops"], 0, "the overflow is shown")
        self.assertGreater(flow["dropped"][0], 0)
        self.assertEqual(len(got) + flow["dropped"][0], total, "captured + reported lost = sent")
        self.assertEqual(got[:16 << 20], (block * 16)[:16 << 20], "what was captured is exact")

    def test_requirements_not_root(self):
        path = os.path.join(self.tmp, "x.sock")
        self.start_echo(path, "echo", mode="0666")
        out = os.path.join(self.tmp, "never.pcap")
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", UDSDUMP, "-i",
                            "unix:" + path, "--mode", "observe", "-w", out], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        err = r.stderr.decode()
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn("CAP_BPF", err)
        self.assertFalse(os.path.exists(out), "nothing created on a refused start")

    def test_refusals_one_line(self):
        dgram = os.path.join(self.tmp, "d.sock")
        self.start_echo(dgram, "dgram")
        for args, needle in [
            (["-i", "unix:" + dgram, "--mode", "observe"], "datagram"),
            (["-i", "unix:@udsdump-none-" + uuid.uuid4().hex], "no server is listening"),
            (["-i", "unix:" + dgram, "--mode", "observe", "--lossless"], "--lossless"),
            (["-i", "unix:@x", "--mode", "interpose"], "abstract"),
        ]:
            r = subprocess.run([UDSDUMP, *args, "-w", os.path.join(self.tmp, "o.pcap")], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=60)
            err = r.stderr.decode()
            self.assertNotEqual(r.returncode, 0, args)
            self.assertEqual(len(err.strip().splitlines()), 1, err)
            self.assertIn(needle, err)
            self.assertFalse(os.path.exists(os.path.join(self.tmp, "o.pcap")))


@unittest.skipUnless(os.geteuid() == 0, "observe mode needs root (or CAP_BPF and CAP_PERFMON): run as root")
class ObserveTsharkTest(UdsTestCase):
    """tshark -i unix:PATH with the mode set to observe from Wireshark's preferences (README)."""

    def tearDown(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    pass
        super().tearDown()
        self.assertEqual(ours_loaded(), [], "BPF programs of udsdump left loaded")

    def test_tshark_curl_http_labelled(self):
        path = os.path.join(self.tmp, "app.sock")
        self.start_http(path)
        before = ident(path)
        home = os.path.join(self.tmp, "home")
        os.mkdir(home)
        W.install_personal(home, extcap=UDSDUMP)
        env = W.clean_env(home)
        iface = "unix:" + path
        pref = "extcap.%s.mode:observe" % re.sub(r"[^0-9a-z]", "_", iface.lower())
        out = os.path.join(self.tmp, "cap.pcapng")
        t = self.spawn(["tshark", "-i", iface, "-o", pref, "-o", "extcap.%s.protocol:http" %
                        re.sub(r"[^0-9a-z]", "_", iface.lower()), "-w", out, "-P", "-l", "-T", "fields", "-e",
                        "http.response.code"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=env)
        # dumpcap writes the capture file's header once it has read udsdump's pcap header from the
        # FIFO, and udsdump writes that only once its programs are attached.
        watch = DirWatch(self.tmp, PATH_EVENTS | IN_MODIFY)
        try:
            started = watch.wait(lambda: t.poll() is not None or (os.path.exists(out) and os.path.getsize(out) > 0), 60)
        finally:
            watch.close()
        self.assertTrue(started and t.poll() is None, "tshark never started capturing")
        for i in range(3):
            r = subprocess.run(["curl", "-sS", "--unix-socket", path, "http://localhost/?n=%d" % i],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout, b"hello\n")
        self.assertEqual(ident(path), before, "observe mode touches nothing")
        # Stop once tshark has shown the three responses (as a person would): what is still in flight
        # when dumpcap stops reading is not in the file.
        lines = LineReader(t.stdout)
        self.assertTrue(lines.wait(lambda ls: sum(1 for x in ls if x.strip() == "200") >= 3, 60), lines.lines)
        t.send_signal(signal.SIGINT)
        t.wait(timeout=60)
        rest = t.stderr.read().decode(errors="replace")
        self.assertNotIn("Error by extcap", rest)
        self.assertTrue(os.path.exists(out), "tshark wrote no capture: %s" % rest)
        os.chmod(out, 0o644)
        reader, env = W.capture_reader(self.tmp)   # the dissector loaded, whatever the version
        r = subprocess.run(reader(["tshark", "-r", out, "-Y", 'http.request && unix.comm == "curl" && unix.sender.comm == "curl"',
                            "-T", "fields", "-e", "http.request.uri"]), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=env, timeout=60)
        detail = subprocess.run(reader(["tshark", "-r", out, "-Y", "http.request", "-T", "fields", "-e",
                                        "http.request.uri", "-e", "unix.comm", "-e", "unix.sender.comm", "-e",
                                        "unix.pid", "-e", "unix.sender.pid"]),
                                stdout=subprocess.PIPE, env=env, timeout=60).stdout.decode()
        self.assertEqual(sorted(r.stdout.decode().split()), ["/?n=0", "/?n=1", "/?n=2"], detail)
        r = subprocess.run(reader(["tshark", "-r", out, "-Y", "http.response.code == 200", "-T", "fields", "-e",
                                   "unix.sender.pid"]), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=60)
        self.assertEqual(len(r.stdout.decode().split()), 3, "each response labelled with its sender")
        self.assertEqual(ident(path), before)


if __name__ == "__main__":
    main()
