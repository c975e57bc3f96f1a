#!/usr/bin/env python3
"""Runs a command in a new user namespace mapping ids 0..COUNT-1 to OUTER..OUTER+COUNT-1 (as Docker's
userns-remap and Podman do), as INNER_UID/INNER_GID inside.  Must be started as root.

  userns.py OUTER COUNT INNER_UID INNER_GID -- CMD...

The process started is the one that runs CMD (a helper child writes the maps from outside and
exits), so killing it leaves nothing behind.
"""
import ctypes
import os
import sys

CLONE_NEWUSER = 0x10000000


def main():
    outer, count, uid, gid = (int(x) for x in sys.argv[1:5])
    assert sys.argv[5] == "--"
    cmd = sys.argv[6:]
    libc = ctypes.CDLL(None, use_errno=True)
    go_r, go_w = os.pipe()
    me = os.getpid()
    child = os.fork()
    if child == 0:
        # Outside: waits until the parent is in its new namespace, then writes its maps.
        os.close(go_w)
        if os.read(go_r, 1) != b"u":
            os._exit(1)
        for name, line in (("uid_map", "0 %d %d\n" % (outer, count)), ("gid_map", "0 %d %d\n" % (outer, count))):
            with open("/proc/%d/%s" % (me, name), "w") as f:
                f.write(line)
        os._exit(0)
    os.close(go_r)
    if libc.unshare(CLONE_NEWUSER) != 0:
        sys.exit("unshare(CLONE_NEWUSER): %s" % os.strerror(ctypes.get_errno()))
    os.write(go_w, b"u")
    os.close(go_w)
    _, status = os.waitpid(child, 0)
    if status != 0:
        sys.exit("writing the id maps failed")
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    try:
        os.execvp(cmd[0], cmd)
    except OSError as e:
        sys.exit("cannot run %s: %s" % (cmd[0], e))


main()
