#!/usr/bin/env python3
"""udsdump where its users are: tshark picking it up as an extcap, Wireshark's sshdump running it on
the far side of an SSH channel, `meson install` putting it where Wireshark looks, and the terminal.

Everything here is the real thing: tshark and dumpcap, curl, OpenSSH's sshd, Wireshark's sshdump, meson.
Nothing touches the machine: tshark runs with a throw-away HOME (the built udsdump installed there as a
personal extcap), sshd listens on 127.0.0.1 with throw-away keys, `meson install` goes into a DESTDIR.

Readiness is a signal, never a sleep:
  - interposed = the socket's inode changed (inotify on its folder);
  - "the capture has it all" = tshark printed (or the pcap stream carried) the N-th HTTP response;
  - restored = the inode is the original one again (inotify); processes gone = their pidfd is readable.
Every scenario ends with the promises checked: the socket is the original inode again, the folder holds
exactly what it held before, and no udsdump process (relay or guardian) is left running.
"""
import contextlib
import os
import re
import select
import shlex
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from udstest import DirWatch, SRCDIR, UDSDUMP, UdsTestCase, ident, main  # noqa: E402
import wireshark as W  # noqa: E402

SSHDUMP = os.environ.get("SSHDUMP", "/usr/lib/x86_64-linux-gnu/wireshark/extcap/sshdump")
SSHD = "/usr/sbin/sshd"  # sshd re-executes itself: it must be started by absolute path
LUA = os.path.join(SRCDIR, "dissector", "udsdump.lua")
REQUESTS = 5

# One line per frame, as tshark decodes it live (-l): the fields the checks need.
FIELDS = ["frame.number", "tcp.stream", "tcp.len", "tcp.flags.syn", "http.request.method", "http.request.uri",
          "http.response.code", "tcp.analysis.flags"]


# ---- processes, by the executable they run ----

def pids_running(exe):
    """Processes whose executable is exe (the relay and its guardian: the guardian is a fork)."""
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.readlink("/proc/%s/exe" % d) == exe:
                    found.append(int(d))
            except OSError:
                pass
    return found


def wait_gone(exe, timeout):
    """Waits (pidfd) until no process runs exe; returns the pids still running at the deadline."""
    return wait_pids_gone(lambda: pids_running(exe), timeout)


def wait_pids_gone(find, timeout):
    """Waits (pidfd) until find() returns no pid; returns the pids still there at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        pids = find()
        if not pids:
            return []
        fds = []
        for pid in pids:
            try:
                fds.append(os.pidfd_open(pid))
            except ProcessLookupError:
                pass
        try:
            left = deadline - time.monotonic()
            if left <= 0:
                return pids
            if fds:
                select.select(fds, [], [], left)
        finally:
            for fd in fds:
                os.close(fd)


class LineReader:
    """Collects a process's stdout lines in a thread; wait(pred) blocks until pred(lines) holds.
    It reads a duplicate of the pipe, so tearDown can close the process's own file object at any time."""

    def __init__(self, f):
        self.lines, self.cond, self.eof = [], threading.Condition(), False
        self.fd = os.dup(f.fileno())
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        rest = b""
        try:
            while True:
                b = os.read(self.fd, 65536)
                if not b:
                    break
                *full, rest = (rest + b).split(b"\n")
                with self.cond:
                    self.lines += [l.decode(errors="replace") for l in full]
                    self.cond.notify_all()
        finally:
            os.close(self.fd)
            with self.cond:
                if rest:
                    self.lines.append(rest.decode(errors="replace"))
                self.eof = True
                self.cond.notify_all()

    def wait(self, pred, timeout):
        with self.cond:
            return self.cond.wait_for(lambda: pred(self.lines) or self.eof, timeout) and pred(self.lines)

    def finish(self, timeout=30):
        self.thread.join(timeout)
        return list(self.lines)


def parse_fields(lines):
    rows = []
    for line in lines:
        cols = line.split("\t")
        if len(cols) == len(FIELDS) and cols[0].isdigit():
            rows.append(dict(zip(FIELDS, cols)))
    return rows


def responses(lines):
    return sum(1 for r in parse_fields(lines) if r["http.response.code"])


class PcapStream:
    """An incremental reader of a pcap byte stream: counts the records whose payload holds marker."""

    def __init__(self, marker):
        self.buf, self.marker, self.header, self.records, self.hits = b"", marker, None, 0, 0
        self.off = 24

    def feed(self, data):
        self.buf += data
        if self.header is None and len(self.buf) >= 24:
            self.header = self.buf[:24]
            magic = struct.unpack("<I", self.header[:4])[0]
            self.endian = "<" if magic in (0xa1b2c3d4, 0xa1b23c4d) else ">"
        while self.header is not None and len(self.buf) >= self.off + 16:
            incl = struct.unpack(self.endian + "IIII", self.buf[self.off:self.off + 16])[2]
            if len(self.buf) < self.off + 16 + incl:
                break
            if self.marker in self.buf[self.off + 16:self.off + 16 + incl]:
                self.hits += 1
            self.records += 1
            self.off += 16 + incl


class E2eCase(UdsTestCase):
    """A test HTTP server on srv/app.sock in its own folder, and a throw-away HOME with udsdump (and
    the dissector) installed the way scripts/install-personal does."""

    def setUp(self):
        super().setUp()
        self.start_server()
        self.orig, self.before = ident(self.path), sorted(os.listdir(self.srv))
        self.watch = DirWatch(self.srv)
        self.home = os.path.join(self.tmp, "home")
        os.mkdir(self.home)
        folders = W.install_personal(self.home, extcap=UDSDUMP)
        self.extcap = os.path.join(folders["personal_extcap"], "udsdump")
        self.exes = [self.extcap]  # this test's copies of udsdump: their processes are this test's
        # Labels are checked where this tshark loads this source's dissector: the personal copy, or
        # for root on 4.2+ (which loads no personal plugin) the global one if it is this source's.
        self.lua = not W.reads_as_nobody() or W.global_lua_is_source()
        self.ttmp = os.path.join(self.tmp, "t")  # tshark's and dumpcap's temp files (FIFO, capture file)
        os.mkdir(self.ttmp)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("WIRESHARK_", "XDG_"))}
        self.env.update(HOME=self.home, TMPDIR=self.ttmp, LC_ALL="C.UTF-8")

    def start_server(self):
        """Sets self.srv (the socket's folder) and self.path, with a server listening there."""
        self.srv = os.path.join(self.tmp, "srv")
        os.mkdir(self.srv, 0o755)
        self.path = os.path.join(self.srv, "app.sock")
        self.start_http(self.path)

    def tearDown(self):
        # Stop politely first: tshark (or sshdump, or udsdump) killed outright would orphan the extcap
        # it started, and the socket would wait for the guardian.  Then whatever still runs one of this
        # test's udsdump copies (a relay, a guardian, a drain) is ended by its pid.
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        for exe in self.exes:
            for pid in pids_running(exe):
                os.kill(pid, signal.SIGTERM)
            for pid in wait_gone(exe, 5):
                os.kill(pid, signal.SIGKILL)
        self.watch.close()
        super().tearDown()

    # ---- the promises ----

    def interposed(self):
        try:
            return ident(self.path) != self.orig
        except FileNotFoundError:
            return False  # PATH missing: not interposed; assert_restored then fails on it

    def wait_interposed(self, proc, what, timeout=60):
        self.watch.wait(lambda: proc.poll() is not None or self.interposed(), timeout)
        if not self.interposed():
            err = proc.communicate(timeout=30)[1].decode(errors="replace") if proc.poll() is not None else "(still running)"
            self.fail("%s never interposed on %s; stderr: %s" % (what, self.path, err))

    def assert_restored(self, exe, timeout=10, since=None):
        """The socket is the original inode again, the folder as before, no udsdump running exe.
        Returns how long after `since` (default: now) the socket was back."""
        t0 = since if since is not None else time.monotonic()
        # The guardian exchanges the backup back over PATH, then unlinks what the exchange left under the
        # backup's name: the folder is as before only after the second step.
        self.watch.wait(lambda: os.path.exists(self.path) and not self.interposed()
                        and sorted(os.listdir(self.srv)) == self.before, timeout)
        took = time.monotonic() - t0
        self.assertEqual(ident(self.path), self.orig, "PATH must be the original socket again")
        self.assertEqual(sorted(os.listdir(self.srv)), self.before, "nothing of udsdump's may stay in the folder")
        self.assertEqual(wait_gone(exe, timeout), [], "udsdump processes left running")
        return took

    @contextlib.contextmanager
    def log_on_failure(self, path):
        """A failing check carries the udsdump log with it."""
        try:
            yield
        except AssertionError as e:
            try:
                with open(path, errors="replace") as f:
                    log = f.read()[-4000:]
            except OSError:
                log = "(none)"
            raise AssertionError("%s\n--- %s:\n%s" % (e, path, log)) from None

    def drain_events(self):
        while True:
            try:
                os.read(self.watch.fd, 65536)
            except BlockingIOError:
                return

    def curl(self, target="/"):
        r = subprocess.run(["curl", "-sS", "--max-time", "10", "--unix-socket", self.path, "http://localhost" + target],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr.decode(errors="replace"))
        return r.stdout

    def curl_n(self, n):
        for i in range(n):
            self.assertEqual(self.curl("/?n=%d" % i), b"hello\n")

    def tshark_read(self, *args):
        r = subprocess.run(["tshark", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env,
                           timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr.decode(errors="replace"))
        return r.stdout.decode(errors="replace").splitlines()

    def assert_http(self, rows, n):
        """n requests and n answers, one TCP stream each, and nothing Wireshark's TCP analysis flags."""
        reqs = [r for r in rows if r["http.request.method"]]
        resps = [r for r in rows if r["http.response.code"]]
        self.assertEqual(len(reqs), n, rows)
        self.assertEqual(len(resps), n, rows)
        self.assertEqual(sorted(r["http.request.uri"] for r in reqs), sorted("/?n=%d" % i for i in range(n)))
        self.assertTrue(all(r["http.response.code"] == "200" for r in resps), resps)
        self.assertEqual(len({r["tcp.stream"] for r in reqs}), n, "one TCP stream per connection")
        self.assertEqual(sorted(r["tcp.stream"] for r in reqs), sorted(r["tcp.stream"] for r in resps))
        flagged = [r for r in rows if r["tcp.analysis.flags"]]
        self.assertEqual(flagged, [], "Wireshark's TCP analysis flags frames of clean traffic")

    def start_tshark(self, *args):
        p = self.spawn(["tshark", "-i", "unix:" + self.path, "-l", *args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=self.env)
        self.wait_interposed(p, "tshark -i unix:PATH")
        p.lines = LineReader(p.stdout)
        return p

    def stop_tshark(self, p):
        p.send_signal(signal.SIGINT)  # as Ctrl+C: dumpcap stops, then the extcap gets SIGTERM
        p.wait(timeout=60)
        err = p.stderr.read().decode(errors="replace")
        return p.lines.finish(), err

    def http_capture(self, *args):
        """tshark -i unix:PATH ARGS while curl makes REQUESTS requests: all decoded live, stopped as by
        Ctrl+C, PATH put back exactly."""
        p = self.start_tshark(*args, *self.fields_args())
        self.curl_n(REQUESTS)
        self.assertTrue(p.lines.wait(lambda ls: responses(ls) >= REQUESTS, 30), p.lines.lines)
        lines, err = self.stop_tshark(p)
        self.assertNotIn("Error by extcap", err)
        self.assert_http(parse_fields(lines), REQUESTS)
        self.assert_restored(self.extcap)

    def capture_http_with_tshark(self, out):
        """tshark -i unix:PATH -w out while curl makes REQUESTS requests: all decoded live, PATH put
        back exactly, and (with the dissector) every request labelled as curl's on PATH."""
        self.http_capture("-w", out, "-P")
        if self.lua:
            named = self.tshark_read("-r", out, "-Y", 'http.request && unix.comm == "curl" && unix.path == "%s"'
                                     % self.path)
            self.assertEqual(len(named), REQUESTS, "every request labelled with curl and the socket's name")

    def fields_args(self):
        args = ["-T", "fields", "-E", "separator=/t", "-E", "occurrence=f"]
        for f in FIELDS:
            args += ["-e", f]
        return args


class TsharkTest(E2eCase):
    def test_live_http(self):
        """tshark -i unix:PATH decodes curl's requests live; Ctrl+C puts everything back."""
        p = self.start_tshark(*self.fields_args())
        self.curl_n(REQUESTS)
        self.assertTrue(p.lines.wait(lambda ls: responses(ls) >= REQUESTS, 30),
                        "tshark did not show %d responses: %s" % (REQUESTS, p.lines.lines))
        lines, err = self.stop_tshark(p)
        self.assertNotIn("Error by extcap", err)
        self.assert_http(parse_fields(lines), REQUESTS)
        self.assert_restored(self.extcap)

    def test_write_pcapng_then_read(self):
        """tshark -i unix:PATH -w file.pcapng, then tshark -r: the file holds the whole conversation."""
        out = os.path.join(self.tmp, "capture.pcapng")
        self.capture_http_with_tshark(out)
        self.assert_http(parse_fields(self.tshark_read("-r", out, *self.fields_args())), REQUESTS)
        self.assertEqual(self.tshark_read("-r", out, "-Y", "tcp.analysis.flags"), [])
        if self.lua:
            # The dissector names the client: every request came from curl.
            named = self.tshark_read("-r", out, "-Y", 'http.request && unix.comm == "curl"')
            self.assertEqual(len(named), REQUESTS, "the Lua dissector should name curl as the client")

    def test_capture_filter(self):
        """tshark -f reaches udsdump as --extcap-capture-filter and is applied to the synthetic frames."""
        # app.sock is no well-known socket: its synthetic server port is the generic one, not 80.  The
        # dialog's Protocol option, given as tshark users do (-o extcap.<interface>.<option>), makes it 80.
        pref = "extcap.%s.protocol:http" % re.sub(r"[^0-9a-z]", "_", ("unix:" + self.path).lower())
        self.http_capture("-o", pref, "-f", "tcp port 80")

        # A filter that keeps only the handshakes: SYN and SYN-ACK per connection, no payload at all.
        p = self.start_tshark("-f", "tcp[tcpflags] & tcp-syn != 0", *self.fields_args())
        self.curl_n(REQUESTS)
        syns = lambda ls: sum(1 for r in parse_fields(ls) if r["tcp.flags.syn"] in ("1", "True"))  # noqa: E731
        self.assertTrue(p.lines.wait(lambda ls: syns(ls) >= 2 * REQUESTS, 30), p.lines.lines)
        lines, err = self.stop_tshark(p)
        rows = [r for r in parse_fields(lines) if r["tcp.stream"]]
        self.assertEqual(len(rows), 2 * REQUESTS, rows)
        self.assertTrue(all(r["tcp.flags.syn"] in ("1", "True") and r["tcp.len"] == "0" for r in rows), rows)
        self.assert_restored(self.extcap)

    def test_invalid_capture_filter_fails_start(self):
        """A capture filter libpcap rejects: tshark exits non-zero at once with the message, and the
        socket's folder sees no change at all."""
        self.drain_events()
        t0 = time.monotonic()
        p = self.spawn(["tshark", "-i", "unix:" + self.path, "-f", "tcp port"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=self.env)
        try:
            _, err = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.fail("tshark still waits for the capture to start 30s after udsdump refused the filter")
        took = time.monotonic() - t0
        err = err.decode(errors="replace")
        self.assertNotEqual(p.returncode, 0, err)
        self.assertLess(took, 20, "tshark should fail promptly, not wait for a header")
        self.assertIn("invalid capture filter", err, "the user is told the filter is the problem")
        self.assertEqual(ident(self.path), self.orig)
        self.assertEqual(sorted(os.listdir(self.srv)), self.before)
        with self.assertRaises(BlockingIOError, msg="the socket's folder must not have changed at all"):
            os.read(self.watch.fd, 65536)
        self.assertEqual(wait_gone(self.extcap, 10), [])


class SshdumpTest(E2eCase):
    """Wireshark's SSH remote capture: sshdump -> sshd on 127.0.0.1 -> udsdump --fifo - on the 'remote'."""

    def start_sshd(self):
        d = os.path.join(self.tmp, "ssh")
        os.mkdir(d, 0o700)
        for name in ("hostkey", "userkey"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "udsdump-e2e", "-f",
                            os.path.join(d, name)], check=True, timeout=30)
        shutil.copy(os.path.join(d, "userkey.pub"), os.path.join(d, "authorized_keys"))
        self.sshkey = os.path.join(d, "userkey")
        for attempt in range(5):
            with socket.socket() as s:  # a free port; sshd may still lose it to a race: then retry
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            cfg = os.path.join(d, "sshd_config")
            with open(cfg, "w") as f:
                f.write("\n".join([
                    "Port %d" % port, "ListenAddress 127.0.0.1", "HostKey " + os.path.join(d, "hostkey"),
                    "PidFile " + os.path.join(d, "sshd.pid"), "UsePAM no",
                    "AuthorizedKeysFile " + os.path.join(d, "authorized_keys"), "StrictModes no",
                    "PermitRootLogin prohibit-password", "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no", "PrintMotd no", "LogLevel VERBOSE", ""]))
            argv = [SSHD, "-D", "-e", "-f", cfg]
            if not os.path.isdir("/run/sshd"):
                # sshd as root insists on its privilege separation folder, which the openssh service
                # creates at boot.  Give it one in a private mount namespace rather than on the machine.
                argv = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                        'mount -t tmpfs -o mode=0755 tmpfs /run && mkdir -m 0755 /run/sshd && exec "$@"', "sh", *argv]
            p = self.spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            log = self.read_until(p, re.compile(rb"Server listening on 127\.0\.0\.1 port %d" % port), 30)
            if log is not None:
                self.sshd_port = port
                return p
            p.wait(timeout=10)
            err = p.stderr.read().decode(errors="replace")
            if argv[0] == "unshare" and "unshare failed" in err:
                self.skipTest("sshd needs /run/sshd and this machine allows no private mount namespace: "
                              "start the ssh service once (it creates /run/sshd) to run this test")
            if "Address already in use" not in err:
                self.fail("sshd did not start: " + err)
        self.fail("sshd found no free port")

    @staticmethod
    def read_until(p, pattern, timeout):
        """Reads p's stderr until pattern matches; None if p exits first."""
        buf, deadline = b"", time.monotonic() + timeout
        fd = p.stderr.fileno()
        while not pattern.search(buf):
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 4096)
                if not chunk:
                    return None
                buf += chunk
        return buf

    def remote_command(self):
        """sshd up, and the command Wireshark's dialog would be given (with a log for diagnosis)."""
        if os.geteuid() != 0:
            self.skipTest("sshd with its own config and a root login needs root")
        for tool in (SSHDUMP, SSHD):
            self.assertTrue(os.access(tool, os.X_OK), "%s is needed (apt-get install tshark openssh-server)" % tool)
        self.start_sshd()
        # The "remote" udsdump: a copy of its own, so its processes are told apart from any other test's.
        remote = os.path.join(self.tmp, "remote-udsdump")
        shutil.copy(UDSDUMP, remote)
        os.chmod(remote, 0o755)
        self.exes.append(remote)
        self.remote_log = os.path.join(self.tmp, "remote-udsdump.log")
        command = "%s --capture --extcap-interface %s --fifo - --log-level debug --log-file %s" % (
            shlex.quote(remote), shlex.quote("unix:" + self.path), shlex.quote(self.remote_log))
        return command, remote

    def test_remote_capture(self):
        """sshdump run as Wireshark runs it; SIGTERM to sshdump closes the channel: the remote udsdump,
        idle by then, notices its stdout's reader is gone and puts the socket back."""
        command, remote = self.remote_command()
        with self.log_on_failure(self.remote_log):
            self._remote_capture(command, remote)

    def test_tshark_with_dialog_settings(self):
        """tshark -i sshdump with the SSH remote capture dialog's settings as preferences (what the
        dialog saves): "Remote capture command selection" = Other, and the udsdump command."""
        command, remote = self.remote_command()
        prefs = {"remotehost": "127.0.0.1", "remoteport": str(self.sshd_port), "remoteusername": "root",
                 "sshkey": self.sshkey, "remotecapturecommandselect": "other", "remotecapturecommand": command}
        args = ["tshark", "-i", "sshdump", "-l"]
        for k, v in prefs.items():
            args += ["-o", "extcap.sshdump.%s:%s" % (k, v)]
        with self.log_on_failure(self.remote_log):
            p = self.spawn(args + self.fields_args(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env)
            self.wait_interposed(p, "tshark -i sshdump")
            lines = LineReader(p.stdout)
            self.curl_n(REQUESTS)
            self.assertTrue(lines.wait(lambda ls: responses(ls) >= REQUESTS, 30), lines.lines)
            t_stop = time.monotonic()
            p.send_signal(signal.SIGINT)
            p.wait(timeout=60)
            took = self.assert_restored(remote, timeout=10, since=t_stop)
            self.assertLess(took, 5, "the remote udsdump took %.1fs to notice the channel closing" % took)
            print("socket restored %.3fs after the stop signal" % took, file=sys.stderr)
            self.assert_http(parse_fields(lines.finish()), REQUESTS)

    def _remote_capture(self, command, remote):
        fifo = os.path.join(self.tmp, "sshdump.fifo")
        os.mkfifo(fifo)
        # Linux: a FIFO opened O_NONBLOCK for reading reports EOF only after a writer came and went.
        rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            sshdump = self.spawn([
                SSHDUMP, "--extcap-interface", "sshdump", "--capture", "--fifo", fifo,
                "--remote-host", "127.0.0.1", "--remote-port", str(self.sshd_port), "--remote-username", "root",
                "--sshkey", self.sshkey, "--remote-capture-command-select", "other",
                "--remote-capture-command", command], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=self.env)
            stream = PcapStream(b"HTTP/1.1 200 ")
            chunks = []

            def pump(until, timeout):
                deadline = time.monotonic() + timeout
                while not until():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    r, _, _ = select.select([rfd], [], [], left)
                    if r:
                        try:
                            b = os.read(rfd, 1 << 16)
                        except BlockingIOError:
                            continue
                        if not b:
                            return until()
                        chunks.append(b)
                        stream.feed(b)
                return True

            # Ready: the pcap file header came through the channel (udsdump writes it once interposed).
            self.assertTrue(pump(lambda: stream.header is not None, 60),
                            "no pcap header through sshdump; sshdump: %s" % (
                                sshdump.communicate(timeout=30)[1].decode(errors="replace")
                                if sshdump.poll() is not None else "(running)"))
            self.assertTrue(self.interposed(), "the remote udsdump wrote its header before interposing")
            self.curl_n(REQUESTS)
            self.assertTrue(pump(lambda: stream.hits >= REQUESTS, 30), "%d responses" % stream.hits)
            # Stop as Wireshark does: SIGTERM to sshdump.  The channel closes; the remote udsdump, idle,
            # must notice its stdout's reader is gone and put the socket back.
            t_stop = time.monotonic()
            sshdump.send_signal(signal.SIGTERM)
            sshdump.wait(timeout=30)
            took = self.assert_restored(remote, timeout=10, since=t_stop)
            self.assertLess(took, 5, "the remote udsdump took %.1fs to notice the channel closing" % took)
            print("socket restored %.3fs after the stop signal" % took, file=sys.stderr)
            pump(lambda: False, 5)  # the rest of the stream, up to EOF
        finally:
            os.close(rfd)
        pcap = os.path.join(self.tmp, "remote.pcap")
        with open(pcap, "wb") as f:
            f.write(b"".join(chunks))
        self.assert_http(parse_fields(self.tshark_read("-r", pcap, *self.fields_args())), REQUESTS)


class WiresharkUsersTest(E2eCase):
    """Wireshark as its users run it, whichever version is installed: root captures and reads the file
    with the dissector from wherever root's Wireshark loads it (the personal folder on 4.0, only the
    global one on 4.2+), an ordinary user reads root's capture, and an ordinary user captures a socket
    of their own with udsdump installed by scripts/install-personal."""

    def label_rows(self, argv, env):
        """(Source, Destination, unix.pid) of the HTTP requests by curl in a capture file."""
        r = subprocess.run(argv + ["-Y", 'http.request && unix.comm == "curl"', "-T", "fields",
                                   "-e", W.col("Source"), "-e", W.col("Destination"), "-e", "unix.pid"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr.decode(errors="replace"))
        return [tuple(line.split("\t")) for line in r.stdout.decode(errors="replace").splitlines() if line]

    def assert_labelled(self, rows, path):
        self.assertEqual(len(rows), REQUESTS, rows)
        for src, dst, pid in rows:
            self.assertEqual((src, dst), ("curl[%s]" % pid, path), "columns of a request")

    def test_root_capture_read_by_root_and_user(self):
        """as root: tshark -i unix:PATH -w x.pcapng; tshark -r x.pcapng -Y 'http.request && unix.comm ==
        "curl"' finds every request, labelled, as root and as an ordinary user"""
        if os.geteuid() != 0:
            self.skipTest("needs root")
        if not self.lua:
            self.skipTest("root's Wireshark loads Lua plugins only from %s, which does not hold this source's "
                          "dissector: meson install, then test again" % W.folders(self.env)["global_lua"])
        out = os.path.join(self.tmp, "x.pcapng")
        self.capture_http_with_tshark(out)
        self.assert_labelled(self.label_rows(["tshark", "-r", out], self.env), self.path)
        # An ordinary user, with the dissector in their personal folder, reads the same file.
        home = os.path.join(self.tmp, "user-home")
        os.mkdir(home)
        W.install_personal(home, owner=(W.NOBODY.pw_uid, W.NOBODY.pw_gid))
        os.chmod(out, 0o644)
        self.assert_labelled(self.label_rows(W.as_nobody(["tshark", "-r", out]), W.clean_env(home, TMPDIR=home)),
                             self.path)

    def test_ordinary_user_captures_own_socket(self):
        """an ordinary user installs udsdump with scripts/install-personal and captures a socket of their
        own with tshark -i unix:PATH: decoded, labelled, put back"""
        as_user = W.as_nobody if os.geteuid() == 0 else (lambda argv: argv)
        owner = (W.NOBODY.pw_uid, W.NOBODY.pw_gid) if os.geteuid() == 0 else (os.getuid(), os.getgid())
        # What the user runs must be readable by them (the checkout may sit in /root, mode 0700).
        tree = os.path.join(self.tmp, "tree")
        for src, rel in ((UDSDUMP, "build/udsdump"), (LUA, "dissector/udsdump.lua"),
                         (os.path.join(SRCDIR, "scripts", "install-personal"), "scripts/install-personal"),
                         (os.path.join(SRCDIR, "scripts", "wireshark-folders"), "scripts/wireshark-folders"),
                         (os.path.join(SRCDIR, "tests", "tools", "uds_http.py"), "uds_http.py")):
            os.makedirs(os.path.dirname(os.path.join(tree, rel)), exist_ok=True)
            shutil.copy(src, os.path.join(tree, rel))
        own = os.path.join(self.tmp, "own")
        home = os.path.join(own, "home")
        os.makedirs(home)
        for d in (own, home):
            os.chown(d, *owner)
        env = W.clean_env(home, TMPDIR=home)
        r = subprocess.run(as_user([os.path.join(tree, "scripts", "install-personal"), os.path.join(tree, "build")]),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout.decode(errors="replace"))
        folders = W.folders(env)
        self.assertIn(folders["personal_extcap"], r.stdout.decode())
        exe = os.path.join(folders["personal_extcap"], "udsdump")
        self.exes.append(exe)
        # The user's server, socket and capture.
        path = os.path.join(own, "mine.sock")
        fifo = os.path.join(own, "ready")
        os.mkfifo(fifo)
        os.chown(fifo, *owner)
        server = self.spawn(as_user([sys.executable, os.path.join(tree, "uds_http.py"), path, "--mode", "0600",
                                     "--ready", fifo]), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        self._wait_ready(fifo, server, "the user's HTTP server")
        orig = ident(path)
        watch = DirWatch(own)
        try:
            p = self.spawn(as_user(["tshark", "-i", "unix:" + path, "-l", "-Y", "http.request", "-T", "fields",
                                    "-e", W.col("Source"), "-e", W.col("Destination"), "-e", "unix.pid"]),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            watch.wait(lambda: p.poll() is not None or ident(path) != orig, 60)
            self.assertNotEqual(ident(path), orig, "tshark never interposed: %s" % (
                p.communicate(timeout=30)[1].decode(errors="replace") if p.poll() is not None else "(running)"))
            p.lines = LineReader(p.stdout)
            for i in range(REQUESTS):
                c = subprocess.run(as_user(["curl", "-sS", "--max-time", "10", "--unix-socket", path,
                                            "http://localhost/?n=%d" % i]), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, env=env, timeout=30)
                self.assertEqual(c.stdout, b"hello\n", c.stderr.decode(errors="replace"))
            self.assertTrue(p.lines.wait(lambda ls: len([l for l in ls if l]) >= REQUESTS, 30), p.lines.lines)
            p.send_signal(signal.SIGINT)
            p.wait(timeout=60)
            self.assertNotIn("Error by extcap", p.stderr.read().decode(errors="replace"))
            self.assert_labelled([tuple(l.split("\t")) for l in p.lines.finish() if l], path)
            watch.wait(lambda: ident(path) == orig, 10)
            self.assertEqual(ident(path), orig, "the user's socket must be put back")
            self.assertEqual(wait_gone(exe, 10), [])
        finally:
            watch.close()


class InstallTest(UdsTestCase):
    def test_meson_install_destdir(self):
        """`meson setup --prefix=/usr` + `meson install` puts udsdump where this machine's tshark looks."""
        signal.alarm(900)
        build, dest = os.path.join(self.tmp, "build"), os.path.join(self.tmp, "dest")
        env = dict(os.environ, DESTDIR=dest)

        def run(*argv):
            r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=600)
            self.assertEqual(r.returncode, 0, "%s: %s" % (" ".join(argv), r.stdout.decode(errors="replace")[-3000:]))

        run("meson", "setup", build, SRCDIR, "--prefix=/usr", "-Dtests=false")
        run("meson", "compile", "-C", build)
        run("meson", "install", "-C", build, "--no-rebuild", "--quiet")

        folders = W.folders(dict(os.environ))
        extcap_dir, lua_dir = folders["global_extcap"], folders["global_lua"]

        exe = dest + os.path.join(extcap_dir, "udsdump")
        lua = dest + os.path.join(lua_dir, "udsdump.lua")
        man = os.path.join(dest, "usr", "share", "man", "man1", "udsdump.1")
        readme = os.path.join(dest, "usr", "share", "doc", "udsdump", "README.md")
        self.assertTrue(os.path.isfile(exe), "extcap not in tshark's extcap folder %s: %s" % (extcap_dir, self.tree(dest)))
        self.assertEqual(stat.S_IMODE(os.stat(exe).st_mode) & 0o755, 0o755)
        with open(lua, "rb") as a, open(LUA, "rb") as b:
            self.assertEqual(a.read(), b.read(), "the dissector in tshark's global Lua plugins folder")
        self.assertTrue(os.path.isfile(man), self.tree(dest))
        self.assertTrue(os.path.isfile(readme), self.tree(dest))
        # Everything installed is one of those, or documentation beside the README.
        docdir = os.path.dirname(readme)
        for f in self.tree(dest):
            full = os.path.join(dest, f)
            self.assertTrue(full in (exe, lua, man) or full.startswith(docdir + os.sep), "unexpected: /" + f)
        # The installed executable is a working extcap.
        r = subprocess.run([exe, "--extcap-interfaces", "--extcap-version=4.0"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.startswith(b"extcap {version="), r.stdout[:200])

    def test_no_wireshark_to_ask_is_an_error(self):
        """without a Wireshark to ask where it looks, meson setup stops with a clear error (not an install
        where no Wireshark looks); -Dextcapdir and -Dluadir make it build again"""
        build = os.path.join(self.tmp, "build")
        env = dict(os.environ, TSHARK="/nonexistent/tshark")
        r = subprocess.run(["meson", "setup", build, SRCDIR, "-Dtests=false"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, env=env, timeout=300)
        out = r.stdout.decode(errors="replace")
        self.assertNotEqual(r.returncode, 0, out)
        self.assertIn("/nonexistent/tshark not found", out)
        self.assertIn("-Dextcapdir=DIR -Dluadir=DIR", out)
        self.assertFalse(os.path.exists(os.path.join(build, "build.ninja")))
        r = subprocess.run(["meson", "setup", build, SRCDIR, "-Dtests=false", "-Dextcapdir=/opt/x/extcap",
                            "-Dluadir=/opt/x/lua"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                           timeout=300)
        self.assertEqual(r.returncode, 0, r.stdout.decode(errors="replace"))
        r = subprocess.run(["meson", "introspect", build, "--installed"], stdout=subprocess.PIPE, timeout=60)
        installed = r.stdout.decode()
        self.assertIn("/opt/x/extcap/udsdump", installed)
        self.assertIn("/opt/x/lua/udsdump.lua", installed)

    @staticmethod
    def tree(root):
        return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


class TerminalTest(E2eCase):
    """udsdump by hand, as the README shows it."""

    def start(self, *args, stdout=subprocess.PIPE):
        p = self.spawn([self.extcap, "-i", "unix:" + self.path, *args], stdout=stdout, stderr=subprocess.PIPE,
                       env=self.env)
        self.wait_interposed(p, "udsdump " + " ".join(args))
        return p

    def summary(self, err):
        lines = [l for l in err.splitlines() if re.match(r"^udsdump: \d+ connections", l)]
        self.assertEqual(len(lines), 1, "one summary line on stderr at the stop: %r" % err)
        return lines[0]

    def test_pipe_to_tshark(self):
        """udsdump -i unix:PATH -w - | tshark -r -"""
        rd, wr = os.pipe()
        try:
            tshark = self.spawn(["tshark", "-r", "-", *self.fields_args()], stdin=rd, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=self.env)
            p = self.start("-w", "-", stdout=wr)
        finally:
            os.close(rd)
            os.close(wr)
        self.curl_n(REQUESTS)
        p.send_signal(signal.SIGINT)  # Ctrl+C on udsdump; tshark reads to the end of the pipe
        p.wait(timeout=30)
        summary = self.summary(p.stderr.read().decode(errors="replace"))
        self.assertIn("%d connections" % REQUESTS, summary)
        out, err = tshark.communicate(timeout=60)
        self.assertEqual(tshark.returncode, 0, err)
        self.assert_http(parse_fields(out.decode(errors="replace").splitlines()), REQUESTS)
        self.assert_restored(self.extcap)

    def test_count_stops_by_itself(self):
        """udsdump -c 4 -w file: exits after 4 data frames and restores; clients never notice."""
        out = os.path.join(self.tmp, "four.pcap")
        p = self.start("-c", "4", "-w", out, stdout=subprocess.DEVNULL)
        for i in range(10):
            self.assertEqual(self.curl("/?n=%d" % i), b"hello\n")
            if p.poll() is not None:
                break
        self.assertEqual(p.wait(timeout=30), 0)
        self.summary(p.stderr.read().decode(errors="replace"))
        self.assert_restored(self.extcap)
        data = self.tshark_read("-r", out, "-Y", "tcp.len > 0")
        self.assertEqual(len(data), 4, data)
        self.assertEqual(self.curl("/?after"), b"hello\n")

    def test_text_view(self):
        """No -w: a readable live view on stdout with the request text."""
        p = self.start()
        lines = LineReader(p.stdout)
        self.assertEqual(self.curl("/?e2e-text-view"), b"hello\n")
        self.assertTrue(lines.wait(lambda ls: any("hello" in l for l in ls), 30), lines.lines)
        p.send_signal(signal.SIGINT)
        p.wait(timeout=30)
        text = lines.finish()
        self.summary(p.stderr.read().decode(errors="replace"))
        joined = "\n".join(text)
        self.assertIn("GET /?e2e-text-view HTTP/1.1", joined)
        self.assertIn("HTTP/1.1 200", joined)
        self.assertIn("curl", joined, "the client is named")
        self.assertTrue(all(l.isprintable() for l in text), [l for l in text if not l.isprintable()])
        self.assert_restored(self.extcap)

    def test_list(self):
        """udsdump -D lists the socket, numbered as tcpdump -D does."""
        r = subprocess.run([self.extcap, "-D"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        hits = [l for l in r.stdout.decode().splitlines() if re.match(r"^\d+\.unix:%s( |$)" % re.escape(self.path), l)]
        self.assertEqual(len(hits), 1, r.stdout.decode())
        self.assertEqual(ident(self.path), self.orig)


if __name__ == "__main__":
    # meson's timeout sends SIGTERM: fail the test instead of dying, so tearDown still cleans up.
    signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(TimeoutError("terminated (meson timeout?)")))
    main()
