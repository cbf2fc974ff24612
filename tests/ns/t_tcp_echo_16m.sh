#!/usr/bin/env bash
# tests/ns/t_tcp_echo_16m.sh - 16 MiB of random bytes echoed by c10m over TCP port 7;
# SHA-256 of sent == SHA-256 of received; prints MB/s.
#   peer: echo_client.py bulk ==TCP==> 198.18.0.2:7 (c10m echo)
# Prerequisites: root, target/release/c10m, python3. Usage: tests/ns/run t_tcp_echo_16m
set -euo pipefail
source "$(dirname "$0")/common.sh"

c10m_start
out="$(echo_client bulk --bytes $((16 << 20)) --host "$C10M_IP" --timeout 90)" || {
    echo "$out"
    fail "16 MiB TCP echo through c10m"
}
echo "$out"
c10m_stop || fail "c10m exited non-zero after SIGINT"
pass "16 MiB echoed intact: $(sed -n 's/.*MB\/s=\([0-9.]*\).*/\1/p' <<<"$out") MB/s"
