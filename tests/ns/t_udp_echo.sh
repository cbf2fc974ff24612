#!/usr/bin/env bash
# tests/ns/t_udp_echo.sh - 1000 distinct UDP datagrams echoed by c10m on port 7
# (one retry per datagram on timeout; all 1000 must come back), plus 100 over IPv6.
#   peer: echo_client.py udp ==UDP==> 198.18.0.2:7, [2001:2::2]:7 (c10m echo)
# Prerequisites: root, target/release/c10m, python3. Usage: tests/ns/run t_udp_echo
set -euo pipefail
source "$(dirname "$0")/common.sh"

c10m_start
out="$(echo_client udp --count 1000 --host "$C10M_IP" --timeout 60)" || { echo "$out"; fail "1000 UDP datagrams"; }
echo "$out"
out="$(echo_client udp --count 100 --host "$C10M_IP6" --timeout 30)" || { echo "$out"; fail "100 UDP datagrams over IPv6"; }
echo "$out (IPv6)"
c10m_stop || fail "c10m exited non-zero after SIGINT"
pass "1000 UDP datagrams (+100 IPv6) echoed"
