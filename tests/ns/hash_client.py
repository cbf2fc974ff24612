#!/usr/bin/env python3
"""tests/ns/hash_client.py - clients of c10m's `hash` app (run in the peer namespace).

Protocol: 8-byte big-endian length, then the body; the server answers the body's
SHA-256 (32 bytes). Modes (each prints one `result:` line, exit 0 on success):
  sizes  --sizes 0,1,65536,16777216   one connection per size, body written in random
                                      segment sizes, digest compared with hashlib's
  pipeline --count N                  N requests back to back on one connection
  abort  --bytes N                    announce 16 MiB, send N bytes, reset (SO_LINGER 0)
  oversize                            announce 64 MiB + 1: the server must reset
Every wait is bounded by --timeout.
"""
import argparse, hashlib, os, random, socket, struct, sys, time


def connect(a):
    s = socket.create_connection((a.host, a.port), timeout=a.timeout)
    s.settimeout(a.timeout)
    return s


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def send_random_segments(s, data, rng):
    i = 0
    while i < len(data):
        k = rng.choice([1, 7, 100, 1460, 4096, 65536, 300000])
        s.sendall(data[i : i + k])
        i += k


def request(s, body, rng):
    s.sendall(struct.pack(">Q", len(body)))
    send_random_segments(s, body, rng)
    return recv_exact(s, 32)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["sizes", "pipeline", "abort", "oversize"])
    p.add_argument("--host", default="198.18.0.2")
    p.add_argument("--port", type=int, default=9)
    p.add_argument("--sizes", default="0,1,65536,16777216")
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--bytes", type=int, default=1 << 20)
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--seed", type=int, default=int(time.time()))
    a = p.parse_args()
    rng = random.Random(a.seed)
    t0 = time.monotonic()
    try:
        if a.mode == "sizes":
            for n in [int(x) for x in a.sizes.split(",")]:
                body = os.urandom(n)
                with connect(a) as s:
                    got = request(s, body, rng)
                want = hashlib.sha256(body).digest()
                if got != want:
                    print(f"result: sizes FAILED size={n} got={got.hex()} want={want.hex()}")
                    return 1
            print(f"result: sizes ok sizes={a.sizes} seed={a.seed} secs={time.monotonic()-t0:.2f}")
        elif a.mode == "pipeline":
            bodies = [os.urandom(rng.randrange(0, 200000)) for _ in range(a.count)]
            with connect(a) as s:
                # Send everything first (the server must handle requests back to back
                # and keep their order), then read every digest.
                payload = b"".join(struct.pack(">Q", len(b)) + b for b in bodies)
                import threading
                t = threading.Thread(target=s.sendall, args=(payload,))
                t.start()
                got = [recv_exact(s, 32) for _ in bodies]
                t.join(a.timeout)
            bad = [i for i, (g, b) in enumerate(zip(got, bodies)) if g != hashlib.sha256(b).digest()]
            if bad:
                print(f"result: pipeline FAILED wrong digests at {bad[:5]}")
                return 1
            print(f"result: pipeline ok requests={a.count} secs={time.monotonic()-t0:.2f}")
        elif a.mode == "abort":
            s = connect(a)
            s.sendall(struct.pack(">Q", 16 << 20))
            s.sendall(os.urandom(a.bytes))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
            print(f"result: abort ok sent={a.bytes}")
        elif a.mode == "oversize":
            with connect(a) as s:
                s.sendall(struct.pack(">Q", (64 << 20) + 1))
                try:
                    data = s.recv(32)
                    ok = data == b""
                except (ConnectionResetError, BrokenPipeError):
                    ok = True
            if not ok:
                print("result: oversize FAILED server answered an oversized request")
                return 1
            print("result: oversize ok (connection reset)")
    except (OSError, EOFError) as e:
        print(f"result: {a.mode} FAILED {e!r}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
