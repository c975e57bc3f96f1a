"""Scaffolding shared by the reliability scenarios (faults, load, bad input, security, tooling).

Built on tests/lib/udstest.py: real servers, the real udsdump, real sockets.  What this adds:
  - a mixed-size workload whose every byte is checked (hashes and patterns), that tells a transfer
    that completed byte-exact from one that ended early (EOF or reset: allowed under faults) and from
    one that delivered a wrong byte (never allowed);
  - the processes a test's udsdump left (the guardian and the drain process are forks of it: same
    executable, same command line), and waiting for them to end through pidfds, not sleeps;
  - descriptor and memory readings of a live udsdump from /proc.
"""
import hashlib
import os
import random
import select
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
from udstest import UDSDUMP, UdsTestCase, connect, fd_count, ident, main, rss_kib  # noqa: E402,F401
from echo_server import pattern  # noqa: E402

FORK_SERVER = os.path.join(HERE, "fork_server.py")
REPLY = 65536                 # what the 'stream' echo server sends after the digest
_REPLY_PATTERN = pattern(REPLY)


def take_helper_args(names):
    """Meson passes built helpers as --NAME=PATH before the unittest arguments; returns a dict."""
    found = {}
    for n in names:
        for a in list(sys.argv[1:]):
            if a.startswith("--%s=" % n):
                found[n] = a.split("=", 1)[1]
                sys.argv.remove(a)
    return found


# Built helper programs, passed by meson as --NAME=PATH ahead of the test name.
HELPERS = take_helper_args(["perm-watch", "symlink-racer"])


def udsdump_procs(marker):
    """Pids of running processes of udsdump whose command line holds marker (the test's temp folder):
    the capture itself, its guardian, its drain process - also when run under valgrind, whose
    processes' executable is valgrind's but whose command line names udsdump."""
    exe = os.path.realpath(UDSDUMP)
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read()
            if marker.encode() not in cmd:
                continue
            if os.readlink("/proc/%s/exe" % d) == exe or UDSDUMP.encode() + b"\0" in cmd:
                out.append(int(d))
        except OSError:
            continue
    return out


def wait_pids_gone(pids, timeout):
    """Waits (pidfd readiness) until every pid has exited; returns those still alive at the deadline."""
    fds = {}
    for pid in pids:
        try:
            fds[pid] = os.pidfd_open(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    try:
        while fds:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            r, _, _ = select.select(list(fds.values()), [], [], left)
            for pid, fd in list(fds.items()):
                if fd in r:
                    os.close(fd)
                    del fds[pid]
    finally:
        alive = list(fds)
        for fd in fds.values():
            os.close(fd)
    # a zombie is gone for our purpose (it holds no socket); readiness means it exited
    return alive


class Outcome:
    OK, EARLY_END, CORRUPT, HUNG = "ok", "early-end", "corrupt", "hung"


def _connect(path, timeout):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect(path)
    except BaseException:
        s.close()
        raise
    return s


def stream_transfer(path, size, seed, timeout=30):
    """One transfer against the 'stream' echo server: send size random bytes, half-close, read
    "<sha256>\\n" + REPLY pattern bytes.  Returns (outcome, detail).  Whatever arrives must be a prefix
    of what the server sends: an early end is an outcome, a wrong byte is corruption."""
    data = random.Random(repr(seed)).randbytes(size)
    want = hashlib.sha256(data).hexdigest().encode() + b"\n" + _REPLY_PATTERN
    got = bytearray()
    try:
        with _connect(path, timeout) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            while True:
                b = s.recv(262144)
                if not b:
                    break
                got += b
                if len(got) > len(want):
                    break
    except socket.timeout:
        return Outcome.HUNG, "no progress for %ss after %d bytes" % (timeout, len(got))
    except OSError as e:
        if bytes(got) != want[: len(got)]:
            return Outcome.CORRUPT, "wrong bytes before %r" % e
        return Outcome.EARLY_END, repr(e)
    if bytes(got) == want:
        return Outcome.OK, ""
    if len(got) < len(want) and bytes(got) == want[: len(got)]:
        return Outcome.EARLY_END, "EOF after %d of %d bytes" % (len(got), len(want))
    return Outcome.CORRUPT, "%d bytes sent; reply of %d bytes differs from the expected %d" % (size, len(got), len(want))


def http_big(path, n, timeout=30):
    """GET /big?n=N from uds_http.py: the body must be N pattern bytes."""
    want = (bytes(range(256)) * (n // 256 + 1))[:n]
    got = bytearray()
    try:
        with _connect(path, timeout) as s:
            s.sendall(b"GET /big?n=%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % n)
            while True:
                b = s.recv(262144)
                if not b:
                    break
                got += b
    except socket.timeout:
        return Outcome.HUNG, "no progress for %ss" % timeout
    except OSError as e:
        return Outcome.EARLY_END, repr(e)
    head, sep, body = bytes(got).partition(b"\r\n\r\n")
    if not sep:
        return Outcome.EARLY_END, "no complete header (%d bytes)" % len(got)
    if body == want and head.startswith(b"HTTP/1.1 200"):
        return Outcome.OK, ""
    if len(body) < n and body == want[: len(body)]:
        return Outcome.EARLY_END, "body cut at %d of %d" % (len(body), n)
    return Outcome.CORRUPT, "body of %d bytes differs from %d pattern bytes" % (len(body), n)


def mixed_size(rnd):
    """Mostly small requests, some large ones: the sizes a docker.sock or a database socket sees."""
    r = rnd.random()
    if r < 0.6:
        return rnd.randint(0, 4096)
    if r < 0.9:
        return rnd.randint(4096, 256 * 1024)
    return rnd.randint(256 * 1024, 2 * 1024 * 1024)


class Load:
    """N client threads, each doing one stream transfer (or looping until stop is set)."""

    def __init__(self, path, n, seed=0, loop=False, timeout=30):
        self.path, self.n, self.loop, self.timeout = path, n, loop, timeout
        self.rnd = random.Random(seed)
        self.stop = threading.Event()
        self.results = []
        self.lock = threading.Condition()
        self.threads = [threading.Thread(target=self._run, args=(i, self.rnd.randrange(1 << 30)), daemon=True)
                        for i in range(n)]

    def _run(self, i, seed):
        rnd = random.Random(seed)
        k = 0
        while True:
            size = mixed_size(rnd)
            try:
                res = stream_transfer(self.path, size, (seed, k), timeout=self.timeout)
            except Exception as e:  # noqa: BLE001 - a broken test client must show, not vanish
                res = (Outcome.CORRUPT, "client raised %r" % e)
            with self.lock:
                self.results.append((i, k, size) + res)
                self.lock.notify_all()
            k += 1
            if not self.loop or self.stop.is_set():
                return

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def join(self, timeout):
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return [t for t in self.threads if t.is_alive()]

    def wait_count(self, outcome, n, timeout):
        """Blocks until n transfers had this outcome (each result is signalled); False at the deadline."""
        with self.lock:
            return self.lock.wait_for(lambda: self.count(outcome) >= n, timeout)

    def refused(self):
        return sum(1 for r in self.results if r[3] == Outcome.EARLY_END and "ConnectionRefused" in r[4])

    def count(self, outcome):
        return sum(1 for r in self.results if r[3] == outcome)

    def bad(self):
        return [r for r in self.results if r[3] in (Outcome.CORRUPT, Outcome.HUNG)]


class RelTestCase(UdsTestCase):
    """UdsTestCase plus: a longer watchdog where asked, and a check that no udsdump process of this
    test (capture, guardian, drain) outlives it."""

    WATCHDOG = 120

    def setUp(self):
        super().setUp()
        import signal
        signal.alarm(self.WATCHDOG)

    def tearDown(self):
        for p in self.procs:
            if getattr(p, "own_group", False):
                try:
                    os.killpg(p.pid, 9)   # the server and every per-connection child
                except ProcessLookupError:
                    pass
        left = udsdump_procs(self.tmp)
        for pid in left:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        super().tearDown()

    def listing(self, folder=None):
        """The folder's names, less udsdump's own --log-file (the tests ask for it)."""
        return sorted(n for n in os.listdir(folder or self.tmp) if n != "udsdump.log")

    def assert_no_udsdump_left(self, timeout=5):
        alive = wait_pids_gone(udsdump_procs(self.tmp), timeout)
        self.assertEqual(alive, [], "udsdump processes still running: %s" % [
            (p, _cmd(p)) for p in alive])

    def start_fork_server(self, path, mode="0660"):
        fifo = self._ready_fifo(os.path.basename(path))
        p = self.spawn([sys.executable, FORK_SERVER, path, "--mode", mode, "--ready", fifo],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        p.own_group = True
        self._wait_ready(fifo, p, "the forking server")
        return p

    def report(self, what, **numbers):
        """Measurements go to stdout (meson's test log) as one greppable line."""
        print("MEASURE %s %s" % (what, " ".join("%s=%s" % kv for kv in numbers.items())), flush=True)


def _cmd(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")[:200]
    except OSError:
        return "?"
