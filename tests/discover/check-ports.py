#!/usr/bin/env python3
"""Does Wireshark decode each protocol keyword's synthetic port as that protocol?

For every keyword in wellknown's table (from `test-wellknown --dump`), writes a small capture the way
udsdump frames traffic (Ethernet/IPv4, a TCP handshake then payload, or UDP datagrams) with a typical
opening of that protocol sent to the keyword's port, and asks tshark which protocol it sees.  The
"shown as data" keywords must be claimed by no dissector at all.

usage: check-ports.py TEST_WELLKNOWN_EXE
"""
import os
import shutil
import struct
import subprocess
import sys
import tempfile

CLIENT_PORT = 40000   # no dissector registers it


def csum(b):
    if len(b) % 2:
        b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    s += s >> 16
    return ~s & 0xffff


def ip_frame(src, dst, proto, l4):
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(l4), 1, 0, 64, proto, 0, bytes(src), bytes(dst))
    ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
    return b'\x02\0' + bytes(dst) + b'\x02\0' + bytes(src) + b'\x08\x00' + ip + l4


def tcp(src, dst, sp, dp, seq, ack, flags, data=b''):
    hdr = struct.pack('!HHIIBBHHH', sp, dp, seq, ack, 5 << 4, flags, 65535, 0, 0)
    pseudo = struct.pack('!4s4sBBH', bytes(src), bytes(dst), 0, 6, len(hdr) + len(data))
    c = csum(pseudo + hdr + data)
    return ip_frame(src, dst, 6, hdr[:16] + struct.pack('!H', c) + hdr[18:] + data)


def udp(src, dst, sp, dp, data):
    hdr = struct.pack('!HHHH', sp, dp, 8 + len(data), 0)
    pseudo = struct.pack('!4s4sBBH', bytes(src), bytes(dst), 0, 17, 8 + len(data))
    c = csum(pseudo + hdr + data) or 0xffff
    return ip_frame(src, dst, 17, hdr[:6] + struct.pack('!H', c) + data)


def capture(port, exchange, transport):
    """exchange: [(from_client, payload)], returns pcap bytes and the frame numbers carrying payload."""
    C, S = [10, 1, 2, 2], [10, 1, 2, 1]
    frames, data_frames = [], []
    if transport == 'tcp':
        cs, ss = 1000, 5000
        frames += [tcp(C, S, CLIENT_PORT, port, cs, 0, 0x02), tcp(S, C, port, CLIENT_PORT, ss, cs + 1, 0x12),
                   tcp(C, S, CLIENT_PORT, port, cs + 1, ss + 1, 0x10)]
        cs, ss = cs + 1, ss + 1
        for from_client, data in exchange:
            if from_client:
                frames.append(tcp(C, S, CLIENT_PORT, port, cs, ss, 0x18, data))
                cs += len(data)
            else:
                frames.append(tcp(S, C, port, CLIENT_PORT, ss, cs, 0x18, data))
                ss += len(data)
            data_frames.append(len(frames))
    else:
        for from_client, data in exchange:
            frames.append(udp(C, S, CLIENT_PORT, port, data) if from_client else udp(S, C, port, CLIENT_PORT, data))
            data_frames.append(len(frames))
    out = struct.pack('<IHHiIII', 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1)
    for i, f in enumerate(frames):
        out += struct.pack('<IIII', 1700000000 + i, 0, len(f), len(f)) + f
    return out, data_frames


H2_PREFACE = b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'
H2_SETTINGS = b'\0\0\0\x04\0\0\0\0\0'
MYSQL_GREETING = (b'\x0a8.0.36\0' + struct.pack('<I', 8) + b'abcdefgh\0' + struct.pack('<HBHH', 0xffff, 255, 2, 0xdfff)
                  + b'\x15' + b'\0' * 10 + b'ijklmnopqrst\0' + b'caching_sha2_password\0')
PG_STARTUP = b'user\0postgres\0database\0postgres\0\0'

# keyword -> (transport, exchange, protocol column expected; None: no dissector may claim it)
SAMPLES = {
    'http': ('tcp', [(True, b'GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n'),
                     (False, b'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK')], 'HTTP'),
    'http2': ('tcp', [(True, H2_PREFACE + H2_SETTINGS), (False, H2_SETTINGS)], 'HTTP2'),
    'mysql': ('tcp', [(False, struct.pack('<I', len(MYSQL_GREETING))[:3] + b'\0' + MYSQL_GREETING)], 'MySQL'),
    'pgsql': ('tcp', [(True, struct.pack('!II', 8 + len(PG_STARTUP), 196608) + PG_STARTUP)], 'PGSQL'),
    'redis': ('tcp', [(True, b'*1\r\n$4\r\nPING\r\n'), (False, b'+PONG\r\n')], 'RESP'),
    'memcached': ('tcp', [(True, b'get foo\r\n'), (False, b'END\r\n')], 'MEMCACHE'),
    'x11': ('tcp', [(True, b'l\0\x0b\0\0\0\0\0\0\0\0\0')], 'X11'),
    'syslog': ('udp', [(True, b'<30>Jan  1 00:00:00 systemd[1]: Started udsdump test.')], 'Syslog'),
    'dbus': ('tcp', [(True, b'\0AUTH EXTERNAL 30\r\n'), (False, b'OK 0123456789abcdef0123456789abcdef\r\n')], None),
    'data': ('tcp', [(True, bytes(range(7, 71))), (False, b'\x01\x00\x00\x10' + bytes(16))], None),
}


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    tshark = shutil.which('tshark')
    if not tshark:
        print('1..0 # SKIP tshark not installed')
        return 0
    table = subprocess.run([sys.argv[1], '--dump'], check=True, capture_output=True, text=True).stdout.split('\n')
    table = [line.split() for line in table if line.strip()]
    print('1..%d' % len(table))
    failed = 0
    with tempfile.TemporaryDirectory(prefix='udsports-') as home:
        env = dict(os.environ, HOME=home, WIRESHARK_CONFIG_DIR=os.path.join(home, 'ws'))
        for n, (name, port) in enumerate(table, 1):
            if name not in SAMPLES:
                print('not ok %d - %s: no sample traffic in check-ports.py for this keyword' % (n, name))
                failed += 1
                continue
            transport, exchange, want = SAMPLES[name]
            pcap, data_frames = capture(int(port), exchange, transport)
            path = os.path.join(home, name + '.pcap')
            with open(path, 'wb') as f:
                f.write(pcap)
            out = subprocess.run([tshark, '-r', path, '-T', 'fields', '-e', 'frame.number', '-e', '_ws.col.Protocol'],
                                 capture_output=True, text=True, env=env, timeout=60).stdout
            seen = dict(line.split('\t', 1) for line in out.splitlines() if '\t' in line)
            got = [seen.get(str(i), '?') for i in data_frames]
            expect = want if want else transport.upper()
            ok = all(g == expect for g in got)
            failed += not ok
            print('%s %d - %s on %s port %s decodes as %s (got %s)' % ('ok' if ok else 'not ok', n, name, transport,
                                                                      port, expect, ', '.join(got)))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
