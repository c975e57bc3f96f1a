#!/usr/bin/env python3
"""Container sockets with a real Docker (Debian's docker.io): a dockerd of the test's own (its socket,
data root and exec root in the test's folder, no iptables, no bridge), a busybox image imported from
busybox-static, and two `docker run --network none` containers serving HTTP with the host's python3
(/usr mounted read-only): one on a volume (-v HOST:/run/app), one on the container's own overlay
filesystem.  Both must be listed by tshark -D with the container's name and captured by tshark -i with
curl's HTTP decoded and labelled, and each socket put back exactly, also after SIGKILL of udsdump.

Skips, saying why, only where Docker cannot run (no dockerd, not root, dockerd failing to start); the
test stops its containers and its dockerd and leaves no mount, process or folder behind.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
from udstest import DirWatch, HTTP_SERVER, ident, main  # noqa: E402
from test_e2e import E2eCase, wait_pids_gone  # noqa: E402

IMAGE = "udsdump-test-busybox"


def docker_missing():
    if os.geteuid() != 0:
        return "needs root to run dockerd"
    for exe in ("dockerd", "docker", "containerd"):
        if not shutil.which(exe):
            return "%s is not installed (apt-get install docker.io; scripts/setup test installs it)" % exe
    if not os.path.isfile("/bin/busybox") and not shutil.which("busybox"):
        return "busybox is not installed (apt-get install busybox-static)"
    return None


SKIP = docker_missing()


@unittest.skipIf(SKIP, SKIP or "")
class DockerTest(E2eCase):
    def docker(self, *args, check=True, timeout=120):
        r = subprocess.run(["docker", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                           env=dict(os.environ, DOCKER_HOST="unix://" + self.dsock))
        if check and r.returncode != 0:
            raise AssertionError("docker %s: %s" % (" ".join(args), r.stderr.decode(errors="replace")))
        return r.stdout.decode(errors="replace").strip()

    def start_dockerd(self):
        d = os.path.join(self.tmp, "d")
        os.mkdir(d, 0o700)
        self.dsock = os.path.join(d, "docker.sock")
        self.data_root = os.path.join(d, "data")
        self.dlog = os.path.join(self.logdir, "dockerd.log")
        watch = DirWatch(d)
        with open(self.dlog, "wb") as log:
            self.dockerd = self.spawn(["dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none",
                                       "-H", "unix://" + self.dsock, "--data-root", self.data_root,
                                       "--exec-root", os.path.join(d, "exec"), "--pidfile", os.path.join(d, "pid")],
                                      stdout=log, stderr=subprocess.STDOUT)
        up = watch.wait(lambda: os.path.exists(self.dsock) or self.dockerd.poll() is not None, 60)
        watch.close()
        # The socket exists before the API answers: the server's version, asked until it comes (the
        # client's part of `docker version` prints whether or not a server answers).
        deadline = time.monotonic() + 60
        while up and self.dockerd.poll() is None and time.monotonic() < deadline:
            if self.docker("version", "--format", "{{.Server.Version}}", check=False):
                break
            time.sleep(0.2)   # a state polled, not an event: dockerd says nothing when it is ready
        if not up or self.dockerd.poll() is not None:
            with open(self.dlog, errors="replace") as f:
                tail = f.read()[-600:]
            self.stop_docker(check=False)   # what a dockerd that died left is cleaned, not judged
            self.skipTest("dockerd cannot run here: " + tail.replace("\n", " | "))
        self.assertTrue(self.docker("version", "--format", "{{.Server.Version}}", check=False),
                        "dockerd never answered in 60 s")

    def import_image(self):
        root = os.path.join(self.tmp, "rootfs")
        for sub in ("bin", "usr", "tmp", "run/app", "proc", "sys", "dev", "etc", "tools"):
            os.makedirs(os.path.join(root, sub))
        os.chmod(os.path.join(root, "tmp"), 0o1777)
        shutil.copy(shutil.which("busybox") or "/bin/busybox", os.path.join(root, "bin", "busybox"))
        for applet in ("sh", "ls", "cat", "mkdir"):
            os.symlink("busybox", os.path.join(root, "bin", applet))
        os.symlink("usr/lib", os.path.join(root, "lib"))
        os.symlink("usr/lib64", os.path.join(root, "lib64"))
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        r = subprocess.run(["docker", "import", "-", IMAGE], stdin=tar.stdout, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=dict(os.environ, DOCKER_HOST="unix://" + self.dsock), timeout=120)
        tar.stdout.close()
        tar.wait()
        self.assertEqual(r.returncode, 0, r.stderr.decode(errors="replace"))

    def run_container(self, name, sock, *volumes):
        """docker run --network none NAME serving HTTP on sock (a path inside); returns its pid here."""
        fifo = self._ready_fifo(name)
        os.chmod(fifo, 0o666)
        self.docker("run", "-d", "--name", name, "--network", "none", "-v", "/usr:/usr:ro",
                    "-v", os.path.dirname(HTTP_SERVER) + ":/tools:ro", "-v", fifo + ":/ready", *volumes, IMAGE,
                    "/usr/bin/python3", "/tools/" + os.path.basename(HTTP_SERVER), sock, "--mode", "0660",
                    "--ready", "/ready")
        self.containers.append(name)
        rfd = os.open(fifo, os.O_RDONLY)   # blocks until the server opens it to say it listens
        try:
            pid = int(os.read(rfd, 64) or b"0")
        finally:
            os.close(rfd)
        os.unlink(fifo)
        info = json.loads(self.docker("inspect", name))[0]
        self.assertTrue(pid > 0 and info["State"]["Running"], info["State"])
        return info["State"]["Pid"]

    def stop_docker(self, check=True):
        for name in getattr(self, "containers", []):
            self.docker("rm", "-f", name, check=False)
        if getattr(self, "dockerd", None) and self.dockerd.poll() is None:
            self.dockerd.send_signal(signal.SIGTERM)
            self.dockerd.wait(timeout=60)
        with open("/proc/self/mounts") as f:
            left = [l.split()[1] for l in f if self.tmp in l]
        for m in reversed(left):
            subprocess.run(["umount", "-l", m], stderr=subprocess.DEVNULL)
        if check:
            self.assertEqual(left, [], "dockerd left mounts behind")

    def start_server(self):
        self.containers = []
        self.start_dockerd()
        self.import_image()
        self.volume = os.path.join(self.tmp, "volume")
        os.mkdir(self.volume, 0o755)
        self.pid_vol = self.run_container("udsdump-vol", "/run/app/app.sock", "-v", self.volume + ":/run/app")
        self.pid_own = self.run_container("udsdump-own", "/tmp/app.sock")
        # First the socket on the container's own overlay filesystem; the test switches to the other.
        self.srv = "/proc/%d/root/tmp" % self.pid_own
        self.path = self.srv + "/app.sock"

    def tearDown(self):
        # Docker first: E2eCase's tearDown would SIGTERM dockerd with the containers still running.
        try:
            self.stop_docker()
            self.assertEqual(wait_pids_gone(lambda: self.processes_mentioning(self.tmp), 30), [],
                             "docker processes left running")
        finally:
            super().tearDown()

    @staticmethod
    def processes_mentioning(text):
        """Pids whose command line holds text (containerd's shims name the test's exec root)."""
        pids = []
        for d in os.listdir("/proc"):
            try:
                if d.isdigit() and text.encode() in open("/proc/%s/cmdline" % d, "rb").read():
                    pids.append(int(d))
            except OSError:
                pass
        return pids

    def use(self, srv):
        """Points the E2eCase machinery (self.path, the folder watch, the before-state) at srv."""
        self.watch.close()
        self.srv, self.path = srv, srv + "/app.sock"
        self.orig, self.before = ident(self.path), sorted(os.listdir(self.srv))
        self.watch = DirWatch(self.srv)

    def test_docker_containers(self):
        r = subprocess.run(["tshark", "-D"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env, timeout=120)
        listing = r.stdout.decode(errors="replace")
        sockets = {
            "udsdump-own": "/proc/%d/root/tmp" % self.pid_own,
            "udsdump-vol": "/proc/%d/root/run/app" % self.pid_vol,
        }
        for name, srv in sockets.items():
            line = [l for l in listing.splitlines() if re.search(r"\. unix:%s/app.sock \(" % re.escape(srv), l)]
            self.assertEqual(len(line), 1, "tshark -D: %s\n%s" % (srv, listing))
            self.assertIn("container %s)" % name, line[0])
        for name, srv in sockets.items():
            with self.subTest(container=name):
                self.use(srv)
                self.capture_http_with_tshark(os.path.join(self.tmp, name + ".pcapng"))
                # SIGKILL: the guardian puts it back.
                k = self.spawn([self.extcap, "-i", "unix:" + self.path, "-w", os.devnull], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
                self.wait_interposed(k, "udsdump")
                self.assertEqual(self.curl(), b"hello\n")
                k.kill()
                k.wait(timeout=30)
                self.assert_restored(self.extcap)
                self.assertEqual(self.curl(), b"hello\n")
        # The volume's socket is the same file on the host.
        self.assertEqual(ident(os.path.join(self.volume, "app.sock")), ident(sockets["udsdump-vol"] + "/app.sock"))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(TimeoutError("terminated (meson timeout?)")))
    main()
