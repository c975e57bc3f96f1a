#!/usr/bin/env python3
"""Clients the identity tests run as another user (under setpriv): each prints one JSON line.

  client.py whoami PATH          connect, read to EOF: {"result": "ok", "line": ...} or how it failed
  client.py creds PATH           to an echo_server "creds" server: one message with explicit
                                 SCM_CREDENTIALS (our own), one with none; what the server saw each time
  client.py dgram PATH BIND      bind BIND, send one datagram, wait for the reply
  client.py send PATH            connect, send one message, exit at once (no answer awaited)
  client.py dgramsend PATH [BIND]  send one datagram (from BIND, removed afterwards), exit at once
  client.py bulk PATH N          to an echo_server "credsink" server: N random bytes, half-close, read
                                 the server's "<total> <sha256>" line; {"pid", "sent": sha256, "reply"}
"""
import errno
import hashlib
import json
import os
import socket
import struct
import sys

TIMEOUT = 20


def outcome(exc):
    """How a connection attempt or a read failed, in words the tests compare."""
    if isinstance(exc, socket.timeout):
        return {"result": "timeout"}
    if isinstance(exc, OSError):
        return {"result": "error", "errno": errno.errorcode.get(exc.errno, str(exc.errno))}
    raise exc


def read_all(s):
    out = b""
    while True:
        b = s.recv(65536)
        if not b:
            return out
        out += b


def whoami(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    try:
        s.connect(path)
    except OSError as e:
        return dict(outcome(e), stage="connect")
    try:
        data = read_all(s)
    except OSError as e:
        return dict(outcome(e), stage="read")
    if not data:
        return {"result": "eof", "stage": "read"}
    return {"result": "ok", "line": data.decode().strip()}


def read_line(s):
    out = b""
    while not out.endswith(b"\n"):
        b = s.recv(4096)
        if not b:
            break
        out += b
    return out.decode().strip()


def creds(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    s.connect(path)
    mine = struct.pack("3i", os.getpid(), os.getuid(), os.getgid())
    s.sendmsg([b"explicit"], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, mine)])
    explicit = read_line(s)
    s.sendall(b"implicit")
    implicit = read_line(s)
    return {"pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid(), "explicit": explicit, "implicit": implicit}


def dgram(path, bind):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.settimeout(TIMEOUT)
    s.bind(bind)
    try:
        payload = b"datagram from %d" % os.getpid()
        s.sendto(payload, path)
        try:
            reply = s.recv(4096).decode()
        except OSError as e:
            return dict(outcome(e), pid=os.getpid())
        return {"result": "ok", "reply": reply, "pid": os.getpid(), "len": len(payload)}
    finally:
        os.unlink(bind)


def send(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    s.connect(path)
    s.sendall(b"bye")
    return {"result": "ok", "pid": os.getpid()}


def dgramsend(path, bind=None):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.settimeout(TIMEOUT)
    if bind:
        s.bind(bind)
    try:
        s.sendto(b"from %d" % os.getpid(), path)
    except OSError as e:
        return dict(outcome(e), pid=os.getpid())
    finally:
        if bind:
            os.unlink(bind)
    return {"result": "ok", "pid": os.getpid()}


def bulk(path, n):
    data = os.urandom(int(n))
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    s.connect(path)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    return {"result": "ok", "pid": os.getpid(), "sent": "%d %s" % (len(data), hashlib.sha256(data).hexdigest()),
            "reply": read_line(s)}


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    res = {"whoami": whoami, "creds": creds, "dgram": dgram, "send": send, "dgramsend": dgramsend,
           "bulk": bulk}[cmd](*args)
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
