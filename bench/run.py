#!/usr/bin/env python3
"""bench/run.py - the relay benchmark that scripts/bench runs (see docs/benchmarks.md).

Measures, side by side in one run, one Unix stream socket reached several ways:
  direct        the client connects to the server's socket
  floor         bench/relay-floor.c, a minimal copy relay without capture: what any relay costs here
  floor-splice  the same moving bytes with splice(2) (optional: BENCH_PATHS)
  udsdump       `udsdump --capture --extcap-interface unix:PATH --fifo -` interposed on that socket, its
                pcap read by udsbench-pcapcount (a fast reader that counts what the pcap holds)
  udsdump-ll    the same with --lossless (back-pressure instead of drops)
  udsdump-snap  the same with --snaplen 128 (optional)
  recipe        the README's recipe: socat UNIX-LISTEN,fork -> TCP loopback -> socat UNIX-CONNECT
  socat-v       one `socat -x -v UNIX-LISTEN,fork UNIX-CONNECT` with its dump to /dev/null
and for each: bulk throughput (one connection, BENCH_BULK_MB one way in 1 MiB writes), round trips
(64 B ping-pong, mean/median), connection cost (connect + 64 B request + reply + close, one at a time).
Rounds interleave the paths (rotating their order) and the table reports medians of the rounds.
Every udsdump run's pcap is checked against what was sent: the TCP payload bytes per direction must
equal the bytes the client and the server sent, with no DROP metadata frame.
Then: udsdump's RSS idle and with BENCH_HOLD_N idle connections, and `udsdump --extcap-interfaces`
with BENCH_LISTENERS listening sockets (bench/discover's program when it is built, else our own).

Knobs (environment): BENCH_ROUNDS (5), BENCH_BULK_MB (1000), BENCH_SLOW_BULK_MB (64: socat -x -v),
BENCH_RTT_N (20000), BENCH_CONN_N (5000), BENCH_FORK_CONN_N (500: the forking socat paths),
BENCH_HOLD_N (1000), BENCH_LISTENERS (2000), BENCH_PATHS (direct,floor,udsdump,udsdump-ll,recipe,socat-v),
BENCH_TESTS (bulk,rtt,conn), BENCH_VERIFY (0; 1: the server and the pcap reader compare every bulk byte
with the sent pattern), BENCH_UDSDUMP (another udsdump executable), BENCH_UDSDUMP_ARGS (extra udsdump
options, e.g. "--buffer-size 16"), BENCH_PIPE_SIZE (0: the capture pipe as udsdump leaves it; N: the
reader sets F_SETPIPE_SZ), BENCH_CPUS (e.g. "0": pin everything to these CPUs), BENCH_DOC (a markdown
file whose generated section is replaced with this run's), BENCH_STRICT (1: exit 1 on a missed target),
BENCH_TIMEOUT (900 s for the whole run), BENCH_QUIET_WAIT (120: seconds the run may spend, at most 10
before each measurement, waiting for the rest of the machine to go quiet; rounds measured while others
kept the CPUs busy are marked *).

Cleanup: every process runs in its own process group, killed as a group at the end (socat forks a
child per connection); udsdump is stopped with SIGTERM first so it puts the socket back; the temp dir
with every socket goes last.  Readiness is always a signal, never a sleep: "ready" lines from our
programs and the pcap header from udsdump, a LISTEN entry in /proc/net/unix or /proc/net/tcp for socat.
"""
import os
import platform
import re
import resource
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)


def env_int(name, default):
    v = os.environ.get(name, "")
    return int(v) if v.strip() else default


BUILD = os.environ.get("BENCH_BUILD", os.path.join(SRC, "build-bench"))
ROUNDS = env_int("BENCH_ROUNDS", 5)
BULK = env_int("BENCH_BULK_MB", 1000) * 1000 * 1000
SLOW_BULK = env_int("BENCH_SLOW_BULK_MB", 64) * 1000 * 1000
RTT_N = env_int("BENCH_RTT_N", 20000)
CONN_N = env_int("BENCH_CONN_N", 5000)
FORK_CONN_N = env_int("BENCH_FORK_CONN_N", 500)
HOLD_N = env_int("BENCH_HOLD_N", 1000)
LISTENERS = env_int("BENCH_LISTENERS", 2000)
VERIFY = env_int("BENCH_VERIFY", 0) != 0
PIPE_SIZE = env_int("BENCH_PIPE_SIZE", 0)
STRICT = env_int("BENCH_STRICT", 0) != 0
TIMEOUT = env_int("BENCH_TIMEOUT", 900)
QUIET_WAIT = env_int("BENCH_QUIET_WAIT", 120)   # seconds, over the whole run
CPUS = os.environ.get("BENCH_CPUS", "")   # e.g. "0": everything on one CPU (inherited by every child)
UDSDUMP_ARGS = shlex.split(os.environ.get("BENCH_UDSDUMP_ARGS", ""))
ALL_PATHS = ["direct", "floor", "floor-splice", "udsdump", "udsdump-ll", "udsdump-snap", "recipe", "socat-v"]
DEFAULT_PATHS = ["direct", "floor", "udsdump", "udsdump-ll", "recipe", "socat-v"]
PATHS = [p for p in os.environ.get("BENCH_PATHS", ",".join(DEFAULT_PATHS)).split(",") if p]
TESTS = [t for t in os.environ.get("BENCH_TESTS", "bulk,rtt,conn").split(",") if t]
MSG = 64
BUSY = 0.2   # CPUs kept busy by others above which a measurement is marked

LABEL = {
    "direct": "direct",
    "floor": "minimal relay (reference)",
    "floor-splice": "minimal relay, splice (reference)",
    "udsdump": "udsdump (live capture)",
    "udsdump-ll": "udsdump --lossless",
    "udsdump-snap": "udsdump --snaplen 128",
    "recipe": "socat recipe (UNIX→TCP→UNIX)",
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
    with open("/proc/net/unix") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 8 and parts[7] == path and int(parts[3], 16) & 0x10000:
                return True
    return False


def tcp_listening(port):
    with open("/proc/net/tcp") as f:
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
        server = proc_cpu(self.env.server.pid) if self.env.server and self.env.server.poll() is None else 0
        return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime + server

    def cpus(self):
        """Average number of CPUs others kept busy since the start."""
        dt = time.monotonic() - self.t0
        return max(0.0, (self.busy() - self.busy0) - (self.ours() - self.ours0)) / dt if dt > 0 else 0.0


# ---- the paths ----

class Env:
    def __init__(self, tmp):
        self.tmp = tmp
        self.sock = os.path.join(tmp, "srv", "bench.sock")
        os.makedirs(os.path.dirname(self.sock), mode=0o700)
        self.server = None

    def start_server(self):
        args = [SERVER] + (["--verify"] if VERIFY else []) + [self.sock]
        self.server = spawn(args, stdout=subprocess.PIPE)
        if read_line(self.server, 10, "udsbench-server") != "ready":
            raise BenchError("udsbench-server did not start")

    def check_socket_back(self):
        names = sorted(os.listdir(os.path.dirname(self.sock)))
        if names != ["bench.sock"]:
            raise BenchError(f"after udsdump stopped, the socket folder holds {names}")
        if not unix_listening(self.sock):
            raise BenchError("after udsdump stopped, nobody listens on the socket")


class Udsdump:
    """One udsdump capture on env.sock with its pcap reader; a context manager."""

    def __init__(self, env, extra=()):
        self.env = env
        self.extra = list(extra)

    def __enter__(self):
        r, w = os.pipe()
        args = [PCAPCOUNT] + (["--verify"] if VERIFY else []) + (["--pipe-size", str(PIPE_SIZE)] if PIPE_SIZE else [])
        self.reader = spawn(args, stdin=r, stdout=subprocess.PIPE)
        self.errfile = open(os.path.join(self.env.tmp, "udsdump.err"), "a+")
        self.ud = spawn([UDSDUMP, "--capture", "--extcap-interface", "unix:" + self.env.sock, "--fifo", "-",
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
        self.path = self.env.sock
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
        self.env.check_socket_back()
        return kv(line)

    def __exit__(self, *exc):
        for p in (self.ud, self.reader):
            if p in PROCS:
                stop(p)
        self.errfile.close()


class Floor:
    """bench/relay-floor.c between the client and the server: what any relay costs here."""

    def __init__(self, env, splice):
        self.env, self.splice = env, splice
        self.path = os.path.join(env.tmp, "floor.sock")

    def __enter__(self):
        self.p = spawn([FLOOR] + (["--splice"] if self.splice else []) + [self.path, self.env.sock],
                       stdout=subprocess.PIPE)
        if read_line(self.p, 10, "udsbench-relay") != "ready":
            raise BenchError("udsbench-relay did not start")
        return self

    def __exit__(self, *exc):
        stop(self.p)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class Socat:
    def __init__(self, env, kind):
        self.env, self.kind = env, kind
        self.path = os.path.join(env.tmp, f"{kind}.sock")
        self.procs = []

    def __enter__(self):
        if self.kind == "recipe":
            with socket.socket() as s:   # a free loopback port
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            # As in the README (bound to loopback here, to expose nothing on a shared machine).
            self.procs.append(spawn(["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork",
                                     f"UNIX-CONNECT:{self.env.sock}"], stderr=subprocess.DEVNULL))
            wait_listening(lambda: tcp_listening(port), what="socat TCP-LISTEN")
            self.procs.append(spawn(["socat", f"UNIX-LISTEN:{self.path},mode=777,fork",
                                     f"TCP-CONNECT:127.0.0.1:{port}"], stderr=subprocess.DEVNULL))
        else:
            self.procs.append(spawn(["socat", "-x", "-v", f"UNIX-LISTEN:{self.path},fork",
                                     f"UNIX-CONNECT:{self.env.sock}"], stderr=subprocess.DEVNULL))
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
        "bulk": SLOW_BULK if slow else BULK,
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


def run_test(test, path, n):
    if test == "bulk":
        r = run_client(path, "bulk", n)
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


def measure(env, path_name, results, notes):
    notes["waited"] = notes.get("waited", 0) + wait_quiet(env, QUIET_WAIT - notes.get("waited", 0))
    load = Load(env)
    n0 = {t: len(results[path_name][t]) for t in TESTS}
    measure_path(env, path_name, results)
    others = load.cpus()
    for t in TESTS:
        for r in results[path_name][t][n0[t]:]:
            r["others"] = others


def measure_path(env, path_name, results):
    sz = sizes(path_name)
    if path_name == "direct":
        for test in TESTS:
            results[path_name][test].append(run_test(test, env.sock, sz[test]))
        return
    if path_name.startswith("udsdump"):
        extra = {"udsdump-ll": ["--lossless"], "udsdump-snap": ["--snaplen", "128"]}.get(path_name, [])
        snap = path_name == "udsdump-snap"
        for test in TESTS:
            with Udsdump(env, extra) as u:
                cpu0 = u.cpu()
                r = run_test(test, u.path, sz[test])
                pc = u.finish()
                c2s, s2c = expected_capture(test, sz[test])
                got = (int(pc["c2s_bytes"]), int(pc["s2c_bytes"]))
                lost = (c2s - got[0]) + (s2c - got[1])
                r["capture_ok"] = got == (c2s, s2c) and pc["drop_frames"] == "0" and pc["verify_errors"] == "0" \
                    and (snap or pc["truncated"] == "0")
                r["lost"] = lost
                r["dropped_bytes"] = int(pc["dropped_bytes"])
                r["cpu_s"] = u.cpu_s - cpu0
                r["hwm_kib"] = u.hwm_kib
                if got[0] > c2s or got[1] > s2c or pc["verify_errors"] != "0":
                    raise BenchError(f"{path_name} {test}: the pcap holds more or other bytes than were sent: "
                                     f"{got} for {(c2s, s2c)}, {pc['verify_errors']} verify errors")
                results[path_name][test].append(r)
        return
    infra = Floor(env, path_name == "floor-splice") if path_name.startswith("floor") else Socat(env, path_name)
    with infra as s:
        for test in TESTS:
            results[path_name][test].append(run_test(test, s.path, sz[test]))


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


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    pinned = f", every process pinned to CPU {CPUS}" if CPUS else ""
    return f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}{pinned}"


def report(results, mem, disc, elapsed, others, waited):
    out = []
    P = [p for p in ALL_PATHS if p in PATHS]

    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    def ratio(p, t):
        v, base = med(results[p][t]), med(results["direct"][t])
        return f"{v / base:.2f}×" if v and base else "-"

    out.append(f"Machine: {machine()}.  {ROUNDS} rounds, paths interleaved; medians of the rounds.")
    out.append(f"Bulk: {BULK // 1000000} MB one way in 1 MiB writes ({SLOW_BULK // 1000000} MB through socat -x -v); "
               f"round trip: {MSG} B ping-pong × {RTT_N} ({RTT_N // 10} via socat -x -v); connection: connect + "
               f"{MSG} B request + reply + close × {CONN_N} ({FORK_CONN_N} via the forking socat paths).")
    out.append("")
    out.append("| path | bulk MB/s | vs direct | round trip median µs (mean) | vs direct | connection median µs (mean) "
               "| vs direct | capture check |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---|")
    for p in P:
        rs = results[p]
        cap = "-"
        if p.startswith("udsdump"):
            runs = [r for t in TESTS for r in rs[t]]
            bad = [r for r in runs if not r["capture_ok"]]
            if not bad:
                cap = f"all {len(runs)} pcaps complete, 0 dropped"
            else:
                lost = max(r["lost"] for r in bad)
                bulk_bad = sum(1 for r in rs["bulk"] if not r["capture_ok"])
                cap = f"{len(bad)}/{len(runs)} pcaps incomplete ({bulk_bad} bulk); worst: {lost / 1e6:.1f} MB missing"
        out.append(f"| {LABEL[p]} | {num(med(rs['bulk']), '.0f')} | {ratio(p, 'bulk')} | {num(med(rs['rtt']), '.1f')} "
                   f"({num(med(rs['rtt'], 'mean'), '.1f')}) | {ratio(p, 'rtt')} | {num(med(rs['conn']), '.1f')} "
                   f"({num(med(rs['conn'], 'mean'), '.1f')}) | {ratio(p, 'conn')} | {cap} |")
    out.append("")
    out.append(f"Per round (* marks a round during which other processes kept more than {BUSY} CPU busy; "
               + " / ".join({"bulk": "bulk MB/s", "rtt": "round trip median µs",
                                          "conn": "connection median µs"}[t] for t in TESTS) + "):")
    out.append("")
    for p in P:
        rounds = "; ".join(" / ".join(f"{results[p][t][i]['value']:.{0 if t == 'bulk' else 1}f}" for t in TESTS)
                           + ("*" if results[p][TESTS[0]][i].get("others", 0) > BUSY else "")
                           for i in range(min(len(results[p][t]) for t in TESTS)))
        out.append(f"- {LABEL[p]}: {rounds}")
    for p in ("udsdump", "udsdump-ll", "udsdump-snap"):
        if p in P and results[p]["bulk"]:
            rs = results[p]["bulk"]
            cpu = med(rs, "cpu_s")
            out.append(f"- {LABEL[p]}, bulk: udsdump CPU {cpu:.2f} s per {BULK // 1000000} MB, peak RSS "
                       f"{max(r['hwm_kib'] or 0 for r in rs) / 1024:.1f} MiB; capture lost (MB) per round: "
                       + ", ".join(f"{r['lost'] / 1e6:.1f}" for r in rs))
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

    if "udsdump" in P:
        d = {t: med(results["direct"][t]) for t in TESTS}
        u = {t: med(results["udsdump"][t]) for t in TESTS}
        if "bulk" in TESTS:
            # Throughput counts only with every byte captured: dropping is cheaper than capturing, so a
            # lossy run's speed says nothing.  Complete default runs if most are, else --lossless.
            bulk_runs = results["udsdump"]["bulk"]
            complete = [r for r in bulk_runs if r["capture_ok"]]
            if 2 * len(complete) > len(bulk_runs):
                b, src = statistics.median(r["value"] for r in complete), "complete udsdump runs"
            elif "udsdump-ll" in P and results["udsdump-ll"]["bulk"]:
                b, src = med(results["udsdump-ll"]["bulk"]), "--lossless, as most default runs lost capture"
            else:
                b, src = 0.0, "no run captured everything"
            target("bulk ≥ 0.5× direct, capture complete", f"{b / d['bulk']:.2f}× ({b:.0f} MB/s, {src})",
                   b >= 0.5 * d["bulk"])
            if "recipe" in P:
                rb = med(results["recipe"]["bulk"])
                target("bulk ≥ 3× the socat recipe, capture complete", f"{b / rb:.2f}×", b >= 3 * rb)
            target("zero capture loss (bulk, fast reader)",
                   f"{len(complete)}/{len(bulk_runs)} runs complete", len(complete) == len(bulk_runs))
        if "rtt" in TESTS:
            target("round trip ≤ 1.25× direct (median)", f"{u['rtt'] / d['rtt']:.2f}×", u["rtt"] <= 1.25 * d["rtt"])
        if "conn" in TESTS:
            target("connection cost ≤ 2× direct (median)", f"{u['conn'] / d['conn']:.2f}×",
                   u["conn"] <= 2 * d["conn"])
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
    unknown = [p for p in PATHS if p not in ALL_PATHS]
    if unknown or "direct" not in PATHS:
        raise BenchError(f"BENCH_PATHS: known paths are {','.join(ALL_PATHS)}, and direct is needed")
    if any(p in PATHS for p in ("recipe", "socat-v")) and not shutil.which("socat"):
        raise BenchError("socat is not installed (apt-get install socat), or leave it out of BENCH_PATHS")
    if CPUS:
        os.sched_setaffinity(0, {int(c) for c in CPUS.split(",")})
    t_start = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="udsbench-")
    os.chmod(tmp, 0o700)
    try:
        env = Env(tmp)
        env.start_server()
        load = Load(env)
        results = {p: {"bulk": [], "rtt": [], "conn": []} for p in PATHS}
        notes = {}
        for rnd in range(ROUNDS):
            order = PATHS[rnd % len(PATHS):] + PATHS[:rnd % len(PATHS)]
            for p in order:
                print(f"bench: round {rnd + 1}/{ROUNDS}: {p}", file=sys.stderr, flush=True)
                measure(env, p, results, notes)
        print("bench: memory", file=sys.stderr, flush=True)
        mem = memory(env) if HOLD_N > 0 else None
        print("bench: discovery", file=sys.stderr, flush=True)
        disc = discovery(env) if LISTENERS > 0 else None
        others = load.cpus()
        stop(env.server)
        text, all_ok = report(results, mem, disc, time.monotonic() - t_start, others,
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
