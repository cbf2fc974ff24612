#!/usr/bin/env bash
# tests/ns/t_ping.sh - c10m answers ping (IPv4 and IPv6); the kernel still answers
# on the pass-through address while c10m runs.
#   peer(198.18.0.1) --ping--> 198.18.0.2 (c10m), 2001:2::2 (c10m), 198.18.0.3 (kernel)
# Prerequisites: root, target/release/c10m. Usage: tests/ns/run t_ping  (or run directly)
set -euo pipefail
source "$(dirname "$0")/common.sh"

c10m_start
# smoltcp drops the first packet towards a neighbour it has not resolved yet: allow one loss.
ping_rtt "$C10M_IP" 5 4 || fail "c10m did not answer ping on $C10M_IP"
c10m_avg="$PING_AVG"
ping_rtt "$KERNEL_IP" 3 3 || fail "kernel pass-through address $KERNEL_IP not answered while c10m runs"
kernel_avg="$PING_AVG"
ping_rtt "$C10M_IP6" 5 4 -6 || fail "c10m did not answer ping -6 on $C10M_IP6"
c10m6_avg="$PING_AVG"
c10m_stop || fail "c10m exited non-zero after SIGINT"
echo "rtt: c10m v4 ${c10m_avg} ms, c10m v6 ${c10m6_avg} ms, kernel v4 ${kernel_avg} ms"
pass "ping answered by c10m (v4, v6) and by the kernel (pass-through)"
