#!/usr/bin/env python3
"""The Lua dissector (dissector/udsdump.lua) under the real tshark, on captures made by gen_capture.py.

Every expectation is computed from what the generator wrote (gen_capture.Capture.frames), frame by
frame: the fields of the "Unix Domain Socket" tree, the Source/Destination columns, expert info, and
display filters selecting exactly the frames they should.  Each tshark run happens in a throw-away
HOME (the plugin installed in the personal Lua plugins folder tshark names, or loaded with
-X lua_script:) and TMPDIR, and no run may print anything about Lua (load or runtime errors).  Where this
tshark loads no personal plugin for root (4.2+), tshark runs as nobody: what such a Wireshark's users
see.  Column field names and boolean output follow the tshark at hand (tests/lib/wireshark.py).
Output is TAP.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.dont_write_bytecode = True   # no __pycache__ left in the source tree
import gen_capture as g  # noqa: E402
import wireshark as W  # noqa: E402

SRCDIR = os.environ.get("UDSDUMP_SRCDIR") or os.path.dirname(os.path.dirname(HERE))
LUA = os.path.join(SRCDIR, "dissector", "udsdump.lua")
DOC = os.path.join(SRCDIR, "docs", "dissector.md")
TSHARK = shutil.which("tshark")
# What a Lua problem looks like: a load error on stderr (which never mentions Lua otherwise), a runtime
# error in the tree or columns ("Lua Error: .../udsdump.lua:123: ...")
LUA_PROBLEM = {"stderr": re.compile(r"\blua\b", re.I),
               "stdout": re.compile(r"Lua Error|Lua: Error|udsdump\.lua:\d+", re.I)}

DIRS = {g.C2S: "client->server", g.S2C: "server->client"}
SEV_WARN, SEV_NOTE, SEV_CHAT, SEV_ERROR = 0x00600000, 0x00400000, 0x00200000, 0x00800000

# The fields compared frame by frame ("" = absent).
FIELDS = [
    "unix.path", "unix.type", "unix.conn", "unix.direction", "unix.pid", "unix.uid", "unix.gid",
    "unix.groups", "unix.comm", "unix.client_addr", "unix.server.pid", "unix.server.comm", "unix.proto",
    "unix.open_frame", "unix.ancillary_frame", "unix.fds", "unix.fd_desc", "unix.cred.pid", "unix.cred.uid",
    "unix.cred.gid", "unix.ctrunc", "unix.dropped", "unix.meta.event", "unix.udsdump_version",
]


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


class Sandbox:
    """A temp folder with two HOMEs (with and without the plugin), a TMPDIR, and the captures."""

    def __enter__(self):
        self.root = tempfile.mkdtemp(prefix="udsdump-dissector-")
        self.home = os.path.join(self.root, "home")
        self.bare_home = os.path.join(self.root, "bare-home")
        self.tmp = os.path.join(self.root, "tmp")
        for d in (self.home, self.bare_home, self.tmp):
            os.makedirs(d)
        self.lua = os.path.join(self.root, "udsdump.lua")    # for -X lua_script: (readable by nobody too)
        shutil.copy(LUA, self.lua)
        self.nobody = W.reads_as_nobody()
        owner = (W.NOBODY.pw_uid, W.NOBODY.pw_gid) if self.nobody else None
        W.install_personal(self.home, owner=owner)
        if owner:
            os.chmod(self.root, 0o755)
            for d in (self.bare_home, self.tmp):
                os.chown(d, *owner)
        self.caps = {}
        for name, make in (("demo", g.demo), ("plain", g.plain), ("malformed", g.malformed)):
            cap = make()
            path = os.path.join(self.root, name + ".pcap")
            cap.write(path)
            self.caps[name] = (cap, path)
        return self

    def __exit__(self, *exc):
        shutil.rmtree(self.root, ignore_errors=True)

    def env(self, home):
        e = {k: v for k, v in os.environ.items()
             if k not in ("WIRESHARK_CONFIG_DIR", "XDG_CONFIG_HOME", "WIRESHARK_EXTCAP_DIR")}
        e.update(HOME=home, TMPDIR=self.tmp, LC_ALL="C.UTF-8")
        return e

    def tshark(self, args, plugin="home", stdin=None):
        """Runs tshark; plugin: "home" (installed), "script" (-X lua_script:), None (not loaded)."""
        home = self.home if plugin == "home" else self.bare_home
        pre = ["-X", "lua_script:" + self.lua] if plugin == "script" else []
        cmd = [TSHARK] + pre + args
        if self.nobody:
            cmd = W.as_nobody(cmd)
        stdin_f = open(stdin, "rb") if stdin else subprocess.DEVNULL
        try:
            p = subprocess.run(cmd, stdin=stdin_f, capture_output=True, env=self.env(home), timeout=90)
        finally:
            if stdin:
                stdin_f.close()
        out, err = p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
        check(p.returncode == 0, "%s: exit %d: %s" % (" ".join(cmd), p.returncode, err.strip()[-500:]))
        for name, text in (("stdout", out), ("stderr", err)):
            if name == "stdout" and args[0] == "-G":
                continue    # the registry lists Wireshark's own "Lua Error" field
            m = LUA_PROBLEM[name].search(text)
            check(m is None, "%s: Lua mentioned on %s: ...%s..." % (" ".join(cmd), name,
                                                                    text[max(0, m.start() - 200):m.end() + 300] if m else ""))
        return out

    def fields(self, pcap, names, extra=(), plugin="home", live=False):
        """{frame number: {field: "v1,v2" or ""}} for every frame tshark outputs."""
        src = ["-i", "-"] if live else ["-r", pcap]
        args = src + list(extra) + ["-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,", "-E", "quote=n",
                                    "-e", "frame.number"]
        for n in names:
            args += ["-e", n]
        out = self.tshark(args, plugin=plugin, stdin=pcap if live else None)
        rows = {}
        for line in out.splitlines():
            if not line or not line.split("\t")[0].isdigit():
                continue   # tshark -i chatter
            cols = line.split("\t")
            cols += [""] * (1 + len(names) - len(cols))
            rows[int(cols[0])] = dict(zip(names, (W.field_value(v) for v in cols[1:])))
        return rows

    def frames(self, pcap, dfilter, extra=(), plugin="home"):
        out = self.tshark(["-r", pcap] + list(extra) + ["-Y", dfilter, "-T", "fields", "-e", "frame.number"],
                          plugin=plugin)
        return {int(x) for x in out.split()}


# -- what the dissector must say about each generated frame ---------------------------------------

def ancillary_carriers(cap):
    """{data frame number: ANCILLARY frame record}: the first frame with bytes of that flow and
    direction after each ANCILLARY frame."""
    pending, out = {}, {}
    for fr in cap.frames:
        f = fr.get("flow")
        if f is None:
            continue
        if fr["kind"] == "meta" and fr["event"] == g.ANCILLARY:
            pending[(f.conn, fr["dir"])] = fr
        elif (fr["kind"] == "tcp" and fr["payload"] > 0) or fr["kind"] == "udp":   # "udp": a datagram's first frame
            a = pending.pop((f.conn, fr["dir"]), None)
            if a:
                out[fr["number"]] = a
    return out


def expected_fields(cap):
    carriers = ancillary_carriers(cap)
    exp = {}
    for fr in cap.frames:
        e = dict.fromkeys(FIELDS, "")
        f, kind, ev = fr.get("flow"), fr["kind"], fr.get("event")
        if kind == "meta" and ev == g.INFO:
            e.update({"unix.path": fr["path"].decode(), "unix.type": str(fr["sock_type"]), "unix.proto": fr["proto"],
                      "unix.udsdump_version": fr["version"], "unix.meta.event": str(g.INFO)})
        elif f is not None and not fr.get("bad"):
            e.update({
                "unix.path": f.path.decode(), "unix.type": str(f.sock_type), "unix.conn": str(f.conn),
                "unix.pid": str(f.pid), "unix.uid": str(f.uid), "unix.gid": str(f.gid),
                "unix.groups": ",".join(str(x) for x in f.groups or []), "unix.comm": f.comm,
                "unix.client_addr": f.addr.decode() if f.addr else "", "unix.server.pid": str(f.server_pid),
                "unix.server.comm": f.server_comm, "unix.proto": f.proto,
                "unix.direction": DIRS.get(fr["dir"], ""),
            })
            if kind == "meta":
                e["unix.meta.event"] = str(ev)
                if ev != g.OPEN:
                    e["unix.open_frame"] = str(f.open_frame)
            else:
                e["unix.open_frame"] = str(f.open_frame)
            a = fr if ev == g.ANCILLARY else carriers.get(fr["number"])
            if a is not None:
                if a is not fr:
                    e["unix.ancillary_frame"] = str(a["number"])
                if a["fds"]:
                    e["unix.fds"] = str(len(a["fds"]))
                    e["unix.fd_desc"] = ",".join(a["fds"])
                if a["cred"]:
                    e["unix.cred.pid"], e["unix.cred.uid"], e["unix.cred.gid"] = (str(x) for x in a["cred"])
                if a["ctrunc"]:
                    e["unix.ctrunc"] = "1"
            if ev == g.DROP:
                e["unix.dropped"] = str(fr["dropped"])
        exp[fr["number"]] = e
    return exp


def compare(got, exp, what):
    check(sorted(got) == sorted(exp), "%s: frames %s, expected %s" % (what, sorted(got), sorted(exp)))
    bad = []
    for n in sorted(exp):
        for k in FIELDS:
            if got[n].get(k, "") != exp[n][k]:
                bad.append("frame %d %s: got %r, expected %r" % (n, k, got[n].get(k, ""), exp[n][k]))
    check(not bad, "%s: %d mismatches:\n%s" % (what, len(bad), "\n".join(bad[:25])))


def client_label(f):
    return "%s[%d]" % (f.comm, f.pid) if f.comm else "pid %d" % f.pid


# -- the tests -------------------------------------------------------------------------------------

TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


@test
def plugin_registers_documented_fields(sb):
    """installed in the personal Lua plugins folder: protocol "unix" and exactly the documented fields"""
    protos = sb.tshark(["-G", "protocols"])
    check(["Unix Domain Socket", "UNIX", "unix"] in [l.split("\t")[:3] for l in protos.splitlines()],
          "no protocol \"Unix Domain Socket\" with filter name \"unix\" in tshark -G protocols")
    reg = set()
    for line in sb.tshark(["-G", "fields"]).splitlines():
        cols = line.split("\t")
        if len(cols) >= 5 and cols[0] in ("F", "P") and cols[4] == "unix" and cols[2] != "unix":
            reg.add(cols[2])
    documented, in_fields = set(), False
    with open(DOC, encoding="utf-8") as f:
        for line in f:
            if line.startswith("## "):
                in_fields = line.strip() == "## Fields"
            elif in_fields and line.startswith("|"):
                documented.update(re.findall(r"`(unix\.[a-z_.]+)`", line.split("|")[1]))
    check(reg == documented, "registered but not documented: %s; documented but not registered: %s"
          % (sorted(reg - documented), sorted(documented - reg)))
    for must in ("unix.path", "unix.type", "unix.conn", "unix.pid", "unix.uid", "unix.gid", "unix.comm",
                 "unix.server.pid", "unix.server.comm", "unix.direction", "unix.proto", "unix.groups",
                 "unix.fds", "unix.fd_desc", "unix.cred.pid", "unix.cred.uid", "unix.cred.gid", "unix.dropped"):
        check(must in reg, must + " is not registered")


@test
def fields_single_pass(sb):
    """every field of every frame equals the generated value: one pass (tshark -r)"""
    cap, path = sb.caps["demo"]
    compare(sb.fields(path, FIELDS), expected_fields(cap), "tshark -r")


@test
def fields_two_pass(sb):
    """... two passes (tshark -2), where the close frame is known too"""
    cap, path = sb.caps["demo"]
    compare(sb.fields(path, FIELDS, ["-2"]), expected_fields(cap), "tshark -2")
    close = {f.conn: n for n, f in ((fr["number"], fr["flow"]) for fr in cap.frames
                                     if fr.get("event") == g.CLOSE)}
    got = sb.fields(path, ["unix.conn", "unix.close_frame"], ["-2", "-Y", "tcp || udp"])
    for n, row in got.items():
        check(row["unix.close_frame"] == str(close[int(row["unix.conn"])]),
              "frame %d: close_frame %r, expected %d" % (n, row["unix.close_frame"], close[int(row["unix.conn"])]))


@test
def fields_live(sb):
    """... live: tshark -i - reading the capture from a pipe"""
    cap, path = sb.caps["demo"]
    compare(sb.fields(path, FIELDS, live=True), expected_fields(cap), "tshark -i -")


@test
def fields_lua_script_option(sb):
    """... loaded with -X lua_script: instead of the plugin folder"""
    cap, path = sb.caps["demo"]
    compare(sb.fields(path, FIELDS, plugin="script"), expected_fields(cap), "tshark -X lua_script:")


@test
def two_clients_told_apart(sb):
    """two clients of one socket: each frame carries its own client's pid, comm and connection"""
    cap, path = sb.caps["demo"]
    rows = sb.fields(path, ["unix.conn", "unix.pid", "unix.comm", "tcp.srcport", "tcp.dstport"], ["-Y", "tcp"])
    seen = {}
    for n, r in rows.items():
        fr = cap.frames[n - 1]
        f = fr["flow"]
        port = f.cport
        check(port in (int(r["tcp.srcport"]), int(r["tcp.dstport"])), "frame %d is not flow %d's" % (n, f.conn))
        seen.setdefault(r["unix.conn"], set()).add((r["unix.pid"], r["unix.comm"]))
    check(seen == {"1": {("4242", "curl")}, "2": {("5151", "python3")}}, "per connection: %r" % seen)
    py = {fr["number"] for fr in cap.frames if fr.get("flow") is not None and fr["flow"].pid == 5151}
    check(sb.frames(path, "unix.pid == 5151") == py, "unix.pid == 5151 does not select python3's frames")


@test
def columns(sb):
    """Source/Destination: comm[pid] and the path, sender first; Protocol/Info of traffic unchanged"""
    cap, path = sb.caps["demo"]
    src, dst, proto, info_col = cols = [W.col(c) for c in ("Source", "Destination", "Protocol", "Info")]
    got = sb.fields(path, cols)
    bare = sb.fields(path, cols, plugin=None)
    bad = []
    for fr in cap.frames:
        n, f, r = fr["number"], fr.get("flow"), got[fr["number"]]
        if f is not None:
            cl, srv = client_label(f), f.path.decode()
            want = (srv, cl) if fr["dir"] == g.S2C else (cl, srv)
            if (r[src], r[dst]) != want:
                bad.append("frame %d: %s -> %s, expected %s -> %s" % (n, r[src], r[dst], *want))
        if fr["kind"] == "meta":
            if r[proto] != "UNIX":
                bad.append("frame %d: protocol %r" % (n, r[proto]))
        else:
            for c in (proto, info_col):
                if r[c] != bare[n][c]:
                    bad.append("frame %d: %s %r, without the plugin %r" % (n, c, r[c][:80], bare[n][c][:80]))
        info, ev = r[info_col], fr.get("event")
        if ev == g.OPEN and info != "open %s -> %s" % (client_label(f), f.path.decode()):
            bad.append("frame %d: open info %r" % (n, info))
        if ev == g.CLOSE and info != "close %s -> %s" % (client_label(f), f.path.decode()):
            bad.append("frame %d: close info %r" % (n, info))
        if ev == g.DROP and not info.startswith("dropped %d bytes" % fr["dropped"]):
            bad.append("frame %d: drop info %r" % (n, info))
        if ev == g.ANCILLARY and fr["fds"] and not info.startswith("%d fds" % len(fr["fds"])):
            bad.append("frame %d: ancillary info %r" % (n, info))
        if ev == g.ANCILLARY and fr["ctrunc"] and "control data truncated" not in info:
            bad.append("frame %d: ancillary info %r" % (n, info))
    check(not bad, "\n".join(bad))
    plain = sb.fields(path, [src], ["-o", "unix.columns:FALSE", "-Y", "tcp"])
    check(all(re.fullmatch(r"10\.\d+\.\d+\.\d+", r[src]) for r in plain.values()),
          "unix.columns:FALSE still relabels Source")


@test
def expert_info(sb):
    """expert info: dropped data (warning), descriptors (note), credentials (chat), truncation (warning)"""
    cap, path = sb.caps["demo"]
    drops = {fr["number"] for fr in cap.frames if fr.get("event") == g.DROP}
    fds = {fr["number"] for fr in cap.frames if fr.get("event") == g.ANCILLARY and fr["fds"]}
    creds = {fr["number"] for fr in cap.frames if fr.get("event") == g.ANCILLARY and fr["cred"]}
    trunc = {fr["number"] for fr in cap.frames if fr.get("event") == g.ANCILLARY and fr["ctrunc"]}
    check(drops and fds and creds and trunc, "the demo capture lacks an event kind")
    for name, sev, want in (("dropped", SEV_WARN, drops), ("fds", SEV_NOTE, fds), ("creds", SEV_CHAT, creds),
                            ("ctrunc", SEV_WARN, trunc)):
        for extra in ([], ["-2"]):
            got = sb.frames(path, "unix.expert.%s && _ws.expert.severity == %d" % (name, sev), extra)
            check(got == want, "unix.expert.%s %s: frames %s, expected %s" % (name, extra, sorted(got), sorted(want)))
    check(not sb.frames(path, "unix.expert.malformed || unix.expert.version"), "clean metadata marked malformed")


@test
def filter_by_comm(sb):
    """tshark -Y 'unix.comm == "curl"' selects exactly curl's frames (traffic and its metadata)"""
    cap, path = sb.caps["demo"]
    for comm in ("curl", "python3", "logger"):
        want = {fr["number"] for fr in cap.frames if fr.get("flow") is not None and fr["flow"].comm == comm}
        for extra in ([], ["-2"]):
            got = sb.frames(path, 'unix.comm == "%s"' % comm, extra)
            check(got == want, "%s %s: %s, expected %s" % (comm, extra, sorted(got), sorted(want)))
    dgram = {fr["number"] for fr in cap.frames if fr.get("flow") is not None and fr["flow"].sock_type == g.SOCK_DGRAM}
    check(sb.frames(path, 'unix.type == "dgram"') == dgram, "unix.type == \"dgram\" selects the wrong frames")


@test
def capture_without_metadata(sb):
    """a capture with no udsdump frames (and another user of EtherType 0x88B5): no Lua error, no unix
    tree, output identical to tshark without the plugin"""
    cap, path = sb.caps["plain"]
    check(not sb.frames(path, "unix"), "unix tree on a capture without metadata")
    for extra in ([], ["-V"], ["-2", "-V"]):
        with_plugin = sb.tshark(["-r", path] + extra)
        without = sb.tshark(["-r", path] + extra, plugin=None)
        check(with_plugin == without, "output %s differs with the plugin" % extra)
    live = sb.tshark(["-i", "-", "-V"], stdin=path)
    check("Unix Domain Socket" not in live, "unix tree in a live capture without metadata")


@test
def malformed_metadata(sb):
    """malformed metadata: no Lua error, each bad frame marked, the connection still labelled"""
    cap, path = sb.caps["malformed"]
    bad = {fr["number"] for fr in cap.frames if fr.get("bad") and not fr.get("future")}
    future = {fr["number"] for fr in cap.frames if fr.get("future")}
    for extra in ([], ["-2"]):
        sb.tshark(["-r", path, "-V"] + extra)   # must not mention Lua
        check(sb.frames(path, "unix.expert.malformed", extra) == bad, "malformed frames not all marked")
        check(sb.frames(path, "unix.expert.version", extra) == future, "future version not marked")
    data = {fr["number"] for fr in cap.frames if fr["kind"] == "tcp"}
    src = W.col("Source")
    rows = sb.fields(path, [src, "unix.pid", "unix.comm"], ["-Y", "tcp"])
    check(set(rows) == data and all(r["unix.pid"] == "4242" and r[src] in ("pid 4242", "/var/run/docker.sock")
                                    for r in rows.values()), "traffic of a client with no comm: %r" % rows)


@test
def loaded_twice(sb):
    """loaded twice (a global and a personal copy): the second steps aside, no Lua error, fields once"""
    cap, path = sb.caps["demo"]
    compare(sb.fields(path, FIELDS, ["-X", "lua_script:" + sb.lua]), expected_fields(cap),
            "plugin folder and -X lua_script:")


@test
def no_accidental_globals(sb):
    """the plugin neither sets nor reads an undefined global (a misspelt local would), under a strict _G"""
    strict = os.path.join(sb.root, "strict.lua")
    with open(strict, "w") as f:
        f.write('setmetatable(_G, {\n'
                '  __newindex = function(_, k) error("udsdump.lua assigns the global " .. tostring(k), 2) end,\n'
                '  __index = function(_, k) error("udsdump.lua reads the undefined global " .. tostring(k), 2) end })\n'
                'dofile(%s)\n' % json.dumps(sb.lua))
    for name in ("demo", "malformed", "plain"):
        for extra in (["-V"], ["-2", "-V"]):
            out = sb.tshark(["-X", "lua_script:" + strict, "-r", sb.caps[name][1]] + extra, plugin=None)
            check("global" not in out.replace("Globally unique", ""), "%s %s: %s" % (name, extra, out[:300]))


def main():
    signal.alarm(600)   # watchdog: no run may hang the suite
    if not TSHARK:
        print("1..0 # SKIP tshark not found")
        return 0
    print("1..%d" % len(TESTS))
    failed = 0
    with Sandbox() as sb:
        for i, t in enumerate(TESTS, 1):
            name = (t.__doc__ or t.__name__).split("\n")[0]
            try:
                t(sb)
                print("ok %d - %s" % (i, name))
            except Exception as e:   # a failure of one test must not hide the others
                failed += 1
                print("not ok %d - %s" % (i, name))
                detail = str(e) if isinstance(e, Failure) else traceback.format_exc()
                for line in detail.splitlines():
                    print("#   " + line)
            sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
