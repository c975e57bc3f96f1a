#!/usr/bin/env python3
"""END TO END, with the real udsdump: the dissector labels a live capture with the real processes.

Needs the built executable ($UDSDUMP) with a working capture writer; until then this test fails.

The scenario, all real processes: tests/tools/uds_http.py serves a socket in a temp folder; udsdump
interposes on it as Wireshark starts it (--capture --extcap-interface unix:PATH --fifo FIFO, the FIFO
read by this test as dumpcap would); a python client connects and keeps its connection open while curl
(the real one) makes a request; both close; udsdump is stopped with SIGTERM.  Then tshark with the
dissector reads the capture, and the labels must be the real ones: curl's pid (from spawning it), our
uid and gid, the python client's pid and comm, the server's pid and comm, the socket path.

The capture is also parsed here, independently of the dissector, from the format document
(docs/capture-format.md): metadata frames, the OPEN of each client, the synthetic addresses derived
from the path.  `unix.comm == "curl"` must select exactly the frames this parse attributes to curl.

Readiness is a signal, never a sleep: the server writes its pid into a FIFO once it listens; udsdump
writes the pcap header only once its relay is in front of PATH; the python client prints a line once it
has its answer; "the capture has it all" is the two CLOSE metadata frames arriving on the FIFO.
Output is TAP.
"""
import os
import select
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True   # no __pycache__ left in the source tree
import gen_capture as g  # noqa: E402
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import wireshark as W  # noqa: E402

SRCDIR = os.environ.get("UDSDUMP_SRCDIR") or os.path.dirname(os.path.dirname(HERE))
UDSDUMP = os.environ.get("UDSDUMP") or os.path.join(SRCDIR, "build", "udsdump")
HTTP_SERVER = os.path.join(SRCDIR, "tests", "tools", "uds_http.py")

PY_CLIENT = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"GET /whoami HTTP/1.1\r\nHost: localhost\r\n\r\n")
data = b""
while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
    b = s.recv(65536)
    if not b:
        break
    data += b
print("answered", flush=True)
sys.stdin.read()          # hold the connection open until the test closes our stdin
s.close()
"""


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


# ---- an independent reading of the capture (format.md), not through the dissector ----

def pcap_frames(data):
    """[(number, frame bytes)] of a pcap (microsecond or nanosecond, either byte order)."""
    check(len(data) >= 24, "capture shorter than a pcap header (%d bytes)" % len(data))
    magic = data[:4]
    order = {b"\xd4\xc3\xb2\xa1": "<", b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">",
             b"\xa1\xb2\x3c\x4d": ">"}.get(magic)
    check(order is not None, "not a pcap file (magic %s)" % magic.hex())
    linktype = struct.unpack(order + "I", data[20:24])[0]
    check(linktype == 1, "link type %d, expected 1 (Ethernet)" % linktype)
    out, off = [], 24
    while off + 16 <= len(data):
        incl = struct.unpack(order + "I", data[off + 8:off + 12])[0]
        if off + 16 + incl > len(data):
            break      # a record still being written
        out.append((len(out) + 1, data[off + 16:off + 16 + incl]))
        off += 16 + incl
    return out


def parse_meta(frame):
    """A metadata frame as a dict, or None if the frame is not one."""
    if len(frame) < 14 or frame[12:14] != b"\x88\xb5":
        return None
    p = frame[14:]
    check(len(p) >= 24 and p[:4] == b"UDSD", "0x88B5 frame without a UDSD header")
    m = {"version": p[4], "event": p[5], "dir": p[6], "conn": struct.unpack("!I", p[8:12])[0],
         "cip": ".".join(str(b) for b in p[12:16]), "sip": ".".join(str(b) for b in p[16:20]),
         "cport": struct.unpack("!H", p[20:22])[0], "sport": struct.unpack("!H", p[22:24])[0], "tlv": {}}
    check(m["version"] == 1, "metadata version %d" % m["version"])
    off = 24
    while off < len(p):
        check(off + 4 <= len(p), "TLV header past the end of a metadata frame")
        t, ln = struct.unpack("!HH", p[off:off + 4])
        check(off + 4 + ln <= len(p), "TLV %d runs past the end of a metadata frame" % t)
        m["tlv"].setdefault(t, []).append(p[off + 4:off + 4 + ln])
        off += 4 + ln
    return m


def tcp_tuple(frame):
    """(src ip, src port, dst ip, dst port) of an Ethernet/IPv4/TCP frame, else None."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
        return None
    ihl = (frame[14] & 0x0F) * 4
    th = 14 + ihl
    sport, dport = struct.unpack("!HH", frame[th:th + 4])
    return (".".join(str(b) for b in frame[26:30]), sport, ".".join(str(b) for b in frame[30:34]), dport)


def u32(b):
    return struct.unpack("!I", b)[0]


# ---- the scenario ----

class Scenario:
    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="udsdump-dissector-e2e-")
        os.chmod(self.tmp, 0o755)
        self.sock = os.path.join(self.tmp, "app.sock")
        self.procs = []
        self.data = bytearray()
        self.cond = threading.Condition()
        self.reader = None

    def spawn(self, argv, **kw):
        p = subprocess.Popen(argv, **kw)
        self.procs.append(p)
        return p

    def close(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.kill()
            p.wait()
            for f in (p.stdin, p.stdout, p.stderr):
                if f:
                    f.close()
        if self.reader:
            self.reader.join(timeout=5)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def start_server(self):
        fifo = os.path.join(self.tmp, "server.ready")
        os.mkfifo(fifo)
        # Our own writer keeps the FIFO from reporting EOF before the server has written its pid.
        rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        wfd = os.open(fifo, os.O_WRONLY)
        self.server = self.spawn([sys.executable, HTTP_SERVER, self.sock, "--ready", fifo],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            got = b""
            deadline = time.monotonic() + 15
            while not got:
                check(time.monotonic() < deadline, "the HTTP server never became ready")
                if self.server.poll() is not None:
                    raise Failure("the HTTP server exited: %s" % self.server.stderr.read().decode(errors="replace"))
                if select.select([rfd], [], [], 0.5)[0]:
                    got = os.read(rfd, 64)
        finally:
            os.close(wfd)
            os.close(rfd)
        os.unlink(fifo)
        check(int(got) == self.server.pid, "server ready file says pid %s" % got)
        with open("/proc/%d/comm" % self.server.pid) as f:
            self.server_comm = f.read().strip()
        self.server_ino = os.lstat(self.sock).st_ino

    def _read_fifo(self, path):
        with open(path, "rb", buffering=0) as f:      # blocks until udsdump opens it, as dumpcap does
            while True:
                b = f.read(1 << 20)
                with self.cond:
                    if not b:
                        self.eof = True
                        self.cond.notify_all()
                        return
                    self.data += b
                    self.cond.notify_all()

    def wait_capture(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred(bytes(self.data)):
                left = deadline - time.monotonic()
                if left <= 0 or getattr(self, "eof", False):
                    rc = self.udsdump.poll()
                    raise Failure("%s: not in the capture (%d bytes so far); udsdump %s; stderr: %s"
                                  % (what, len(self.data), "running" if rc is None else "exited %d" % rc,
                                     self.udsdump_err()))
                self.cond.wait(min(left, 0.5))

    def udsdump_err(self):
        try:
            with open(os.path.join(self.tmp, "udsdump.err"), errors="replace") as f:
                return f.read().strip()[-800:]
        except OSError:
            return ""

    def start_udsdump(self):
        check(os.access(UDSDUMP, os.X_OK), "no udsdump executable at %s" % UDSDUMP)
        fifo = os.path.join(self.tmp, "capture.fifo")
        os.mkfifo(fifo)
        self.reader = threading.Thread(target=self._read_fifo, args=(fifo,), daemon=True)
        self.reader.start()
        err = open(os.path.join(self.tmp, "udsdump.err"), "wb")
        self.udsdump = self.spawn([UDSDUMP, "--capture", "--extcap-interface", "unix:" + self.sock, "--fifo", fifo],
                                  stdout=subprocess.DEVNULL, stderr=err)
        err.close()
        # udsdump writes the pcap header only once its relay has replaced PATH
        self.wait_capture(lambda d: len(d) >= 24, 20, "the pcap header")
        check(os.lstat(self.sock).st_ino != self.server_ino, "PATH is still the server's socket")

    def stop_udsdump(self):
        self.udsdump.send_signal(signal.SIGTERM)
        rc = self.udsdump.wait(timeout=30)
        self.reader.join(timeout=30)
        check(not self.reader.is_alive(), "the capture FIFO was not closed after udsdump exited")
        check(os.lstat(self.sock).st_ino == self.server_ino, "PATH was not put back")
        return rc


def close_frames(data):
    return sum(1 for _, fr in pcap_frames(data) if (m := parse_meta(fr)) and m["event"] == g.CLOSE)


def run(sc, results):
    sc.start_server()
    sc.start_udsdump()

    # The python client holds its connection open across curl's: two clients at once, interleaved.
    py = sc.spawn([sys.executable, "-c", PY_CLIENT, sc.sock], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                  stderr=subprocess.PIPE)
    line = py.stdout.readline()
    check(line.strip() == b"answered", "python client: %r %s" % (line, py.stderr.read() if py.poll() else ""))
    with open("/proc/%d/comm" % py.pid) as f:
        py_comm = f.read().strip()
    curl = sc.spawn(["curl", "-sS", "--max-time", "10", "--unix-socket", sc.sock, "http://localhost/"],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = curl.communicate(timeout=20)
    check(curl.returncode == 0 and out == b"hello\n", "curl through the relay: %r %r" % (out, err))
    py.stdin.close()
    check(py.wait(timeout=10) == 0, "python client failed")

    sc.wait_capture(lambda d: close_frames(d) >= 2, 15, "the CLOSE metadata frames of both clients")
    rc = sc.stop_udsdump()
    pcap = os.path.join(sc.tmp, "out.pcap")
    with open(pcap, "wb") as f:
        f.write(sc.data)
    results.append(("udsdump captured two clients and exited %d on SIGTERM" % rc, None))

    # -- independent reading
    frames = pcap_frames(bytes(sc.data))
    metas = {n: parse_meta(fr) for n, fr in frames}
    opens = {m["conn"]: m for m in metas.values() if m and m["event"] == g.OPEN}
    by_pid = {u32(m["tlv"][g.T_CLIENT_PID][0]): m for m in opens.values() if g.T_CLIENT_PID in m["tlv"]}
    check(curl.pid in by_pid and py.pid in by_pid, "OPEN frames for pids %s; curl %d, python %d"
          % (sorted(by_pid), curl.pid, py.pid))
    path_b = sc.sock.encode()
    for m in opens.values():
        check(m["tlv"].get(g.T_PATH) == [path_b], "OPEN path %r" % m["tlv"].get(g.T_PATH))
        check(m["sip"] == g.server_ip(path_b), "server address %s, format.md says %s" % (m["sip"], g.server_ip(path_b)))
        h = g.path_hash16(path_b)
        check(m["cip"].startswith("10.%d.%d." % (h >> 8, h & 0xFF)), "client address %s" % m["cip"])

    def frames_of(m):
        tup = (m["cip"], m["cport"], m["sip"], m["sport"])
        rev = (m["sip"], m["sport"], m["cip"], m["cport"])
        return {n for n, fr in frames if tcp_tuple(fr) in (tup, rev)
                or (metas[n] and (metas[n]["cip"], metas[n]["cport"], metas[n]["sip"], metas[n]["sport"]) == tup)}

    curl_frames, py_frames = frames_of(by_pid[curl.pid]), frames_of(by_pid[py.pid])
    check(len(curl_frames) > 5 and len(py_frames) > 5 and not curl_frames & py_frames,
          "frames: curl %s, python %s" % (sorted(curl_frames), sorted(py_frames)))
    results.append(("the capture follows the format: OPEN per client, addresses from the path", None))

    # -- the dissector
    # read as the user who loads the personal plugin: root, or nobody where root's Wireshark loads none
    home = os.path.join(sc.tmp, "home")
    os.mkdir(home)
    nobody = W.reads_as_nobody()
    W.install_personal(home, owner=(W.NOBODY.pw_uid, W.NOBODY.pw_gid) if nobody else None)
    os.chmod(pcap, 0o644)
    env = W.clean_env(home, TMPDIR=home)

    def tshark(*args):
        argv = ["tshark", "-r", pcap, *args]
        r = subprocess.run(W.as_nobody(argv) if nobody else argv, capture_output=True, env=env, timeout=60)
        out, err = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
        check(r.returncode == 0, "tshark %s: %s" % (" ".join(args), err))
        check("lua" not in err.lower() and "Lua Error" not in out, "Lua error: %s %s" % (err, out[:2000]))
        return out

    tshark("-V")          # the whole tree, one pass and two: no Lua error anywhere
    tshark("-2", "-V")
    names = ["frame.number", "unix.pid", "unix.uid", "unix.gid", "unix.comm", "unix.path", "unix.server.pid",
             "unix.server.comm", W.col("Source"), W.col("Destination")]
    rows = {}
    for line in tshark("-T", "fields", "-E", "occurrence=f", *sum((["-e", n] for n in names), [])).splitlines():
        c = line.split("\t")
        rows[int(c[0])] = dict(zip(names[1:], c[1:]))
    bad = []
    for who, pid, comm, mine in (("curl", curl.pid, "curl", curl_frames), ("python", py.pid, py_comm, py_frames)):
        for n in sorted(mine):
            r = rows[n]
            want = {"unix.pid": str(pid), "unix.uid": str(os.getuid()), "unix.gid": str(os.getgid()),
                    "unix.comm": comm, "unix.path": sc.sock, "unix.server.pid": str(sc.server.pid),
                    "unix.server.comm": sc.server_comm}
            for k, v in want.items():
                if r[k] != v:
                    bad.append("%s frame %d: %s = %r, expected %r" % (who, n, k, r[k], v))
            label = "%s[%d]" % (comm, pid)
            cols = (r[W.col("Source")], r[W.col("Destination")])
            if label not in cols or sc.sock not in cols:
                bad.append("%s frame %d: columns %r -> %r" % (who, n, *cols))
    check(not bad, "\n".join(bad[:30]))
    results.append(("every frame of curl and of the python client carries its real pid, uid, gid, comm, "
                    "the server and the path; columns show comm[pid] and the path", None))

    for extra in ([], ["-2"]):
        got = {int(x) for x in tshark(*extra, "-Y", 'unix.comm == "curl"', "-T", "fields", "-e", "frame.number").split()}
        check(got == curl_frames, "unix.comm == \"curl\" %s: %s, expected %s" % (extra, sorted(got), sorted(curl_frames)))
    got = {int(x) for x in tshark("-Y", "unix.pid == %d && http.request" % py.pid, "-T", "fields",
                                  "-e", "frame.number").split()}
    check(len(got) == 1 and got <= py_frames, "the python client's HTTP request: %s" % sorted(got))
    results.append(('unix.comm == "curl" selects exactly curl\'s frames (one and two passes)', None))


def watchdog_expired(_sig, frame):
    raise Failure("watchdog expired, stuck at:\n" + "".join(traceback.format_stack(frame)[-3:]))


def main():
    signal.signal(signal.SIGALRM, watchdog_expired)
    signal.alarm(int(os.environ.get("E2E_WATCHDOG", "240")))   # watchdog: raises where the scenario is stuck, so cleanup still runs
    print("# END TO END with the real udsdump (%s): fails until the executable captures" % UDSDUMP)
    for tool in ("tshark", "curl"):
        if not shutil.which(tool):
            print("1..0 # SKIP %s not found" % tool)
            return 0
    results = []
    sc = Scenario()
    try:
        run(sc, results)
        error = None
    except Exception as e:
        error = str(e) if isinstance(e, Failure) else traceback.format_exc()
    finally:
        sc.close()
    total = 4
    print("1..%d" % total)
    for i, (name, _) in enumerate(results, 1):
        print("ok %d - %s" % (i, name))
    if error is not None:
        print("not ok %d - the scenario stopped here" % (len(results) + 1))
        for line in error.splitlines():
            print("#   " + line)
        for i in range(len(results) + 2, total + 1):
            print("not ok %d - not reached" % i)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
