#!/usr/bin/env python3
"""The relay under valgrind: a capture with real traffic (HTTP, a half-closed stream, resets, 100
concurrent connections), stopped by SIGTERM, must show no memory error and no definite leak.

valgrind follows forks whatever --trace-children says (that option is about exec): the guardian and
the drain process are forks, so they run under valgrind too; their reports are silenced
(--child-silent-after-fork) and only the capture process's exit code counts (--error-exitcode=99).
Registered only for builds without sanitizers (valgrind and ASan do not mix).
"""
import os
import shutil
import signal
import socket
import subprocess
import threading

from rel import Load, Outcome, RelTestCase, UDSDUMP, connect, ident, main, stream_transfer
from udstest import read_exactly


class ValgrindTest(RelTestCase):
    WATCHDOG = 600

    def test_relay_clean_under_valgrind(self):
        if not shutil.which("valgrind"):
            self.skipTest("valgrind is not installed (scripts/setup test installs it)")
        path = os.path.join(self.tmp, "app.sock")
        self.start_echo(path, "stream", extra=["--reply-bytes", "65536"])
        orig, before = ident(path), self.listing()
        log = os.path.join(self.tmp, "valgrind.log")
        argv = ["valgrind", "--error-exitcode=99", "--leak-check=full", "--errors-for-leak-kinds=definite",
                "--show-leak-kinds=definite", "--trace-children=no", "--child-silent-after-fork=yes",
                "--log-file=" + log,
                UDSDUMP, "--capture", "--extcap-interface", "unix:" + path, "--fifo", "-",
                "--log-level", "debug", "--log-file", os.path.join(self.tmp, "udsdump.log")]
        p = self.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        read_exactly(p.stdout, 24, timeout=120)   # slow under valgrind, but the header is still the signal
        chunks = []
        drain = threading.Thread(target=lambda: [chunks.append(b) for b in iter(lambda: p.stdout.read1(1 << 16), b"")],
                                 daemon=True)
        drain.start()
        # traffic: mixed sizes, half-close, resets, concurrency
        for i in range(5):
            self.assertEqual(stream_transfer(path, 300000 * i, i, timeout=60)[0], Outcome.OK)
        for _ in range(5):
            s = connect(path, timeout=60)
            s.sendall(b"x" * 1000)
            s.shutdown(socket.SHUT_WR)
            s.recv(10)
            s.close()   # 64 KiB unread: a reset
        load = Load(path, 100, seed=3, timeout=120).start()
        self.assertEqual(load.join(300), [])
        self.assertEqual(load.bad(), [])
        self.assertEqual(load.count(Outcome.OK), 100)
        p.send_signal(signal.SIGTERM)
        rc = p.wait(120)
        drain.join(30)
        with open(log) as f:
            report = f.read()
        summary = [ln for ln in report.splitlines() if "ERROR SUMMARY" in ln or "definitely lost" in ln]
        self.report("valgrind", rc=rc, summary=";".join(s.split("== ", 1)[-1] for s in summary).replace(" ", "_"))
        self.assertNotEqual(rc, 99, "valgrind found errors:\n" + report[-6000:])
        self.assertEqual(rc, 0, "udsdump under valgrind exited %s:\n%s" % (rc, report[-3000:]))
        self.assertEqual(ident(path), orig)
        self.assertEqual(self.listing(), sorted(before + ["valgrind.log"]))
        self.assert_no_udsdump_left(timeout=30)


if __name__ == "__main__":
    main()
