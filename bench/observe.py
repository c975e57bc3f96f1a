#!/usr/bin/env python3
"""bench/observe.py - observe mode's cost, side by side in one run (`scripts/bench observe`).

One Unix stream socket (bench/server.c), measured unobserved and observed by `udsdump --mode observe`
(its pcap read by udsbench-pcapcount, which counts what the capture holds):
  bulk        one connection, BENCH_BULK_MB one way, in 16 KiB, 64 KiB and 1 MiB writes
  rtt         64-byte round trips (median)
  unrelated   bulk in 64 KiB writes on a second socket, while the first one is observed or not
Rounds interleave the two cases; the table reports medians, the bytes the capture holds against the
bytes sent, and the issue's targets: observed bulk >= 0.6x at 64 KiB writes with no loss, round trip
<= 1.2x, unrelated socket >= 0.95x.  Where the time goes, per process (client, server, udsdump, the
reader): CPU seconds per GB for bulk, CPU microseconds per round trip, medians; and how many CPUs the
rest of the machine kept busy meanwhile (a shared machine: each measurement first waits, within
BENCH_QUIET_WAIT, for a quiet moment, as bench/run.py does).

Needs root (observe mode loads BPF programs).  Knobs: BENCH_ROUNDS (3), BENCH_BULK_MB (200),
BENCH_RTT_N (20000), and those of bench/run.py for the build.
"""
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as r  # noqa: E402

ROUNDS = r.env_int("BENCH_ROUNDS", 3)
BULK = r.env_int("BENCH_BULK_MB", 200) * 1000 * 1000
RTT_N = r.env_int("BENCH_RTT_N", 20000)
WRITES = [16 * 1024, 64 * 1024, 1024 * 1024]


NOTES = {"waited": 0.0, "others": []}


def counted(env, fn, n, *pids):
    """r.counted (CPU seconds per n/1e9 units, per process) plus how many CPUs the rest of the machine
    kept busy meanwhile (/proc/stat's busy time less what the measured processes spent)."""
    t0, b0 = time.monotonic(), r.Load.busy()
    out = r.counted(lambda: {"v": fn(env.sock)}, n, env.server.pid, *pids)
    dt, busy = time.monotonic() - t0, r.Load.busy() - b0
    NOTES["others"].append(max(0.0, busy - sum(out["cpu"].values()) * n / 1e9) / dt if dt > 0 else 0.0)
    return out


def measure(env, observed, fn, n):
    """fn(path) -> value, with env's socket observed or not; returns it, the capture's counts (observed)
    and the CPU each process spent meanwhile per n/1e9 units (bulk: n bytes, so seconds per GB)."""
    NOTES["waited"] += r.wait_quiet(env, r.QUIET_WAIT - NOTES["waited"])
    if not observed:
        out = counted(env, fn, n)
        return out["v"], None, out["cpu"]
    with r.Udsdump(env, ["--mode", "observe"]) as u:
        # counted from here: loading and verifying the programs is not the measurement
        out = counted(env, fn, n, u.ud.pid, u.reader.pid)
        return out["v"], u.finish(), out["cpu"]


def main():
    if os.geteuid() != 0:
        raise r.BenchError("observe mode needs root: run scripts/bench observe as root")
    tmp = tempfile.mkdtemp(prefix="udsbench-obs-")
    os.chmod(tmp, 0o700)
    try:
        env = r.Env(tmp)
        env.start_server()
        other = r.Env(os.path.join(tmp, "other"))
        other.start_server()
        res = {}
        captured = {}
        cpus = {}

        def add(key, v, summary, sent, cpu=None):
            res.setdefault(key, []).append(v)
            for proc, c in (cpu or {}).items():
                cpus.setdefault(key, {}).setdefault(proc, []).append(c)
            if summary is not None:
                got = int(summary["c2s_bytes"]) + int(summary["s2c_bytes"])
                c = captured.setdefault(key, [0, 0, 0])
                c[0] += got
                c[1] += sent
                c[2] += int(summary["dropped_bytes"])

        for rnd in range(ROUNDS):
            for observed in ((False, True) if rnd % 2 == 0 else (True, False)):
                tag = "observed" if observed else "unobserved"
                print(f"bench: round {rnd + 1}/{ROUNDS}: {tag}", file=sys.stderr, flush=True)
                for w in WRITES:
                    v, s, c = measure(env, observed, lambda p: float(r.run_client(p, "bulk", BULK, w)["mbps"]), BULK)
                    add(("bulk", w, observed), v, s, 1 + BULK + 8, c)
                total = max(100, RTT_N // 10) + RTT_N
                # per round trip, in microseconds: n/1e9 units of total * 1e3 are total / 1e6
                v, s, c = measure(env, observed, lambda p: float(r.run_client(p, "rtt", RTT_N, r.MSG)["median_us"]),
                                  total * 1000)
                add(("rtt", observed), v, s, 1 + 2 * r.MSG * total, c)
                # the unrelated socket, while env's is observed (or not)
                v, _, _ = measure(env, observed,
                                  lambda p: float(r.run_client(other.sock, "bulk", BULK, 64 * 1024)["mbps"]), BULK)
                add(("unrelated", observed), v, None, 0)
        r.stop(env.server)
        r.stop(other.server)
    finally:
        r.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in res.items()}
    lines = [f"observe mode: medians of {ROUNDS} rounds, {BULK // 1000000} MB bulk, {RTT_N} round trips "
             f"({r.machine()})", "",
             "| measurement | unobserved | observed | ratio | captured / sent | lost |", "|---|---:|---:|---:|---:|---:|"]
    ok = True

    def cap(key):
        c = captured.get(key)
        return (f"{c[0] / c[1]:.4f}", f"{c[2]}") if c and c[1] else ("-", "-")

    for w in WRITES:
        a, b = med[("bulk", w, False)], med[("bulk", w, True)]
        cs, lost = cap(("bulk", w, True))
        lines.append(f"| bulk MB/s, {w // 1024} KiB writes | {a:.0f} | {b:.0f} | {b / a:.2f}x | {cs} | {lost} |")
    a, b = med[("rtt", False)], med[("rtt", True)]
    cs, lost = cap(("rtt", True))
    lines.append(f"| round trip µs (64 B) | {a:.1f} | {b:.1f} | {b / a:.2f}x | {cs} | {lost} |")
    u0, u1 = med[("unrelated", False)], med[("unrelated", True)]
    lines.append(f"| unrelated socket bulk MB/s, 64 KiB writes | {u0:.0f} | {u1:.0f} | {u1 / u0:.2f}x | - | - |")
    lines += ["", "Where the time goes (medians; bulk: CPU seconds per GB, round trip: CPU µs per round trip; "
              "relay = udsdump):", "",
              "| measurement | client | server | udsdump | reader | total |", "|---|---:|---:|---:|---:|---:|"]

    def cpu_row(name, key, fmt):
        c = {k: statistics.median(v) for k, v in cpus.get(key, {}).items()}
        cells = [fmt % c[k] if k in c else "-" for k in ("client", "server", "relay", "reader")]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {fmt % sum(c.values())} |")

    for observed in (False, True):
        tag = "observed" if observed else "unobserved"
        cpu_row(f"bulk 64 KiB writes, {tag}", ("bulk", 64 * 1024, observed), "%.3f")
        cpu_row(f"round trip, {tag}", ("rtt", observed), "%.2f")
    others = NOTES["others"]
    lines += ["", f"The rest of the machine kept {statistics.median(others):.2f} CPUs busy during a measurement "
              f"(median; max {max(others):.2f}); load average {os.getloadavg()[0]:.2f} at the end; "
              f"{NOTES['waited']:.0f} s spent waiting for quiet moments.", ""]
    b64 = med[("bulk", 64 * 1024, True)] / med[("bulk", 64 * 1024, False)]
    c64 = captured.get(("bulk", 64 * 1024, True), [0, 1, 1])
    targets = [
        ("observed bulk at 64 KiB writes >= 0.6x, no loss", b64 >= 0.6 and c64[2] == 0 and c64[0] == c64[1],
         f"{b64:.2f}x, {c64[2]} bytes lost"),
        ("observed round trip <= 1.2x", b / a <= 1.2, f"{b / a:.2f}x"),
        ("unrelated socket >= 0.95x", u1 / u0 >= 0.95, f"{u1 / u0:.2f}x"),
    ]
    for name, good, val in targets:
        ok &= good
        lines.append(f"{'PASS' if good else 'MISS'}  {name}: {val}")
    print("\n".join(lines))
    return 0 if ok or not r.STRICT else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (r.BenchError, OSError) as e:
        print(f"bench: {e}", file=sys.stderr)
        sys.exit(1)
