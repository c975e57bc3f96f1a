#!/usr/bin/env python3
"""Test servers on Unix sockets, one thread per connection (the server's simplicity is not under test).

  echo_server.py PATH --type KIND [--mode 0660] [--ready FIFO] [--reply-bytes N]

KIND:
  stream     read until EOF, then send "<sha256 of what came>\\n" and N pattern bytes, then close
             (a half-close test: the client shuts down writing, then reads a long reply)
  echo       send back every byte as it comes; close on EOF
  source     send N pattern bytes at once, then close (a slow reader test)
  seqpacket  SOCK_SEQPACKET: send back each message whole, prefixed by its length as 4 bytes
  dgram      SOCK_DGRAM: answer each datagram to a bound sender with "<len> <sha256>"
  fdpass     stream: each message may carry SCM_RIGHTS descriptors: read 100 bytes from each passed fd
             and send them back with a fresh pipe's read end carrying "from-server\\n"; also report
             SO_PEERCRED as "uid gid\\n" first
  creds      stream with SO_PASSCRED: answer each message with "pid uid gid\\n" of its SCM_CREDENTIALS
"""
import argparse
import hashlib
import os
import socket
import struct
import threading


def pattern(n):
    p = bytes(range(256)) * 4096
    out = bytearray()
    while len(out) < n:
        out += p[: n - len(out)]
    return bytes(out)


def handle_stream(c, reply_bytes):
    h = hashlib.sha256()
    while True:
        b = c.recv(262144)
        if not b:
            break
        h.update(b)
    c.sendall(h.hexdigest().encode() + b"\n" + pattern(reply_bytes))
    c.close()


def handle_echo(c):
    while True:
        b = c.recv(262144)
        if not b:
            break
        c.sendall(b)
    c.close()


def handle_source(c, n):
    try:
        c.sendall(pattern(n))
    except OSError:
        pass
    c.close()


def handle_seqpacket(c):
    while True:
        b = c.recv(1 << 20)
        if not b:
            break
        c.send(struct.pack("!I", len(b)) + b)
    c.close()


def handle_fdpass(c):
    cred = c.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    pid, uid, gid = struct.unpack("3i", cred)
    c.sendall(b"%d %d\n" % (uid, gid))
    while True:
        msg, fds, flags, addr = socket.recv_fds(c, 65536, 16)
        if not msg:
            break
        got = b"".join(os.pread(fd, 100, 0) if os.path.exists("/proc/self/fd/%d" % fd) else b"" for fd in fds)
        for fd in fds:
            os.close(fd)
        r, w = os.pipe()
        os.write(w, b"from-server\n")
        os.close(w)
        socket.send_fds(c, [b"%d:" % len(fds) + got], [r])
        os.close(r)
    c.close()


def handle_creds(c):
    c.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    while True:
        msg, anc, flags, addr = c.recvmsg(65536, socket.CMSG_SPACE(12))
        if not msg:
            break
        pid = uid = gid = -1
        for level, typ, data in anc:
            if level == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS:
                pid, uid, gid = struct.unpack("3i", data[:12])
        c.sendall(b"%d %d %d\n" % (pid, uid, gid))
    c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("--type", default="stream")
    ap.add_argument("--mode", default="0660")
    ap.add_argument("--ready")
    ap.add_argument("--reply-bytes", type=int, default=0)
    a = ap.parse_args()
    kind = a.type
    stype = {"seqpacket": socket.SOCK_SEQPACKET, "dgram": socket.SOCK_DGRAM}.get(kind, socket.SOCK_STREAM)
    try:
        os.unlink(a.path)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, stype)
    old = os.umask(0o077)
    s.bind(a.path)
    os.umask(old)
    os.chmod(a.path, int(a.mode, 8))
    if stype != socket.SOCK_DGRAM:
        s.listen(512)
    if a.ready:
        with open(a.ready, "w") as f:
            f.write(str(os.getpid()))
    if kind == "dgram":
        while True:
            b, addr = s.recvfrom(1 << 20)
            if addr:
                s.sendto(b"%d %s" % (len(b), hashlib.sha256(b).hexdigest().encode()), addr)
    handlers = {
        "stream": lambda c: handle_stream(c, a.reply_bytes),
        "echo": handle_echo,
        "source": lambda c: handle_source(c, a.reply_bytes),
        "seqpacket": handle_seqpacket,
        "fdpass": handle_fdpass,
        "creds": handle_creds,
    }
    h = handlers[kind]
    while True:
        c, _ = s.accept()
        threading.Thread(target=h, args=(c,), daemon=True).start()


if __name__ == "__main__":
    main()
