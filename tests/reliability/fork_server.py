#!/usr/bin/env python3
"""A forking Unix stream server (one process per connection, like sshd or PostgreSQL), so a test can
kill the server process of ONE connection mid-transfer while the others go on.

  fork_server.py PATH [--mode 0660] [--ready FIFO]

Per connection, the child first sends "<its pid>\\n", then reads one command line:
  source N   send N pattern bytes (echo_server.pattern), then close
  echo       send back every byte as it comes; close on EOF
Run it in its own session: killing its process group kills the server and every connection's child.
"""
import argparse
import os
import signal
import socket
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from echo_server import pattern  # noqa: E402


def serve(c):
    c.sendall(b"%d\n" % os.getpid())
    line = b""
    while not line.endswith(b"\n"):
        b = c.recv(1)
        if not b:
            return
        line += b
    words = line.split()
    if words[:1] == [b"source"]:
        c.sendall(pattern(int(words[1])))
    elif words[:1] == [b"echo"]:
        while True:
            b = c.recv(262144)
            if not b:
                break
            c.sendall(b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("--mode", default="0660")
    ap.add_argument("--ready")
    a = ap.parse_args()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    try:
        os.unlink(a.path)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)
    s.bind(a.path)
    os.umask(old)
    os.chmod(a.path, int(a.mode, 8))
    s.listen(512)
    if a.ready:
        with open(a.ready, "w") as f:
            f.write(str(os.getpid()))
    while True:
        c, _ = s.accept()
        if os.fork() == 0:
            s.close()
            try:
                serve(c)
            except OSError:
                pass
            os._exit(0)
        c.close()


if __name__ == "__main__":
    main()
