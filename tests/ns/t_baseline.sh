#!/usr/bin/env bash
# tests/ns/t_baseline.sh - measurement (passes whenever it runs): the same 16 MiB TCP
# echo and ping RTT against c10m (198.18.0.2) and against a kernel echo server
# (tests/ns/kernel_echo.py on 198.18.0.3, measured after c10m stopped, so no XDP
# program is in its path), same testbed, same run.
#   peer ==> 198.18.0.2:7 (c10m)      then      peer ==> 198.18.0.3:7 (kernel, python threads)
# Prints: baseline: c10m echo X MB/s, kernel echo Y MB/s, ratio Z; ping rtt c10m A ms, kernel B ms
# Prerequisites: root, target/release/c10m, python3. Usage: tests/ns/run t_baseline
set -euo pipefail
source "$(dirname "$0")/common.sh"

mbs() { sed -n 's/.*MB\/s=\([0-9.]*\).*/\1/p' <<<"$1"; }
BYTES=$((16 << 20))

c10m_start
ping_rtt "$C10M_IP" 10 9 || true
c10m_rtt="${PING_AVG:-n/a}"
out="$(echo_client bulk --bytes "$BYTES" --host "$C10M_IP" --timeout 90)" || true
echo "c10m:   $out"
c10m_mbs="$(mbs "$out")"
c10m_stop || warn "c10m exited non-zero"

klog="$WORK/kernel_echo.log"
stack python3 "$NS_DIR/kernel_echo.py" --bind "$KERNEL_IP" --port "$ECHO_PORT" --max-seconds 300 >"$klog" 2>&1 &
kpid=$!
on_exit "kill -TERM $kpid 2>/dev/null; wait $kpid 2>/dev/null"
wait_for "grep -q 'kernel_echo: ready' '$klog'" 10 || { cat "$klog"; fail "kernel echo server not ready"; }
ip -n "$PEER_NS" neigh flush dev "$PEER_IF" 2>/dev/null || true
ping_rtt "$KERNEL_IP" 10 9 || true
kernel_rtt="${PING_AVG:-n/a}"
out="$(echo_client bulk --bytes "$BYTES" --host "$KERNEL_IP" --timeout 90)" || true
echo "kernel: $out"
kernel_mbs="$(mbs "$out")"

ratio="$(awk -v a="${c10m_mbs:-0}" -v b="${kernel_mbs:-0}" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else print "n/a" }')"
echo "baseline: c10m echo ${c10m_mbs:-n/a} MB/s, kernel echo ${kernel_mbs:-n/a} MB/s, ratio $ratio; ping rtt c10m $c10m_rtt ms, kernel $kernel_rtt ms"
pass "baseline measured"
