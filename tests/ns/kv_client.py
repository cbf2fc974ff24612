#!/usr/bin/env python3
"""kv_client.py - a small RESP2 client for tests/ns/t_kv.sh that shows replies raw.

Purpose: talk to c10m's `kv` app and to redis-server alike and print exactly the bytes
each answered, so two servers can be compared byte for byte.

Modes (all take --host HOST --port PORT; exit status 0 unless said otherwise):
  script FILE       run the commands in FILE (one per line, shell-style quoting; '#'
                    comments), printing one line per reply: the raw reply bytes as a
                    Python bytes literal. Directives:
                      !sleep SECONDS      pause
                      !pipeline N         send the next N commands in one write, then
                                          read their N replies
                      ~COMMAND ...        timing-dependent reply: print only its type
                                          and whether it is positive (e.g. PTTL)
  raw HEX [--times N]  send the bytes (hex; N times over), half-close, print everything received until
                    the server closes (or --timeout), as a bytes literal; exit 0 if the
                    server closed the connection, 3 if it was still open at the timeout
  bigvalue SIZE     SET a SIZE-byte random value, GET it back, compare; then DEL
  set KEY SIZE      SET KEY to SIZE random bytes, print the reply; exit 1 unless +OK
  truncated         send half a command and disconnect (the server must not answer)
  garbage N SEED    send N pseudo-random bytes, read until the server closes or
                    --timeout (either is fine: what matters is that it keeps serving)
Prereqs: python3.  Usage: kv_client.py --host 198.18.0.2 --port 6379 script FILE
"""
import argparse
import codecs
import os
import shlex
import socket
import sys
import time


def words(line):
    """Shell-style split, then Python escapes (\\r \\n \\xHH) in each word."""
    return [codecs.escape_decode(w)[0] for w in shlex.split(line)]


def encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Reader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self):
        d = self.sock.recv(1 << 20)
        if not d:
            raise EOFError("server closed the connection")
        self.buf += d

    def _line(self, start):
        while True:
            i = self.buf.find(b"\r\n", start)
            if i >= 0:
                return i
            self._fill()

    def _reply_end(self, pos):
        """Offset just past the reply starting at pos (reading more as needed)."""
        while len(self.buf) <= pos:
            self._fill()
        t = self.buf[pos:pos + 1]
        eol = self._line(pos)
        head = self.buf[pos + 1:eol]
        if t in (b"+", b"-", b":"):
            return eol + 2
        n = int(head)
        if t == b"$":
            if n < 0:
                return eol + 2
            end = eol + 2 + n + 2
            while len(self.buf) < end:
                self._fill()
            return end
        if t == b"*":
            p = eol + 2
            for _ in range(max(n, 0)):
                p = self._reply_end(p)
            return p
        raise ValueError("bad reply type %r in %r" % (t, self.buf[pos:pos + 40]))

    def reply(self):
        end = self._reply_end(0)
        r, self.buf = self.buf[:end], self.buf[end:]
        return r


def connect(a):
    s = socket.create_connection((a.host, a.port), timeout=a.timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def show(reply, fuzzy):
    if fuzzy:
        t = reply[:1]
        if t == b":":
            n = int(reply[1:-2])
            return "%s int %s" % ("~", "positive" if n > 0 else str(n))
        return "~ %r" % t
    return repr(reply)


def cmd_script(a):
    lines = []
    with open(a.file) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                lines.append(line)
    s = connect(a)
    r = Reader(s)
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if line.startswith("!sleep"):
            time.sleep(float(line.split()[1]))
            continue
        if line.startswith("!pipeline"):
            n = int(line.split()[1])
            batch = lines[i:i + n]
            i += n
            s.sendall(b"".join(encode(words(l.lstrip("~"))) for l in batch))
            for l in batch:
                print("%s  <- %s (pipelined)" % (show(r.reply(), l.startswith("~")), l))
            continue
        fuzzy = line.startswith("~")
        s.sendall(encode(words(line.lstrip("~"))))
        print("%s  <- %s" % (show(r.reply(), fuzzy), line))
    s.close()
    return 0


def cmd_raw(a):
    s = connect(a)
    s.sendall(bytes.fromhex(a.hex) * a.times)
    try:
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    got = b""
    closed = False
    deadline = time.monotonic() + a.timeout
    while time.monotonic() < deadline:
        try:
            d = s.recv(1 << 20)
        except socket.timeout:
            break
        except ConnectionResetError:
            closed = True
            break
        if not d:
            closed = True
            break
        got += d
    print(repr(got))
    return 0 if closed else 3


def cmd_bigvalue(a):
    val = os.urandom(a.size)
    s = connect(a)
    r = Reader(s)
    s.sendall(encode([b"SET", b"bigvalue", val]))
    rep = r.reply()
    if rep != b"+OK\r\n":
        print("SET of %d bytes answered %r" % (a.size, rep[:80]))
        return 1
    s.sendall(encode([b"GET", b"bigvalue"]) + encode([b"STRLEN", b"bigvalue"]))
    got = r.reply()
    want = b"$%d\r\n" % len(val) + val + b"\r\n"
    if got != want:
        print("GET returned %d bytes, expected %d (differ)" % (len(got), len(want)))
        return 1
    n = r.reply()
    s.sendall(encode([b"DEL", b"bigvalue"]))
    d = r.reply()
    print("bigvalue %d bytes: SET/GET equal, STRLEN %r, DEL %r" % (a.size, n, d))
    return 0 if n == b":%d\r\n" % a.size and d == b":1\r\n" else 1


def cmd_set(a):
    s = connect(a)
    r = Reader(s)
    s.sendall(encode([b"SET", a.key.encode(), os.urandom(a.size)]))
    rep = r.reply()
    print("SET %s (%d bytes): %r" % (a.key, a.size, rep))
    return 0 if rep == b"+OK\r\n" else 1


def cmd_truncated(a):
    s = connect(a)
    s.sendall(b"*3\r\n$3\r\nSET\r\n$3\r\nabc\r\n$100\r\nonly part")
    time.sleep(0.2)
    s.setblocking(False)
    try:
        d = s.recv(100)
    except BlockingIOError:
        d = b""
    s.close()
    if d:
        print("unexpected reply to a truncated command: %r" % d)
        return 1
    print("truncated command: no reply, disconnected")
    return 0


def cmd_garbage(a):
    import random
    rnd = random.Random(a.seed)
    data = bytes(rnd.getrandbits(8) for _ in range(a.n))
    s = connect(a)
    got = b""
    try:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        while True:
            d = s.recv(1 << 16)
            if not d:
                break
            got += d
    except (ConnectionResetError, BrokenPipeError, socket.timeout):
        pass
    print("garbage %d bytes (seed %d): %d bytes back, first %r" % (a.n, a.seed, len(got), got[:60]))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--timeout", type=float, default=10.0)
    sub = p.add_subparsers(dest="mode", required=True)
    sp = sub.add_parser("script")
    sp.add_argument("file")
    sp = sub.add_parser("raw")
    sp.add_argument("hex")
    sp.add_argument("--times", type=int, default=1, help="send the bytes this many times")
    sp = sub.add_parser("bigvalue")
    sp.add_argument("size", type=int)
    sp = sub.add_parser("set")
    sp.add_argument("key")
    sp.add_argument("size", type=int)
    sub.add_parser("truncated")
    sp = sub.add_parser("garbage")
    sp.add_argument("n", type=int)
    sp.add_argument("seed", type=int)
    a = p.parse_args()
    return {"script": cmd_script, "raw": cmd_raw, "bigvalue": cmd_bigvalue, "set": cmd_set,
            "truncated": cmd_truncated, "garbage": cmd_garbage}[a.mode](a)


if __name__ == "__main__":
    sys.exit(main())
