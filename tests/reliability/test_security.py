#!/usr/bin/env python3
"""Security: the swap never opens the socket wider, the relay's names cannot be guessed, and nobody
reaches a server through udsdump that could not reach it without.

Another process watches the folder in a tight loop (perm-watch, C) while udsdump interposes and
restores 50 times; the relay's temporary names are collected from inotify over 100 interpositions;
clients and udsdump run as another user (setpriv) against root's sockets.
"""
import json
import os
import re
import select
import struct
import subprocess
import sys

from rel import HELPERS, RelTestCase, UDSDUMP, ident, main
from udstest import _libc, IN_CREATE, IN_MOVED_TO, http_get

NOBODY = 65534
DAEMON = 1

CLIENT = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print(json.dumps({"error": e.__class__.__name__}))
    sys.exit(0)
s.sendall(b"GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
data = b""
while True:
    try:
        b = s.recv(65536)
    except OSError as e:
        print(json.dumps({"error": e.__class__.__name__})); sys.exit(0)
    if not b:
        break
    data += b
head, _, body = data.partition(b"\r\n\r\n")
print(json.dumps({"status": head.split(b" ")[1].decode() if head else "", "body": body.decode(errors="replace")}))
"""


def as_user(uid, gid, groups=None):
    g = ["--clear-groups"] if not groups else ["--groups=" + ",".join(map(str, groups))]
    return ["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid, *g]


class SecurityTest(RelTestCase):
    WATCHDOG = 400

    def client_as(self, path, uid, gid, groups=None):
        r = subprocess.run([*as_user(uid, gid, groups), sys.executable, "-c", CLIENT, path],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        res = json.loads(r.stdout)
        if "body" in res and res.get("status") == "200":
            who = json.loads(res["body"])
            return "uid=%d gid=%d" % (who["uid"], who["gid"])
        return res.get("error", "status %s" % res.get("status"))

    def _never_wider(self, mode, uid, gid, cycles):
        folder = os.path.join(self.tmp, "run")
        os.mkdir(folder, 0o755)
        path = os.path.join(folder, "app.sock")
        self.start_http(path, mode="%o" % mode)
        os.chown(path, uid, gid)
        watch = self.spawn([HELPERS["perm-watch"], folder, "app.sock", "%o" % mode, str(uid), str(gid)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.assertEqual(watch.stdout.readline().strip(), b"ready")
        orig = ident(path)
        try:
            for i in range(cycles):
                p = self.start_udsdump(path)
                self.assertEqual(http_get(path), (200, b"hello\n"))
                self.stop_udsdump(p)
                self.assertEqual(ident(path), orig)
        finally:
            watch.stdin.close()
            out = watch.stdout.read().decode()
            watch.wait(10)
        first, *violations = out.strip().splitlines()
        nums = dict(kv.split("=") for kv in first.split())
        self.report("never_wider_%o_%d_%d" % (mode, uid, gid), cycles=cycles, **nums)
        self.assertEqual(violations, [], "the relay was observed more permissive than the original")
        self.assertEqual(int(nums["violations"]), 0)
        self.assertGreater(int(nums["foreign"]), 0, "the watcher never saw a relay: the test observed nothing")

    def test_relay_never_more_permissive_user_socket(self):
        """A socket of another user (nobody:nogroup 0660): every observed relay has at most that."""
        self._never_wider(0o660, NOBODY, NOBODY, int(os.environ.get("UDSDUMP_SWAP_CYCLES", "50")))

    def test_relay_never_more_permissive_root_socket(self):
        self._never_wider(0o600, 0, 0, int(os.environ.get("UDSDUMP_SWAP_CYCLES", "50")) // 2)

    def test_temporary_names_unpredictable(self):
        folder = os.path.join(self.tmp, "run")
        os.mkdir(folder, 0o755)
        path = os.path.join(folder, "app.sock")
        self.start_http(path)
        fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        self.assertGreaterEqual(fd, 0)
        self.assertGreaterEqual(_libc.inotify_add_watch(fd, os.fsencode(folder), IN_CREATE | IN_MOVED_TO), 0)
        names, pids = [], []
        try:
            for _ in range(int(os.environ.get("UDSDUMP_NAME_CYCLES", "100"))):
                p = self.start_udsdump(path)
                pids.append(p.pid)
                self.stop_udsdump(p)
                while select.select([fd], [], [], 0)[0]:
                    buf = os.read(fd, 65536)
                    off = 0
                    while off < len(buf):
                        _, mask, _, ln = struct.unpack_from("iIII", buf, off)
                        name = buf[off + 16: off + 16 + ln].rstrip(b"\0").decode()
                        off += 16 + ln
                        if mask & IN_CREATE and name not in ("app.sock", ".app.sock.udsdump-orig"):
                            names.append(name)
        finally:
            os.close(fd)
        n = len(pids)
        self.assertEqual(len(names), n, "one temporary name per interposition: %s" % names[:5])
        self.assertEqual(len(set(names)), n, "temporary names repeat")
        prefix = os.path.commonprefix(names)
        suffix = os.path.commonprefix([x[::-1] for x in names])[::-1]
        var = [x[len(prefix): len(x) - len(suffix)] for x in names]
        # The varying part: long enough, not the pid, not a counter or clock.
        self.assertGreaterEqual(min(len(v) for v in var), 8, var[:5])
        for v, pid in zip(var, pids):
            self.assertNotIn(str(pid), v)
        vals = None
        try:
            vals = [int(v, 16) for v in var]
            diffs = [b - a for a, b in zip(vals, vals[1:])]
            self.assertFalse(all(d > 0 for d in diffs) or all(d < 0 for d in diffs), "names are monotonic")
            self.assertGreater(len(set(diffs)), n // 2, "names step regularly")
            self.assertGreater(sum(1 for d in diffs if abs(d) > 1 << 20), n // 2, "names are close together")
        except ValueError:
            pass   # not numbers: distinctness and length already checked
        bits = [sum(1 for v in vals if v >> b & 1) for b in range(32)] if vals and all(
            re.fullmatch(r"[0-9a-f]{8}", v) for v in var) else []
        self.report("temp_names", interpositions=n, distinct=len(set(names)), shape=prefix + "<%d>" % len(var[0]) + suffix,
                    bit_ones_min=min(bits) if bits else "-", bit_ones_max=max(bits) if bits else "-")
        if bits:
            # every bit of the random part varies (a 32-bit counter or a pid-based value would not)
            self.assertTrue(all(0 < b < n for b in bits), bits)

    def test_nonroot_udsdump_refused_on_root_socket(self):
        """nobody may write the folder but not connect to root's 0600 socket: udsdump run by nobody must
        refuse (a relay it cannot give root's owner would lock root's clients out), changing nothing."""
        folder = os.path.join(self.tmp, "run")
        os.mkdir(folder, 0o755)
        os.chown(folder, NOBODY, NOBODY)
        path = os.path.join(folder, "app.sock")
        self.start_http(path, mode="0600")
        self.assertEqual(self.client_as(path, NOBODY, NOBODY), "PermissionError", "the setup: nobody is shut out")
        orig, before = ident(path), sorted(os.listdir(folder))
        r = subprocess.run([*as_user(NOBODY, NOBODY), self.for_others(UDSDUMP), "--capture", "--extcap-interface",
                            "unix:" + path,
                            "--fifo", "-"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        err = r.stderr.decode(errors="replace").strip()
        self.assertNotEqual(r.returncode, 0, "a non-root udsdump interposed on root's 0600 socket")
        self.assertEqual(r.stdout, b"", "no capture may start")
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertTrue(err.startswith("udsdump: ") and path in err, "udsdump's own refusal, naming the path: %r" % err)
        self.assertEqual(ident(path), orig)
        self.assertEqual(sorted(os.listdir(folder)), before)
        self.assertEqual(http_get(path), (200, b"hello\n"))
        self.report("nonroot_udsdump", refused=err[:100].replace(" ", "_"))

    def test_clients_reach_exactly_what_they_reached_before(self):
        """Root's udsdump in front: each client identity gets the same answer as without it - refused
        where it was refused, and seen by the server as itself where it was let in."""
        folder = os.path.join(self.tmp, "run")
        os.mkdir(folder, 0o755)
        cases = []
        for mode, group in (("0600", None), ("0660", "nogroup"), ("0666", None)):
            path = os.path.join(folder, "m%s.sock" % mode)
            self.start_http(path, mode=mode, group=group)
            for who in ((NOBODY, NOBODY, None), (DAEMON, DAEMON, None), (DAEMON, DAEMON, (NOBODY,)), (0, 0, None)):
                cases.append((path, who))
        direct = {(p, w): self.client_as(p, *w) for p, w in cases}
        relayed = {}
        for path in sorted({p for p, _ in cases}):
            u = self.start_udsdump(path)
            for p, w in cases:
                if p == path:
                    relayed[(p, w)] = self.client_as(p, *w)
            self.stop_udsdump(u)
        for k in direct:
            with self.subTest(socket=os.path.basename(k[0]), who=k[1]):
                self.assertEqual(relayed[k], direct[k])
        self.assertIn("PermissionError", direct.values(), "the setup must shut someone out")
        self.report("same_reach", cases=len(direct), refused=sum(1 for v in direct.values() if "Error" in v))


if __name__ == "__main__":
    main()
