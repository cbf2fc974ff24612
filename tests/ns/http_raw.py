#!/usr/bin/env python3
"""tests/ns/http_raw.py - raw-socket HTTP checks against c10m's http app: malformed and
hostile requests, HEAD framing, pipelining.

Purpose: each mode opens one TCP connection, sends something a well-behaved client
would not, and checks the server's answer; exit status 0 if the server behaved.
  garbage     binary junk and a line that is no request      -> 400, then close
  longheader  a header line that never ends (up to --bytes)  -> 431 (or a close) at the limit
  truncated   half a request line, then close                -> no answer, no crash
  bigbody     Content-Length: 999999999                      -> 413, then close
  version     HTTP/3.0                                       -> 505, then close
  head        HEAD --path (Connection: close): headers only, Content-Length --length
  pipeline    --count requests in one write (one with a body, one 404) -> all answered, in order
Usage: http_raw.py MODE --host H --port P [--bytes N] [--count N]
Runs anywhere (no root); the namespace test runs it in the peer namespace.
"""

import argparse
import socket
import sys
import time


def connect(a):
    s = socket.create_connection((a.host, a.port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_all(s, limit=1 << 22):
    """Read until the server closes (or resets); return the bytes and whether it closed."""
    out = b""
    s.settimeout(10)
    try:
        while len(out) < limit:
            b = s.recv(65536)
            if not b:
                return out, True
            out += b
    except ConnectionResetError:
        return out, True
    except socket.timeout:
        return out, False
    return out, False


def status_of(resp):
    line = resp.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        return None
    try:
        return int(parts[1])
    except ValueError:
        return None


def expect_status(a, payload, want):
    s = connect(a)
    s.sendall(payload)
    resp, closed = read_all(s)
    s.close()
    got = status_of(resp)
    head = resp.split(b"\r\n\r\n", 1)[0].decode(errors="replace")
    if got != want or not closed:
        print(f"{a.mode}: want {want} and a close, got {got} (closed={closed}): {head!r}")
        return False
    print(f"{a.mode}: {want} and close, as expected")
    return True


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--bytes", type=int, default=1 << 20)
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--path", default="/")
    p.add_argument("--length", type=int, default=-1)
    a = p.parse_args()

    if a.mode == "garbage":
        ok = expect_status(a, b"\x00\x01\x02 not http at all\r\n\r\n", 400)
        ok = expect_status(a, b"GET /\r\n\r\n", 400) and ok  # HTTP/0.9 style: no version
        return ok
    if a.mode == "bigbody":
        return expect_status(
            a, b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n", 413
        )
    if a.mode == "version":
        return expect_status(a, b"GET / HTTP/3.0\r\nHost: x\r\n\r\n", 505)
    if a.mode == "truncated":
        s = connect(a)
        s.sendall(b"GET /index.ht")
        time.sleep(0.2)
        s.shutdown(socket.SHUT_WR)
        resp, closed = read_all(s)
        s.close()
        if resp or not closed:
            print(f"truncated: expected a silent close, got {resp[:80]!r} closed={closed}")
            return False
        # And one that resets mid-request.
        s = connect(a)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Partial: abc")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # RST
        print("truncated: silent close after a half request; reset mid-request sent")
        return True
    if a.mode == "longheader":
        # Send a header line that never ends, in 1 KiB pieces, until the server answers or
        # closes (or --bytes are sent: then it failed to cut us off).
        s = connect(a)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        sent = 0
        piece = b"a" * 1024
        cut = False
        s.settimeout(5)
        try:
            while sent < a.bytes:
                s.sendall(piece)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            cut = True
        resp, closed = read_all(s)
        s.close()
        got = status_of(resp)
        if got == 431 or (not resp and closed and cut):
            print(f"longheader: cut off after {sent} header bytes sent: status {got}, closed={closed}")
            return True
        print(f"longheader: not cut off: sent {sent}, status {got}, closed={closed}")
        return False
    if a.mode == "head":
        s = connect(a)
        s.sendall(f"HEAD {a.path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        resp, closed = read_all(s)
        s.close()
        head, sep, body = resp.partition(b"\r\n\r\n")
        lens = [
            int(v)
            for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:])
            if k.strip().lower() == b"content-length"
        ]
        if status_of(resp) != 200 or not sep or body or lens != [a.length] or not closed:
            print(f"head: bad answer (closed={closed}, body {len(body)} bytes): {head!r}")
            return False
        print(f"head: 200, Content-Length {a.length}, no body, closed")
        return True
    if a.mode == "pipeline":
        reqs = []
        want = []
        for i in range(a.count):
            if i % 5 == 1:
                reqs.append(b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n")
                want.append(404)
            elif i % 5 == 2:
                reqs.append(b"OPTIONS / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody")
                want.append(405)
            else:
                reqs.append(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                want.append(200)
        reqs.append(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        want.append(200)
        s = connect(a)
        s.sendall(b"".join(reqs))
        resp, closed = read_all(s)
        s.close()
        got = []
        rest = resp
        while rest:
            head, _, rest = rest.partition(b"\r\n\r\n")
            got.append(status_of(head))
            n = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    n = int(v)
            rest = rest[n:]
        if got != want or not closed:
            print(f"pipeline: want {want}, got {got} (closed={closed})")
            return False
        print(f"pipeline: {len(got)} responses in order, then close")
        return True
    print(f"unknown mode {a.mode}", file=sys.stderr)
    return False


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
