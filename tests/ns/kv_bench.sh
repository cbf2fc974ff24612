#!/usr/bin/env bash
# kv_bench - redis-benchmark against c10m's `kv` and against redis-server on the kernel,
# same testbed, alternating, median of ROUNDS runs per (server, pipeline depth, test).
# Not part of the test suite (no pass/fail): a measurement helper.
#
#   netns TB-stack: c10m --app kv (198.18.0.2:6379)        netns TB-peer: redis-benchmark
#                   redis-server (kernel, 198.18.0.3:6380)
# Prereqs: root, target/release/c10m, redis-tools, redis-server.
# Usage: sudo tests/ns/kv_bench.sh     env: ROUNDS (3), CLIENTS (50), N1 (requests at -P 1,
#        default 200000), N16 (requests at -P 16, default 2000000), C10M_ARGS (extra flags)
set -euo pipefail
source "$(dirname "$0")/common.sh"

ROUNDS="${ROUNDS:-3}"
CLIENTS="${CLIENTS:-50}"
REDIS_LOG="$WORK/redis.log"
(
    exec ip netns exec "$STACK_NS" redis-server --port 6380 --bind "$KERNEL_IP" \
        --save '' --appendonly no --protected-mode no --dir "$WORK" >"$REDIS_LOG" 2>&1
) &
REDIS_PID=$!
on_exit "kill -TERM $REDIS_PID 2>/dev/null; wait $REDIS_PID 2>/dev/null"
wait_for "grep -q 'Ready to accept connections' '$REDIS_LOG'" 10 || fail "redis-server did not start"
c10m_start --app kv --port 6379

bench() { # bench HOST PORT P N -> lines "TEST rps"
    peer timeout 300 redis-benchmark -h "$1" -p "$2" -t get,set -c "$CLIENTS" -P "$3" -n "$4" --csv 2>/dev/null |
        tr -d '\r' | awk -F'","' 'NR > 1 { gsub(/"/, "", $1); print $1, $2 }'
}

RES="$WORK/results"
: >"$RES"
for P in 1 16; do
    n="${N1:-200000}"
    ((P == 16)) && n="${N16:-2000000}"
    for ((r = 1; r <= ROUNDS; r++)); do
        for server in c10m kernel; do
            if [[ $server == c10m ]]; then host="$C10M_IP" port=6379; else host="$KERNEL_IP" port=6380; fi
            bench "$host" "$port" "$P" "$n" | while read -r t rps; do
                echo "$server P$P $t $rps" | tee -a "$RES" >&2
            done
        done
    done
done
c10m_stop >/dev/null 2>&1 || true
echo
echo "median of $ROUNDS runs, requests/s (redis-benchmark -c $CLIENTS, same testbed, alternating):"
printf '%-6s %-4s %14s %14s %8s\n' test P c10m-kv redis-kernel ratio
for P in 1 16; do
    for t in SET GET; do
        m() { awk -v s="$1" -v p="P$P" -v t="$t" '$1 == s && $2 == p && $3 == t { print $4 }' "$RES" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
        c="$(m c10m)" k="$(m kernel)"
        printf '%-6s %-4s %14s %14s %8s\n' "$t" "$P" "$c" "$k" "$(awk -v c="$c" -v k="$k" 'BEGIN { if (k > 0) printf "%.2f", c / k }')"
    done
done
