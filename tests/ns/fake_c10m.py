#!/usr/bin/env python3
"""tests/ns/fake_c10m.py - DEVELOPMENT STAND-IN for target/release/c10m (kernel sockets).

Purpose: prove the namespace tests and scripts before the real binary exists. It
accepts the `c10m serve` arguments, adds --ip/--ip6 to --iface as *kernel* addresses,
serves TCP+UDP echo on --port with kernel sockets, prints `c10m: ready`, and on
SIGINT/SIGTERM removes the addresses, prints counters and writes --stats-json.
It attaches no XDP program. Never a substitute for the real c10m in results.

Usage: C10M_BIN=tests/ns/fake_c10m.py tests/ns/run
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kernel_echo  # noqa: E402


def main():
    if len(sys.argv) < 2 or sys.argv[1] != "serve":
        print("usage: fake_c10m.py serve --iface IF --ip A/P [--ip6 A/P] [--duration S] ...",
              file=sys.stderr)
        return 2
    p = argparse.ArgumentParser()
    p.add_argument("--iface", required=True)
    p.add_argument("--ip", required=True)
    p.add_argument("--ip6")
    p.add_argument("--app", default="echo")
    p.add_argument("--port", type=int, default=7)
    p.add_argument("--queue", type=int, default=0)
    p.add_argument("--xdp-mode", default="auto")
    p.add_argument("--force", action="store_true")
    p.add_argument("--stats-json")
    p.add_argument("--duration", type=float, default=0)
    a = p.parse_args(sys.argv[2:])
    addrs = [a.ip] + ([a.ip6] if a.ip6 else [])
    for cidr in addrs:
        extra = ["nodad"] if ":" in cidr else []
        r = subprocess.run(["ip", "addr", "replace", cidr, "dev", a.iface] + extra,
                           capture_output=True, text=True)
        if r.returncode:
            print(f"fake_c10m: ip addr add {cidr}: {r.stderr.strip()}", file=sys.stderr)
            return 1
    print("fake_c10m: stand-in (kernel sockets, no XDP)", file=sys.stderr, flush=True)
    kernel_echo.start([c.split("/")[0] for c in addrs], a.port, tag="c10m")

    def remove():
        for cidr in addrs:
            subprocess.run(["ip", "addr", "del", cidr, "dev", a.iface], capture_output=True)

    stats = kernel_echo.serve_until_signal(a.duration or 3600, on_stop=remove)
    if a.stats_json:
        with open(a.stats_json, "w") as f:
            json.dump(stats, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
