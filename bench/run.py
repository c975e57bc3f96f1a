#!/usr/bin/env python3
"""bench/run.py - the relay benchmark that scripts/bench runs (see docs/benchmarks.md).

Measures, side by side in one run, Unix stream sockets reached several ways:
  direct        the client connects to the server's socket
  floor-splice  bench/relay-floor.c --splice: a minimal splice relay (socket -> pipe -> socket, epoll,
                no capture): the reference every ratio is taken against
  floor         the same relay copying through a buffer (recv/send)
  floor-tee     the minimal splice relay that also tee(2)s every batch into a FIFO read by the fast
                reader's raw mode: what handing a reader a copy of the bytes costs, with no framing
  udsdump       `udsdump --capture --extcap-interface unix:PATH --fifo -` interposed on that socket, its
                pcap read by udsbench-pcapcount (a fast reader that counts what the pcap holds)
  udsdump-ll    the same with --lossless (back-pressure instead of drops)
  udsdump-snap  the same with --snaplen 128 (optional)
  dumpcap       the real reader: `tshark -i unix:PATH -w FILE` (dumpcap writing pcapng) with udsdump
                installed as a personal extcap of a throw-away HOME; the file is counted afterwards
  dumpcap-ll    the same with the lossless option (optional)
  recipe        the README's recipe: socat UNIX-LISTEN,fork -> TCP loopback -> socat UNIX-CONNECT
  socat-v       one `socat -x -v UNIX-LISTEN,fork UNIX-CONNECT` with its dump to /dev/null (optional)
Bulk throughput is a matrix: every path at every write size (BENCH_WRITES) into every server shape
(BENCH_SERVERS: an epoll server reading 1 MiB, a thread-per-connection server reading 128 KiB), one
connection, BENCH_BULK_MB one way.  Round trips (64 B ping-pong) and connection cost (connect + 64 B
request + reply + close, one at a time) go to the first server.  Rounds interleave the paths
(rotating their order); the table reports medians of the rounds, and ratios as the median of the
per-round ratios (both sides measured seconds apart, under the same load from other processes).
Every capture is checked against what was sent: the TCP payload bytes per direction must equal the
bytes the client and the server sent, with no DROP metadata frame.  Then the real reader at paced
rates (BENCH_RATES), udsdump's RSS idle and with BENCH_HOLD_N idle connections, and `udsdump
--extcap-interfaces` with BENCH_LISTENERS listening sockets (bench/discover's program when built).

Knobs (environment): BENCH_ROUNDS (5), BENCH_BULK_MB (400), BENCH_RECIPE_MB (200: the socat recipe),
BENCH_SLOW_BULK_MB (64: socat -x -v), BENCH_WRITES (4096,16384,65536,1048576), BENCH_SERVERS
(epoll,threads), BENCH_PATHS (bulk: direct,floor-splice,floor,floor-tee,udsdump,udsdump-ll,dumpcap,recipe),
BENCH_LAT_PATHS (round trip and connection: direct,floor-splice,floor,udsdump,udsdump-ll,recipe),
BENCH_RATES (100,200,400,800,1600,0: MB/s for the paced dumpcap runs, 0 = unpaced; empty: none),
BENCH_RATE_SECS (2: length of a paced run), BENCH_RTT_N (20000), BENCH_CONN_N (5000), BENCH_FORK_CONN_N
(500: the forking socat paths), BENCH_HOLD_N (1000), BENCH_LISTENERS (2000), BENCH_TESTS (bulk,rtt,conn),
BENCH_VERIFY (0; 1: the server and the pcap reader compare every bulk byte with the sent pattern),
BENCH_UDSDUMP (another udsdump executable), BENCH_UDSDUMP_ARGS (extra udsdump options, e.g.
"--buffer-size 16"), BENCH_PIPE_SIZE (0: the capture pipe as udsdump leaves it; N: the reader sets
F_SETPIPE_SZ), BENCH_CPUS (e.g. "0": pin everything to these CPUs), BENCH_DOC (a markdown file whose
generated section is replaced with this run's), BENCH_STRICT (1: exit 1 on a missed target),
BENCH_TIMEOUT (1200 s for the whole run), BENCH_QUIET_WAIT (120: seconds the run may spend, at most 10
before each measurement, waiting for the rest of the machine to go quiet).

Cleanup: every process runs in its own process group, killed as a group at the end (socat forks a
child per connection); udsdump is stopped with SIGTERM first (tshark with SIGINT, as Ctrl+C) so it
puts the socket back; the temp dir with every socket, the throw-away HOME and the capture files goes
last.  Readiness is a signal where one exists: "ready" lines from our programs and the pcap header
from udsdump; a LISTEN entry in /proc/net/unix or /proc/net/tcp for socat, and the socket's inode
changing for tshark (no signal crosses tshark and dumpcap), polled.
"""
import os
import platform
import re
import resource
import fcntl
import select
import shlex
import shutil
import signal
import socket
import stat
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)


def env_int(name, default):
    v = os.environ.get(name, "")
    return int(v) if v.strip() else default


BUILD = os.environ.get("BENCH_BUILD", os.path.join(SRC, "build-bench"))
ROUNDS = env_int("BENCH_ROUNDS", 5)
BULK = env_int("BENCH_BULK_MB", 400) * 1000 * 1000
RECIPE_BULK = env_int("BENCH_RECIPE_MB", 200) * 1000 * 1000
SLOW_BULK = env_int("BENCH_SLOW_BULK_MB", 64) * 1000 * 1000
RTT_N = env_int("BENCH_RTT_N", 20000)
CONN_N = env_int("BENCH_CONN_N", 5000)
FORK_CONN_N = env_int("BENCH_FORK_CONN_N", 500)
HOLD_N = env_int("BENCH_HOLD_N", 1000)
LISTENERS = env_int("BENCH_LISTENERS", 2000)
VERIFY = env_int("BENCH_VERIFY", 0) != 0
PIPE_SIZE = env_int("BENCH_PIPE_SIZE", 0)
STRICT = env_int("BENCH_STRICT", 0) != 0
TIMEOUT = env_int("BENCH_TIMEOUT", 1200)
QUIET_WAIT = env_int("BENCH_QUIET_WAIT", 120)   # seconds, over the whole run
CPUS = os.environ.get("BENCH_CPUS", "")   # e.g. "0": everything on one CPU (inherited by every child)
UDSDUMP_ARGS = shlex.split(os.environ.get("BENCH_UDSDUMP_ARGS", ""))


def env_list(name, default):
    return [x for x in os.environ.get(name, default).split(",") if x.strip()]


ALL_PATHS = ["direct", "floor-splice", "floor", "floor-tee", "udsdump", "udsdump-ll", "udsdump-snap", "dumpcap", "dumpcap-ll",
             "recipe", "socat-v"]
PATHS = env_list("BENCH_PATHS", "direct,floor-splice,floor,floor-tee,udsdump,udsdump-ll,dumpcap,recipe")
LAT_PATHS = env_list("BENCH_LAT_PATHS", "direct,floor-splice,floor,udsdump,udsdump-ll,recipe")
TESTS = env_list("BENCH_TESTS", "bulk,rtt,conn")
LAT_TESTS = [t for t in TESTS if t in ("rtt", "conn")]
WRITES = [int(w) for w in env_list("BENCH_WRITES", "4096,16384,65536,1048576")]
SERVERS = env_list("BENCH_SERVERS", "epoll,threads")
RATES = [int(r) for r in env_list("BENCH_RATES", "100,200,400,800,1600,0")]   # MB/s; 0: unpaced
RATE_SECS = env_int("BENCH_RATE_SECS", 2)
MSG = 64
BUSY = 0.2   # CPUs kept busy by others above which a measurement is marked

LABEL = {
    "direct": "direct",
    "floor": "minimal copy relay",
    "floor-splice": "minimal splice relay (reference)",
    "floor-tee": "minimal capturing relay",
    "udsdump": "udsdump",
    "udsdump-ll": "udsdump --lossless",
    "udsdump-snap": "udsdump --snaplen 128",
    "dumpcap": "udsdump under tshark -w",
    "dumpcap-ll": "udsdump --lossless under tshark -w",
    "recipe": "socat recipe",
    "socat-v": "socat -x -v",
}

UDSDUMP = os.environ.get("BENCH_UDSDUMP") or os.path.join(BUILD, "udsdump")
SERVER = os.path.join(BUILD, "bench", "udsbench-server")
CLIENT = os.path.join(BUILD, "bench", "udsbench-client")
PCAPCOUNT = os.path.join(BUILD, "bench", "udsbench-pcapcount")
FLOOR = os.path.join(BUILD, "bench", "udsbench-relay")
DISCOVER = os.path.join(BUILD, "bench", "discover", "bench-discover")


class BenchError(Exception):
    pass


# ---- processes: one registry, one way out ----

PROCS = []


def spawn(argv, **kw):
    """Starts argv in its own process group (so its forks die with it) and registers it."""
    kw.setdefault("stdin", subprocess.DEVNULL)
    p = subprocess.Popen(argv, start_new_session=True, **kw)
    p.argv0 = os.path.basename(argv[0])
    PROCS.append(p)
    return p


def stop(p, sig=signal.SIGTERM, timeout=10):
    """Stops p's process group: sig first, SIGKILL after timeout.  Returns p's exit status."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(p.pid, signal.SIGKILL)   # forks left in the group (socat's children)
    except (ProcessLookupError, PermissionError):
        pass
    if p.poll() is None:
        p.wait(5)
    if p in PROCS:
        PROCS.remove(p)
    return p.returncode


def stop_all():
    # udsdump first (SIGTERM: it puts the socket back), then everything else.
    for p in sorted(list(PROCS), key=lambda q: q.argv0 != "udsdump"):
        try:
            stop(p, timeout=5)
        except Exception as e:  # cleanup goes on whatever one process does
            print(f"bench: cleanup of {p.argv0} ({p.pid}): {e}", file=sys.stderr)


def read_line(p, timeout, what):
    """The next line p prints, or BenchError if it exits or takes longer than timeout."""
    deadline = time.monotonic() + timeout
    buf = b""
    fd = p.stdout.fileno()
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchError(f"{what}: no answer within {timeout} s")
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            continue
        b = os.read(fd, 1)
        if not b:
            raise BenchError(f"{what}: exited (status {p.wait()}) before saying it was ready")
        buf += b
    return buf.decode().strip()


def kv(line):
    return {k: v for k, v in (f.split("=", 1) for f in line.split() if "=" in f)}


def run_client(path, *args, timeout=300):
    r = subprocess.run([CLIENT, path, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise BenchError(f"udsbench-client {' '.join(map(str, args))} on {path}: {r.stderr.strip()}")
    return kv(r.stdout.strip().splitlines()[-1])


def wait_listening(test, timeout=10, what="socket"):
    deadline = time.monotonic() + timeout
    while not test():
        if time.monotonic() > deadline:
            raise BenchError(f"{what} not listening after {timeout} s")
        time.sleep(0.005)   # polling a kernel table: socat has no readiness signal of its own


def unix_listening(path):
    with open("/proc/net/unix", errors="surrogateescape") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 8 and parts[7] == path and int(parts[3], 16) & 0x10000:
                return True
    return False


def tcp_listening(port):
    with open("/proc/net/tcp", errors="surrogateescape") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 3 and parts[1].endswith(f":{port:04X}") and parts[3] == "0A":
                return True
    return False


def proc_status(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except FileNotFoundError:
        return None
    return None


def proc_cpu(pid):
    """utime + stime of pid in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def same_cmdline_pids(pid):
    """Processes forked (not exec'd) from pid keep its command line: udsdump's guardian."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            me = f.read()
    except FileNotFoundError:
        return []
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != pid:
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if f.read() == me:
                        out.append(int(d))
            except OSError:
                pass
    return out


class Load:
    """CPU time the rest of the machine used meanwhile: /proc/stat's busy time less ours (this process,
    its reaped children, and the long-running server).  Other people's builds and tests on a shared
    machine show up here; a measurement taken under such load is marked in the report."""

    def __init__(self, env):
        self.env = env
        self.t0, self.busy0, self.ours0 = time.monotonic(), self.busy(), self.ours()

    @staticmethod
    def busy():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")   # all but idle and iowait

    def ours(self):
        s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime + self.env.server_cpu()

    def cpus(self):
        """Average number of CPUs others kept busy since the start."""
        dt = time.monotonic() - self.t0
        return max(0.0, (self.busy() - self.busy0) - (self.ours() - self.ours0)) / dt if dt > 0 else 0.0


# ---- the paths ----

SERVER_KINDS = {"epoll": [], "threads": ["--threads"]}
SERVER_TEXT = {"epoll": "an epoll server (1 MiB reads)", "threads": "a thread-per-connection server (128 KiB blocking reads)"}


class Env:
    """The servers every path leads to: one of each kind in SERVERS, each in a folder of its own."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.socks = {k: os.path.join(tmp, f"srv-{k}", "bench.sock") for k in SERVERS}
        for s in self.socks.values():
            os.makedirs(os.path.dirname(s), mode=0o700)
        self.sock = self.socks[SERVERS[0]]   # round trips, connections, memory
        self.servers = {}
        self.server = None

    def start_server(self):
        for kind, sock in self.socks.items():
            args = [SERVER] + (["--verify"] if VERIFY else []) + SERVER_KINDS[kind] + [sock]
            p = spawn(args, stdout=subprocess.PIPE)
            if read_line(p, 10, "udsbench-server") != "ready":
                raise BenchError(f"udsbench-server ({kind}) did not start")
            self.servers[kind] = p
        self.server = self.servers[SERVERS[0]]

    def server_cpu(self):
        return sum(proc_cpu(p.pid) for p in self.servers.values() if p.poll() is None)

    def stop_servers(self):
        for p in self.servers.values():
            stop(p)

    def check_socket_back(self, sock):
        names = sorted(os.listdir(os.path.dirname(sock)))
        if names != ["bench.sock"]:
            raise BenchError(f"after udsdump stopped, the socket folder holds {names}")
        if not unix_listening(sock):
            raise BenchError("after udsdump stopped, nobody listens on the socket")


def check_capture(path_name, test, n, pc, snap=False):
    """What a finished capture holds against what was sent: a result dict's capture fields."""
    c2s, s2c = expected_capture(test, n)
    got = (int(pc["c2s_bytes"]), int(pc["s2c_bytes"]))
    if got[0] > c2s or got[1] > s2c or pc["verify_errors"] != "0":
        raise BenchError(f"{path_name} {test}: the pcap holds more or other bytes than were sent: "
                         f"{got} for {(c2s, s2c)}, {pc['verify_errors']} verify errors")
    return {"capture_ok": got == (c2s, s2c) and pc["drop_frames"] == "0" and (snap or pc["truncated"] == "0"),
            "lost": (c2s - got[0]) + (s2c - got[1]), "sent": c2s + s2c,
            "dropped_bytes": int(pc["dropped_bytes"]), "drop_frames": int(pc["drop_frames"])}


class Udsdump:
    """One udsdump capture on a server's socket with its pcap read by udsbench-pcapcount (the fast
    reader); a context manager."""

    def __init__(self, env, extra=(), sock=None):
        self.env = env
        self.extra = list(extra)
        self.path = sock or env.sock

    def __enter__(self):
        r, w = os.pipe()
        args = [PCAPCOUNT] + (["--verify"] if VERIFY else []) + (["--pipe-size", str(PIPE_SIZE)] if PIPE_SIZE else [])
        self.reader = spawn(args, stdin=r, stdout=subprocess.PIPE)
        self.errfile = open(os.path.join(self.env.tmp, "udsdump.err"), "a+")
        self.ud = spawn([UDSDUMP, "--capture", "--extcap-interface", "unix:" + self.path, "--fifo", "-",
                         "--close-inflight"] + UDSDUMP_ARGS + self.extra, stdout=w, stderr=self.errfile)
        os.close(r)
        os.close(w)
        try:
            line = read_line(self.reader, 15, "udsdump's pcap header")
        except BenchError:
            self.errfile.seek(0)
            raise BenchError(f"udsdump did not start: {self.errfile.read().strip()}")
        if line != "ready":
            raise BenchError(f"pcap reader: {line}")
        return self

    def cpu(self):
        return proc_cpu(self.ud.pid)

    def finish(self):
        """Stops udsdump (SIGTERM) and returns the reader's summary."""
        self.hwm_kib = proc_status(self.ud.pid, "VmHWM")
        self.cpu_s = proc_cpu(self.ud.pid)
        rc = stop(self.ud, signal.SIGTERM, timeout=15)
        line = read_line(self.reader, 15, "pcap reader summary")
        stop(self.reader)
        if rc != 0:
            self.errfile.seek(0)
            raise BenchError(f"udsdump exited with status {rc}: {self.errfile.read().strip()[-500:]}")
        self.env.check_socket_back(self.path)
        return kv(line)

    def __exit__(self, *exc):
        for p in (self.ud, self.reader):
            if p in PROCS:
                stop(p)
        self.errfile.close()


def install_extcap(home):
    """Installs the udsdump under test as a personal extcap of a throw-away HOME, where tshark finds it.
    The one place that knows the folder: scripts/install-personal (which follows Wireshark's version)."""
    env = dict(os.environ, HOME=home)
    r = subprocess.run([os.path.join(SRC, "scripts", "install-personal"), os.path.dirname(UDSDUMP)], env=env,
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise BenchError(f"scripts/install-personal: {r.stderr.strip() or r.stdout.strip()}")


def inode(path):
    try:
        st = os.stat(path)
        return (st.st_dev, st.st_ino)
    except FileNotFoundError:
        return None


class Dumpcap:
    """The real reader: `tshark -i unix:SOCK -w FILE` (dumpcap reads udsdump's FIFO and writes pcapng),
    udsdump found as a personal extcap of env.home.  Counted afterwards from the file."""

    def __init__(self, env, extra=(), sock=None):
        self.env, self.extra = env, list(extra)
        self.path = sock or env.sock
        self.file = os.path.join(env.tmp, "dumpcap.pcapng")

    def __enter__(self):
        orig = inode(self.path)
        tenv = {k: v for k, v in os.environ.items() if not k.startswith(("WIRESHARK_", "XDG_"))}
        tenv.update(HOME=self.env.home, TMPDIR=self.env.ttmp, LC_ALL="C.UTF-8")
        opts = []
        iface = "unix:" + self.path
        if self.extra:   # extcap options as tshark users give them: -o extcap.<interface>.<option>:<value>
            key = re.sub(r"[^0-9a-z]", "_", iface.lower())
            opts = ["-o", f"extcap.{key}.lossless:TRUE"] if "--lossless" in self.extra else []
        self.errfile = open(os.path.join(self.env.tmp, "tshark.err"), "w+")
        self.p = spawn(["tshark", "-i", iface, *opts, "-w", self.file, "-q"], env=tenv,
                       stdout=subprocess.DEVNULL, stderr=self.errfile)
        # Interposed when PATH is another socket; no readiness signal crosses tshark and dumpcap.  Slow
        # on a host with thousands of sockets: Wireshark 4.0 runs `udsdump --extcap-config` once per
        # listed interface while it starts.
        try:
            wait_listening(lambda: self.p.poll() is not None or inode(self.path) not in (orig, None), timeout=180,
                           what="tshark -i unix:PATH")
        except BenchError:
            raise BenchError(f"tshark never interposed: {self.stderr()}")
        if self.p.poll() is not None:
            raise BenchError(f"tshark exited: {self.stderr()}")
        return self

    def children(self):
        """tshark's children by name: dumpcap (the reader) and udsdump (the extcap, started by tshark)."""
        out = {}
        for task in os.listdir(f"/proc/{self.p.pid}/task"):
            try:
                with open(f"/proc/{self.p.pid}/task/{task}/children") as f:
                    pids = [int(x) for x in f.read().split()]
            except OSError:
                continue
            for pid in pids:
                try:
                    with open(f"/proc/{pid}/comm") as f:
                        out.setdefault(f.read().strip(), pid)
                except OSError:
                    pass
        return out

    def stderr(self):
        self.errfile.seek(0)
        return self.errfile.read().strip()[-500:]

    def fifo_waiting(self):
        """Bytes in the FIFO between udsdump and dumpcap (made by dumpcap in its TMPDIR), or 0."""
        for name in os.listdir(self.env.ttmp):
            f = os.path.join(self.env.ttmp, name)
            if stat.S_ISFIFO(os.lstat(f).st_mode):
                # A write end, opened without blocking, reads the count without taking a byte.
                fd = os.open(f, os.O_WRONLY | os.O_NONBLOCK)
                try:
                    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]
                finally:
                    os.close(fd)
        return 0

    def finish(self):
        """Stops tshark as Ctrl+C does, once dumpcap has taken what udsdump wrote (a user stops a capture
        after the traffic, not within a millisecond of it), and counts what the file holds."""
        empty = 0
        deadline = time.monotonic() + 10
        while empty < 3 and time.monotonic() < deadline:
            empty = empty + 1 if self.fifo_waiting() == 0 else 0
            time.sleep(0.02)   # udsdump writes within 5 ms of queueing; three empty looks span that
        rc = stop(self.p, signal.SIGINT, timeout=60)
        if rc != 0:
            raise BenchError(f"tshark exited with status {rc}: {self.stderr()}")
        wait_listening(lambda: unix_listening(self.path) and len(os.listdir(os.path.dirname(self.path))) == 1,
                       timeout=10, what="the socket, put back,")
        self.env.check_socket_back(self.path)
        r = subprocess.run([PCAPCOUNT, "--file", self.file], capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise BenchError(f"udsbench-pcapcount --file: {r.stderr.strip()}")
        return kv(r.stdout.strip().splitlines()[-1])

    def __exit__(self, *exc):
        if self.p in PROCS:
            stop(self.p, signal.SIGINT)
        self.errfile.close()
        try:
            os.unlink(self.file)
        except FileNotFoundError:
            pass


class Floor:
    """bench/relay-floor.c between the client and a server: what any relay costs here.  With tee, it
    also tees every batch into a FIFO read by the fast reader's raw mode (the same 1 MiB reads): what
    handing a capture reader a copy costs by itself, without framing or any check."""

    def __init__(self, env, splice, sock=None, tee=False):
        self.env, self.splice, self.tee = env, splice, tee
        self.upstream = sock or env.sock
        self.path = os.path.join(env.tmp, "floor.sock")
        self.fifo = os.path.join(env.tmp, "floor.tee")
        self.reader = None

    def __enter__(self):
        tee = []
        if self.tee:
            os.mkfifo(self.fifo, 0o600)
            self.reader = spawn([PCAPCOUNT, "--raw", self.fifo], stdout=subprocess.PIPE)
            tee = ["--tee", self.fifo]
        self.p = spawn([FLOOR] + (["--splice"] if self.splice else []) + tee + [self.path, self.upstream],
                       stdout=subprocess.PIPE)
        if read_line(self.p, 10, "udsbench-relay") != "ready":
            raise BenchError("udsbench-relay did not start")
        return self

    def teed(self):
        """Stops the relay and returns the bytes its reader got."""
        stop(self.p)
        line = read_line(self.reader, 15, "raw reader summary")
        return int(kv(line)["raw_bytes"])

    def __exit__(self, *exc):
        for p in (self.p, self.reader):
            if p is not None and p in PROCS:
                stop(p)
        for f in (self.path, self.fifo):
            try:
                os.unlink(f)
            except FileNotFoundError:
                pass


class Socat:
    def __init__(self, env, kind, sock=None):
        self.env, self.kind = env, kind
        self.upstream = sock or env.sock
        self.path = os.path.join(env.tmp, f"{kind}.sock")
        self.procs = []

    def __enter__(self):
        if self.kind == "recipe":
            with socket.socket() as s:   # a free loopback port
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            # As in the README (bound to loopback here, to expose nothing on a shared machine).
            self.procs.append(spawn(["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork",
                                     f"UNIX-CONNECT:{self.upstream}"], stderr=subprocess.DEVNULL))
            wait_listening(lambda: tcp_listening(port), what="socat TCP-LISTEN")
            self.procs.append(spawn(["socat", f"UNIX-LISTEN:{self.path},mode=777,fork",
                                     f"TCP-CONNECT:127.0.0.1:{port}"], stderr=subprocess.DEVNULL))
        else:
            self.procs.append(spawn(["socat", "-x", "-v", f"UNIX-LISTEN:{self.path},fork",
                                     f"UNIX-CONNECT:{self.upstream}"], stderr=subprocess.DEVNULL))
        wait_listening(lambda: unix_listening(self.path), what="socat UNIX-LISTEN")
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            stop(p)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


# ---- the measurements ----

def sizes(path):
    slow = path == "socat-v"
    forks = path in ("recipe", "socat-v")
    return {
        "bulk": SLOW_BULK if slow else RECIPE_BULK if path == "recipe" else BULK,
        "rtt": RTT_N // 10 if slow else RTT_N,
        "conn": FORK_CONN_N if forks else CONN_N,
    }


def expected_capture(test, n):
    """(client-to-server, server-to-client) payload bytes a complete capture of the test holds."""
    if test == "bulk":
        return 1 + n, 8
    if test == "rtt":
        total = max(100, n // 10) + n
        return 1 + MSG * total, MSG * total
    total = n // 10 + n
    return MSG * total, (MSG - 1) * total


def run_test(test, path, n, write=None, rate=0):
    if test == "bulk":
        r = run_client(path, "bulk", n, write or (1 << 20), rate)
        return {"value": float(r["mbps"])}
    r = run_client(path, test, n, MSG)
    return {"value": float(r["median_us"]), "mean": float(r["mean_us"]), "p99": float(r["p99_us"])}


def wait_quiet(env, budget):
    """On a shared machine, waits (at most 10 s, and within what is left of the run's budget) for a 0.3 s
    window in which the others keep less than BUSY CPUs busy, so that a measurement starts undisturbed.
    Returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < min(10, budget):
        load = Load(env)
        time.sleep(0.3)   # a sampling window, not synchronisation
        if load.cpus() < BUSY:
            break
    return time.monotonic() - t0


def counted(fn, n, server, relay=None, reader=None):
    """Runs fn (one client run moving n bytes) and adds to its result the CPU seconds per GB each
    process on the path spent meanwhile: where the time goes.  Only the client is reaped during fn,
    so RUSAGE_CHILDREN's growth is the client's."""
    pids = {"server": server, "relay": relay, "reader": reader}
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    p0 = {k: proc_cpu(v) for k, v in pids.items() if v}
    r = fn()
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    gb = n / 1e9
    r["cpu"] = {k: (proc_cpu(pids[k]) - p0[k]) / gb for k in p0}
    r["cpu"]["client"] = (c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime) / gb
    return r


def capture_run(env, path_name, test, n, sock, write=None, rate=0, server=None):
    """One test through a fresh capture (udsdump + fast reader, or tshark/dumpcap): its result dict."""
    extra = ["--lossless"] if path_name.endswith("-ll") else ["--snaplen", "128"] if path_name == "udsdump-snap" else []
    real = path_name.startswith("dumpcap")
    with (Dumpcap if real else Udsdump)(env, extra, sock) as u:
        if real:
            kids = u.children()
            r = counted(lambda: run_test(test, u.path, n, write, rate), n, server, kids.get("udsdump"),
                        kids.get("dumpcap"))
        else:
            r = counted(lambda: run_test(test, u.path, n, write, rate), n, server, u.ud.pid, u.reader.pid)
            r["cpu_s"], r["hwm_kib"] = r["cpu"]["relay"] * n / 1e9, proc_status(u.ud.pid, "VmHWM")
        pc = u.finish()
        r.update(check_capture(path_name, test, n, pc, snap=path_name == "udsdump-snap"))
    return r


def relay_for(env, path_name, sock):
    if path_name.startswith("floor"):
        return Floor(env, path_name != "floor", sock, tee=path_name == "floor-tee")
    return Socat(env, path_name, sock)


def measure_bulk_cell(env, kind, write, results, notes, rnd):
    """Every path once at one (server kind, write size), in an order that rotates with the round."""
    notes["waited"] = notes.get("waited", 0) + wait_quiet(env, QUIET_WAIT - notes.get("waited", 0))
    sock = env.socks[kind]
    order = PATHS[rnd % len(PATHS):] + PATHS[:rnd % len(PATHS)]
    for p in order:
        print(f"bench: round {rnd + 1}/{ROUNDS}: bulk, {kind} server, {human(write)} writes: {p}", file=sys.stderr,
              flush=True)
        load = Load(env)
        n = sizes(p)["bulk"]
        server = env.servers[kind].pid
        if p == "direct":
            r = counted(lambda: run_test("bulk", sock, n, write), n, server)
        elif p.startswith(("udsdump", "dumpcap")):
            r = capture_run(env, p, "bulk", n, sock, write, server=server)
        else:
            with relay_for(env, p, sock) as s:
                relay = s.p.pid if p.startswith("floor") else None
                reader = s.reader.pid if p == "floor-tee" else None
                r = counted(lambda: run_test("bulk", s.path, n, write), n, server, relay, reader)
                if p == "floor-tee":
                    # every byte teed: what it could not tee at once it did not wait for (reported)
                    r["teed"] = s.teed() / sum(expected_capture("bulk", n))
        r["others"] = load.cpus()
        results[(kind, write)][p].append(r)


def measure_latency(env, path_name, results, notes):
    notes["waited"] = notes.get("waited", 0) + wait_quiet(env, QUIET_WAIT - notes.get("waited", 0))
    load = Load(env)
    n0 = {t: len(results[path_name][t]) for t in LAT_TESTS}
    sz = sizes(path_name)
    if path_name == "direct":
        for test in LAT_TESTS:
            results[path_name][test].append(run_test(test, env.sock, sz[test]))
    elif path_name.startswith(("udsdump", "dumpcap")):
        for test in LAT_TESTS:
            results[path_name][test].append(capture_run(env, path_name, test, sz[test], env.sock))
    else:
        with relay_for(env, path_name, env.sock) as s:
            for test in LAT_TESTS:
                results[path_name][test].append(run_test(test, s.path, sz[test]))
    others = load.cpus()
    for t in LAT_TESTS:
        for r in results[path_name][t][n0[t]:]:
            r["others"] = others


def dumpcap_rates(env):
    """The real reader at paced rates: default mode, 64 KiB writes, the first server kind.  For each
    rate: the rate the traffic reached (it must be the one asked: capture never slows it) and the share
    of it the capture file holds."""
    out = []
    for rate in RATES:
        n = BULK if rate == 0 else min(BULK, rate * 1000 * 1000 * RATE_SECS)
        print(f"bench: dumpcap at {rate or 'full'} MB/s", file=sys.stderr, flush=True)
        r = capture_run(env, "dumpcap", "bulk", n, env.sock, 64 * 1024, rate)
        r["rate"] = rate
        out.append(r)
    return out


def memory(env):
    with Udsdump(env) as u:
        base = proc_status(u.ud.pid, "VmRSS")
        helpers = same_cmdline_pids(u.ud.pid)
        helper_rss = sum(proc_status(p, "VmRSS") or 0 for p in helpers)
        c = spawn([CLIENT, u.path, "hold", str(HOLD_N)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = read_line(c, 60, "udsbench-client hold")
        if not line.startswith("ready"):
            raise BenchError(f"hold: {line}")
        held = proc_status(u.ud.pid, "VmRSS")
        c.stdin.close()     # the client closes its connections and exits
        c.wait(30)
        stop(c)
        pc = u.finish()
        if pc["syn"] != str(HOLD_N):
            raise BenchError(f"memory: {pc['syn']} connections in the capture, {HOLD_N} held")
    return {"base_kib": base, "held_kib": held, "per_conn_kib": (held - base) / HOLD_N, "helper_kib": helper_rss,
            "helpers": len(helpers)}


def discovery(env):
    rounds = 7
    if os.access(DISCOVER, os.X_OK):
        r = subprocess.run([DISCOVER, "-n", str(LISTENERS), "-r", str(rounds), UDSDUMP], capture_output=True,
                           text=True, timeout=300)
        if r.returncode != 0:
            raise BenchError(f"bench-discover: {r.stderr.strip()}")
        m = re.search(r"^udsdump --extcap-interfaces.*median\s+([\d.]+)", r.stdout, re.M)
        listed = re.search(r"^udsdump: (\d+) unix: interfaces listed", r.stdout, re.M)
        lib = re.search(r"^uds_discover\(NULL, with_owners=TRUE\).*median\s+([\d.]+)", r.stdout, re.M)
        if not m or not listed:
            raise BenchError(f"bench-discover: unexpected output:\n{r.stdout}")
        return {"median_ms": float(m.group(1)), "listed": int(listed.group(1)),
                "lib_ms": float(lib.group(1)) if lib else None, "by": "bench/discover"}
    # Our own: the listeners in a helper process, udsdump timed from here (spawn cost included).
    d = os.path.join(env.tmp, "many")
    os.mkdir(d, 0o700)
    lp = spawn([SERVER, "--listeners", str(LISTENERS), d], stdout=subprocess.PIPE)
    try:
        if read_line(lp, 120, "udsbench-server --listeners") != "ready":
            raise BenchError("listeners did not start")
        times, listed = [], 0
        for _ in range(rounds):
            t0 = time.monotonic()
            r = subprocess.run([UDSDUMP, "--extcap-interfaces", "--extcap-version=4.0"], capture_output=True,
                               text=True, timeout=60)
            times.append((time.monotonic() - t0) * 1000)
            if r.returncode != 0:
                raise BenchError(f"udsdump --extcap-interfaces: {r.stderr.strip()}")
            listed = r.stdout.count(f"{{value=unix:{d}/")
        return {"median_ms": statistics.median(times), "listed": listed, "lib_ms": None, "by": "bench/run.py"}
    finally:
        stop(lp)
        shutil.rmtree(d, ignore_errors=True)


# ---- the report ----

def med(rows, key="value"):
    vals = [r[key] for r in rows if key in r]
    return statistics.median(vals) if vals else None


def human(n):
    return f"{n >> 20} MiB" if n >= 1 << 20 and n % (1 << 20) == 0 else f"{n >> 10} KiB" if n % 1024 == 0 else f"{n} B"


def round_ratio(rows, base_rows):
    """Median over the rounds of (this path / the base path) within each round: both measured minutes
    apart under the same load, which a ratio of medians would not be."""
    pairs = [a["value"] / b["value"] for a, b in zip(rows, base_rows) if b["value"]]
    return statistics.median(pairs) if pairs else None


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    pinned = f", every process pinned to CPU {CPUS}" if CPUS else ""
    return f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}{pinned}"


REF = "floor-splice"   # the reference ratio: the minimal splice relay


def cpu_total(rs):
    """Median over the runs of the CPU seconds per GB of every process on the path."""
    runs = [r for r in rs if "cpu" in r]
    return statistics.median(sum(r["cpu"].values()) for r in runs) if runs else None


def cpu_ceiling(rs, ref):
    """The ratio a path could reach if the CPUs were the limit: the reference path's CPU per GB over
    this one's (both paths' client, server, relay and capture reader).  When every CPU is busy,
    throughput goes as the inverse of that cost; below that, the rest is waiting."""
    a, b = cpu_total(rs), cpu_total(ref)
    return f" (CPU-bound ceiling {b / a:.2f}×)" if a and b else ""


def report(bulk, lat, rates, mem, disc, elapsed, others, waited):
    out = []
    BP = [p for p in ALL_PATHS if p in PATHS]
    LP = [p for p in ALL_PATHS if p in LAT_PATHS]
    ref = REF if REF in PATHS else "direct"

    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    out.append(f"Machine: {machine()}.  {ROUNDS} rounds, paths interleaved (order rotating per round); "
               f"MB/s and µs are medians of the rounds, ratios medians of the per-round ratios.")
    out.append(f"Bulk: {BULK // 1000000} MB one way per run ({RECIPE_BULK // 1000000} MB through the socat recipe), "
               f"in writes of {', '.join(human(w) for w in WRITES)}, into " + " and ".join(SERVER_TEXT[k] for k in SERVERS) + ".")
    out.append("")
    if "bulk" in TESTS:
        cols = [p for p in BP if p != "socat-v"]
        head = "| server | writes | " + " | ".join(LABEL[p] for p in cols) + " |"
        out.append("Bulk MB/s (× the minimal splice relay, same round):")
        out.append("")
        out.append(head)
        out.append("|---|---:|" + "---:|" * len(cols))
        for kind in SERVERS:
            for w in WRITES:
                rs = bulk[(kind, w)]
                cells = []
                for p in cols:
                    v = med(rs[p])
                    c = num(v, ".0f")
                    if p != ref and v is not None and rs[ref]:
                        c += f" ({round_ratio(rs[p], rs[ref]):.2f}×)"
                    if p == "floor-tee" and rs[p]:
                        c += f", {100 * statistics.median(r['teed'] for r in rs[p]):.0f} % teed"
                    if p.startswith("dumpcap") and rs[p]:
                        got = statistics.median(1 - r["lost"] / r["sent"] for r in rs[p])
                        c += f", {100 * got:.0f} % captured"
                    cells.append(c)
                out.append(f"| {kind} | {human(w)} | " + " | ".join(cells) + " |")
        out.append("")
        fast = [r for cell in bulk.values() for p in PATHS if p.startswith("udsdump") for r in cell[p]]
        bad = [r for r in fast if not r["capture_ok"]]
        if fast:
            out.append(f"Fast reader (udsbench-pcapcount): {len(fast) - len(bad)}/{len(fast)} bulk captures complete"
                       + (f"; incomplete ones missed up to {max(r['lost'] for r in bad) / 1e6:.1f} MB "
                          f"({max(r['dropped_bytes'] for r in bad) / 1e6:.1f} MB reported in DROP frames)" if bad else
                          ", every byte sent in the pcap, no DROP frame") + ".")
        for p in ("udsdump", "udsdump-ll"):
            rs = [r for cell in bulk.values() for r in cell.get(p, []) if "cpu_s" in r]
            if rs:
                gb = statistics.median(r["cpu_s"] for r in rs) / (BULK / 1e9)
                out.append(f"{LABEL[p]}: udsdump CPU {gb:.2f} s per GB (median over the matrix), "
                           f"peak RSS {max(r['hwm_kib'] or 0 for r in rs) / 1024:.1f} MiB.")
        out.append("")
        cp = [p for p in cols if p in ("direct", "floor-splice", "floor", "floor-tee", "udsdump", "udsdump-ll", "dumpcap")]
        out.append(f"Where the time goes: CPU seconds per GB moved, {SERVERS[0]} server (medians of the rounds; "
                   f"client + server + relay (udsdump) + capture reader (dumpcap under tshark -w) = total):")
        out.append("")
        out.append("| writes | " + " | ".join(LABEL[p] for p in cp) + " |")
        out.append("|---:|" + "---:|" * len(cp))
        for w in WRITES:
            cells = []
            for p in cp:
                rs = [r for r in bulk[(SERVERS[0], w)][p] if "cpu" in r]
                if not rs:
                    cells.append("-")
                    continue
                parts = [statistics.median(r["cpu"].get(k, 0) for r in rs)
                         for k in ("client", "server", "relay", "reader")]
                shown = " + ".join(f"{v:.2f}" for v, k in zip(parts, ("client", "server", "relay", "reader"))
                                   if k in rs[0]["cpu"])
                cells.append(f"{shown} = {sum(parts):.2f}")
            out.append(f"| {human(w)} | " + " | ".join(cells) + " |")
        out.append("")
        if any(p.startswith("dumpcap") for p in PATHS):
            out.append("Under dumpcap: captured = share of the bytes sent that the pcapng file holds; the rest is "
                       "reported by udsdump's DROP frames (bytes): "
                       + "; ".join(f"{k} {human(w)} "
                                   + ", ".join(f"{r['dropped_bytes'] / 1e6:.0f}" for r in bulk[(k, w)]["dumpcap"])
                                   for k in SERVERS for w in WRITES if bulk[(k, w)].get("dumpcap")) + " MB.")
        out.append("")
    if rates:
        out.append(f"The real reader at paced rates (tshark -w, default mode, {SERVERS[0]} server, 64 KiB writes, "
                   f"one run each):")
        out.append("")
        out.append("| asked MB/s | traffic reached MB/s | in the pcapng file | dropped (DROP frames) |")
        out.append("|---:|---:|---:|---:|")
        for r in rates:
            out.append(f"| {r['rate'] or 'as fast as it goes'} | {r['value']:.0f} | "
                       f"{100 * (1 - r['lost'] / r['sent']):.1f} % | {r['dropped_bytes'] / 1e6:.1f} MB |")
        out.append("")
    if LAT_TESTS and LP:
        lref = REF if REF in LP else "direct"
        out.append(f"Round trip ({MSG} B ping-pong × {RTT_N}) and connection (connect + {MSG} B request + reply + "
                   f"close × {CONN_N}; {FORK_CONN_N} via the forking socat paths), {SERVERS[0]} server:")
        out.append("")
        out.append("| path | round trip median µs (mean) | × splice relay | connection median µs (mean) | × splice relay | capture check |")
        out.append("|---|---:|---:|---:|---:|---|")
        for p in LP:
            rs = lat[p]
            cells = []
            for t in ("rtt", "conn"):
                if t in LAT_TESTS and rs[t]:
                    cells += [f"{med(rs[t]):.1f} ({med(rs[t], 'mean'):.1f})",
                              f"{med(rs[t]) / med(lat[lref][t]):.2f}×"]
                else:
                    cells += ["-", "-"]
            cap = "-"
            if p.startswith("udsdump"):
                runs = [r for t in LAT_TESTS for r in rs[t]]
                ok = sum(1 for r in runs if r["capture_ok"])
                cap = f"{ok}/{len(runs)} pcaps complete"
            out.append(f"| {LABEL[p]} | " + " | ".join(cells) + f" | {cap} |")
        out.append("")
    if mem:
        out.append(f"Memory (udsdump RSS): idle {mem['base_kib'] / 1024:.1f} MiB; with {HOLD_N} idle connections "
                   f"{mem['held_kib'] / 1024:.1f} MiB = {mem['per_conn_kib']:.1f} KiB per connection "
                   f"(+ {mem['helpers']} guardian process, RSS {mem['helper_kib'] / 1024:.1f} MiB, mostly shared pages).")
    if disc:
        lib = f"; uds_discover() alone {disc['lib_ms']:.1f} ms" if disc["lib_ms"] else ""
        out.append(f"Discovery: `udsdump --extcap-interfaces` with {LISTENERS} listening sockets (+ a client each) "
                   f"lists {disc['listed']} of them in {disc['median_ms']:.1f} ms (median of 7, process start "
                   f"included{lib}; {disc['by']}).")
    out.append("")

    targets = []

    def target(name, value, ok):
        targets.append((name, value, ok))

    if "bulk" in TESTS and REF in PATHS:
        for p in ("udsdump", "udsdump-ll"):
            if p not in PATHS:
                continue
            for kind in SERVERS:
                for w in [w for w in WRITES if w >= 16 * 1024]:
                    rs = bulk[(kind, w)]
                    x = round_ratio(rs[p], rs[REF])
                    complete = all(r["capture_ok"] for r in rs[p])
                    target(f"{LABEL[p]} ≥ 0.9× the minimal splice relay, {kind} server, {human(w)} writes, "
                           f"capture complete", f"{x:.2f}×, {sum(r['capture_ok'] for r in rs[p])}/{len(rs[p])} complete"
                           + cpu_ceiling(rs[p], rs[REF]), x >= 0.9 and complete)
        if "recipe" in PATHS and "udsdump" in PATHS:
            xs = [(kind, w, round_ratio(bulk[(kind, w)]["udsdump"], bulk[(kind, w)]["recipe"]))
                  for kind in SERVERS for w in WRITES if w >= 16 * 1024]
            worst = min(xs, key=lambda t: t[2])
            target("udsdump ≥ 3× the socat recipe, writes ≥ 16 KiB", f"{worst[2]:.2f}× at worst ({worst[0]}, "
                   f"{human(worst[1])})", worst[2] >= 3)
    if REF in LP and "udsdump" in LP:
        for t, name in (("rtt", "round trip"), ("conn", "connection")):
            if t in LAT_TESTS:
                x = med(lat["udsdump"][t]) / med(lat[REF][t])
                target(f"{name} ≤ 1.1× the minimal splice relay (median)", f"{x:.2f}×", x <= 1.1)
    if mem:
        limit = 8 * 1024 + 32 * HOLD_N
        target(f"memory ≤ 8 MiB + 32 KiB × {HOLD_N} connections",
               f"{mem['held_kib'] / 1024:.1f} MiB (idle {mem['base_kib'] / 1024:.1f} MiB, "
               f"{mem['per_conn_kib']:.1f} KiB/conn)",
               mem["held_kib"] <= limit and mem["base_kib"] <= 8 * 1024 and mem["per_conn_kib"] <= 32)
    if disc:
        target(f"--extcap-interfaces ≤ 250 ms with {LISTENERS} listeners", f"{disc['median_ms']:.1f} ms",
               disc["median_ms"] <= 250 and disc["listed"] >= LISTENERS)
    out.append("| target | measured | |")
    out.append("|---|---|---|")
    for name, value, ok in targets:
        out.append(f"| {name} | {value} | {'PASS' if ok else 'MISS'} |")
    out.append("")
    out.append(f"Run time {elapsed:.0f} s, {waited:.0f} s of it waiting for other processes to leave the CPUs "
               f"alone; they kept {others:.2f} CPUs busy on average over the run.")
    return "\n".join(out), all(ok for _, _, ok in targets)


def write_doc(doc, text, cmd):
    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    try:
        with open(doc) as f:
            old = f.read()
    except FileNotFoundError:
        old = f"# Benchmarks\n\n{begin}\n{end}\n"
    if begin not in old or end not in old:
        raise BenchError(f"{doc} has no {begin} ... {end} section")
    stamp = time.strftime("%Y-%m-%d")
    body = f"{begin}\nMeasured {stamp} with `{cmd}`.\n\n{text}\n{end}"
    new = old[:old.index(begin)] + body + old[old.index(end) + len(end):]
    with open(doc, "w") as f:
        f.write(new)


def main():
    for exe in (UDSDUMP, SERVER, CLIENT, PCAPCOUNT, FLOOR):
        if not os.access(exe, os.X_OK):
            raise BenchError(f"{exe} is not built (scripts/bench builds it)")
    unknown = [p for p in PATHS + LAT_PATHS if p not in ALL_PATHS] + [k for k in SERVERS if k not in SERVER_KINDS]
    if unknown or "direct" not in PATHS:
        raise BenchError(f"unknown {unknown}: paths are {','.join(ALL_PATHS)} (direct is needed), "
                         f"servers {','.join(SERVER_KINDS)}")
    if any(p in PATHS + LAT_PATHS for p in ("recipe", "socat-v")) and not shutil.which("socat"):
        raise BenchError("socat is not installed (apt-get install socat), or leave it out of BENCH_PATHS")
    real = any(p.startswith("dumpcap") for p in PATHS + LAT_PATHS) or RATES
    if real and not shutil.which("tshark"):
        raise BenchError("tshark is not installed (scripts/setup test), or leave dumpcap out of BENCH_PATHS "
                         "and set BENCH_RATES=")
    if CPUS:
        os.sched_setaffinity(0, {int(c) for c in CPUS.split(",")})
    t_start = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="udsbench-")
    os.chmod(tmp, 0o700)
    try:
        env = Env(tmp)
        if real:
            env.home, env.ttmp = os.path.join(tmp, "home"), os.path.join(tmp, "t")
            os.mkdir(env.ttmp, 0o700)
            install_extcap(env.home)
        env.start_server()
        load = Load(env)
        bulk = {(k, w): {p: [] for p in PATHS} for k in SERVERS for w in WRITES}
        lat = {p: {"bulk": [], "rtt": [], "conn": []} for p in LAT_PATHS}
        notes = {}
        for rnd in range(ROUNDS):
            if "bulk" in TESTS:
                for kind in SERVERS:
                    for w in WRITES:
                        measure_bulk_cell(env, kind, w, bulk, notes, rnd)
            if LAT_TESTS:
                order = LAT_PATHS[rnd % len(LAT_PATHS):] + LAT_PATHS[:rnd % len(LAT_PATHS)]
                for p in order:
                    print(f"bench: round {rnd + 1}/{ROUNDS}: round trip, connection: {p}", file=sys.stderr, flush=True)
                    measure_latency(env, p, lat, notes)
        rates = dumpcap_rates(env) if RATES else []
        print("bench: memory", file=sys.stderr, flush=True)
        mem = memory(env) if HOLD_N > 0 else None
        print("bench: discovery", file=sys.stderr, flush=True)
        disc = discovery(env) if LISTENERS > 0 else None
        others = load.cpus()
        env.stop_servers()
        text, all_ok = report(bulk, lat, rates, mem, disc, time.monotonic() - t_start, others,
                              notes.get("waited", 0))
        print(text)
        doc = os.environ.get("BENCH_DOC")
        if doc:
            cmd = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(os.environ.items())
                           if k.startswith("BENCH_") and k not in ("BENCH_DOC", "BENCH_BUILD"))
            write_doc(doc, text, (cmd + " " if cmd else "") + "scripts/bench")
        return 0 if all_ok or not STRICT else 1
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def on_signal(signum, frame):
    raise BenchError(f"stopped by signal {signum}")


if __name__ == "__main__":
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
        signal.signal(s, on_signal)
    signal.alarm(TIMEOUT)
    try:
        sys.exit(main())
    except (BenchError, subprocess.TimeoutExpired, OSError) as e:
        print(f"bench: {e}", file=sys.stderr)
        sys.exit(1)
