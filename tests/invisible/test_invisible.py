#!/usr/bin/env python3
"""An invisible relay: what the server learns about its client through udsdump, and what passes with
the bytes.

Real processes only: the built udsdump interposed (or beside) real servers from tests/tools, clients
run as other users with setpriv, the capture decoded by tshark.  The suite runs as root; the
"other users" are bare numeric ids (no passwd entry is needed for a uid, a gid or a group list).

  identity      the server sees the client's uid, gid and supplementary groups (SO_PEERCRED,
                SO_PEERGROUPS), permissions are those of the client (a group socket, a root-only socket,
                a folder the client cannot enter), and an unprivileged udsdump refuses what it cannot
                relay faithfully
  descriptors   SCM_RIGHTS both ways, bytes around them intact, recorded in the capture, nothing leaked
  credentials   SCM_CREDENTIALS with and without explicit credentials
  datagrams     per-sender flows, replies to the right client, unbound senders, descriptors
  seqpacket     message boundaries
  limits        RLIMIT_NOFILE raised; MSG_CTRUNC ends the connection with a reason
"""
import errno
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
from udstest import (ECHO_SERVER, IN_CLOSE_WRITE, IN_CREATE, UDSDUMP, DirWatch, UdsTestCase, ident, main, read_exactly,
                     tshark)  # noqa: E402

CLIENT = os.path.join(HERE, "client.py")
USERNS = os.path.join(HERE, "..", "tools", "userns.py")
from client import read_line  # noqa: E402
U, G = 4242, 4242            # the "other user" of these tests
U2 = 4343                    # a third identity
GRP_A, GRP_B, GRP_SOCK = 4250, 4251, 4300

META_OPEN, META_CLOSE, META_ANCILLARY = 1, 2, 4
TLV_SOCK_TYPE, TLV_CLIENT_PID, TLV_CLIENT_UID, TLV_CLIENT_GID = 2, 3, 4, 5
TLV_FD_COUNT, TLV_FD_DESC, TLV_CRED_PID, TLV_CRED_UID, TLV_CRED_GID, TLV_CTRUNC = 11, 12, 13, 14, 15, 16
TLV_CLIENT_ADDR, TLV_CLIENT_GROUPS = 17, 18


def other_python():
    """A python3 other users may run (root's may live under /root, e.g. pyenv)."""
    for cand in (sys.executable, "/usr/bin/python3", shutil.which("python3") or ""):
        if not cand:
            continue
        r = subprocess.run(["setpriv", "--reuid=%d" % U, "--regid=%d" % G, "--clear-groups", cand, "-c", "pass"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if r.returncode == 0:
            return cand
    return None


PY = None


def as_user(uid, gid, groups=()):
    g = ["--groups=" + ",".join(str(x) for x in groups)] if groups else ["--clear-groups"]
    return ["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid, *g, "--"]


def meta_frames(pcap, home):
    """The metadata frames (EtherType 0x88b5, docs/capture-format.md) as tshark reads them."""
    out = tshark("-r", pcap, "-Y", "eth.type == 0x88b5", "-T", "fields", "-e", "frame.number", "-e", "data.data",
                 home=home)
    frames = []
    for line in out.splitlines():
        num, _, hexdata = line.partition("\t")
        b = bytes.fromhex(hexdata.replace(":", ""))
        assert b[:4] == b"UDSD", "not a udsdump metadata frame: %r" % b[:8]
        tlvs = []
        off = 24
        while off + 4 <= len(b):
            t, n = struct.unpack("!HH", b[off:off + 4])
            tlvs.append((t, b[off + 4:off + 4 + n]))
            off += 4 + n
        frames.append({"num": int(num), "type": b[5], "dir": b[6], "conn": struct.unpack("!I", b[8:12])[0],
                       "tlvs": tlvs})
    return frames


def tlv(frame, t, many=False):
    vals = [v for k, v in frame["tlvs"] if k == t]
    return vals if many else (vals[0] if vals else None)


def u32(b):
    return struct.unpack("!I", b)[0]


def count_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def pattern_payloads(n, lo, hi, seed):
    rnd = random.Random(seed)
    sizes = [lo + (hi - lo) * i // (n - 1) for i in range(n)]
    return [rnd.randbytes(s) for s in sizes]


class Reader:
    """Buffered reads of a stream socket that keep the descriptors passed with the bytes."""

    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def need(self, n, fds_out):
        while len(self.buf) < n:
            msg, fds, flags, _ = socket.recv_fds(self.sock, 262144, 16)
            if flags & socket.MSG_CTRUNC:
                raise AssertionError("the client's control data was truncated")
            if not msg and not fds:
                raise EOFError("the connection ended inside a record")
            fds_out.extend(fds)
            self.buf += msg
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def record_lines(path):
    try:
        with open(path) as f:
            return [line.split() for line in f.read().splitlines()]
    except FileNotFoundError:
        return []


class InvisibleTest(UdsTestCase):
    @classmethod
    def setUpClass(cls):
        global PY
        if os.geteuid() != 0:
            raise unittest_skip("these scenarios switch users: run as root")
        PY = other_python()
        if not PY:
            raise unittest_skip("no python3 that another user may run")

    def setUp(self):
        super().setUp()
        self.home = os.path.join(self.tmp, "home")  # tshark reads no personal plugins
        os.mkdir(self.home)

    # ---- processes ----

    def start_server(self, path, kind, mode="0666", record=None, user=None, extra=()):
        """echo_server.py, as root or (user=(uid, gid, groups)) as another user."""
        fifo = self._ready_fifo(os.path.basename(path))
        os.chmod(fifo, 0o666)
        server = self.for_others(ECHO_SERVER) if user else ECHO_SERVER
        argv = [PY, server, path, "--type", kind, "--mode", mode, "--ready", fifo, *extra]
        if record:
            argv += ["--record", record]
        if user:
            argv = as_user(*user) + argv
        p = self.spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_ready(fifo, p, "the %s server" % kind)
        return p

    def start_capture(self, path, *args, prefix=(), log=None, iface=None):
        """udsdump --capture with the pcap on a pipe; returns once the relay runs (the pcap header came).
        prefix: a wrapper (setpriv, prlimit).  The log goes to log (default: the test folder)."""
        p_log = log or os.path.join(self.tmp, "udsdump.log")
        argv = [*prefix, self.for_others(UDSDUMP) if prefix else UDSDUMP, "--capture", "--extcap-interface", iface or ("unix:" + path), "--fifo", "-",
                "--log-level", "debug", "--log-file", p_log, *args]
        p = self.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p.log_path = p_log
        try:
            p.header = read_exactly(p.stdout, 24, timeout=15)
        except (EOFError, TimeoutError) as e:
            p.kill()
            _, err = p.communicate()
            raise AssertionError("udsdump did not start: %s; stderr: %s" % (e, err.decode(errors="replace")))
        p.chunks = []
        p.reader = threading.Thread(target=self._drain, args=(p,), daemon=True)
        p.reader.start()
        return p

    def stop_capture(self, p):
        """Stops udsdump; returns the path of its pcap."""
        pcap = os.path.join(self.tmp, "capture-%d.pcap" % p.pid)
        data, err = self.stop_udsdump(p, pcap_path=pcap)
        self.assertEqual(p.returncode, 0, "udsdump failed: %s" % err)
        p.summary = [ln for ln in self.read_log(p).splitlines() if "frames captured" in ln]
        return pcap

    def read_log(self, p):
        with open(p.log_path, errors="replace") as f:
            return f.read()

    def client(self, user, cmd, *args):
        """Runs tests/invisible/client.py as user=(uid, gid, groups); returns its JSON answer."""
        r = subprocess.run(as_user(*user) + [PY, self.for_others(CLIENT), cmd, *args], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        self.assertEqual(r.returncode, 0, "client %s failed: %s" % (cmd, r.stderr.decode(errors="replace")))
        return json.loads(r.stdout)

    def root_whoami(self, path):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(20)
            s.connect(path)
            out = b""
            while True:
                b = s.recv(4096)
                if not b:
                    return out.decode().strip()
                out += b

    def user_folder(self, name, uid, gid, mode=0o755):
        d = os.path.join(self.tmp, name)
        os.mkdir(d)
        os.chown(d, uid, gid)
        os.chmod(d, mode)
        return d

    # ---- 1. identity through a root udsdump ----

    def test_server_sees_client_uid_gid_groups(self):
        path = os.path.join(self.tmp, "who.sock")
        rec = os.path.join(self.tmp, "who.rec")
        self.start_server(path, "whoami", record=rec)
        user = (U, G, (GRP_A, GRP_B))
        direct = self.client(user, "whoami", path)
        self.assertEqual(direct["result"], "ok", direct)
        p = self.start_capture(path)
        via = self.client(user, "whoami", path)
        self.assertEqual(via["result"], "ok", via)
        d_pid, *d_rest = direct["line"].split()
        v_pid, *v_rest = via["line"].split()
        self.assertEqual(d_rest, [str(U), str(G), "%d,%d" % (GRP_A, GRP_B)])
        self.assertEqual(v_rest, d_rest, "the server must see the same uid, gid and groups through udsdump")
        # The one thing that cannot be kept: the connecting process is udsdump.
        self.assertEqual(int(v_pid), p.pid)
        pcap = self.stop_capture(p)
        opens = [f for f in meta_frames(pcap, self.home) if f["type"] == META_OPEN]
        self.assertEqual(len(opens), 1)
        self.assertEqual(u32(tlv(opens[0], TLV_CLIENT_UID)), U)
        self.assertEqual(u32(tlv(opens[0], TLV_CLIENT_GID)), G)
        groups = tlv(opens[0], TLV_CLIENT_GROUPS)
        self.assertEqual(sorted(struct.unpack("!%dI" % (len(groups) // 4), groups)), [GRP_A, GRP_B])

    def test_group_socket_reachable_only_by_group_members(self):
        path = os.path.join(self.tmp, "grp.sock")
        rec = os.path.join(self.tmp, "grp.rec")
        self.start_server(path, "whoami", mode="0660", record=rec)
        os.chown(path, 0, GRP_SOCK)
        member, outsider = (U, G, (GRP_SOCK,)), (U, G, (GRP_A,))
        want = {"member": self.client(member, "whoami", path), "outsider": self.client(outsider, "whoami", path)}
        self.assertEqual(want["member"]["result"], "ok")
        self.assertEqual(want["outsider"], {"result": "error", "errno": "EACCES", "stage": "connect"})
        p = self.start_capture(path)
        got = {"member": self.client(member, "whoami", path), "outsider": self.client(outsider, "whoami", path)}
        self.assertEqual(got["member"]["result"], "ok", got)
        self.assertEqual(got["member"]["line"].split()[1:], [str(U), str(G), str(GRP_SOCK)])
        self.assertEqual(got["outsider"], want["outsider"], "an outsider must be refused exactly as without udsdump")
        self.stop_capture(p)
        lines = record_lines(rec)
        self.assertEqual([line[1:] for line in lines], [[str(U), str(G), str(GRP_SOCK)]] * 2,
                         "only the member (once directly, once through udsdump) may reach the server")

    def test_root_only_socket_stays_closed(self):
        path = os.path.join(self.tmp, "root.sock")
        rec = os.path.join(self.tmp, "root.rec")
        self.start_server(path, "whoami", mode="0600", record=rec)
        user = (U, G, (GRP_A,))
        direct = self.client(user, "whoami", path)
        self.assertEqual(direct, {"result": "error", "errno": "EACCES", "stage": "connect"})
        p = self.start_capture(path)
        self.assertEqual(self.client(user, "whoami", path), direct)
        # root still gets through (and proves the server was listening all along)
        self.assertEqual(self.root_whoami(path).split()[1:3], ["0", "0"], self.read_log(p)[-3000:])
        self.stop_capture(p)
        self.assertEqual([line[1] for line in record_lines(rec)], ["0"], "the server must never see uid %d" % U)

    def test_side_mode_upstream_checked_as_the_client(self):
        # The side socket is reachable (same mode as the real one, but in an open folder); the real
        # socket lies in a folder only root may enter.  udsdump connects upstream as the client, so the
        # kernel refuses it there, as it would refuse the client directly.
        priv = self.user_folder("priv", 0, 0, 0o700)
        path = os.path.join(priv, "app.sock")
        side = os.path.join(self.tmp, "side.sock")
        rec = os.path.join(self.tmp, "side.rec")
        self.start_server(path, "whoami", mode="0666", record=rec)
        user = (U, G, ())
        self.assertEqual(self.client(user, "whoami", path), {"result": "error", "errno": "EACCES", "stage": "connect"})
        p = self.start_capture(path, "--mode", "side", "--side-path", side)
        got = self.client(user, "whoami", side)
        self.assertIn(got["result"], ("eof", "error"), got)
        if got["result"] == "error":
            self.assertEqual(got["errno"], "ECONNRESET", got)
        self.assertEqual(self.root_whoami(side).split()[1:3], ["0", "0"])
        self.stop_capture(p)
        self.assertEqual([line[1] for line in record_lines(rec)], ["0"], "the server must never see uid %d" % U)
        self.assertIn("Permission denied", self.read_log(p))

    # ---- user namespaces (containers with userns-remap, Podman) ----

    def in_userns(self, outer, uid, gid=None):
        """A prefix that runs a command in a new user namespace mapping 0..65535 to outer..outer+65535,
        as uid (and gid) inside."""
        return [sys.executable, USERNS, str(outer), "65536", str(uid), str(uid if gid is None else gid), "--"]

    def userns_python(self):
        """A python3 that ids of a user namespace may run (not one under root's 0700 home)."""
        for cand in (PY, "/usr/bin/python3", shutil.which("python3") or ""):
            if cand and subprocess.run([*self.in_userns(100000, 0), cand, "-c", "pass"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL).returncode == 0:
                return cand
        self.skipTest("no python3 that a user namespace's ids may run")

    def test_user_namespaced_clients_seen_as_without_udsdump(self):
        """A server in one user namespace, clients in the same mapping and in another: through udsdump
        the server sees each client's ids exactly as it sees them when they connect directly."""
        outer_a, outer_b = 100000, 200000
        home = self.user_folder("ctr-a", outer_a, outer_a)
        path = os.path.join(home, "app.sock")
        fifo = self._ready_fifo("userns-server")
        os.chmod(fifo, 0o666)
        py = self.userns_python()
        server = self.spawn([*self.in_userns(outer_a, 0), py, self.for_others(ECHO_SERVER), path, "--type", "whoami",
                             "--mode", "0666", "--ready", fifo], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_ready(fifo, server, "the server in its user namespace")
        clients = {
            "root of the server's namespace": self.in_userns(outer_a, 0),
            "uid 1000 of the server's namespace": self.in_userns(outer_a, 1000),
            "root of another namespace": self.in_userns(outer_b, 0),
            "a host user": as_user(U, G),
        }

        def whoami(prefix):
            r = subprocess.run([*prefix, py, self.for_others(CLIENT), "whoami", path], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr.decode(errors="replace"))
            got = json.loads(r.stdout)
            self.assertEqual(got["result"], "ok", got)
            return got["line"].split()[1:]

        direct = {what: whoami(prefix) for what, prefix in clients.items()}
        self.assertEqual(direct["uid 1000 of the server's namespace"][:2], ["1000", "1000"])
        self.assertEqual(direct["root of another namespace"][:2], ["65534", "65534"], "unmapped: the overflow id")
        p = self.start_capture(path)
        via = {what: whoami(prefix) for what, prefix in clients.items()}
        self.stop_capture(p)
        self.assertEqual(via, direct, "the server must see every client as it does without udsdump")

    def test_udsdump_in_a_user_namespace_refuses_clients_it_cannot_name(self):
        """udsdump itself in a user namespace that maps only root: a host user's ids have no name there
        (the overflow id), so that client is refused, never connected as 65534 or as udsdump."""
        path = os.path.join(self.tmp, "who.sock")
        rec = os.path.join(self.tmp, "who.rec")
        self.start_server(path, "whoami", record=rec)
        p = self.start_capture(path, prefix=["unshare", "--user", "--map-root-user", "--"])
        got = self.client((U, G, ()), "whoami", path)
        self.stop_capture(p)
        self.assertIn(got["result"], ("eof", "error"), got)
        self.assertEqual(record_lines(rec), [], "the server must never see the refused client")
        self.assertIn("have no name in udsdump's user namespace", self.read_log(p))

    # ---- 2. an unprivileged udsdump ----

    def test_unprivileged_udsdump_serves_only_its_own_identity(self):
        home = self.user_folder("u", U, G)
        path = os.path.join(home, "app.sock")
        rec = os.path.join(home, "app.rec")
        me = (U, G, (GRP_A,))
        self.start_server(path, "whoami", mode="0666", record=rec, user=me)
        log = os.path.join(home, "udsdump.log")
        p = self.start_capture(path, prefix=as_user(*me), log=log)
        same = self.client(me, "whoami", path)
        self.assertEqual(same["result"], "ok", same)
        self.assertEqual(same["line"].split()[1:], [str(U), str(G), str(GRP_A)])
        more = self.client((U, G, (GRP_A, GRP_B)), "whoami", path)
        self.assertEqual(more["result"], "ok", "a client with more groups may go through as udsdump (less): %s" % more)
        self.assertEqual(more["line"].split()[1:], [str(U), str(G), str(GRP_A)])
        refused = {
            "other uid": self.client((U2, U2, (GRP_A,)), "whoami", path),
            "fewer groups": self.client((U, G, ()), "whoami", path),
            "other gid": self.client((U, U2, (GRP_A,)), "whoami", path),
        }
        for what, got in refused.items():
            self.assertIn(got["result"], ("eof", "error"), "%s: %s" % (what, got))
            if got["result"] == "error":
                self.assertEqual(got["errno"], "ECONNRESET", "%s: %s" % (what, got))
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:  # root too: udsdump cannot speak as root
            s.settimeout(20)
            s.connect(path)
            try:
                self.assertEqual(s.recv(100), b"")
            except ConnectionResetError:
                pass
        self.stop_capture(p)
        lines = record_lines(rec)
        self.assertEqual([line[1:] for line in lines], [[str(U), str(G), str(GRP_A)]] * 2,
                         "refused clients must never reach the server")
        self.assertTrue(all(int(line[0]) == p.pid for line in lines))
        log_text = self.read_log(p)
        self.assertEqual(log_text.count("refused a client"), 4, log_text)

    # ---- 3. descriptors ----

    def fd_record(self, rd, fds_out):
        """Reads one fdecho record; descriptors that came with its bytes are appended to fds_out."""
        data = rd.need(u32(rd.need(4, fds_out)), fds_out)
        heads = [rd.need(u32(rd.need(4, fds_out)), fds_out) for _ in range(u32(rd.need(4, fds_out)))]
        return data, heads

    def test_scm_rights_both_ways(self):
        path = os.path.join(self.tmp, "fd.sock")
        self.start_server(path, "fdecho")
        p = self.start_capture(path, "--lossless")  # the capture's bytes are compared: none may be dropped
        fds_before = count_fds(p.pid)
        content = b"file content 0123456789 " * 3
        tf = os.path.join(self.tmp, "passed.txt")
        with open(tf, "wb") as f:
            f.write(content)
        before, middle, after = os.urandom(100000), os.urandom(777), os.urandom(50000)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s, open(tf, "rb") as f:
            s.settimeout(20)
            s.connect(path)
            rd = Reader(s)
            s.sendall(before)  # bytes before the descriptors: echoed, no descriptor
            got, fds = b"", []
            while len(got) < len(before):
                data, heads = self.fd_record(rd, fds)
                self.assertEqual(heads, [])
                got += data
            self.assertEqual(got, before)
            self.assertEqual(fds, [])
            r, w = os.pipe()
            os.write(w, b"pipe content\n")
            os.close(w)
            sa, sb = socket.socketpair()
            sb.sendall(b"socket content\n")
            socket.send_fds(s, [middle], [f.fileno(), r, sa.fileno()])
            os.close(r)
            sa.close()
            data, heads = self.fd_record(rd, fds)
            sb.close()
            self.assertEqual(data, middle, "the bytes that carried the descriptors arrive with them, unaltered")
            self.assertEqual(heads, [content, b"pipe content\n", b"socket content\n"],
                             "the server reads the client's file, pipe and socket")
            self.assertEqual(len(fds), 1, "the server's pipe comes back with its answer")
            self.assertEqual(os.read(fds[0], 100), b"from-server\n")
            os.close(fds[0])
            s.sendall(after)
            got, fds = b"", []
            while len(got) < len(after):
                data, heads = self.fd_record(rd, fds)
                self.assertEqual(heads, [])
                got += data
            self.assertEqual((got, fds), (after, []))
            # 100 more passes on the same connection, two descriptors each way... one back
            for i in range(100):
                r, w = os.pipe()
                os.write(w, b"pass %d\n" % i)
                os.close(w)
                socket.send_fds(s, [b"p%03d" % i], [f.fileno(), r])
                os.close(r)
                data, heads = self.fd_record(rd, fds)
                self.assertEqual((data, heads), (b"p%03d" % i, [content, b"pass %d\n" % i]))
                self.assertEqual(len(fds), 1)
                self.assertEqual(os.read(fds[0], 100), b"from-server\n")
                os.close(fds.pop())
            s.shutdown(socket.SHUT_WR)
            self.assertEqual(s.recv(10), b"")
        # A later connection's round trip means the loop has handled the first one's end; with it open,
        # udsdump holds exactly its two sockets more than before: no passed descriptor stayed behind.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(20)
            s.connect(path)
            s.sendall(b"probe")
            self.assertEqual(self.fd_record(Reader(s), [])[0], b"probe")
            self.assertEqual(count_fds(p.pid), fds_before + 2, os.listdir("/proc/%d/fd" % p.pid))
        pcap = self.stop_capture(p)
        anc = [f for f in meta_frames(pcap, self.home) if f["type"] == META_ANCILLARY]
        c2s = [f for f in anc if f["dir"] == 0]
        s2c = [f for f in anc if f["dir"] == 1]
        self.assertEqual(len(c2s), 101, "one ANCILLARY frame per message that carried descriptors")
        self.assertEqual(len(s2c), 101)
        first = c2s[0]
        self.assertEqual(u32(tlv(first, TLV_FD_COUNT)), 3)
        desc = [d.decode() for d in tlv(first, TLV_FD_DESC, many=True)]
        self.assertEqual(len(desc), 3)
        self.assertEqual(desc[0], "file " + tf)
        self.assertRegex(desc[1], r"^pipe \[\d+\]$")
        self.assertRegex(desc[2], r"^socket \[\d+\] unix stream$")
        self.assertEqual([u32(tlv(f, TLV_FD_COUNT)) for f in c2s[1:]], [2] * 100)
        self.assertEqual(u32(tlv(s2c[0], TLV_FD_COUNT)), 1)
        self.assertTrue(tlv(s2c[0], TLV_FD_DESC).decode().startswith("pipe"))
        # and the capture holds the client's bytes unaltered around them
        sent = self.captured_c2s(pcap, 0)
        self.assertEqual(sent[:len(before) + len(middle) + len(after)], before + middle + after)

    def captured_c2s(self, pcap, stream):
        """The client's bytes of TCP stream `stream` as the capture holds them (tshark's Follow Stream)."""
        follow = tshark("-r", pcap, "-q", "-z", "follow,tcp,raw,%d" % stream, home=self.home)
        return b"".join(bytes.fromhex(line.strip()) for line in follow.splitlines()
                        if line and not line.startswith(("=", "Follow", "Filter", "Node", "\t")) and
                        all(c in "0123456789abcdef" for c in line.strip()))

    # ---- 4. credentials ----

    def test_scm_credentials_with_and_without_explicit(self):
        path = os.path.join(self.tmp, "creds.sock")
        self.start_server(path, "creds")
        user = (U, G, ())
        direct = self.client(user, "creds", path)
        want = "%d %d %d" % (direct["pid"], U, G)
        self.assertEqual((direct["explicit"], direct["implicit"]), (want, want))
        p = self.start_capture(path)
        via = self.client(user, "creds", path)
        want = "%d %d %d" % (via["pid"], U, G)
        self.assertEqual(via["explicit"], want, "explicit credentials are forwarded as the client's")
        self.assertEqual(via["implicit"], want, "the kernel's credentials for the client are forwarded too")
        self.stop_capture(p)

    def test_scm_credentials_unprivileged_udsdump(self):
        home = self.user_folder("u", U, G)
        path = os.path.join(home, "creds.sock")
        me = (U, G, ())
        self.start_server(path, "creds", user=me)
        p = self.start_capture(path, prefix=as_user(*me), log=os.path.join(home, "udsdump.log"))
        via = self.client(me, "creds", path)
        # Unprivileged, udsdump may only speak for itself: same uid and gid, its own pid.
        want = "%d %d %d" % (p.pid, U, G)
        self.assertEqual((via["explicit"], via["implicit"]), (want, want))
        self.stop_capture(p)

    # ---- 5. datagrams ----

    def dgram_client(self, name, bind=True):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.settimeout(20)
        if bind:
            s.bind(os.path.join(self.tmp, name))
        return s

    def test_dgram_flows_replies_and_unbound_senders(self):
        path = os.path.join(self.tmp, "dg.sock")
        rec = os.path.join(self.tmp, "dg.rec")
        self.start_server(path, "dgramlog", record=rec)
        p = self.start_capture(path, "--lossless")  # frames are counted: the capture may not drop any
        self.assertIn("(datagram)", self.read_log(p))
        c1, c2, c3 = self.dgram_client("c1.sock"), self.dgram_client("c2.sock"), self.dgram_client("c3", bind=False)
        d1 = pattern_payloads(100, 1, 60000, 1)
        d2 = pattern_payloads(100, 1, 60000, 2)
        d3 = pattern_payloads(100, 1, 60000, 3)
        replies = {1: [], 2: []}

        def reader(sock, key):
            try:
                while len(replies[key]) < 100:
                    replies[key].append(sock.recv(4096))
            except OSError as e:
                replies[key].append(e)

        threads = [threading.Thread(target=reader, args=(c1, 1)), threading.Thread(target=reader, args=(c2, 2))]
        for t in threads:
            t.start()
        for a, b, c in zip(d1, d2, d3):
            c1.sendto(a, path)
            c2.sendto(b, path)
            c3.sendto(c, path)
        for t in threads:
            t.join(60)
        for key, data in ((1, d1), (2, d2)):
            self.assertEqual(replies[key], [b"%d %s" % (len(x), sha(x)) for x in data],
                             "client %d: every datagram answered, in order, to this client only" % key)
        # The server handles datagrams in order: once a probe is answered, it has seen all the rest.
        probe = self.dgram_client("probe.sock")
        probe.sendto(b"probe", path)
        self.assertEqual(probe.recv(4096), b"5 " + sha(b"probe"))
        by_sender = {}
        for ln in record_lines(rec):
            by_sender.setdefault(ln[2], []).append(ln)
        # Bound clients: the server sees, for each, a private address of udsdump's (the client's own path
        # is taken - by the client); its replies to it reach that client.  Unbound: no address at all.
        self.assertEqual(len(by_sender), 4, sorted(by_sender))
        self.assertTrue(all(k == "-" or k.startswith("@") for k in by_sender), sorted(by_sender))
        seq = {k: [(int(ln[0]), ln[1]) for ln in v] for k, v in by_sender.items()}
        want = {k: [(len(x), sha(x).decode()) for x in d] for k, d in (("c1", d1), ("c2", d2), ("c3", d3))}
        self.assertEqual(seq.pop("-"), want["c3"], "the unbound sender's datagrams, whole and in order")
        self.assertEqual(sorted(seq.values()), sorted([want["c1"], want["c2"], [(5, sha(b"probe").decode())]]),
                         "each bound sender's datagrams whole, in order, under one address of their own")
        for k, v in by_sender.items():
            # root clients: the server sees this process's pid and root through SCM_CREDENTIALS
            self.assertEqual({(ln[3], ln[4], ln[5]) for ln in v}, {(str(os.getpid()), "0", "0")}, k)
        s1, s2 = os.path.join(self.tmp, "c1.sock"), os.path.join(self.tmp, "c2.sock")
        for s in (c1, c2, c3, probe):
            s.close()
        pcap = self.stop_capture(p)
        metas = meta_frames(pcap, self.home)
        opens = [f for f in metas if f["type"] == META_OPEN]
        self.assertEqual({tlv(f, TLV_SOCK_TYPE) for f in opens}, {b"\x02"})
        addrs = sorted((tlv(f, TLV_CLIENT_ADDR) or b"").decode() for f in opens)
        self.assertIn(s1, addrs)
        self.assertIn(s2, addrs)
        udp = tshark("-r", pcap, "-Y", "udp || udplite", "-T", "fields", "-e", "udp.length", home=self.home).split()
        self.assertEqual(len(udp), 301 + 201, "one UDP datagram per message each way (%s)" % p.summary)

    def test_dgram_non_root_client_identity(self):
        path = os.path.join(self.tmp, "dgu.sock")
        rec = os.path.join(self.tmp, "dgu.rec")
        self.start_server(path, "dgramlog", record=rec)
        home = self.user_folder("u", U, G)
        p = self.start_capture(path)
        got = self.client((U, G, ()), "dgram", path, os.path.join(home, "c.sock"))
        self.assertEqual(got["result"], "ok", got)
        lines = record_lines(rec)
        self.assertEqual(len(lines), 1)
        self.assertTrue(lines[0][2].startswith("@"), "a private reply address of udsdump's: %s" % lines[0])
        self.assertEqual(lines[0][3:], [str(got["pid"]), str(U), str(G), "0"],
                         "the server sees the sender's pid, uid and gid (SCM_CREDENTIALS)")
        self.assertEqual(got["reply"], "%d %s" % (got["len"], sha(("datagram from %d" % got["pid"]).encode()).decode()))
        self.stop_capture(p)

    def test_dgram_descriptors_both_ways(self):
        path = os.path.join(self.tmp, "dgfd.sock")
        rec = os.path.join(self.tmp, "dgfd.rec")
        self.start_server(path, "dgramlog", record=rec)
        p = self.start_capture(path)
        c = self.dgram_client("c.sock")
        r, w = os.pipe()
        os.write(w, b"x")
        os.close(w)
        c.sendmsg([b"with a descriptor"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", r))], 0, path)
        os.close(r)
        msg, fds, flags, _ = socket.recv_fds(c, 4096, 4)
        self.assertEqual(msg, b"17 " + sha(b"with a descriptor"))
        self.assertEqual(len(fds), 1, "the server's descriptor must reach the client with its reply")
        self.assertEqual(os.read(fds[0], 100), b"from-server\n")
        os.close(fds[0])
        self.assertEqual(record_lines(rec)[0][-1], "1", "the server got the client's descriptor")
        c.close()
        pcap = self.stop_capture(p)
        anc = [f for f in meta_frames(pcap, self.home) if f["type"] == META_ANCILLARY]
        self.assertEqual(sorted((f["dir"], u32(tlv(f, TLV_FD_COUNT))) for f in anc), [(0, 1), (1, 1)])

    # ---- 6. seqpacket ----

    def test_seqpacket_keeps_every_boundary(self):
        path = os.path.join(self.tmp, "sp.sock")
        self.start_server(path, "seqpacket")
        p = self.start_capture(path, "--lossless")  # frames are counted: the capture may not drop any
        msgs = pattern_payloads(60, 1, 100000, 6)
        msgs += [b"x", b"y", b"z" * 3, os.urandom(70000), b"tail"]   # back to back, small and large
        got, err = [], []
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
            s.settimeout(20)
            s.connect(path)

            def reader():
                try:
                    while len(got) < len(msgs):
                        got.append(s.recv(262144))
                except OSError as e:
                    err.append(e)

            t = threading.Thread(target=reader)
            t.start()
            for m in msgs:
                s.send(m)
            t.join(60)
        self.assertEqual(err, [])
        self.assertEqual(len(got), len(msgs))
        for m, g in zip(msgs, got):
            self.assertEqual(g, struct.pack("!I", len(m)) + m, "one message in, one message back, whole")
        pcap = self.stop_capture(p)
        # (over 65507 bytes the capture writes UDP-Lite over IPv4 fragments: UDP's length field is too small)
        lens = tshark("-r", pcap, "-Y", "udp || udplite", "-T", "fields", "-e", "udp.length", home=self.home).split()
        self.assertEqual(sorted(int(x) - 8 for x in lens),
                         sorted([len(m) for m in msgs] + [len(m) + 4 for m in msgs]),
                         "the capture has one datagram per message (%s)" % p.summary)

    # ---- credentials of a client that is gone ----

    def test_departed_client_credentials_stream(self):
        # udsdump is stopped while the client connects, sends and exits: when udsdump reads the bytes,
        # the pid they came with names no process.  The server still sees the client's uid and gid,
        # with udsdump's pid (what the kernel says when nobody speaks for a process), never a stranger's.
        path = os.path.join(self.tmp, "gone.sock")
        rec = os.path.join(self.tmp, "gone.rec")
        self.start_server(path, "credslog", record=rec)
        p = self.start_capture(path)
        watch = DirWatch(self.tmp, IN_CLOSE_WRITE | IN_CREATE)
        try:
            p.send_signal(signal.SIGSTOP)
            try:
                gone = self.client((U, G, ()), "send", path)
            finally:
                p.send_signal(signal.SIGCONT)
            self.assertTrue(watch.wait(lambda: record_lines(rec), 20), "the server never got the message")
        finally:
            watch.close()
        self.assertEqual(record_lines(rec), [[str(p.pid), str(U), str(G), "3"]],
                         "client pid %d had exited: uid and gid kept, pid udsdump's" % gone["pid"])
        self.stop_capture(p)

    def test_departed_client_credentials_dgram(self):
        path = os.path.join(self.tmp, "goned.sock")
        rec = os.path.join(self.tmp, "goned.rec")
        self.start_server(path, "dgramlog", record=rec)
        p = self.start_capture(path)
        p.send_signal(signal.SIGSTOP)
        try:
            gone = self.client((U, G, ()), "dgramsend", path)   # logger(1): send, exit
            alive = subprocess.Popen(as_user(U, G) + [PY, "-c", "import sys; sys.stdin.read()"],
                                     stdin=subprocess.PIPE)
            self.procs.append(alive)
        finally:
            p.send_signal(signal.SIGCONT)
        self.assertEqual(gone["result"], "ok")
        probe = self.dgram_client("probe.sock")
        probe.sendto(b"probe", path)
        self.assertEqual(probe.recv(4096), b"5 " + sha(b"probe"))
        probe.close()
        lines = record_lines(rec)
        self.assertEqual(lines[0][2:], ["-", str(p.pid), str(U), str(G), "0"],
                         "sender %d had exited: uid and gid kept, pid udsdump's" % gone["pid"])
        alive.stdin.close()
        alive.wait()
        self.stop_capture(p)

    # ---- a datagram flow is an address AND an identity ----

    def test_dgram_flow_follows_identity_not_just_address(self):
        # Side mode, with the real socket in a folder only root may enter: the kernel lets anybody send
        # to the side socket, so only udsdump's own check - the flow's upstream connected as the sender -
        # keeps uid 4242 out.  A path first bound by root, then by 4242, must not reuse root's flow.
        priv = self.user_folder("priv", 0, 0, 0o700)
        path = os.path.join(priv, "app.sock")
        side = os.path.join(self.tmp, "side.sock")
        shared = self.user_folder("shared", 0, 0, 0o1777)
        addr = os.path.join(shared, "x.sock")
        rec = os.path.join(self.tmp, "side.rec")
        self.start_server(path, "dgramlog", record=rec)
        p = self.start_capture(path, "--mode", "side", "--side-path", side)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as c:
            c.settimeout(20)
            c.bind(addr)
            c.sendto(b"root", side)
            self.assertEqual(c.recv(4096), b"4 " + sha(b"root"))
        os.unlink(addr)
        self.assertEqual(self.client((U, G, ()), "dgramsend", side, addr)["result"], "ok")
        probe = self.dgram_client("probe.sock")
        probe.sendto(b"probe", side)
        self.assertEqual(probe.recv(4096), b"5 " + sha(b"probe"))
        probe.close()
        self.assertEqual([(ln[0], ln[4]) for ln in record_lines(rec)], [("4", "0"), ("5", "0")],
                         "uid %d must not reach a server it cannot reach directly" % U)
        self.stop_capture(p)
        self.assertIn("Permission denied", self.read_log(p))

    # ---- messages longer than udsdump's buffer ----

    def test_oversized_messages_fail_closed(self):
        # A sender that raises SO_SNDBUF may send a seqpacket message or datagram longer than one
        # relay read (256 KiB).  udsdump never forwards a shortened message: the connection ends (the
        # datagram is dropped), with a reason in the log.
        big = os.urandom(300000)
        sp = os.path.join(self.tmp, "big.sock")
        self.start_server(sp, "seqecho")
        dg = os.path.join(self.tmp, "bigd.sock")
        rec = os.path.join(self.tmp, "bigd.rec")
        self.start_server(dg, "dgramlog", record=rec)

        def seq_send():
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 21)
                s.settimeout(20)
                s.connect(sp)
                s.send(big)
                try:
                    return s.recv(1 << 20)
                except ConnectionResetError:
                    return b""

        self.assertEqual(seq_send(), big, "works without udsdump")
        p = self.start_capture(sp)
        self.assertEqual(seq_send(), b"", "through udsdump: the connection ends")
        self.stop_capture(p)
        self.assertIn("MSG_TRUNC", self.read_log(p))

        c = self.dgram_client("c.sock")
        c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 21)
        c.sendto(big, dg)
        self.assertEqual(c.recv(4096), b"300000 " + sha(big), "works without udsdump")
        p = self.start_capture(dg)
        c.sendto(big, dg)
        c.sendto(b"after", dg)
        self.assertEqual(c.recv(4096), b"5 " + sha(b"after"), "the oversized datagram is not answered")
        c.close()
        self.assertEqual([ln[0] for ln in record_lines(rec)], ["300000", "5"])
        self.stop_capture(p)
        self.assertIn("MSG_TRUNC", self.read_log(p))

    def test_seqpacket_empty_messages(self):
        path = os.path.join(self.tmp, "se.sock")
        self.start_server(path, "seqecho")
        p = self.start_capture(path)
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
            s.settimeout(20)
            s.connect(path)
            for m in (b"a", b"", b"", b"b" * 1000, b""):
                s.send(m)
                self.assertEqual(s.recv(2000), m, "an empty message is a message, not the end")
            s.send(b"still open")
            self.assertEqual(s.recv(2000), b"still open")
        self.stop_capture(p)

    # ---- 7. limits ----

    def test_nofile_soft_limit_raised(self):
        path = os.path.join(self.tmp, "lim.sock")
        self.start_server(path, "echo")
        p = self.start_capture(path, prefix=["prlimit", "--nofile=256:4096", "--"])
        with open("/proc/%d/limits" % p.pid) as f:
            line = [ln for ln in f if ln.startswith("Max open files")][0].split()
        self.assertEqual(line[3:5], ["4096", "4096"], "udsdump raises its soft limit to the hard one")
        self.stop_capture(p)

    def test_ctrunc_ends_the_connection_with_a_reason(self):
        # With a hard limit it cannot raise, udsdump cannot take 60 descriptors at once: the kernel
        # truncates the control data (MSG_CTRUNC).  Forwarding the bytes without them would alter
        # what the server receives, so the connection ends, and the log and the capture say why.
        path = os.path.join(self.tmp, "tr.sock")
        self.start_server(path, "fdecho")
        p = self.start_capture(path, prefix=["prlimit", "--nofile=40:40", "--"])
        base = count_fds(p.pid)
        self.assertLess(base, 30)
        r, w = os.pipe()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(20)
                s.connect(path)
                socket.send_fds(s, [b"sixty"], [r] * 60)
                try:
                    self.assertEqual(s.recv(100), b"", "the connection ends, the server never answers")
                except ConnectionResetError:
                    pass
        finally:
            os.close(r)
            os.close(w)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:  # the relay goes on
            s.settimeout(20)
            s.connect(path)
            s.sendall(b"probe")
            self.assertEqual(self.fd_record(Reader(s), [])[0], b"probe")
            self.assertEqual(count_fds(p.pid), base + 2, "no descriptor of the truncated message stayed behind")
        pcap = self.stop_capture(p)
        self.assertIn("MSG_CTRUNC", self.read_log(p))
        anc = [f for f in meta_frames(pcap, self.home) if f["type"] == META_ANCILLARY]
        self.assertEqual(len(anc), 1)
        self.assertEqual(tlv(anc[0], TLV_CTRUNC), b"\x01")

    def test_ctrunc_drops_the_datagram_with_a_reason(self):
        path = os.path.join(self.tmp, "trd.sock")
        rec = os.path.join(self.tmp, "trd.rec")
        self.start_server(path, "dgramlog", record=rec)
        p = self.start_capture(path, prefix=["prlimit", "--nofile=40:40", "--"])
        c = self.dgram_client("c.sock")
        r, w = os.pipe()
        c.sendmsg([b"sixty"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("60i", *([r] * 60)))], 0, path)
        os.close(r)
        os.close(w)
        c.sendto(b"after", path)
        self.assertEqual(c.recv(4096), b"5 " + sha(b"after"))
        self.assertEqual([ln[0] for ln in record_lines(rec)], ["5"], "the truncated datagram never reached the server")
        self.assertIn("truncated", self.read_log(p))
        c.close()
        self.stop_capture(p)

    # ---- 6. zero copy ----
    # Bulk stream data is spliced from socket to socket (src/relay.c, "Zero copy") only where that
    # changes nothing for the receiver.  Each scenario below queues, with udsdump stopped, bulk bytes
    # (enough to be spliced) followed by what a splice would lose, then lets udsdump go on.

    def zero_copy_moved(self, p):
        """(to the server, back): bytes udsdump moved by zero copy, from its log."""
        m = re.search(r"zero copy moved (\d+) of \d+ bytes to the server, (\d+) of \d+ back", self.read_log(p))
        self.assertIsNotNone(m, "udsdump logged no zero copy summary")
        return int(m.group(1)), int(m.group(2))

    def bulk_socket(self, path):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)  # the queued head below fits at once
        s.connect(path)
        return s

    def test_zero_copy_never_speaks_for_another_user(self):
        # Spliced bytes reach the server with udsdump's credentials; another user's must keep theirs.
        path = os.path.join(self.tmp, "zc-user.sock")
        rec = os.path.join(self.tmp, "zc-user.rec")
        self.start_server(path, "credsink", record=rec)
        p = self.start_capture(path)
        out = self.client((U, G, ()), "bulk", path, str(8 << 20))
        self.assertEqual(out["reply"], out["sent"], "the server got every byte, unaltered")
        lines = record_lines(rec)
        self.assertEqual(lines[-1][0], "end")

        self.assertEqual({tuple(ln[:3]) for ln in lines[:-1]}, {(str(out["pid"]), str(U), str(G))},
                         "every read of the server carries the client's pid, uid and gid")
        self.stop_capture(p)
        self.assertEqual(self.zero_copy_moved(p)[0], 0, "another user's bytes are copied, never spliced")

    def test_zero_copy_stops_at_explicit_credentials(self):
        # root's own bulk is spliced, but the message it sends with explicit credentials (here: another
        # uid, which root may claim) reaches the server with exactly those credentials.
        path = os.path.join(self.tmp, "zc-creds.sock")
        rec = os.path.join(self.tmp, "zc-creds.rec")
        self.start_server(path, "credsink", record=rec)
        p = self.start_capture(path)
        head, claim, tail = os.urandom(96 * 1024), os.urandom(100), os.urandom(4 << 20)
        with self.bulk_socket(path) as s:
            p.send_signal(signal.SIGSTOP)
            try:
                s.sendall(head)
                s.sendmsg([claim], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS,
                                     struct.pack("3i", os.getpid(), U, G))])
            finally:
                p.send_signal(signal.SIGCONT)
            s.sendall(tail)
            s.shutdown(socket.SHUT_WR)
            reply = read_line(s)
        data = head + claim + tail
        self.assertEqual(reply, "%d %s" % (len(data), sha(data).decode()), "the server got every byte, unaltered")
        lines = record_lines(rec)[:-1]
        claimed = [ln for ln in lines if ln[1] == str(U)]
        self.assertEqual([ln[:3] for ln in claimed], [[str(os.getpid()), str(U), str(G)]],
                         "the explicit credentials reach the server once, as they were sent")
        self.assertEqual(int(claimed[0][3]), len(claim), "with exactly the bytes they came with")
        self.assertEqual({ln[0] for ln in lines if ln[1] != str(U)} - {str(os.getpid()), str(p.pid)}, set())
        self.assertEqual({(ln[1], ln[2]) for ln in lines if ln[1] != str(U)}, {("0", "0")})
        pcap = self.stop_capture(p)
        self.assertGreater(self.zero_copy_moved(p)[0], 0, "root's own bulk bytes were spliced")
        anc = [f for f in meta_frames(pcap, self.home) if f["type"] == META_ANCILLARY and f["dir"] == 0]
        self.assertEqual([u32(tlv(f, TLV_CRED_UID)) for f in anc], [U], "the capture records the claim")
        self.assertEqual(self.captured_c2s(pcap, 0), data, "the capture holds every byte, spliced or not")

    def test_zero_copy_never_drops_descriptors(self):
        # A splice would close descriptors queued with the bytes (SCM_RIGHTS); they must arrive.
        path = os.path.join(self.tmp, "zc-fd.sock")
        self.start_server(path, "fdecho")
        p = self.start_capture(path, "--lossless")
        head, middle, tail = os.urandom(96 * 1024), os.urandom(777), os.urandom(1 << 20)
        with self.bulk_socket(path) as s:
            r, w = os.pipe()
            os.write(w, b"pipe content\n")
            os.close(w)
            p.send_signal(signal.SIGSTOP)
            try:
                s.sendall(head)
                socket.send_fds(s, [middle], [r])
            finally:
                p.send_signal(signal.SIGCONT)
                os.close(r)
            sender = threading.Thread(target=lambda: (s.sendall(tail), s.shutdown(socket.SHUT_WR)), daemon=True)
            sender.start()
            rd, got, fds, with_fd = Reader(s), b"", [], []
            while len(got) < len(head) + len(middle) + len(tail):
                data, heads = self.fd_record(rd, fds)
                if heads:
                    with_fd.append((len(got), heads))
                got += data
            sender.join(30)
        self.assertEqual(got, head + middle + tail)
        self.assertEqual([h for _, h in with_fd], [[b"pipe content\n"]], "the descriptor reached the server, once")
        self.assertLessEqual(with_fd[0][0], len(head), "no later than the bytes it was sent with")
        self.assertEqual(len(fds), 1, "the server's answer came back with its descriptor")
        self.assertEqual(os.read(fds[0], 100), b"from-server\n")
        os.close(fds[0])
        pcap = self.stop_capture(p)
        self.assertGreater(self.zero_copy_moved(p)[0], 0, "the bulk after the descriptor was spliced")
        anc = [f for f in meta_frames(pcap, self.home) if f["type"] == META_ANCILLARY and f["dir"] == 0]
        self.assertEqual([u32(tlv(f, TLV_FD_COUNT)) for f in anc], [1])
        self.assertEqual(self.captured_c2s(pcap, 0), head + middle + tail)


def sha(b):
    import hashlib
    return hashlib.sha256(b).hexdigest().encode()


def unittest_skip(why):
    import unittest
    return unittest.SkipTest(why)


if __name__ == "__main__":
    main()
