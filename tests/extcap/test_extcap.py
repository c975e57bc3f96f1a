#!/usr/bin/env python3
"""The udsdump executable as Wireshark calls it (in the manner of Wireshark's own extcap suite), and
tshark finding it in a throw-away HOME."""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from udstest import UdsTestCase, UDSDUMP, main  # noqa: E402
import wireshark as W  # noqa: E402

SENTENCE = re.compile(r"^(extcap|interface|dlt|arg|value|control) (\{[a-z]+=([^}]|\}(?![{\s]|$))*\})+$")
PAIR = re.compile(r"\{([a-z]+)=((?:[^}]|\}(?![{\s]|$))*)\}")


def run(*args, env=None):
    r = subprocess.run([UDSDUMP, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30, env=env)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def parse(out):
    rows = []
    for line in out.splitlines():
        assert SENTENCE.match(line), "not a line Wireshark parses: %r" % line
        rows.append((line.split(" ", 1)[0], dict(PAIR.findall(line))))
    return rows


class ExtcapTest(UdsTestCase):
    def test_conformance(self):
        path = os.path.join(self.tmp, "conf.sock")
        self.start_http(path)
        rc, out, err = run("--extcap-interfaces", "--extcap-version=4.0")
        self.assertEqual(rc, 0, err)
        self.assertEqual(err, "", "listing must not write to stderr")
        rows = parse(out)
        self.assertEqual(rows[0][0], "extcap")
        ifaces = [kv for s, kv in rows if s == "interface"]
        values = [kv["value"] for kv in ifaces]
        self.assertIn("unix:" + path, values)
        self.assertIn("udsdump", values)
        for kv in ifaces:
            self.assertTrue(kv.get("display"), kv)
            with self.subTest(iface=kv["value"]):
                rc, out, err = run("--extcap-dlts", "--extcap-interface", kv["value"])
                self.assertEqual(rc, 0, err)
                dlts = parse(out)
                self.assertEqual([s for s, _ in dlts], ["dlt"])
                self.assertEqual(dlts[0][1]["number"], "1")
                rc, out, err = run("--extcap-config", "--extcap-interface", kv["value"])
                self.assertEqual(rc, 0, err)
                cfg = parse(out)
                numbers = {kv2["number"] for s, kv2 in cfg if s == "arg"}
                for s, kv2 in cfg:
                    if s == "arg":
                        for key in ("number", "call", "display", "type"):
                            self.assertIn(key, kv2)
                    else:
                        self.assertIn(kv2["arg"], numbers)
        # Without --extcap-version, as Wireshark retries, and with an unknown interface.
        rc, out, _ = run("--extcap-interfaces")
        self.assertEqual(rc, 0)
        rc, _, err = run("--extcap-config", "--extcap-interface", "eth0")
        self.assertNotEqual(rc, 0)
        self.assertIn("eth0", err)

    def test_tshark_lists_sockets(self):
        path = os.path.join(self.tmp, "listed.sock")
        server = self.start_http(path)
        home = os.path.join(self.tmp, "home")
        W.install_personal(home, extcap=UDSDUMP, lua=None)
        env = W.clean_env(home)
        r = subprocess.run(["tshark", "-D"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=60)
        out = r.stdout.decode()
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        line = [l for l in out.splitlines() if ("unix:" + path) in l]
        self.assertEqual(len(line), 1, out)
        # The owning process is named: the test server is python3.
        self.assertIn("pid %d" % server.pid, line[0])
        self.assertRegex(line[0], r"python3?")

    def test_version_and_help(self):
        rc, out, _ = run("--version")
        self.assertEqual(rc, 0)
        self.assertRegex(out, r"^udsdump \d+\.\d+")
        rc, out, _ = run("--help")
        self.assertEqual(rc, 0)
        for opt in ("--extcap-interfaces", "--fifo", "--restore", "-w", "-D"):
            self.assertIn(opt, out)
        rc, out, err = run()
        self.assertNotEqual(rc, 0)
        self.assertEqual(len(err.strip().splitlines()), 1)

    def test_restore_command(self):
        path = os.path.join(self.tmp, "fine.sock")
        self.start_http(path)
        before = self.listing()
        rc, out, err = run("--restore", path)
        self.assertEqual(rc, 0, err)
        self.assertTrue(out.strip(), "--restore says what it did (here: nothing)")
        self.assertEqual(self.listing(), before)


if __name__ == "__main__":
    main()
