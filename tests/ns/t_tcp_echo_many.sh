#!/usr/bin/env bash
# tests/ns/t_tcp_echo_many.sh - 100 sequential and 100 concurrent TCP connections,
# each echoing a distinct random message through c10m (also 20 over IPv6).
#   peer: echo_client.py seq/conc ==TCP==> 198.18.0.2:7, [2001:2::2]:7 (c10m echo)
# Prerequisites: root, target/release/c10m, python3. Usage: tests/ns/run t_tcp_echo_many
set -euo pipefail
source "$(dirname "$0")/common.sh"

c10m_start
out="$(echo_client seq --count 100 --host "$C10M_IP" --timeout 60)" || { echo "$out"; fail "100 sequential connections"; }
echo "$out"
out="$(echo_client conc --count 100 --host "$C10M_IP" --timeout 60)" || { echo "$out"; fail "100 concurrent connections"; }
echo "$out"
out="$(echo_client seq --count 20 --host "$C10M_IP6" --timeout 30)" || { echo "$out"; fail "20 sequential IPv6 connections"; }
echo "$out (IPv6)"
c10m_stop || fail "c10m exited non-zero after SIGINT"
pass "100 sequential + 100 concurrent (+20 IPv6) connections echoed"
