"""Shared scaffolding for udsdump's scenario tests: real servers, real udsdump processes, real sockets.

Readiness is always a signal, never a sleep:
  - a test server reports "listening" by writing to a FIFO the test is blocked reading (--ready FIFO);
  - udsdump is interposed when the first bytes of its pcap (the file header) arrive on its stdout:
    it writes nothing before the relay socket has been renamed over PATH;
  - a path changing is awaited with inotify on its folder.
Every process a test starts is killed and every temp folder removed in cleanup, and each test checks
that the socket's folder holds exactly what it held before.
"""
import contextlib
import ctypes
import ctypes.util
import hashlib
import os
import select
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

SRCDIR = os.environ.get("UDSDUMP_SRCDIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
UDSDUMP = os.environ.get("UDSDUMP", os.path.join(SRCDIR, "build", "udsdump"))
HTTP_SERVER = os.path.join(SRCDIR, "tests", "tools", "uds_http.py")
ECHO_SERVER = os.path.join(SRCDIR, "tests", "tools", "echo_server.py")

# ---- inotify, for waiting on a path to change without polling ----
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
IN_CREATE, IN_MOVED_TO, IN_DELETE, IN_MOVED_FROM, IN_ATTRIB, IN_CLOSE_WRITE = 0x100, 0x80, 0x200, 0x40, 0x4, 0x8
PATH_EVENTS = IN_CREATE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM | IN_ATTRIB


class DirWatch:
    """inotify on a folder: wait(pred, timeout) returns when pred() is true, re-checking on each event."""

    def __init__(self, folder, mask=PATH_EVENTS):
        self.fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if _libc.inotify_add_watch(self.fd, os.fsencode(folder), mask) < 0:
            raise OSError(ctypes.get_errno(), "inotify_add_watch")

    def wait(self, pred, timeout):
        deadline = time.monotonic() + timeout
        while not pred():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                try:
                    os.read(self.fd, 65536)
                except BlockingIOError:
                    pass
        return True

    def close(self):
        os.close(self.fd)


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def ident(path):
    st = os.lstat(path)
    return (st.st_dev, st.st_ino)


def perms(path):
    st = os.lstat(path)
    return (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)


def read_exactly(f, n, timeout=10):
    """Read n bytes from a pipe file object with a deadline."""
    fd = f.fileno()
    out = b""
    deadline = time.monotonic() + timeout
    while len(out) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("waited %ss for %d bytes, got %d" % (timeout, n, len(out)))
        r, _, _ = select.select([fd], [], [], left)
        if r:
            chunk = os.read(fd, n - len(out))
            if not chunk:
                raise EOFError("EOF after %d of %d bytes" % (len(out), n))
            out += chunk
    return out


def connect(path, type_=socket.SOCK_STREAM, timeout=10):
    s = socket.socket(socket.AF_UNIX, type_)
    s.settimeout(timeout)
    s.connect(path)
    return s


def recv_all(s, bufsize=262144):
    """Everything the socket receives until the other side's EOF."""
    out = bytearray()
    while True:
        b = s.recv(bufsize)
        if not b:
            return bytes(out)
        out += b


def http_get(path, target="/", timeout=10):
    """A plain HTTP/1.1 GET over a Unix socket; returns (status, body)."""
    with connect(path, timeout=timeout) as s:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" % target.encode())
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body


class UdsTestCase(unittest.TestCase):
    """A temp folder per test, process bookkeeping, and the folder-unchanged check."""

    def setUp(self):
        signal.alarm(120)  # watchdog: a hung test fails instead of hanging CI
        self.tmp = tempfile.mkdtemp(prefix="udsdump-test-")
        os.chmod(self.tmp, 0o755)
        # udsdump's log lives beside, not in, the folder whose listing the tests compare.
        self.logdir = tempfile.mkdtemp(prefix="udsdump-log-")
        self.shared = None
        self.procs = []

    def tearDown(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.kill()
            p.wait()
            for f in (p.stdout, p.stderr, p.stdin):
                if f:
                    f.close()
        if self._failed():
            # A failed test's udsdump log goes with its report: a failure seen once (a loaded CI machine)
            # can be read, not only rerun.
            log = os.path.join(self.logdir, "udsdump.log")
            if os.path.exists(log):
                with open(log, errors="replace") as f:
                    tail = f.readlines()[-80:]
                sys.stderr.write("---- udsdump.log (last %d lines) ----\n%s---- end of udsdump.log ----\n"
                                 % (len(tail), "".join(tail)))
        shutil.rmtree(self.tmp, ignore_errors=True)
        shutil.rmtree(self.logdir, ignore_errors=True)
        if self.shared:
            shutil.rmtree(self.shared, ignore_errors=True)
        signal.alarm(0)

    def _failed(self):
        """Whether this test has failed so far (for tearDown: unittest records it before)."""
        result = getattr(getattr(self, "_outcome", None), "result", None)
        return result is not None and any(t is self for t, _ in result.failures + result.errors)

    def for_others(self, path):
        """A copy of a program or script that other users may run: the checkout may sit where only
        root can read (a clone in /root, mode 0700), and a test that runs it as another user must
        test udsdump, not the checkout's permissions."""
        if not self.shared:
            self.shared = tempfile.mkdtemp(prefix="udsdump-shared-")
            os.chmod(self.shared, 0o755)
        dst = os.path.join(self.shared, os.path.basename(path))
        if not os.path.exists(dst):
            shutil.copy(path, dst)
            os.chmod(dst, 0o755)
        return dst

    def spawn(self, argv, **kw):
        p = subprocess.Popen(argv, **kw)
        self.procs.append(p)
        return p

    def _ready_fifo(self, name):
        fifo = os.path.join(self.tmp, name + ".ready")
        os.mkfifo(fifo)
        return fifo

    def _wait_ready(self, fifo, proc, what):
        # The server writes its pid into the FIFO once it listens.  We hold a writer of our own open so
        # the FIFO never reports EOF before that: select() then wakes only for the server's bytes.
        rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        wfd = os.open(fifo, os.O_WRONLY)
        try:
            deadline = time.monotonic() + 15
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(what + " never became ready")
                r, _, _ = select.select([rfd], [], [], min(left, 0.5))
                if r and os.read(rfd, 64):
                    break
                if proc.poll() is not None:
                    raise RuntimeError("%s exited with %s before it was ready: %s" % (
                        what, proc.returncode, proc.stderr.read().decode(errors="replace") if proc.stderr else ""))
        finally:
            os.close(wfd)
            os.close(rfd)
        os.unlink(fifo)

    def start_http(self, path, mode="0660", group=None):
        fifo = self._ready_fifo(os.path.basename(path))
        argv = [sys.executable, HTTP_SERVER, path, "--mode", mode, "--ready", fifo]
        if group:
            argv += ["--group", group]
        p = self.spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_ready(fifo, p, "the HTTP server")
        return p

    def start_echo(self, path, kind="stream", mode="0660", extra=()):
        fifo = self._ready_fifo(os.path.basename(path))
        argv = [sys.executable, ECHO_SERVER, path, "--type", kind, "--mode", mode, "--ready", fifo, *extra]
        p = self.spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_ready(fifo, p, "the echo server")
        return p

    def start_udsdump(self, path, *args, iface=None, stdout=subprocess.PIPE, drain=True, prefix=()):
        """Starts a capture on PATH with the pcap on a pipe; returns once the relay is interposed
        (the pcap file header arrived).  The caller owns p.stdout's remaining bytes.  prefix: a
        command udsdump runs under (e.g. unshare)."""
        argv = [*prefix, UDSDUMP, "--capture", "--extcap-interface", iface or ("unix:" + path), "--fifo", "-",
                "--log-level", "debug", "--log-file", os.path.join(self.logdir, "udsdump.log"), *args]
        p = self.spawn(argv, stdout=stdout, stderr=subprocess.PIPE)
        if stdout is subprocess.PIPE:
            try:
                p.header = read_exactly(p.stdout, 24, timeout=15)
            except (EOFError, TimeoutError) as e:
                p.kill()
                _, err = p.communicate()
                raise AssertionError("udsdump did not start: %s; stderr: %s" % (e, err.decode(errors="replace")))
            if not drain:
                return p
            # Wireshark reads the capture as it comes; so do we, or a full pipe would make udsdump drop.
            p.chunks = []
            p.reader = threading.Thread(target=self._drain, args=(p,), daemon=True)
            p.reader.start()
        return p

    @staticmethod
    def _drain(p):
        while True:
            b = p.stdout.read1(1 << 20) if hasattr(p.stdout, "read1") else p.stdout.read(65536)
            if not b:
                return
            p.chunks.append(b)

    def stop_udsdump(self, p, sig=signal.SIGTERM, pcap_path=None, timeout=30):
        """Stops a capture; returns its whole pcap (header included) and its stderr."""
        if sig is not None:
            p.send_signal(sig)
        p.wait(timeout=timeout)
        err = p.stderr.read()
        data = getattr(p, "header", b"")
        if hasattr(p, "reader"):
            p.reader.join(timeout=timeout)
            data += b"".join(p.chunks)
        if pcap_path:
            with open(pcap_path, "wb") as f:
                f.write(data)
        return data, err.decode(errors="replace")

    def listing(self, folder=None):
        return sorted(os.listdir(folder or self.tmp))

    def log(self):
        try:
            with open(os.path.join(self.logdir, "udsdump.log"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""


def tshark(*args, home=None, check=True):
    env = dict(os.environ)
    if home:
        env["HOME"] = home
    r = subprocess.run(["tshark", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError("tshark %s failed: %s" % (" ".join(args), r.stderr.decode(errors="replace")))
    return r.stdout.decode(errors="replace")


def main():
    signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(TimeoutError("test watchdog expired")))
    unittest.main(verbosity=2)
