#!/usr/bin/env python3
"""Bad input: every option with bad values, hostile entries in the kernel's socket list, symlinks
planted and raced in the socket's folder, a folder others can write, junk capture filters.

The promise for each: one clear line on stderr, a non-zero exit, nothing changed on disk (the folder
listing, PATH's inode, and for -w FILE: no FILE); for listings: output Wireshark can parse, no crash.
"""
import os
import re
import shutil
import socket
import stat
import struct
import subprocess

from rel import HELPERS, RelTestCase, UDSDUMP, http_big, ident, main
from udstest import read_exactly
import wireshark as W



def run(argv, env=None, cwd=None, timeout=30):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e, cwd=cwd, timeout=timeout)


def pct_decode(value):
    """Inverse of uds_iface_encode, written independently: unix:PATH with %XX escapes -> bytes."""
    assert value.startswith("unix:"), value
    raw = value[len("unix:"):].encode()
    return re.sub(rb"%([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), raw)


IFACE_LINE = re.compile(r"^interface \{value=([^{}]*)\}\{display=([^{}]*)\}$")


def bind_listen(path, backlog=16):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if isinstance(path, bytes) and len(path) == 108:
        # Python wants room for a NUL; Linux binds a full, unterminated sun_path
        import ctypes
        from udstest import _libc
        addr = struct.pack("H", socket.AF_UNIX) + path
        if _libc.bind(s.fileno(), addr, len(addr)) < 0:
            e = ctypes.get_errno()
            s.close()
            raise OSError(e, os.strerror(e))
    else:
        s.bind(path)
    s.listen(backlog)
    return s


class BadInputTest(RelTestCase):
    WATCHDOG = 300

    # ---- options ----

    def _refused(self, argv, what, cwd=None, out=None, path=None):
        before = self.listing()
        orig = ident(path) if path else None
        r = run(argv, cwd=cwd or self.tmp)
        err = r.stderr.decode(errors="replace").strip()
        self.assertNotEqual(r.returncode, 0, "%s: accepted: %s" % (what, argv[1:]))
        self.assertNotIn(r.returncode, (-11, -6, 134, 139), "%s: crashed" % what)
        self.assertEqual(len(err.splitlines()), 1, "%s: one clear line, got %r" % (what, err))
        self.assertTrue(err.startswith("udsdump: "), "%s: %r" % (what, err))
        self.assertEqual(self.listing(), before, "%s changed the folder" % what)
        if out:
            self.assertFalse(os.path.lexists(out), "%s created the -w file" % what)
        if path:
            self.assertEqual(ident(path), orig, "%s touched PATH" % what)
        return err

    def test_every_option_with_bad_values(self):
        path = os.path.join(self.tmp, "app.sock")
        self.start_http(path)
        out = os.path.join(self.tmp, "out.cap")
        sub = os.path.join(self.tmp, "folder")
        os.mkdir(sub)
        plain = os.path.join(self.tmp, "plain-file")
        open(plain, "w").close()
        iface = "unix:" + path
        bad = {
            "--buffer-size": ["0", "-1", "1025", "abc", "", "99999999999"],
            "--snaplen": ["-1", "262145", "x", "1e3"],
            "--mode": ["sideways", ""],
            "--protocol": ["nonsense", "0", "65536", "-1", "", "http\n"],
            "--only-pid": ["-3", "abc", "99999999999"],
            "--only-uid": ["-5", "abc"],
            "--only-comm": ["", "sixteen-chars-xx"],
            "-c": ["-1", "abc", ""],
            "--log-level": ["loud", ""],
            "--log-file": ["/nonexistent-folder/x.log", sub],
            "--side-path": ["relative.sock", "/" + "x" * 120],
            "--extcap-capture-filter": ["tcp port banana", "((", os.fsdecode(b"\xff")],
        }
        n = 0
        for opt, values in bad.items():
            for v in values:
                extra = ["--mode", "side"] if opt == "--side-path" else []
                with self.subTest(opt=opt, value=v):
                    self._refused([UDSDUMP, "-i", iface, "-w", out, *extra, opt, v], "%s %r" % (opt, v), out=out, path=path)
                    n += 1
        whole = [
            ["-i", "bogus", "-w", out],
            ["-i", "unix:", "-w", out],
            ["-i", "unix:%zz", "-w", out],
            ["-i", "unix:%00x", "-w", out],
            ["-i", "unix:relative.sock", "-w", out],
            ["-i", "unix:@abstract", "-w", out],
            ["-i", "unix:/" + "y" * 120, "-w", out],
            ["-i", "unix:" + os.path.join(self.tmp, "missing.sock"), "-w", out],
            ["-i", "unix:" + plain, "-w", out],
            ["-i", "unix:" + sub, "-w", out],
            ["-i", "udsdump", "-w", out],
            ["-i", "udsdump", "--socket-path", "rel.sock", "-w", out],
            ["-i", iface, "-w", out, "--mode", "side"],
            ["-i", iface, "-w", out, "--side-path", os.path.join(self.tmp, "s.sock")],
            ["-i", iface, "-w", out, "--mode", "side", "--side-path", path],
            ["-i", iface, "-w", out, "--mode", "side", "--side-path", plain],
            ["-i", iface, "-w", out, "-f", "tcp", "udp"],
            ["-i", iface, "-w", out, "tcp", "port", "banana"],
            ["-i", iface, "-w", os.path.join(self.tmp, "no-such-folder", "x.cap")],
            ["-i", iface, "-w", sub],
            ["-i", iface, "-w", out, "--fifo", os.path.join(self.tmp, "f")],
            ["--fifo", os.path.join(self.tmp, "f")],
            ["--extcap-interfaces", "-D"],
            ["--extcap-dlts"],
            ["--extcap-config", "--extcap-interface", "bogus"],
            ["--extcap-dlts", "--extcap-interface", "bogus"],
            ["--capture", "--extcap-interface", iface],
            ["--capture", "--fifo", os.path.join(self.tmp, "f")],
            ["--restore", "relative.sock"],
            ["-i", iface, "-w", out, "--no-such-option"],
            ["-i", iface, "-w", out, "-Z"],
            [],
        ]
        for argv in whole:
            with self.subTest(argv=argv):
                self._refused([UDSDUMP, *argv], " ".join(argv)[:80], out=out, path=path)
                n += 1
        self.report("bad_options", cases=n)

    def test_bad_options_under_wireshark_release_the_fifo(self):
        """As Wireshark starts it (--capture --fifo): a refusal also opens and closes the FIFO, so a
        reader waiting on it sees EOF at once instead of hanging."""
        path = os.path.join(self.tmp, "app.sock")
        self.start_http(path)
        fifo = os.path.join(self.tmp, "ws.fifo")
        os.mkfifo(fifo)
        for extra in (["--buffer-size", "0"], ["--extcap-capture-filter", "(("], ["--mode", "x"],
                      ["--no-such-option"], ["--log-file", "/nonexistent-folder/x.log"]):
            with self.subTest(extra=extra):
                rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
                try:
                    self._refused([UDSDUMP, "--capture", "--extcap-interface", "unix:" + path, "--fifo", fifo, *extra],
                                  " ".join(extra), path=path)
                    # the writer came and went: a blocking read now sees EOF, it cannot hang
                    os.set_blocking(rfd, True)
                    self.assertEqual(os.read(rfd, 10), b"")
                finally:
                    os.close(rfd)

    # ---- hostile /proc/net/unix ----

    def _hostile_sockets(self, folder):
        """Real listening sockets at hostile paths; returns {path bytes: socket}."""
        os.makedirs(folder)
        fb = os.fsencode(folder)
        names = [b"with space.sock", b"new\nline.sock", b"\xff\xfe-not-utf8.sock", b"brace}{display=evil}.sock",
                 b"percent%41.sock", b"tab\tctl\x01\x7f.sock", b"\xc3\xa9t\xc3\xa9 caf\xc3\xa9.sock", b"{}.sock",
                 b"} {.sock", b"trailing-space .sock", b"\r\n\r\n.sock"]
        socks = {}
        for nm in names:
            p = fb + b"/" + nm
            socks[p] = bind_listen(p)
        # 108 bytes, the most sun_path holds (no terminating NUL), and 107, the most a client can name
        for total in (108, 107):
            p = fb + b"/" + b"L" * (total - len(fb) - 1)
            self.assertEqual(len(p), total)
            socks[p] = bind_listen(p)
        return socks

    def _check_interfaces_output(self, out, want_paths):
        lines = out.split(b"\n")
        self.assertEqual(lines[-1], b"", "output ends with a newline")
        values = []
        for raw in lines[:-1]:
            line = raw.decode("utf-8")   # raises on invalid UTF-8: Wireshark drops such lines
            if line.startswith("extcap "):
                continue
            m = IFACE_LINE.match(line)
            self.assertIsNotNone(m, "unparseable line %r" % line)
            values.append(m.group(1))
        decoded = [pct_decode(v) for v in values if v.startswith("unix:")]
        for p in want_paths:
            self.assertIn(p, decoded, "hostile path %r not listed (or not decodable)" % p)
        return values

    def _fixture(self, root, entries, procs):
        """A proc tree: root/net/unix holding `entries` (text bytes), and per pid a comm and fd links."""
        os.makedirs(os.path.join(root, "net"))
        with open(os.path.join(root, "net", "unix"), "wb") as f:
            f.write(b"Num       RefCount Protocol Flags    Type St Inode Path\n" + entries)
        for pid, (comm, inodes) in procs.items():
            d = os.path.join(root, str(pid))
            os.makedirs(os.path.join(d, "fd"))
            with open(os.path.join(d, "comm"), "wb") as f:
                f.write(comm + b"\n")
            for i, ino in enumerate(inodes):
                os.symlink("socket:[%d]" % ino, os.path.join(d, "fd", str(i + 3)))

    def test_hostile_paths_in_fixture_proc(self):
        socks = self._hostile_sockets(os.path.join(self.tmp, "h"))
        try:
            # junk the parser must skip: garbage, binary noise (where no named entry precedes it: after
            # one, a line that is not an entry is the rest of that entry's path, as the kernel prints a
            # "\n" in a path), a forged entry naming a non-socket, an abstract name, a client end, an
            # over-long path; and at the end, a last line cut short
            entries = b"\x00\x01\x02 garbage \xff\n" + os.urandom(4096).replace(b"\n", b"") + b"\n"
            entries += b"0000000000000000: 00000002 00000000 00010000 0001 01 9999 /etc/passwd\n"
            entries += b"0000000000000000: 00000002 00000000 00010000 0001 01 9998 @abstract\n"
            entries += b"0000000000000000: 00000003 00000000 00000000 0001 03 9997 /run/client\n"
            entries += b"0000000000000000: 00000002 00000000 00010000 0001 01 9996 /" + b"z" * 300 + b"\n"
            procs = {1: (b"systemd", []), 4242: (b"evil}{x\n\xff", []), 77: (b"ok", [])}
            for i, p in enumerate(sorted(socks)):
                ino = 5000 + i
                entries += b"0000000000000000: 00000002 00000000 00010000 0001 01 %d %s\n" % (ino, p)
                procs[4242 if i % 2 else 77][1].append(ino)
                procs[1][1].append(ino)
            entries += b"0000000000000000: 00000002 00000000 00010000 0001 01 9995 /cut-sh"
            root = os.path.join(self.tmp, "proc")
            self._fixture(root, entries, procs)
            env = {"UDSDUMP_PROC_ROOT": root}
            r = run([UDSDUMP, "--extcap-interfaces", "--extcap-version=4.0"], env=env)
            self.assertEqual(r.returncode, 0, r.stderr)
            values = self._check_interfaces_output(r.stdout, list(socks))
            decoded = [pct_decode(v) for v in values if v.startswith("unix:")]
            # The listening abstract name is a socket too: listed (unix:@NAME) where observe mode is built.
            decoded = [d for d in decoded if d != b"@abstract"]
            self.assertNotIn(b"/etc/passwd", decoded)
            self.assertEqual(len(decoded), len(socks), "exactly the hostile sockets: %r" % decoded)
            for v in values:
                for flag in ("--extcap-config", "--extcap-dlts"):
                    c = run([UDSDUMP, flag, "--extcap-interface", v], env=env)
                    self.assertEqual(c.returncode, 0, (flag, v, c.stderr))
                    for line in c.stdout.decode("utf-8").splitlines():
                        self.assertRegex(line, r"^(arg|value|dlt) \{")
            # Wireshark's own parser is the judge: tshark -D lists every one of them.
            if shutil.which("tshark"):
                home = os.path.join(self.tmp, "wshome")
                W.install_personal(home, extcap=UDSDUMP, lua=None)
                t = run(["tshark", "-D"], env=dict(env, HOME=home), timeout=120)
                listed = [ln for ln in t.stdout.decode("utf-8", "replace").splitlines()
                          if "unix:" + os.path.join(self.tmp, "h") in ln]
                self.assertEqual(len(listed), len(socks), "tshark -D lists %d of %d: %s" % (
                    len(listed), len(socks), t.stdout.decode("utf-8", "replace")))
            r = run([UDSDUMP, "-D"], env=env)
            self.assertEqual(r.returncode, 0, r.stderr)
            lines = [ln for ln in r.stdout.decode("utf-8").splitlines() if not ln.endswith(".unix:@abstract")]
            self.assertEqual(len(lines), len(socks), "one line per socket, newlines in paths escaped: %r" % lines)
            for i, line in enumerate(lines):
                self.assertTrue(line.startswith("%d.unix:" % (i + 1)), line)
            # a proc root with no net/unix, an empty one, and pure noise: no crash, the generic interface
            for content in (None, b"", os.urandom(1 << 16), b"\n" * 100000):
                shutil.rmtree(root)
                os.makedirs(os.path.join(root, "net"))
                if content is not None:
                    with open(os.path.join(root, "net", "unix"), "wb") as f:
                        f.write(content)
                r = run([UDSDUMP, "--extcap-interfaces"], env=env)
                self.assertEqual(r.returncode, 0)
                self.assertIn(b"interface {value=udsdump}", r.stdout)
                self._check_interfaces_output(r.stdout, [])
                r = run([UDSDUMP, "-D"], env=env)
                self.assertNotIn(r.returncode, (-11, -6, 134, 139))
                r.stdout.decode("utf-8")
        finally:
            for s in socks.values():
                s.close()

    def test_hostile_paths_live(self):
        """The same hostile names on the real /proc: listed, parseable, and each one capturable through
        the value the listing gave (decoded back to the exact bytes), then put back."""
        folder = os.path.join(self.tmp, "h")
        socks = self._hostile_sockets(folder)
        try:
            r = run([UDSDUMP, "--extcap-interfaces", "--extcap-version=4.0"])
            self.assertEqual(r.returncode, 0, r.stderr)
            fb = os.fsencode(folder)
            want = [p for p in socks if len(p) <= 107]   # 108: no client can name it; may be left out
            values = self._check_interfaces_output(r.stdout, want)
            mine = {pct_decode(v): v for v in values if v.startswith("unix:") and pct_decode(v).startswith(fb + b"/")}
            for p in (fb + b"/new\nline.sock", fb + b"/\xff\xfe-not-utf8.sock", fb + b"/brace}{display=evil}.sock",
                      fb + b"/" + b"L" * (107 - len(fb) - 1)):
                with self.subTest(path=p):
                    s = socks[p]
                    orig = ident(p)
                    before = sorted(os.listdir(fb))
                    argv = [UDSDUMP, "--capture", "--extcap-interface", mine[p], "--fifo", "-"]
                    u = self.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                    read_exactly(u.stdout, 24, timeout=15)
                    self.assertNotEqual(ident(p), orig, "interposed")
                    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    c.settimeout(10)
                    c.connect(p)
                    a, _ = s.accept()
                    c.sendall(b"ping")
                    self.assertEqual(a.recv(10), b"ping")
                    a.close()
                    c.close()
                    u.terminate()
                    u.wait(15)
                    self.assertEqual(ident(p), orig)
                    self.assertEqual(sorted(os.listdir(fb)), before)
        finally:
            for s in socks.values():
                s.close()

    def test_forged_entry_via_path_on_real_proc(self):
        """A socket bound at a relative name holding "\\n" + a fake entry line: /proc/net/unix then shows
        an entry for any path the binder likes.  The listing must not offer a socket nobody listens on."""
        stale = os.path.join(self.tmp, "v.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(stale)
        s.close()                       # a socket file, nobody listening
        fake = ("x\n0000000000000000: 00000002 00000000 00010000 0001 01 12345 " + stale).encode()
        self.assertLessEqual(len(fake), 107)
        cwd = os.getcwd()
        os.chdir(self.tmp)
        try:
            os.makedirs(os.path.dirname(fake))
            forger = bind_listen(fake)
        finally:
            os.chdir(cwd)
        try:
            with open("/proc/net/unix", "rb") as f:
                self.assertIn(b"\n0000000000000000: 00000002 00000000 00010000 0001 01 12345 " + os.fsencode(stale) + b"\n",
                              f.read(), "the kernel prints the forged line")
            r = run([UDSDUMP, "--extcap-interfaces"])
            self.assertEqual(r.returncode, 0)
            values = self._check_interfaces_output(r.stdout, [])
            self.assertNotIn(os.fsencode(stale), [pct_decode(v) for v in values if v.startswith("unix:")],
                             "a forged entry was listed")
        finally:
            forger.close()

    # ---- symlinks ----

    def _victim(self):
        """A file outside the socket's folder that udsdump must never touch."""
        elsewhere = os.path.join(self.tmp, "elsewhere")
        os.mkdir(elsewhere, 0o700)
        victim = os.path.join(elsewhere, "victim")
        with open(victim, "w") as f:
            f.write("keep me\n")
        os.chmod(victim, 0o600)
        os.chown(victim, 65534, 65534)
        return elsewhere, victim

    def _victim_state(self, elsewhere, victim):
        st = os.lstat(victim)
        with open(victim) as f:
            body = f.read()
        return (sorted(os.listdir(elsewhere)), st.st_ino, st.st_mode, st.st_uid, st.st_gid, st.st_size,
                st.st_mtime_ns, st.st_ctime_ns, body)

    def test_planted_symlinks(self):
        """Symlinks to a file elsewhere planted at the names udsdump uses (the backup name, temporary
        name shapes): a capture refuses or works, and never follows them."""
        folder = os.path.join(self.tmp, "run")
        os.mkdir(folder)
        path = os.path.join(folder, "app.sock")
        self.start_http(path, mode="0666")
        elsewhere, victim = self._victim()
        want = self._victim_state(elsewhere, victim)
        orig = ident(path)
        for planted in (".app.sock.udsdump-orig", ".app.sock.udsdump-00000000", ".udsdump-00000000"):
            with self.subTest(planted=planted):
                link = os.path.join(folder, planted)
                os.symlink(victim, link)
                before = sorted(os.listdir(folder))
                r = self.spawn([UDSDUMP, "--capture", "--extcap-interface", "unix:" + path, "--fifo", "-"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                head = r.stdout.read(24)
                if len(head) == 24:
                    self.assertEqual(http_big(path, 1000)[0], "ok")
                    r.terminate()
                rc = r.wait(15)
                err = r.stderr.read().decode(errors="replace").strip()
                if len(head) < 24:
                    self.assertNotEqual(rc, 0)
                    self.assertEqual(len(err.splitlines()), 1, err)
                self.assertEqual(ident(path), orig)
                self.assertEqual(os.readlink(link), victim, "the planted symlink was replaced")
                self.assertEqual(sorted(os.listdir(folder)), before)
                self.assertEqual(self._victim_state(elsewhere, victim), want, "udsdump wrote through a symlink")
                os.unlink(link)

    def _race(self, targets, rounds, path_must_survive):
        folder = os.path.join(self.tmp, "run")
        os.mkdir(folder)
        path = os.path.join(folder, "app.sock")
        srv = self.start_http(path, mode="0666")
        elsewhere, victim = self._victim()
        want = self._victim_state(elsewhere, victim)
        orig = ident(path)
        racer = self.spawn([HELPERS["symlink-racer"], folder, "app.sock", victim, targets],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.assertEqual(racer.stdout.readline().strip(), b"ready")
        started = refused = broken = 0
        try:
            for i in range(rounds):
                r = subprocess.Popen([UDSDUMP, "--capture", "--extcap-interface", "unix:" + path, "--fifo", "-"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                head = r.stdout.read(24)
                if len(head) == 24:
                    started += 1
                    r.terminate()
                rc = r.wait(15)
                err = r.stderr.read().decode(errors="replace").strip()
                r.stdout.close()
                r.stderr.close()
                if len(head) < 24:
                    refused += 1
                    self.assertNotEqual(rc, 0)
                    self.assertLessEqual(len(err.splitlines()), 1, err)
                self.assertEqual(self._victim_state(elsewhere, victim), want,
                                 "round %d: udsdump wrote through a symlink" % i)
                if not os.path.lexists(path) or ident(path) != orig:
                    what = (stat.filemode(os.lstat(path).st_mode) + " " + (os.readlink(path) if os.path.islink(path) else "")
                            if os.path.lexists(path) else "missing")
                    self.assertFalse(path_must_survive, "round %d: PATH is no longer the server's socket: %s" % (i, what))
                    broken += 1
                    srv.kill()
                    srv.wait()
                    srv = self.start_http(path, mode="0666")   # a server restart repairs PATH
                    orig = ident(path)
        finally:
            racer.stdin.close()
            out = racer.stdout.read().decode().strip()
            racer.wait(10)
        self.report("symlink_race_" + targets, rounds=rounds, started=started, refused=refused, path_broken=broken,
                    racer=out.replace(" ", ","))
        # the racer's own symlinks stay where it put them; nothing of udsdump's does
        left = [n for n in os.listdir(folder) if n != "app.sock" and not os.path.islink(os.path.join(folder, n))]
        self.assertEqual(left, [], "udsdump leftovers")

    def test_symlink_race_on_temporary_names(self):
        """A process replaces every new name in the folder with a symlink to a file elsewhere, as fast
        as inotify tells it, while udsdump interposes and restores many times: udsdump never writes
        through the symlinks, and PATH is the server's socket after every round."""
        self._race("temp", int(os.environ.get("UDSDUMP_RACE_ROUNDS", "150")), True)

    def test_symlink_race_on_all_names(self):
        """The same, the backup name included: PATH may suffer (whoever can write the folder can break
        PATH anyway), but udsdump must never write through a symlink."""
        self._race("all", int(os.environ.get("UDSDUMP_RACE_ROUNDS", "60")) // 2, False)

    # ---- the folder ----

    def test_folder_others_can_write(self):
        folder = os.path.join(self.tmp, "pub")
        os.mkdir(folder)
        path = os.path.join(folder, "app.sock")
        self.start_http(path, mode="0666")
        for mode in (0o777, 0o722, 0o703):
            with self.subTest(mode=oct(mode)):
                os.chmod(folder, mode)
                before = sorted(os.listdir(folder))
                err = self._refused([UDSDUMP, "-i", "unix:" + path, "-w", os.path.join(self.tmp, "o.cap")],
                                    "folder %o" % mode, out=os.path.join(self.tmp, "o.cap"), path=path)
                self.assertIn("writ", err.lower())
                self.assertEqual(sorted(os.listdir(folder)), before)
        # sticky (like /tmp): others cannot rename or remove our names - allowed
        os.chmod(folder, 0o1777)
        u = self.start_udsdump(path)
        self.assertEqual(http_big(path, 5000)[0], "ok")
        self.stop_udsdump(u)
        os.chmod(folder, 0o755)

    # ---- capture filters ----

    def test_junk_capture_filters(self):
        path = os.path.join(self.tmp, "app.sock")
        self.start_http(path)
        out = os.path.join(self.tmp, "o.cap")
        junk = ["tcp port banana", "((", ")", "tcp and", "port 99999", "ether[", "ip[1:5] = 1", "tcp\nport banana", "\t((\t",
                os.fsdecode(b"\xff\xfe"), "tcp port 80 ) or (", "(" * 20000, "tcp port " + "9" * 5000, "vlan 5000",
                "ether host zz:zz:zz:zz:zz:zz", "net 10.0.0.0/33",
                "len <= ", "%s", "%n%n%n%n", "\\", "''"]
        for f in junk:
            if os.path.lexists(out):
                os.unlink(out)   # a failed case must not fail the next ones
            with self.subTest(filter=f[:40]):
                self._refused([UDSDUMP, "-i", "unix:" + path, "-w", out, "-f", f], "filter %r" % f[:40], out=out, path=path)
                # Wireshark's check as the user types: exit 0, the message on stdout's first line
                r = run([UDSDUMP, "--extcap-interface", "unix:" + path, "--extcap-capture-filter", f])
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertNotEqual(r.stdout.strip(), b"", "filter %r reported valid" % f[:40])
                r.stdout.decode("utf-8")
        r = run([UDSDUMP, "--extcap-interface", "unix:" + path, "--extcap-capture-filter", "tcp port 80"])
        self.assertEqual((r.returncode, r.stdout), (0, b""), "a good filter is valid")
        self.report("junk_filters", cases=len(junk))


if __name__ == "__main__":
    main()
