#!/usr/bin/env python3
"""The transparent relay, end to end: the udsdump executable interposed on a real server's socket.

Each scenario checks the promises: clients change nothing, every byte arrives (hashes), the socket
path is put back exactly as it was (same inode, owner, group, mode) whatever ends the capture, and
the folder holds nothing of udsdump's afterwards.
"""
import fcntl
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from udstest import (DirWatch, UdsTestCase, UDSDUMP, connect, http_get, ident, main, perms, recv_all, rss_kib,
                     sha256)  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from echo_server import pattern  # noqa: E402


class RelayTest(UdsTestCase):
    def interposed(self, path, orig):
        return os.path.exists(path) and ident(path) != orig

    # ---- put back on every exit ----

    def _restore_after(self, sig):
        path = os.path.join(self.tmp, "app.sock")
        self.start_http(path, mode="0660")
        orig, orig_perms, before = ident(path), perms(path), self.listing()
        p = self.start_udsdump(path)
        self.assertNotEqual(ident(path), orig, "PATH should be the relay now")
        self.assertEqual(perms(path), orig_perms, "the relay socket must have the original's owner/group/mode")
        self.assertEqual(http_get(path), (200, b"hello\n"))
        self.stop_udsdump(p, sig)
        self.assertEqual(ident(path), orig, "PATH must be the original socket again")
        self.assertEqual(perms(path), orig_perms)
        self.assertEqual(self.listing(), before, "nothing of udsdump's may stay in the folder")
        self.assertEqual(http_get(path), (200, b"hello\n"))

    def test_restore_after_sigterm(self):
        self._restore_after(signal.SIGTERM)

    def test_restore_after_sigint(self):
        self._restore_after(signal.SIGINT)

    def test_restore_after_sighup(self):
        self._restore_after(signal.SIGHUP)

    def test_restore_when_reader_goes_away(self):
        path = os.path.join(self.tmp, "app.sock")
        self.start_http(path)
        orig, before = ident(path), self.listing()
        p = self.start_udsdump(path, drain=False)
        p.stdout.close()  # the reader (Wireshark, the ssh channel) goes away while the capture is idle
        p.wait(timeout=10)
        self.assertEqual(ident(path), orig)
        self.assertEqual(self.listing(), before)

    def test_restore_after_sigkill_within_a_second(self):
        path = os.path.join(self.tmp, "app.sock")
        self.start_http(path)
        orig, orig_perms, before = ident(path), perms(path), self.listing()
        p = self.start_udsdump(path)
        w = DirWatch(self.tmp)
        try:
            p.kill()
            t0 = time.monotonic()
            self.assertTrue(w.wait(lambda: ident(path) == orig, 1.0), "the guardian must restore within 1 s")
            self.assertLess(time.monotonic() - t0, 1.0)
            self.assertTrue(w.wait(lambda: self.listing() == before, 1.0), "leftovers: %s" % self.listing())
        finally:
            w.close()
        self.assertEqual(perms(path), orig_perms)
        self.assertEqual(http_get(path), (200, b"hello\n"))
        p.wait()

    def test_server_restart_during_capture(self):
        path = os.path.join(self.tmp, "app.sock")
        srv = self.start_http(path)
        before = self.listing()
        p = self.start_udsdump(path)
        self.assertEqual(http_get(path), (200, b"hello\n"))
        srv.kill()
        srv.wait()
        # A restarting server unlinks PATH (our relay) and binds anew, as dockerd and systemd do.
        srv2 = self.start_http(path)
        self.assertEqual(http_get(path), (200, b"hello\n"))
        self.stop_udsdump(p)
        self.assertTrue(os.path.exists(path))
        # Either udsdump followed the new socket and put it back, or left it alone: PATH is the new
        # server's socket either way (its listener is the new server), and nothing of udsdump's stays.
        with connect(path) as s:
            pid = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
        self.assertEqual(pid, srv2.pid, "restoring must not clobber the server's new socket")
        self.assertEqual(self.listing(), before)
        self.assertEqual(http_get(path), (200, b"hello\n"))

    # ---- forwarding ----

    def test_half_close_long_reply(self):
        path = os.path.join(self.tmp, "half.sock")
        self.start_echo(path, "stream", extra=["--reply-bytes", str(5 << 20)])
        p = self.start_udsdump(path)
        data = os.urandom(1 << 20)
        with connect(path) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)  # the client is done writing, but keeps reading
            got = b""
            while True:
                b = s.recv(1 << 20)
                if not b:
                    break
                got += b
        digest, _, reply = got.partition(b"\n")
        self.assertEqual(digest.decode(), sha256(data))
        self.assertEqual(len(reply), 5 << 20, "the reply after a half-close must arrive whole")
        self.assertEqual(reply, pattern(5 << 20))
        self.stop_udsdump(p)

    def test_server_half_close(self):
        # The server finishes first: its EOF must reach the client while the client still sends.
        path = os.path.join(self.tmp, "src.sock")
        self.start_echo(path, "source", extra=["--reply-bytes", "100000"])
        p = self.start_udsdump(path)
        with connect(path) as s:
            got = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break
                got += b
        self.assertEqual(got, pattern(100000))
        self.stop_udsdump(p)

    def test_slow_reader_memory_stays_bounded(self):
        path = os.path.join(self.tmp, "big.sock")
        total = 200 << 20
        self.start_echo(path, "source", extra=["--reply-bytes", str(total)])
        p = self.start_udsdump(path)
        with open("/proc/%d/maps" % p.pid) as f:
            asan = "libasan" in f.read()
        base = rss_kib(p.pid)
        peak = base
        got = 0
        h = __import__("hashlib").sha256()
        with connect(path, timeout=60) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            n = 0
            while True:
                b = s.recv(65536)
                if not b:
                    break
                h.update(b)
                got += len(b)
                n += 1
                if n % 64 == 0:
                    peak = max(peak, rss_kib(p.pid))
                    time.sleep(0.002)  # being slow is the point of this client, not synchronisation
        self.assertEqual(got, total)
        self.assertEqual(h.hexdigest(), sha256(pattern(total)))
        _, err = self.stop_udsdump(p)
        # One read buffer per direction plus the bounded capture buffer (4 MiB), whatever the volume.
        # (Under AddressSanitizer freed memory sits in its quarantine: RSS says nothing there.)
        if asan:
            self.skipTest("RSS bound not meaningful under AddressSanitizer (forwarding checked above)")
        self.assertLess(peak - base, 16 * 1024, "udsdump grew by %d KiB relaying %d MiB to a slow reader" %
                        (peak - base, total >> 20))

    def test_lossless_stops_reading_while_the_reader_is_stopped(self):
        """--lossless with a reader that takes nothing: the relay stops reading (the client stalls)
        with what it holds bounded, and once the reader reads again every byte arrives, exact."""
        path = os.path.join(self.tmp, "ll.sock")
        total = 64 << 20
        self.start_echo(path, "source", extra=["--reply-bytes", str(total)])
        p = self.start_udsdump(path, "--lossless", "--buffer-size", "1", drain=False)
        with open("/proc/%d/maps" % p.pid) as f:
            asan = "libasan" in f.read()
        base = rss_kib(p.pid)
        got = [0]
        h = __import__("hashlib").sha256()

        def client():
            with connect(path, timeout=120) as s:
                while True:
                    b = s.recv(1 << 20)
                    if not b:
                        return
                    h.update(b)
                    got[0] += len(b)

        t = threading.Thread(target=client, daemon=True)
        t.start()
        # Nobody reads the capture.  A stall is the absence of progress: no event says so, so watch.
        last, still, deadline = -1, 0, time.monotonic() + 30
        while still < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
            still = still + 1 if got[0] == last else 0
            last = got[0]
        stalled_at, grown = got[0], rss_kib(p.pid) - base
        self.assertLess(stalled_at, 16 << 20, "the client got %d bytes past a stopped lossless reader" % stalled_at)
        p.chunks = []
        p.reader = threading.Thread(target=self._drain, args=(p,), daemon=True)
        p.reader.start()
        t.join(120)
        self.assertEqual(got[0], total)
        self.assertEqual(h.hexdigest(), sha256(pattern(total)))
        self.stop_udsdump(p)
        if not asan:   # (under AddressSanitizer freed memory sits in its quarantine)
            self.assertLess(grown, 16 * 1024, "udsdump grew by %d KiB while its reader was stopped" % grown)

    def test_200_concurrent_connections_byte_exact(self):
        path = os.path.join(self.tmp, "many.sock")
        self.start_echo(path, "stream", extra=["--reply-bytes", "65536"])
        p = self.start_udsdump(path)
        errors = []
        reply = pattern(65536)

        def client(i):
            try:
                rnd = random.Random(i)
                data = rnd.randbytes(rnd.randint(0, 300000))
                with connect(path, timeout=60) as s:
                    s.sendall(data)
                    s.shutdown(socket.SHUT_WR)
                    got = b""
                    while True:
                        b = s.recv(262144)
                        if not b:
                            break
                        got += b
                digest, _, rest = got.partition(b"\n")
                if digest.decode() != sha256(data) or rest != reply:
                    errors.append("conn %d: %d bytes sent, reply mismatch" % (i, len(data)))
            except Exception as e:  # noqa: BLE001 - every failure is reported
                errors.append("conn %d: %r" % (i, e))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(200)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.stop_udsdump(p)

    def test_stop_while_stream_in_flight(self):
        path = os.path.join(self.tmp, "echo.sock")
        self.start_echo(path, "echo")
        orig = ident(path)
        p = self.start_udsdump(path)
        s = connect(path, timeout=30)
        first = os.urandom(300000)
        s.sendall(first)
        got = b""
        while len(got) < len(first):
            got += s.recv(65536)
        t0 = time.monotonic()
        _, err = self.stop_udsdump(p)
        self.assertLess(time.monotonic() - t0, 5, "the extcap must exit promptly on SIGTERM")
        self.assertEqual(ident(path), orig, "new connections go straight to the server after a stop")
        # The open connection goes on, uncaptured, through the detached drain process.
        second = os.urandom(2 << 20)
        threading.Thread(target=lambda: (s.sendall(second), s.shutdown(socket.SHUT_WR)), daemon=True).start()
        back = recv_all(s)
        s.close()
        self.assertEqual(got + back, first + second)

    # ---- bytes waiting in udsdump's pipe (zero copy, src/relay.c) ----

    def wait_unread(self, s, n, timeout=30):
        """Until n bytes the client sent wait unread at udsdump (SIOCOUTQ): udsdump stopped reading them
        because the other side is full, so what it read before waits in its pipe.  A state, not an
        event: nothing signals it, so it is polled."""
        deadline = time.monotonic() + timeout
        while struct.unpack("i", fcntl.ioctl(s.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0] < n:
            if time.monotonic() > deadline:
                self.fail("udsdump never stopped reading the client")
            time.sleep(0.01)

    def test_stop_while_bytes_wait_for_a_client(self):
        # A client that reads nothing yet: the echo comes back until udsdump holds the server's bytes
        # in its pipe.  udsdump is stopped then; the drain process takes the connection over, and
        # once the client reads, every byte comes back, in order.
        path = os.path.join(self.tmp, "wait.sock")
        self.start_echo(path, "echo")
        p = self.start_udsdump(path)
        data = os.urandom(8 << 20)
        s = connect(path, timeout=60)
        sender = threading.Thread(target=lambda: (s.sendall(data), s.shutdown(socket.SHUT_WR)), daemon=True)
        sender.start()
        self.wait_unread(s, 100000)
        self.stop_udsdump(p)
        got = recv_all(s)
        sender.join(30)
        s.close()
        self.assertEqual(len(got), len(data))
        self.assertEqual(got, data)

    def test_reset_while_bytes_wait_then_next_connection_exact(self):
        # The same, but the client goes away instead: the bytes waiting for it are thrown away, and
        # the next connection's arrive exact (nothing of the first mixed in), by zero copy again.
        path = os.path.join(self.tmp, "reset.sock")
        self.start_echo(path, "echo")
        p = self.start_udsdump(path)
        s1 = connect(path, timeout=60)

        def flood():
            try:
                s1.sendall(os.urandom(16 << 20))
            except OSError:
                pass  # the shutdown below ends it

        flooder = threading.Thread(target=flood, daemon=True)
        flooder.start()
        self.wait_unread(s1, 100000)
        s1.shutdown(socket.SHUT_RDWR)
        flooder.join(30)
        s1.close()
        data = os.urandom(8 << 20)
        with connect(path, timeout=60) as s2:
            threading.Thread(target=lambda: (s2.sendall(data), s2.shutdown(socket.SHUT_WR)), daemon=True).start()
            got = recv_all(s2)
        self.assertEqual(len(got), len(data))
        self.assertEqual(got, data)
        self.stop_udsdump(p)
        with open(os.path.join(self.logdir, "udsdump.log")) as f:
            m = re.search(r"zero copy moved \d+ of \d+ bytes to the server, (\d+) of", f.read())
        # The first client took at most a few hundred kB back: the rest is the second's.  How much of a
        # transfer waits long enough for zero copy depends on scheduling (a loaded CI machine: 46 %), so
        # the bound is a quarter: still far more than the first connection could account for.
        self.assertGreater(int(m.group(1)), len(data) // 4, "the second connection's echo went by zero copy")

    def test_relay_socket_keeps_owner_group_mode(self):
        path = os.path.join(self.tmp, "perm.sock")
        self.start_http(path, mode="0640", group="nogroup")
        want = perms(path)
        p = self.start_udsdump(path)
        self.assertEqual(perms(path), want)
        self.stop_udsdump(p)
        self.assertEqual(perms(path), want)

    # ---- refusals: a clear line, non-zero exit, nothing changed ----

    def refuse(self, iface, expect, *extra, user=None):
        before = self.listing()
        argv = [UDSDUMP, "--capture", "--extcap-interface", iface, "--fifo", os.path.join(self.tmp, "out.fifo"), *extra]
        os.mkfifo(os.path.join(self.tmp, "out.fifo"))
        before = self.listing()
        # A reader on the FIFO, as dumpcap would be: a failed start must open and close it, not hang.
        rfd = os.open(os.path.join(self.tmp, "out.fifo"), os.O_RDONLY | os.O_NONBLOCK)
        try:
            if user:
                argv = ["setpriv", "--reuid=%d" % user, "--regid=%d" % user, "--clear-groups", self.for_others(UDSDUMP),
                        *argv[1:]]
            r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
        finally:
            os.close(rfd)
        err = r.stderr.decode(errors="replace").strip()
        self.assertNotEqual(r.returncode, 0, "should refuse: " + iface)
        self.assertEqual(len(err.splitlines()), 1, "one clear line, got: %r" % err)
        self.assertIn(expect.lower(), err.lower())
        self.assertEqual(self.listing(), before, "a refusal changes nothing")
        os.unlink(os.path.join(self.tmp, "out.fifo"))
        return err

    def test_refuse_missing(self):
        self.refuse("unix:" + os.path.join(self.tmp, "nope.sock"), "nope.sock")

    def test_refuse_not_a_socket(self):
        f = os.path.join(self.tmp, "file.sock")
        open(f, "w").close()
        self.refuse("unix:" + f, "not a socket")

    def test_refuse_symlink(self):
        path = os.path.join(self.tmp, "real.sock")
        self.start_http(path)
        link = os.path.join(self.tmp, "link.sock")
        os.symlink(path, link)
        self.refuse("unix:" + link, "symlink")
        os.unlink(link)

    def test_refuse_stale(self):
        path = os.path.join(self.tmp, "stale.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.close()  # the file stays, nobody listens
        self.refuse("unix:" + path, "listen")

    def test_refuse_abstract(self):
        self.refuse("unix:@some-abstract-name", "abstract")

    def test_refuse_too_long(self):
        self.refuse("unix:/" + "x" * 120, "too long")

    def test_refuse_folder_not_writable(self):
        folder = os.path.join(self.tmp, "ro")
        os.mkdir(folder, 0o755)
        path = os.path.join(folder, "app.sock")
        self.start_http(path, mode="0666")
        before = sorted(os.listdir(folder))
        self.refuse("unix:" + path, "write", user=65534)
        self.assertEqual(sorted(os.listdir(folder)), before)

    def test_refuse_already_interposed_names_pid(self):
        path = os.path.join(self.tmp, "app.sock")
        self.start_http(path)
        p = self.start_udsdump(path)
        before = self.listing()
        err = self.refuse("unix:" + path, str(p.pid))
        self.assertEqual(self.listing(), before)
        self.stop_udsdump(p)

    def test_refuse_bad_options(self):
        path = os.path.join(self.tmp, "app.sock")
        self.start_http(path)
        for extra, expect in [(["--buffer-size", "0"], "buffer-size"), (["--snaplen", "-5"], "snaplen"),
                              (["--mode", "sideways"], "mode"), (["--protocol", "nonsense"], "protocol"),
                              (["--mode", "side"], "side-path"), (["--only-comm", "x" * 40], "only-comm"),
                              (["--extcap-capture-filter", "tcp port banana"], "filter"),
                              (["--no-such-option"], "no-such-option")]:
            with self.subTest(extra=extra):
                self.refuse("unix:" + path, expect, *extra)


if __name__ == "__main__":
    main()
