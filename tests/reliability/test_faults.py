#!/usr/bin/env python3
"""Faults, with real processes: what a capture must survive and what it must never do while surviving.

Whatever dies - a server, a client, the reader of the capture, udsdump itself under load - a client
sees its transfer complete byte-exact or end (EOF, reset), never hang and never receive a wrong byte;
PATH ends as the real server's socket (same inode); the folder holds nothing of udsdump's; no
udsdump process (capture, guardian, drain) stays; descriptors do not leak.
"""
import os
import random
import select
import signal
import socket
import subprocess
import threading
import time

from rel import (Load, Outcome, RelTestCase, UDSDUMP, connect, fd_count, ident, main, pattern,
                 stream_transfer, udsdump_procs, wait_pids_gone)
from udstest import DirWatch, read_exactly


def read_line(s):
    line = b""
    while not line.endswith(b"\n"):
        b = s.recv(1)
        if not b:
            raise EOFError("EOF before a line: %r" % line)
        line += b
    return line


class FaultTest(RelTestCase):
    WATCHDOG = 300

    def test_server_dies_mid_transfer(self):
        """The server process of one connection dies mid-transfer: that client sees the end (EOF or
        reset) promptly, and the relay goes on serving the other connections, byte-exact."""
        path = os.path.join(self.tmp, "fork.sock")
        self.start_fork_server(path)
        p = self.start_udsdump(path)
        n = 8 << 20
        victim, others = connect(path, timeout=10), [connect(path, timeout=30) for _ in range(5)]
        victim_pid = int(read_line(victim))
        victim.sendall(b"source %d\n" % n)
        got = read_exactly(victim.makefile("rb", buffering=0), 1 << 20, timeout=10)
        os.kill(victim_pid, signal.SIGKILL)     # mid-transfer: 7 MiB still to come
        t0 = time.monotonic()
        ended = None
        try:
            while True:
                b = victim.recv(262144)
                if not b:
                    ended = "EOF"
                    break
                got += b
        except ConnectionResetError:
            ended = "reset"
        except socket.timeout:
            self.fail("the client hung after its server died (%d bytes received)" % len(got))
        took = time.monotonic() - t0
        victim.close()
        self.assertLess(len(got), n, "the server died: the transfer cannot have completed")
        self.assertEqual(got, pattern(n)[: len(got)], "bytes before the end must be exact")
        self.assertLess(took, 5, "the end must reach the client promptly")
        self.assertIsNone(p.poll(), "udsdump must survive a server's death")
        # the connections opened before, and a new one, are served whole
        fresh = connect(path, timeout=30)
        for s in others + [fresh]:
            read_line(s)
            s.sendall(b"source 3000000\n")
        for s in others + [fresh]:
            body = b""
            while True:
                b = s.recv(262144)
                if not b:
                    break
                body += b
            s.close()
            self.assertEqual(body, pattern(3000000))
        self.report("server_dies", victim_end=ended, end_after_ms=int(took * 1000), victim_bytes=len(got))
        self.stop_udsdump(p)
        self.assert_no_udsdump_left()

    def test_whole_server_dies_clients_do_not_hang(self):
        """Every server process dies with 40 transfers in flight: each ends (none hangs, none is wrong),
        udsdump stays up, and connections made while nobody listens upstream end at once."""
        path = os.path.join(self.tmp, "fork.sock")
        srv = self.start_fork_server(path)
        orig, before = ident(path), self.listing()
        p = self.start_udsdump(path)
        conns = []
        for _ in range(40):
            s = connect(path, timeout=10)
            read_line(s)
            s.sendall(b"source %d\n" % (4 << 20))
            conns.append(s)
        os.killpg(srv.pid, signal.SIGKILL)
        srv.wait()
        outcomes = {}
        for s in conns:
            got = 0
            try:
                while True:
                    b = s.recv(262144)
                    if not b:
                        break
                    got += len(b)
                outcomes["EOF"] = outcomes.get("EOF", 0) + 1
            except ConnectionResetError:
                outcomes["reset"] = outcomes.get("reset", 0) + 1
            except socket.timeout:
                self.fail("a client hung after the server died")
            s.close()
        self.assertIsNone(p.poll(), "udsdump must keep running when the server dies")
        # Nobody listens behind the relay now: a client must learn it at once, not wait.
        t0 = time.monotonic()
        try:
            with connect(path, timeout=10) as s:
                self.assertEqual(s.recv(10), b"", "nothing can come from a dead server")
        except (ConnectionRefusedError, ConnectionResetError):
            pass
        except socket.timeout:
            self.fail("a client of a dead server hung")
        self.assertLess(time.monotonic() - t0, 6)
        self.report("whole_server_dies", **outcomes)
        self.stop_udsdump(p)
        self.assertEqual(ident(path), orig)
        self.assertEqual(self.listing(), before)
        self.assert_no_udsdump_left()

    def test_client_resets(self):
        """Clients close with unread data: the kernel then gives the reader ECONNRESET.  Through the
        relay the server must see the same kind of end as without udsdump (an error, not a clean
        EOF), promptly, and the relay keeps no descriptor of those connections."""
        path = os.path.join(self.tmp, "fork.sock")
        self.start_fork_server(path)

        def reset_once():
            s = connect(path, timeout=10)
            pid = int(read_line(s))
            s.sendall(b"source %d\n" % (8 << 20))
            s.recv(1000)          # some bytes read, megabytes left unread
            s.close()             # close with unread data: a reset for the peer
            return pid

        def server_child_gone(pid, timeout=5):
            return wait_pids_gone([pid], timeout) == []

        direct = reset_once()
        self.assertTrue(server_child_gone(direct), "without udsdump the server sees the reset")
        p = self.start_udsdump(path)
        base = fd_count(p.pid)
        t0 = time.monotonic()
        pids = [reset_once() for _ in range(200)]
        alive = wait_pids_gone(pids, 10)
        took = time.monotonic() - t0
        self.assertEqual(alive, [], "server processes blocked writing to a client that reset: %s" % alive)
        fds = self._settle_fds(p.pid, base)
        self.assertEqual(fds, base, "descriptors after 200 resets")
        self.assertIsNone(p.poll())
        self.assertEqual(stream_transfer_fork(path), True)
        self.report("client_resets", resets=200, all_servers_ended_ms=int(took * 1000), fds_before=base, fds_after=fds)
        self.stop_udsdump(p)
        self.assert_no_udsdump_left()

    def _settle_fds(self, pid, want, timeout=5):
        """The relay closes a connection on its next wake-up, not the instant the client does: wait
        (bounded) for the count to come back down, re-reading it on every descriptor change."""
        deadline = time.monotonic() + timeout
        n = fd_count(pid)
        while n != want and time.monotonic() < deadline:
            time.sleep(0.05)   # no event tells us the relay's close(); a bounded re-check
            n = fd_count(pid)
        return n

    def test_server_restarts_during_capture(self):
        """The server restarts (unlinks PATH - the relay - and binds anew) with transfers in flight:
        transfers end or complete exactly, udsdump keeps running, new clients are served, and after
        the stop PATH is the NEW server's socket and the folder is clean."""
        path = os.path.join(self.tmp, "app.sock")
        srv = self.start_echo(path, "stream", extra=["--reply-bytes", "65536"])
        orig, before = ident(path), self.listing()
        p = self.start_udsdump(path)
        load = Load(path, 30, seed=7, loop=True).start()
        try:
            # Some transfers complete through the relay first.
            self.assertTrue(load.wait_count(Outcome.OK, 30, 30), "no transfer completed through the relay")
            srv.kill()
            srv.wait()
            self.start_echo(path, "stream", extra=["--reply-bytes", "65536"])
            ok_at_restart = load.count(Outcome.OK)
            # The capture goes on: transfers complete after the restart, through whatever PATH is now.
            load.wait_count(Outcome.OK, ok_at_restart + 60, 30)
        finally:
            load.stop.set()
        self.assertEqual(load.join(60), [], "client threads hung")
        self.assertEqual(load.bad(), [], "corrupt or hung transfers")
        self.assertGreaterEqual(load.count(Outcome.OK), ok_at_restart + 60)
        self.assertIsNone(p.poll(), "udsdump must survive a server restart")
        self.stop_udsdump(p)
        # udsdump may have followed the new socket (then the log names it) or left it alone: either
        # way PATH is not a relay now.
        import re
        log = self.log()
        relays = [int(x) for x in re.findall(r"relay socket inode (\d+)", log)]
        followed = [int(x) for x in re.findall(r"re-interposed on .* \(new server socket inode (\d+)\)", log)]
        self.assertTrue(relays, "the log names the relay's inode")
        self.assertNotIn(ident(path)[1], relays, "a relay stayed at PATH after the stop")
        if followed:
            self.assertEqual(ident(path)[1], followed[-1], "PATH must be the new server's socket")
        self.assertNotEqual(ident(path), orig)
        self.assertEqual(self.listing(), before)
        self.assertEqual(stream_transfer(path, 1000, 1)[0], Outcome.OK)
        self.report("server_restart", followed_new_socket=bool(followed), ok=load.count(Outcome.OK),
                    ended_early=load.count(Outcome.EARLY_END))
        self.assert_no_udsdump_left()

    def test_fifo_reader_disappears(self):
        """Wireshark goes away (the FIFO's reader closes) while 20 transfers run: udsdump ends the
        capture, puts PATH back, and the transfers in flight still complete byte-exact."""
        path = os.path.join(self.tmp, "app.sock")
        self.start_echo(path, "stream", extra=["--reply-bytes", "65536"])
        orig, before = ident(path), self.listing()
        fifo = os.path.join(self.tmp, "wireshark.fifo")
        os.mkfifo(fifo)
        before_with_fifo = self.listing()
        rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        p = self.spawn([UDSDUMP, "--capture", "--extcap-interface", "unix:" + path, "--fifo", fifo],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            hdr = b""
            deadline = time.monotonic() + 15
            while len(hdr) < 24 and time.monotonic() < deadline:
                r, _, _ = select.select([rfd], [], [], 0.5)
                if r:
                    try:
                        hdr += os.read(rfd, 24 - len(hdr))
                    except BlockingIOError:
                        pass
            self.assertEqual(len(hdr), 24, "no pcap header on the FIFO")
            results = []
            sizes = [random.Random(i).randint(1 << 20, 6 << 20) for i in range(20)]
            started = threading.Barrier(21)

            def client(i):
                with connect(path, timeout=30) as s:
                    started.wait()
                    data = random.Random(i).randbytes(sizes[i])
                    s.sendall(data)
                    s.shutdown(socket.SHUT_WR)
                    got = b""
                    while True:
                        b = s.recv(262144)
                        if not b:
                            break
                        got += b
                    want = __import__("hashlib").sha256(data).hexdigest().encode() + b"\n" + pattern(65536)
                    results.append(True if got == want else "conn %d: %d bytes sent, got %d of %d bytes back%s" % (
                        i, sizes[i], len(got), len(want), "" if got == want[:len(got)] else " (WRONG BYTES)"))

            ts = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(20)]
            for t in ts:
                t.start()
            started.wait()        # every client is connected through the relay
        finally:
            os.close(rfd)         # the reader goes away mid-traffic
        t0 = time.monotonic()
        p.wait(timeout=15)
        took = time.monotonic() - t0
        err = p.stderr.read().decode(errors="replace")
        self.assertEqual(ident(path), orig, "PATH must be put back when the reader goes away")
        for t in ts:
            t.join(60)
        self.assertFalse(any(t.is_alive() for t in ts), "a transfer hung")
        self.assertEqual(results, [True] * 20, "in-flight transfers must complete byte-exact")
        self.assertEqual(self.listing(), before_with_fifo)
        os.unlink(fifo)
        self.assertEqual(self.listing(), before)
        self.report("fifo_reader_gone", exit_after_ms=int(took * 1000), rc=p.returncode, stderr_lines=len(err.splitlines()))
        self.assert_no_udsdump_left(timeout=10)

    def test_sigkill_under_load(self):
        """udsdump SIGKILLed at a random moment under 200 connections, ROUNDS times: each time the
        guardian puts PATH back within 1 s, every completed transfer is byte-exact and no transfer
        hangs or carries a wrong byte, the folder is clean, and no udsdump process stays."""
        rounds = int(os.environ.get("UDSDUMP_KILL_ROUNDS", "5"))
        path = os.path.join(self.tmp, "app.sock")
        self.start_echo(path, "stream", extra=["--reply-bytes", "65536"])
        orig, before = ident(path), self.listing()
        rnd = random.Random(int(os.environ.get("UDSDUMP_SEED", str(int(time.time())))))
        worst = 0.0
        summary = []
        for r in range(rounds):
            p = self.start_udsdump(path)
            load = Load(path, 200, seed=rnd.randrange(1 << 30), loop=True).start()
            # The fault's timing is the variable under test: a random moment, not a synchronisation.
            time.sleep(rnd.uniform(0.1, 1.5))
            w = DirWatch(self.tmp)
            try:
                p.kill()
                t0 = time.monotonic()
                restored = w.wait(lambda: ident(path) == orig, 1.0)
                took = time.monotonic() - t0
                self.assertTrue(restored, "round %d: PATH not put back within 1 s of SIGKILL" % r)
                self.assertTrue(w.wait(lambda: self.listing() == before, 1.0),
                                "round %d: leftovers %s" % (r, sorted(set(self.listing()) - set(before))))
            finally:
                w.close()
            p.wait()
            worst = max(worst, took)
            load.stop.set()
            self.assertEqual(load.join(60), [], "round %d: client threads hung" % r)
            self.assertEqual(load.bad(), [], "round %d: corrupt or hung transfers" % r)
            self.assertEqual(stream_transfer(path, 100000, r)[0], Outcome.OK, "the server directly, after the kill")
            self.assertEqual(wait_pids_gone(udsdump_procs(self.tmp), 2), [], "round %d: a udsdump process stayed" % r)
            summary.append("%d/%d/%d" % (load.count(Outcome.OK), load.count(Outcome.EARLY_END), load.refused()))
        self.report("sigkill_under_load", rounds=rounds, worst_restore_ms=int(worst * 1000),
                    ok_ended_refused_per_round=",".join(summary))

    def test_long_capture_leaks_no_descriptor(self):
        """Thousands of connections - completed, reset by the client, abandoned half-open - through
        one capture: afterwards udsdump holds exactly the descriptors it held before."""
        path = os.path.join(self.tmp, "app.sock")
        self.start_echo(path, "stream", extra=["--reply-bytes", "65536"])
        p = self.start_udsdump(path)
        base = fd_count(p.pid)   # idle: before any connection
        self.assertEqual(stream_transfer(path, 10, 0)[0], Outcome.OK)
        n = int(os.environ.get("UDSDUMP_FD_CONNECTIONS", "3000"))
        bad = []

        def worker(k):
            rnd = random.Random(k)
            for j in range(n // 50):
                kind = rnd.random()
                try:
                    if kind < 0.6:
                        res = stream_transfer(path, rnd.randint(0, 20000), (k, j))
                        if res[0] != Outcome.OK:
                            bad.append(res)
                    elif kind < 0.8:
                        s = connect(path)
                        s.sendall(b"x" * rnd.randint(1, 1000))
                        s.shutdown(socket.SHUT_WR)
                        s.recv(10)
                        s.close()   # 64 KiB of reply unread: a reset for the relay
                    else:
                        connect(path).close()   # connect and go
                except OSError as e:
                    bad.append(repr(e))

        ts = [threading.Thread(target=worker, args=(k,)) for k in range(50)]
        t0 = time.monotonic()
        for t in ts:
            t.start()
        for t in ts:
            t.join(240)
        took = time.monotonic() - t0
        self.assertEqual(bad, [])
        after = self._settle_fds(p.pid, base)
        self.assertEqual(after, base, "descriptors before/after %d connections" % n)
        self.report("fd_leak", connections=n, seconds=round(took, 1), fds_before=base, fds_after=after)
        self.stop_udsdump(p)


def stream_transfer_fork(path):
    """One full transfer with the forking server, as a health check."""
    with connect(path, timeout=30) as s:
        read_line(s)
        s.sendall(b"source 100000\n")
        got = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += b
    return got == pattern(100000)


if __name__ == "__main__":
    main()
