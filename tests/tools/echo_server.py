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
  whoami     stream: on each connection send "pid uid gid groups\\n" (SO_PEERCRED, and SO_PEERGROUPS as
             sorted comma-separated gids, "-" for none), then close; with --record FILE the same line is
             appended to FILE first (so a client that never reached the server leaves no line)
  fdecho     stream: for every recvmsg (up to 64 KiB, up to 253 descriptors) send back one record:
             u32 data length, the data, u32 descriptor count, then per descriptor u32 length and the first
             100 bytes read from it (pread at 0 for files, read for pipes and sockets); a record that
             came with descriptors is answered with a fresh pipe's read end carrying "from-server\\n"
  dgramlog   SOCK_DGRAM with SO_PASSCRED: for each datagram append "<len> <sha256> <sender> <pid> <uid>
             <gid> <nfds>\\n" to --record FILE (sender: the path, @name for abstract, - when unbound), then
             answer a bound sender "<len> <sha256>" (with a pipe carrying "from-server\\n" when the
             datagram carried descriptors)
  credslog   stream with SO_PASSCRED: for each message append "<pid> <uid> <gid> <len>\\n" of its
             SCM_CREDENTIALS to --record FILE, and send the same line back
  credsink   stream with SO_PASSCRED: for each message append "<pid> <uid> <gid> <len>\n" of its
             SCM_CREDENTIALS to --record FILE; at EOF append "end <total> <sha256>\n", send
             "<total> <sha256>\n" and close (a bulk transfer: the client reads nothing until the end)
  seqecho    SOCK_SEQPACKET with SO_PASSCRED: send back each message as it came, empty ones included
             (an empty message carries credentials; end of connection does not), up to 1 MiB
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
        pid, uid, gid = creds_of(anc)
        c.sendall(b"%d %d %d\n" % (pid, uid, gid))
    c.close()


def peer_line(c):
    pid, uid, gid = struct.unpack("3i", c.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    raw = c.getsockopt(socket.SOL_SOCKET, 59, 1024)  # SO_PEERGROUPS (256 groups: python caps buflen at 1024)
    groups = sorted(struct.unpack("%dI" % (len(raw) // 4), raw))
    return b"%d %d %d %s\n" % (pid, uid, gid, b",".join(b"%d" % g for g in groups) or b"-")


def record(path, line):
    if path:
        with open(path, "ab") as f:
            f.write(line)


def handle_whoami(c, rec):
    line = peer_line(c)
    record(rec, line)
    c.sendall(line)
    c.close()


def read_fd_head(fd):
    try:
        return os.pread(fd, 100, 0)
    except OSError:
        try:
            return os.read(fd, 100)
        except OSError as e:
            return b"error %d" % e.errno


def handle_fdecho(c):
    while True:
        msg, fds, flags, addr = socket.recv_fds(c, 65536, 253)
        if not msg and not fds:
            break
        out = struct.pack("!I", len(msg)) + msg + struct.pack("!I", len(fds))
        for fd in fds:
            head = read_fd_head(fd)
            out += struct.pack("!I", len(head)) + head
            os.close(fd)
        if fds:
            r, w = os.pipe()
            os.write(w, b"from-server\n")
            os.close(w)
            socket.send_fds(c, [out], [r])
            os.close(r)
        else:
            c.sendall(out)
    c.close()


def serve_dgramlog(s, rec):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    while True:
        b, anc, flags, addr = s.recvmsg(1 << 20, socket.CMSG_SPACE(12) + socket.CMSG_SPACE(4 * 253))
        pid = uid = gid = -1
        fds = []
        for level, typ, data in anc:
            if level == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS:
                pid, uid, gid = struct.unpack("3i", data[:12])
            elif level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                fds += struct.unpack("%di" % (len(data) // 4), data[: len(data) - len(data) % 4])
        for fd in fds:
            os.close(fd)
        if not addr:
            who = b"-"
        elif isinstance(addr, bytes):
            who = b"@" + addr[1:].replace(b"\0", b"@")
        else:
            who = addr.encode()
        digest = hashlib.sha256(b).hexdigest().encode()
        record(rec, b"%d %s %s %d %d %d %d\n" % (len(b), digest, who, pid, uid, gid, len(fds)))
        if addr:
            reply = b"%d %s" % (len(b), digest)
            try:
                if fds:
                    r, w = os.pipe()
                    os.write(w, b"from-server\n")
                    os.close(w)
                    s.sendmsg([reply], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", r))], 0, addr)
                    os.close(r)
                else:
                    s.sendto(reply, addr)
            except OSError:
                pass  # the sender is gone, or its queue is full: a datagram server does not wait


def creds_of(anc):
    """(pid, uid, gid) of a message's SCM_CREDENTIALS; -1s when it came without."""
    for level, typ, data in anc:
        if level == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS:
            return struct.unpack("3i", data[:12])
    return -1, -1, -1


def handle_credslog(c, rec):
    c.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    while True:
        msg, anc, flags, addr = c.recvmsg(65536, socket.CMSG_SPACE(12))
        if not msg:
            break
        pid, uid, gid = creds_of(anc)
        line = b"%d %d %d %d\n" % (pid, uid, gid, len(msg))
        record(rec, line)
        try:
            c.sendall(line)
        except OSError:
            break  # the client is gone
    c.close()


def handle_credsink(c, rec):
    c.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    h, total, lines = hashlib.sha256(), 0, []
    while True:
        msg, anc, flags, addr = c.recvmsg(262144, socket.CMSG_SPACE(12))
        if not msg:
            break
        pid, uid, gid = creds_of(anc)
        h.update(msg)
        total += len(msg)
        lines.append(b"%d %d %d %d\n" % (pid, uid, gid, len(msg)))
    record(rec, b"".join(lines) + b"end %d %s\n" % (total, h.hexdigest().encode()))
    c.sendall(b"%d %s\n" % (total, h.hexdigest().encode()))
    c.close()


def handle_seqecho(c):
    c.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 21)  # echo messages up to 1 MiB back
    while True:
        msg, anc, flags, addr = c.recvmsg(1 << 20, socket.CMSG_SPACE(12))
        if not msg and not anc:
            break
        c.send(msg)
    c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("--type", default="stream")
    ap.add_argument("--mode", default="0660")
    ap.add_argument("--ready")
    ap.add_argument("--reply-bytes", type=int, default=0)
    ap.add_argument("--record", help="whoami, dgramlog, credslog: append what the server saw to this file")
    a = ap.parse_args()
    kind = a.type
    stype = {"seqpacket": socket.SOCK_SEQPACKET, "seqecho": socket.SOCK_SEQPACKET, "dgram": socket.SOCK_DGRAM,
             "dgramlog": socket.SOCK_DGRAM}.get(kind, socket.SOCK_STREAM)
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
    if kind == "dgramlog":
        serve_dgramlog(s, a.record)
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
        "whoami": lambda c: handle_whoami(c, a.record),
        "fdecho": handle_fdecho,
        "credslog": lambda c: handle_credslog(c, a.record),
        "credsink": lambda c: handle_credsink(c, a.record),
        "seqecho": handle_seqecho,
    }
    h = handlers[kind]
    while True:
        c, _ = s.accept()
        threading.Thread(target=h, args=(c,), daemon=True).start()


if __name__ == "__main__":
    main()
