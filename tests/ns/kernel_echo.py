#!/usr/bin/env python3
"""tests/ns/kernel_echo.py - threaded kernel-socket TCP+UDP echo server (the baseline).

Purpose: the kernel counterpart of `c10m serve --app echo`, run in the stack
namespace on the pass-through address (198.18.0.3 / 2001:2::3) so tests can
compare c10m with the kernel in one run. Prints `kernel_echo: ready` on stderr
once all sockets listen; on SIGINT/SIGTERM prints counters (`name value`) and exits 0.
Also used by fake_c10m.py (a development stand-in for the c10m binary).

Usage: ip netns exec NAME-stack python3 tests/ns/kernel_echo.py --bind 198.18.0.3 \
           [--bind 2001:2::3] [--port 7] [--max-seconds 600]
"""
import argparse
import signal
import socket
import sys
import threading
import time

COUNTERS = {"tcp_conns": 0, "tcp_bytes": 0, "udp_datagrams": 0, "udp_bytes": 0}
LOCK = threading.Lock()


def count(name, n):
    with LOCK:
        COUNTERS[name] += n


def tcp_conn(c):
    count("tcp_conns", 1)
    try:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.settimeout(300)
        while True:
            b = c.recv(1 << 18)
            if not b:
                break
            c.sendall(b)
            count("tcp_bytes", len(b))
    except OSError:
        pass
    finally:
        c.close()


def tcp_server(ls):
    while True:
        try:
            c, _ = ls.accept()
        except OSError:
            return
        threading.Thread(target=tcp_conn, args=(c,), daemon=True).start()


def udp_server(us):
    while True:
        try:
            b, a = us.recvfrom(65536)
            us.sendto(b, a)
            count("udp_datagrams", 1)
            count("udp_bytes", len(b))
        except OSError:
            return


def start(binds, port, tag="kernel_echo"):
    for host in binds:
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        ls = socket.socket(fam, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET6:
            ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        ls.bind((host, port))
        ls.listen(1024)
        us = socket.socket(fam, socket.SOCK_DGRAM)
        if fam == socket.AF_INET6:
            us.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        us.bind((host, port))
        threading.Thread(target=tcp_server, args=(ls,), daemon=True).start()
        threading.Thread(target=udp_server, args=(us,), daemon=True).start()
    print(f"{tag}: ready", file=sys.stderr, flush=True)


def serve_until_signal(max_seconds, on_stop=None):
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait(max_seconds)
    if on_stop:
        on_stop()
    with LOCK:
        for k, v in COUNTERS.items():
            print(f"{k} {v}", file=sys.stderr, flush=True)
    return dict(COUNTERS)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bind", action="append", default=[])
    p.add_argument("--port", type=int, default=7)
    p.add_argument("--max-seconds", type=float, default=600,
                   help="exit by itself after this long (bounded lifetime)")
    a = p.parse_args()
    start(a.bind or ["198.18.0.3"], a.port)
    serve_until_signal(a.max_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
