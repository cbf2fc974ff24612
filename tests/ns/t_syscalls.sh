#!/usr/bin/env bash
# t_syscalls - "no syscall per event": under load, the receive side makes no system call
# and transmit makes at most one wakeup (sendto) per TX batch. Checked twice:
#   1. from c10m's own counters (port_fill_wakeups, port_idle_polls, port_wakeups,
#      port_tx_batches, port_wakeup_transient) over the whole run with --idle spin. In
#      copy mode the kernel sends at most 32 frames per sendto() and answers EAGAIN when
#      more are queued (net/xdp/xsk.c, TX_BATCH_SIZE); the remainder goes with the next
#      flush's kick. So: successful kicks <= TX batches, and every extra kick is one the
#      kernel asked for (counted as transient);
#   2. from outside: `strace -c -f` attached to c10m for a few seconds of load, which must
#      show no receive-side call (recvfrom, recvmsg, read, poll, ppoll, epoll_wait...).
#
#   netns TB-stack: c10m --idle spin            netns TB-peer: echo clients (python)
set -euo pipefail
source "$(dirname "$0")/common.sh"

command -v strace >/dev/null || fail "strace is missing: run scripts/setup"
stat_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], 0))' "$C10M_STATS" "$1"; }

c10m_start --idle spin
# Load: bulk echo and many short connections, in the background, bounded in time.
(
    for _ in 1 2 3; do
        echo_client bulk --bytes $((8 << 20)) --host "$C10M_IP" --timeout 30 >/dev/null || true
        echo_client conc --count 50 --host "$C10M_IP" --timeout 30 >/dev/null || true
    done
) &
load=$!
on_exit "kill $load 2>/dev/null || true"
sleep 0.3
trace="$WORK/strace.txt"
timeout -s INT 3 strace -c -f -q -o "$trace" -p "$C10M_PID" || true
wait "$load" || true
c10m_stop || fail "c10m exited non-zero"

echo "--- strace -c -f over ~3 s of load:"
sed 's/^/  /' "$trace"
rx_calls="$(awk '$NF ~ /^(recvfrom|recvmsg|recvmmsg|read|poll|ppoll|epoll_wait|epoll_pwait|select|pselect6)$/ {n += $4} END {print n+0}' "$trace")"
sendto="$(awk '$NF == "sendto" {print $4}' "$trace")"
fill="$(stat_of port_fill_wakeups)" polls="$(stat_of port_idle_polls)"
kicks="$(stat_of port_wakeups)" batches="$(stat_of port_tx_batches)" rx="$(stat_of port_rx_packets)"
again="$(stat_of port_wakeup_transient)"
tx="$(stat_of port_tx_packets)"
echo "counters: rx_packets=$rx tx_packets=$tx tx_batches=$batches tx_wakeups=$kicks (of which kernel-asked retries $again) fill_wakeups=$fill idle_polls=$polls"
echo "strace: receive-side calls=$rx_calls sendto=${sendto:-0}"
((rx > 10000)) || fail "too little load to judge ($rx packets)"
((fill == 0)) || fail "$fill fill-ring wakeup syscalls on the receive side"
((polls == 0)) || fail "$polls poll() calls with --idle spin"
((kicks - again <= batches)) || fail "$((kicks - again)) completed TX wakeups for $batches TX batches"
((rx_calls == 0)) || fail "strace saw $rx_calls receive-side system calls"
pass "zero receive-side syscalls; $kicks TX wakeups ($again of them retries the kernel asked for) for $batches batches, $tx frames"
