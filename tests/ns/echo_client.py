#!/usr/bin/env python3
"""tests/ns/echo_client.py - verifying TCP/UDP echo clients for the c10m testbed.

Purpose: drive an echo server (c10m or the kernel) from the peer namespace and check
every byte. Each mode prints one `result: ...` line and exits 0 on success, 1 on a
verification failure, 2 on a timeout/error. All waits are bounded (--timeout).

Modes:
  bulk --bytes N   one TCP connection, N random bytes; sender and receiver run
                   concurrently (thread); SHA-256 of sent == SHA-256 of received; MB/s
  seq  --count N   N sequential TCP connections, each echoes a distinct random message
  conc --count N   N TCP connections open at the same time, each echoes a distinct message
  udp  --count N   N UDP datagrams with distinct payloads; one retry per datagram
                   on timeout; all N payloads must come back

Usage (in the peer namespace):
  ip netns exec NAME-peer python3 tests/ns/echo_client.py bulk --bytes 16777216 --host 198.18.0.2
  ip netns exec NAME-peer python3 tests/ns/echo_client.py udp --count 1000 --host 2001:2::2
"""
import argparse
import hashlib
import os
import socket
import sys
import threading
import time


class Fail(Exception):
    pass


def addr(host, port, kind):
    infos = socket.getaddrinfo(host, port, type=kind)
    fam, _, _, _, sa = infos[0]
    return fam, sa


def tcp_connect(args, timeout):
    """Connect with a bounded timeout; retry (bounded) on refused/reset/timeout."""
    fam, sa = addr(args.host, args.port, socket.SOCK_STREAM)
    last = None
    for attempt in range(args.connect_retries + 1):
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(sa)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return s, attempt
        except OSError as e:
            last = e
            s.close()
            time.sleep(0.05 * (attempt + 1))
    raise Fail(f"connect to {args.host}:{args.port} failed after "
               f"{args.connect_retries + 1} attempts: {last!r}")


def recv_exact(s, n, deadline):
    chunks, got = [], 0
    while got < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Fail(f"timeout: received {got} of {n} bytes")
        s.settimeout(min(left, 5.0))
        try:
            b = s.recv(min(1 << 20, n - got))
        except socket.timeout:
            continue
        if not b:
            raise Fail(f"connection closed after {got} of {n} bytes")
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def mode_bulk(args):
    n = args.bytes
    data = os.urandom(n)
    want = hashlib.sha256(data).hexdigest()
    s, retries = tcp_connect(args, min(args.timeout, 10))
    deadline = time.monotonic() + args.timeout
    err = []

    # One socket timeout (1 s) shared by both threads; each loop re-checks the deadline.
    s.settimeout(1.0)

    def sender():
        try:
            view = memoryview(data)
            off = 0
            while off < n:
                if time.monotonic() > deadline:
                    raise Fail(f"timeout while sending ({off} of {n} bytes sent)")
                try:
                    off += s.send(view[off:off + 65536])
                except socket.timeout:
                    continue
        except Exception as e:  # reported by the main thread
            err.append(e)

    t0 = time.monotonic()
    th = threading.Thread(target=sender, daemon=True)
    th.start()
    h = hashlib.sha256()
    got = 0
    try:
        while got < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Fail(f"timeout: received {got} of {n} bytes")
            if err:
                raise Fail(f"sender failed after receiving {got} bytes: {err[0]!r}")
            try:
                b = s.recv(1 << 20)
            except socket.timeout:
                continue
            if not b:
                raise Fail(f"connection closed after {got} of {n} bytes")
            h.update(b)
            got += len(b)
        dt = time.monotonic() - t0
    finally:
        th.join(timeout=5)
        s.close()
    if err:
        raise Fail(f"sender failed: {err[0]!r}")
    have = h.hexdigest()
    if have != want:
        print(f"result: bulk FAILED sha256 mismatch sent={want} received={have}")
        return 1
    mbs = n / dt / 1e6
    print(f"result: bulk ok bytes={n} sha256={want[:16]} secs={dt:.3f} "
          f"MB/s={mbs:.1f} connect_retries={retries}")
    return 0


def message(i):
    # distinct: index prefix + random body of varying length
    return f"{i:06d}:".encode() + os.urandom(16 + (i * 37) % 1400)


def mode_seq(args):
    t0 = time.monotonic()
    retries = 0
    for i in range(args.count):
        msg = message(i)
        s, r = tcp_connect(args, 5)
        retries += r
        try:
            s.sendall(msg)
            back = recv_exact(s, len(msg), time.monotonic() + 5)
        finally:
            s.close()
        if back != msg:
            print(f"result: seq FAILED connection {i}: echoed data differs")
            return 1
        if time.monotonic() - t0 > args.timeout:
            raise Fail(f"timeout after {i + 1} of {args.count} connections")
    dt = time.monotonic() - t0
    print(f"result: seq ok connections={args.count} secs={dt:.3f} "
          f"conn_per_s={args.count / dt:.0f} connect_retries={retries}")
    return 0


def mode_conc(args):
    t0 = time.monotonic()
    socks, msgs, retries = [], [], 0
    try:
        for i in range(args.count):  # all connections open at once
            s, r = tcp_connect(args, 5)
            retries += r
            socks.append(s)
        for i, s in enumerate(socks):  # small messages: fit in socket buffers
            m = message(i)
            msgs.append(m)
            s.sendall(m)
        deadline = time.monotonic() + args.timeout
        for i, s in enumerate(socks):
            back = recv_exact(s, len(msgs[i]), deadline)
            if back != msgs[i]:
                print(f"result: conc FAILED connection {i}: echoed data differs")
                return 1
    finally:
        for s in socks:
            s.close()
    dt = time.monotonic() - t0
    print(f"result: conc ok connections={args.count} open_at_once={len(socks)} "
          f"secs={dt:.3f} connect_retries={retries}")
    return 0


def mode_udp(args):
    fam, sa = addr(args.host, args.port, socket.SOCK_DGRAM)
    s = socket.socket(fam, socket.SOCK_DGRAM)
    t0 = time.monotonic()
    retried, got = 0, 0
    try:
        for i in range(args.count):
            payload = f"{i:06d}:".encode() + os.urandom(8 + i % 1000)
            ok = False
            for attempt in range(2):  # one retry on timeout
                if attempt:
                    retried += 1
                s.sendto(payload, sa)
                end = time.monotonic() + args.udp_wait
                while not ok:
                    left = end - time.monotonic()
                    if left <= 0:
                        break
                    s.settimeout(left)
                    try:
                        b, _ = s.recvfrom(65536)
                    except socket.timeout:
                        break
                    ok = b == payload  # late replies to earlier datagrams are ignored
                if ok:
                    break
            if not ok:
                print(f"result: udp FAILED datagram {i} not echoed (after one retry); "
                      f"{got} of {args.count} back")
                return 1
            got += 1
            if time.monotonic() - t0 > args.timeout:
                raise Fail(f"timeout after {got} of {args.count} datagrams")
    finally:
        s.close()
    dt = time.monotonic() - t0
    print(f"result: udp ok datagrams={got} retried={retried} secs={dt:.3f} "
          f"rtt_avg_ms={dt / max(got, 1) * 1000:.3f}")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=["bulk", "seq", "conc", "udp"])
    p.add_argument("--host", default="198.18.0.2")
    p.add_argument("--port", type=int, default=7)
    p.add_argument("--bytes", type=int, default=16 << 20)
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--timeout", type=float, default=60.0, help="overall limit, seconds")
    p.add_argument("--connect-retries", type=int, default=2)
    p.add_argument("--udp-wait", type=float, default=0.5, help="seconds per UDP attempt")
    args = p.parse_args()
    try:
        return {"bulk": mode_bulk, "seq": mode_seq, "conc": mode_conc,
                "udp": mode_udp}[args.mode](args)
    except (Fail, OSError) as e:
        print(f"result: {args.mode} FAILED {e}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
