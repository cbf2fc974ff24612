#!/usr/bin/env bash
# tests/ns/t_conn_20k.sh - c10m holds 20 000 concurrent TCP connections; every one echoes
# a distinct message when opened and again at the end, while all are still open.
#
#   netns TB-stack: c10m --gateway 198.18.0.1 --tcp-buf 4096 --max-flows 30000
#                   --backlog 4096 on 198.18.0.2:7 (echo)
#   netns TB-peer:  4 x conn_hold --conns 5000 (benches/src/bin/conn_hold.rs), sources
#                   198.19.0.1-198.19.0.8 on lo (scripts/testbed up --clients 8), reached
#                   by c10m through the peer as gateway
#
# One kernel process holds < 20 000 fds (RLIMIT_NOFILE, see FACTS), hence 4 clients. Each
# prints `conn_hold: holding ...` once its 5 000 are open and echoed; the test then checks
# that the peer has 20 000 established connections to c10m, reads c10m's RSS (VmRSS) and
# releases the clients (SIGUSR1) for the second echo on every connection.
# Prints: conn_20k: 20000 held, open X s (Y conn/s), c10m RSS A MiB idle, B MiB held,
#         C bytes/connection; and c10m's counters.
# Prerequisites: root; cargo build --release --workspace --all-targets (c10m, conn_hold).
# Usage: tests/ns/run t_conn_20k   (about 10 s on 2 cores)
set -euo pipefail
source "$(dirname "$0")/common.sh"

PROCS=4
PER=5000
TOTAL=$((PROCS * PER))
NSRC=8
HOLD="$REPO/target/release/conn_hold"
[[ -x "$HOLD" ]] || die "build first: cargo build --release --workspace --all-targets ($HOLD not found)"

# common.sh made a plain testbed: make it again, same name, with client addresses.
"$REPO/scripts/testbed" down "$TB" >/dev/null 2>&1 || fail "testbed down $TB"
"$REPO/scripts/testbed" up "$TB" --clients "$NSRC" >"$WORK/testbed.log" 2>&1 || {
    cat "$WORK/testbed.log"
    fail "testbed up $TB --clients $NSRC"
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
reap_hold() { # cleanup: stop a conn_hold we started (by PID) if it still runs
    alive "$1" && grep -q conn_hold "/proc/$1/cmdline" 2>/dev/null && kill -TERM "$1" 2>/dev/null
    wait "$1" 2>/dev/null || true
}

c10m_start --gateway "$PEER_IP" --tcp-buf 4096 --max-flows 30000 --backlog 4096
rss_idle="$(rss_kib "$C10M_PID")"
T0="$(now_s)"

pids=()
for p in $(seq 1 "$PROCS"); do
    (
        exec ip netns exec "$PEER_NS" "$HOLD" --target "$C10M_IP:$ECHO_PORT" --conns "$PER" \
            --src-range "198.19.0.1-198.19.0.$NSRC" --max-pending 512 \
            --hold-seconds 120 --timeout 150 >"$WORK/hold.$p.out" 2>"$WORK/hold.$p.err"
    ) &
    pids+=($!)
    on_exit "reap_hold ${pids[-1]}"
done

holding() { [[ "$(cat "$WORK"/hold.*.err 2>/dev/null | grep -c '^conn_hold: holding')" -eq "$PROCS" ]]; }
all_gone() { local p; for p in "${pids[@]}"; do alive "$p" && return 1; done; return 0; }
wait_for "holding || all_gone" 120 || fail "the clients did not open their connections within 120 s"
open_s="$(elapsed_s "$T0")"
cat "$WORK"/hold.*.err
holding || { cat "$WORK"/hold.*.out; fail "a client ended before holding its connections"; }

est="$(peer ss -Htn state established dst "$C10M_IP" | wc -l)"
rss_held="$(rss_kib "$C10M_PID")"
echo "peer: $est established connections to $C10M_IP:$ECHO_PORT; c10m VmRSS ${rss_idle} KiB idle, ${rss_held} KiB holding"
((est == TOTAL)) || fail "expected $TOTAL established connections at once, the peer has $est"

# Release the clients: the second echo on every connection.
for p in "${pids[@]}"; do kill -USR1 "$p"; done
bad=0
for i in "${!pids[@]}"; do
    rc=0
    wait "${pids[$i]}" || rc=$?
    line="$(cat "$WORK/hold.$((i + 1)).out")"
    echo "client $((i + 1)) (exit $rc): $line"
    grep -q '^conn_hold: first error' "$WORK/hold.$((i + 1)).err" && grep '^conn_hold: first error' "$WORK/hold.$((i + 1)).err"
    ((rc == 0)) || bad=1
done
total_s="$(elapsed_s "$T0")"
c10m_stop || fail "c10m exited non-zero after SIGINT"
((bad == 0)) || fail "not every connection echoed twice (see the client lines above)"

# Aggregate open rate: all connections over the span from the first start to the last open.
rate="$(cat "$WORK"/hold.*.out | awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    if (min == "" || v["start_unix"] < min) min = v["start_unix"]
    if (v["open_done_unix"] > max) max = v["open_done_unix"]; n += v["echoed_first"] }
    END { if (max > min) printf "%.0f", n / (max - min); else print "n/a" }')"
per_conn="$(awk -v a="$rss_idle" -v b="$rss_held" -v n="$TOTAL" 'BEGIN { printf "%.0f", (b - a) * 1024 / n }')"
echo "conn_20k: $TOTAL held at once, opened in ${open_s} s (${rate} conn/s aggregated), total ${total_s} s;" \
    "c10m RSS $((rss_idle / 1024)) MiB idle, $((rss_held / 1024)) MiB holding: $per_conn bytes/connection (--tcp-buf 4096)"
pass "$TOTAL concurrent connections each echoed at open and again at the end"
