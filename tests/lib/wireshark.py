"""The Wireshark the tests run against, whichever version it is (4.0 to 4.6), as its users meet it.

What differs between versions, and is asked of the installed tshark rather than assumed:
  - where it looks for extcaps and Lua plugins (scripts/wireshark-folders, the one place that parses
    `tshark -G folders`): 4.2 moved the personal extcap folder, some 4.6 builds the global one;
  - whether it loads personal Lua plugins for this user: 4.2+ run as root loads none (nor -X lua_script:),
    only the global folder; the tests then read captures as an unprivileged user, which is what such a
    Wireshark's users do, and test root's own labels only against a global install;
  - the names of the column fields (_ws.col.Source on 4.0, _ws.col.def_src from 4.2) and how a boolean
    field prints with -T fields (1 on 4.0, True from 4.2).
"""
import functools
import os
import pwd
import shutil
import subprocess
import tempfile

SRCDIR = os.environ.get("UDSDUMP_SRCDIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
FOLDERS_SCRIPT = os.path.join(SRCDIR, "scripts", "wireshark-folders")
LUA = os.path.join(SRCDIR, "dissector", "udsdump.lua")
TSHARK = shutil.which("tshark") or "tshark"
NOBODY = pwd.getpwnam("nobody")


def clean_env(home, **extra):
    """The caller's environment without anything that moves Wireshark's folders, HOME set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WIRESHARK_", "XDG_"))}
    env.update(HOME=home, LC_ALL="C.UTF-8", **extra)
    return env


def folders(env):
    """{version, personal_extcap, global_extcap, personal_lua, global_lua} for this environment."""
    r = subprocess.run([FOLDERS_SCRIPT, TSHARK], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                       timeout=60)
    if r.returncode != 0:
        raise AssertionError("scripts/wireshark-folders: " + r.stderr.decode(errors="replace").strip())
    return dict(line.split("=", 1) for line in r.stdout.decode().splitlines())


def version():
    return tuple(int(x) for x in folders(dict(os.environ))["version"].split(".")[:2])


def install_personal(home, extcap=None, lua=LUA, owner=None):
    """Installs an extcap and/or the dissector into HOME's personal folders, where tshark run with that
    HOME looks for them; returns those folders.  owner: (uid, gid) to hand the created folders to."""
    f = folders(clean_env(home))
    for src, key, mode in ((extcap, "personal_extcap", 0o755), (lua, "personal_lua", 0o644)):
        if not src:
            continue
        os.makedirs(f[key], exist_ok=True)
        dest = os.path.join(f[key], os.path.basename(src) if key == "personal_lua" else "udsdump")
        shutil.copy(src, dest)
        os.chmod(dest, mode)
    if owner:
        for d, _, files in os.walk(home):
            for name in [d] + [os.path.join(d, x) for x in files]:
                os.chown(name, *owner)
    return f


@functools.lru_cache(maxsize=None)
def root_loads_personal_lua():
    """Whether this tshark, run by this (root) user, loads a Lua file from the personal plugins folder."""
    with tempfile.TemporaryDirectory(prefix="udsdump-wsprobe-") as home:
        install_personal(home)
        r = subprocess.run([TSHARK, "-G", "plugins"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           env=clean_env(home), timeout=60)
        return os.path.join(home, "") in r.stdout.decode(errors="replace")


def reads_as_nobody():
    """True where tests must run tshark as an unprivileged user to have the personal plugin loaded."""
    return os.geteuid() == 0 and not root_loads_personal_lua()


def as_nobody(argv):
    """argv run as nobody, with no supplementary groups (setpriv from util-linux)."""
    return ["setpriv", "--reuid=%d" % NOBODY.pw_uid, "--regid=%d" % NOBODY.pw_gid, "--clear-groups", "--"] + argv


def global_lua_is_source():
    """Whether the dissector in the global Lua folder is this source tree's (a root 4.2+ loads only it)."""
    path = os.path.join(folders(dict(os.environ))["global_lua"], "udsdump.lua")
    try:
        with open(path, "rb") as a, open(LUA, "rb") as b:
            return a.read() == b.read()
    except FileNotFoundError:
        return False


@functools.lru_cache(maxsize=None)
def _new_column_fields():
    r = subprocess.run([TSHARK, "-G", "fields"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=120)
    return b"\t_ws.col.def_src\t" in r.stdout


def col(name):
    """The -e name of a default column: col("Source"), col("Destination"), col("Protocol"), col("Info")."""
    if not _new_column_fields():
        return "_ws.col." + name
    return {"Source": "_ws.col.def_src", "Destination": "_ws.col.def_dst", "Protocol": "_ws.col.protocol",
            "Info": "_ws.col.info"}[name]


def field_value(text):
    """A -T fields value as 4.0 prints it: booleans print True/False from 4.2 on."""
    return {"True": "1", "False": "0"}.get(text, text)


def capture_reader(tmp):
    """(wrap, env) for running `tshark -r` with this source's dissector loaded: as this user with a
    personal install, or as nobody where root loads no personal plugin (4.2+).  tmp: a folder others can
    enter, for its HOME; the capture file must be readable by others."""
    home = os.path.join(tmp, "reader-home")
    os.mkdir(home)
    nobody = reads_as_nobody()
    install_personal(home, owner=(NOBODY.pw_uid, NOBODY.pw_gid) if nobody else None)
    return (as_nobody if nobody else (lambda argv: argv)), clean_env(home, TMPDIR=home)
