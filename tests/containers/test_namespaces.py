#!/usr/bin/env python3
"""Container sockets, with the kernel's own containers: servers started by `unshare` in their own
network namespace (socket on a host path, as with a bind-mounted volume) and in their own mount and
network namespace (socket on a tmpfs only that namespace sees, reached from here as /proc/PID/root/...).

Everything is real: tshark lists and captures through the built udsdump as a personal extcap, curl is
the client, the kernel makes the namespaces.  The checks are the issue's: listed with the process,
HTTP decoded and labelled, the socket exactly restored (also after SIGKILL of udsdump, and by
`udsdump --restore` when the guardian is killed too), the capture ending by itself when the container's
process exits, and symlinks planted in the container's filesystem never leading udsdump outside it.
"""
import os
import re
import signal
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
from udstest import HTTP_SERVER, ident, main  # noqa: E402
from test_e2e import REQUESTS, E2eCase, LineReader, pids_running, wait_gone  # noqa: E402


def namespaces_usable():
    """Why these tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (unshare of network and mount namespaces, interposing on root's sockets)"
    r = subprocess.run(["unshare", "--net", "--mount", "true"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if r.returncode != 0:
        return "unshare --net --mount is not allowed here: " + r.stderr.decode(errors="replace").strip()
    return None


SKIP = namespaces_usable()


@unittest.skipIf(SKIP, SKIP or "")
class NamespaceCase(E2eCase):
    """E2eCase with the server in namespaces of its own; subclasses say which."""
    UNSHARE = ["--net"]

    def start_ns_server(self, script, *args):
        fifo = self._ready_fifo("ns-server")
        argv = ["unshare", *self.UNSHARE, "--", "sh", "-c", script, "sh", sys.executable, HTTP_SERVER, fifo, *args]
        p = self.spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_ready(fifo, p, "the HTTP server in its namespaces")
        self.server = p
        return p

    # ---- the scenarios both kinds share ----

    def tshark_D_line(self):
        r = subprocess.run(["tshark", "-D"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr.decode(errors="replace"))
        out = r.stdout.decode(errors="replace")
        hits = [l for l in out.splitlines() if re.search(r"\. unix:%s \(" % re.escape(self.path), l)]
        self.assertEqual(len(hits), 1, "tshark -D should list unix:%s once:\n%s" % (self.path, out))
        return hits[0]

    def test_listed_by_tshark_with_its_process(self):
        line = self.tshark_D_line()
        self.assertIn("(python3, pid %d" % self.server.pid, line)
        self.assertEqual(ident(self.path), self.orig)

    def test_tshark_captures_http_decoded_and_labelled(self):
        out = os.path.join(self.tmp, "capture.pcapng")
        self.capture_http_with_tshark(out)
        if self.lua:
            served = self.tshark_read("-r", out, "-Y", "http.response && unix.server.pid == %d" % self.server.pid)
            self.assertEqual(len(served), REQUESTS, "every answer labelled with the server in its namespace")

    def start_capture(self):
        p = self.spawn([self.extcap, "-i", "unix:" + self.path, "-w", os.path.join(self.tmp, "out.pcap")],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.wait_interposed(p, "udsdump")
        self.assertEqual(self.curl("/?through-the-relay"), b"hello\n")
        return p

    def test_sigkill_of_udsdump_restores_exactly(self):
        p = self.start_capture()
        p.kill()
        p.wait(timeout=30)
        self.assert_restored(self.extcap)
        self.assertEqual(self.curl(), b"hello\n")

    def test_restore_after_sigkill_of_udsdump_and_guardian(self):
        p = self.start_capture()
        guardians = [pid for pid in pids_running(self.extcap) if pid != p.pid]
        self.assertEqual(len(guardians), 1, guardians)
        os.kill(guardians[0], signal.SIGKILL)
        p.kill()
        p.wait(timeout=30)
        self.assertEqual(wait_gone(self.extcap, 10), [])
        self.assertTrue(self.interposed(), "nobody should have put it back yet")
        r = subprocess.run([self.extcap, "--restore", self.path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr.decode(errors="replace"))
        self.assertIn("put the original socket back", r.stdout.decode(errors="replace"))
        self.assert_restored(self.extcap)
        self.assertEqual(self.curl(), b"hello\n")


class OwnNetworkNamespaceTest(NamespaceCase):
    """The server is in its own network namespace; its socket is on a host path (a shared volume)."""

    def start_server(self):
        self.srv = os.path.join(self.tmp, "srv")
        os.mkdir(self.srv, 0o755)
        self.path = os.path.join(self.srv, "app.sock")
        self.start_ns_server('exec "$1" "$2" "$4" --mode 0660 --ready "$3"', self.path)
        self.assertNotEqual(os.readlink("/proc/%d/ns/net" % self.server.pid), os.readlink("/proc/self/ns/net"))

    def test_follows_a_server_restarted_in_another_namespace(self):
        """The server restarts (a new network namespace, same host path) during the capture: udsdump
        interposes on the new socket, and afterwards PATH is the new server's socket."""
        log = os.path.join(self.logdir, "udsdump.log")
        p = self.spawn([self.extcap, "-i", "unix:" + self.path, "--log-level", "debug", "--log-file", log],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.wait_interposed(p, "udsdump -i")
        lines = LineReader(p.stdout)
        old = self.server
        old.kill()
        old.wait(timeout=30)
        self.start_ns_server('exec "$1" "$2" "$4" --mode 0660 --ready "$3"', self.path)
        self.assertNotEqual(self.server.pid, old.pid)
        # Re-interposed: the backup name holds the new server's socket (a new inode: the old one was
        # still linked there when the new one was made) and PATH is a relay in front of it.
        backup = os.path.join(self.srv, ".app.sock.udsdump-orig")

        def followed():
            try:
                return ident(backup) != self.orig and ident(self.path) != ident(backup)
            except FileNotFoundError:
                return False
        with self.log_on_failure(log):
            self.assertTrue(self.watch.wait(followed, 30), os.listdir(self.srv))
        new = ident(backup)
        self.assertEqual(self.curl("/?after-restart"), b"hello\n")
        self.assertTrue(lines.wait(lambda ls: any("/?after-restart" in l for l in ls), 30), lines.lines)
        p.send_signal(signal.SIGINT)
        p.wait(timeout=30)
        self.assertEqual(ident(self.path), new, "PATH is the new server's socket again")
        self.assertEqual(sorted(os.listdir(self.srv)), self.before)
        self.assertEqual(wait_gone(self.extcap, 10), [])
        self.assertEqual(self.curl(), b"hello\n")


class OwnMountNamespaceTest(NamespaceCase):
    """The server is in its own mount and network namespace; its socket is on a tmpfs only it sees."""
    UNSHARE = ["--net", "--mount", "--propagation", "private"]

    def start_server(self):
        self.inner = os.path.join(self.tmp, "ctr")   # a tmpfs inside; an empty folder out here
        os.mkdir(self.inner, 0o755)
        self.start_ns_server('mount -t tmpfs -o mode=0755 udsdump-test "$4" && mkdir -m 0755 "$4/srv" && '
                             'exec "$1" "$2" "$4/srv/app.sock" --mode 0660 --ready "$3"', self.inner)
        self.root = "/proc/%d/root" % self.server.pid
        self.srv = self.root + self.inner + "/srv"
        self.path = self.srv + "/app.sock"
        self.assertFalse(os.path.exists(os.path.join(self.inner, "srv", "app.sock")), "only the container sees it")

    def decoy(self):
        """A host folder at the path the container's folder has inside, with a live server in it: where
        a symlink resolved against the host's root would lead."""
        host_srv = os.path.join(self.inner, "srv")
        os.mkdir(host_srv, 0o755)
        self.start_http(os.path.join(host_srv, "app.sock"))
        return host_srv, sorted(os.listdir(host_srv)), ident(os.path.join(host_srv, "app.sock"))

    def assert_unchanged(self, folder, listing, sock_ident):
        self.assertEqual(sorted(os.listdir(folder)), listing)
        self.assertEqual(ident(os.path.join(folder, "app.sock")), sock_ident)

    def run_udsdump(self, *args):
        return subprocess.run([self.extcap, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)

    def test_symlink_on_the_way_is_refused(self):
        host_srv, host_before, host_sock = self.decoy()
        link = self.root + self.inner + "/link"
        os.symlink(self.inner + "/srv", link)   # absolute: resolved against the host's root, the decoy
        for path in (link + "/app.sock", self.root + self.inner + "/srv/../link/app.sock"):
            r = self.run_udsdump("--capture", "--extcap-interface", "unix:" + path, "--fifo", os.devnull)
            err = r.stderr.decode(errors="replace")
            self.assertNotEqual(r.returncode, 0, err)
            self.assertIn("symlink", err)
            self.assertEqual(len(err.strip().splitlines()), 1, err)
        r = self.run_udsdump("--restore", link + "/app.sock")
        self.assertNotEqual(r.returncode, 0)
        self.assert_unchanged(host_srv, host_before, host_sock)
        self.assertEqual(ident(self.path), self.orig)
        self.assertEqual(sorted(os.listdir(self.srv)), self.before)

    def test_symlink_at_the_backup_name_is_left_alone(self):
        host_srv, host_before, host_sock = self.decoy()
        backup = self.srv + "/.app.sock.udsdump-orig"
        os.symlink(self.inner + "/srv/app.sock", backup)
        self.before = sorted(os.listdir(self.srv))
        r = self.run_udsdump("--capture", "--extcap-interface", "unix:" + self.path, "--fifo", os.devnull)
        self.assertNotEqual(r.returncode, 0)
        r = self.run_udsdump("--restore", self.path)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("not a socket", r.stderr.decode(errors="replace"))
        self.assert_unchanged(host_srv, host_before, host_sock)
        self.assertEqual(ident(self.path), self.orig)
        self.assertEqual(sorted(os.listdir(self.srv)), self.before)
        self.assertEqual(os.readlink(backup), self.inner + "/srv/app.sock")

    def test_folder_swapped_for_a_symlink_during_capture(self):
        """The container replaces the socket's folder by a symlink to the host's decoy while udsdump is
        interposed: udsdump keeps working in the folder it checked, and restores there."""
        host_srv, host_before, host_sock = self.decoy()
        p = self.start_capture()
        moved = self.root + self.inner + "/srv.moved"
        os.rename(self.srv, moved)
        os.symlink(self.inner + "/srv", self.srv)
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
        self.assertEqual(wait_gone(self.extcap, 10), [])
        self.assert_unchanged(host_srv, host_before, host_sock)
        self.assertEqual(ident(moved + "/app.sock"), self.orig)
        self.assertEqual(sorted(os.listdir(moved)), self.before)
        os.unlink(self.srv)
        os.rename(moved, self.srv)

    def test_capture_ends_when_the_container_process_exits(self):
        p = self.spawn([self.extcap, "-i", "unix:" + self.path], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.wait_interposed(p, "udsdump -i")
        self.server.kill()
        self.server.wait(timeout=30)
        out, err = p.communicate(timeout=30)
        self.assertEqual(p.returncode, 0, err)
        self.assertIn("pid %d, whose filesystem holds %s, exited" % (self.server.pid, self.path), err.decode())
        self.assertEqual(wait_gone(self.extcap, 10), [])


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(TimeoutError("terminated (meson timeout?)")))
    main()
