#!/usr/bin/env bash
# shellcheck disable=SC2016  # RESP inputs are single-quoted on purpose ($N is protocol)
# t_kv - the `kv` app (RESP2) against real redis clients in the peer namespace:
#   1. redis-cli: the supported commands with their expected replies, errors included
#   2. differential: tests/ns/kv_script.txt (errors, EXPIRE/TTL, INCR overflow, MSET/MGET,
#      pipelining, ...) and raw inputs (inline commands, protocol errors) sent to
#      redis-server on the kernel and to c10m; replies must be equal byte for byte
#   3. bounded input: oversized bulk/multibulk lengths and lines, a 10 MiB value, a
#      truncated command, random garbage: an error reply or a close, and c10m keeps serving
#   4. maxmemory (noeviction): c10m runs with --kv-maxmemory 4mb and is pushed over it;
#      redis-server gets CONFIG SET maxmemory 1; the same writes, reads and removals get
#      byte-equal replies (-OOM ...); then c10m recovers after DEL and after FLUSHALL
#   5. redis-benchmark -t ping,set,get,incr,mset -n 20000 -c 50 with -P 1 and -P 16
#   6. c10m's counters at the end (flows_active 0, protocol errors and -OOM counted)
#
#   netns TB-stack: c10m --app kv --port 6379 (198.18.0.2)     netns TB-peer: redis-cli,
#                   redis-server --port 6380 (kernel, 198.18.0.3)   redis-benchmark, python
# Prereqs: redis-tools, redis-server (scripts/setup).
set -euo pipefail
source "$(dirname "$0")/common.sh"

for t in redis-cli redis-benchmark redis-server; do
    command -v "$t" >/dev/null || fail "$t not installed (run scripts/setup)"
done
KV_PORT=6379
REDIS_PORT=6380

kvc() { # kvc HOST PORT ARGS...: tests/ns/kv_client.py in the peer namespace
    local host="$1" port="$2"
    shift 2
    peer timeout 60 python3 "$NS_DIR/kv_client.py" --host "$host" --port "$port" "$@"
}
cli() { peer timeout 10 redis-cli -h "$C10M_IP" -p "$KV_PORT" "$@" 2>&1; }
stat_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], 0))' "$C10M_STATS" "$1"; }
hex() { printf '%b' "$1" | od -An -v -tx1 | tr -d ' \n'; }

# ---------------------------------------------------------------- reference redis
REDIS_LOG="$WORK/redis.log"
(
    exec ip netns exec "$STACK_NS" redis-server --port "$REDIS_PORT" --bind "$KERNEL_IP" \
        --save '' --appendonly no --protected-mode no --dir "$WORK" >"$REDIS_LOG" 2>&1
) &
REDIS_PID=$!
on_exit "kill -TERM $REDIS_PID 2>/dev/null; wait $REDIS_PID 2>/dev/null"
wait_for "grep -q 'Ready to accept connections' '$REDIS_LOG' || ! alive $REDIS_PID" 10 || true
grep -q 'Ready to accept connections' "$REDIS_LOG" || {
    cat "$REDIS_LOG" >&2
    fail "redis-server did not start"
}
log "redis-server (kernel) ready on $KERNEL_IP:$REDIS_PORT (PID $REDIS_PID)"

KV_MAXMEMORY=$((4 << 20)) # small enough to cross in section 4, room for the rest
c10m_start --app kv --port "$KV_PORT" --kv-maxmemory "$KV_MAXMEMORY"

# ---------------------------------------------------------------- 1. redis-cli
expect() { # expect "WANT" redis-cli ARGS...
    local want="$1" got
    shift
    got="$(cli "$@")" || true
    [[ "$got" == "$want" ]] || fail "redis-cli $*: got [$got], want [$want]"
}
expect PONG PING
expect hello ECHO hello
expect OK SET greeting hello
expect hello GET greeting
expect "" GET missing
expect OK SET counter 41
expect 42 INCR counter
expect 41 DECR counter
expect "ERR value is not an integer or out of range" INCR greeting
expect OK SET tmp 1 EX 100 NX
expect "" SET tmp 2 NX
expect 100 TTL tmp
expect 1 EXPIRE greeting 50
expect 50 TTL greeting
expect -1 TTL counter
expect -2 TTL missing
expect OK MSET a 1 b 2
expect "$(printf '1\n2\n\n41')" MGET a b missing counter
expect 2 EXISTS a b missing
expect 2 DEL a b missing
expect 3 DBSIZE
expect "ERR unknown command 'foo', with args beginning with: 'bar' " foo bar
expect "ERR wrong number of arguments for 'get' command" GET
expect "ERR wrong number of arguments for 'mset' command" MSET a
expect "ERR syntax error" SET k v EX 10 PX 10
expect "$(printf 'appendonly\nno\nsave\n')" CONFIG GET save appendonly
expect OK FLUSHALL
expect 0 DBSIZE
cli INFO | grep -q '^redis_version:' || fail "INFO has no redis_version"
# Several commands on redis-cli's stdin (one connection, one after another).
got="$(printf 'SET x 1\nINCR x\nGET x\n' | cli)"
[[ "$got" == "$(printf 'OK\n2\n2')" ]] || fail "redis-cli from stdin: [$got]"
echo "redis-cli: all expected replies"

# ---------------------------------------------------------------- 2. differential
kvc "$KERNEL_IP" "$REDIS_PORT" script "$NS_DIR/kv_script.txt" >"$WORK/redis.out" ||
    fail "kv_script against redis-server failed"
kvc "$C10M_IP" "$KV_PORT" script "$NS_DIR/kv_script.txt" >"$WORK/c10m.out" ||
    fail "kv_script against c10m failed"
if ! diff -u "$WORK/redis.out" "$WORK/c10m.out" >"$WORK/script.diff"; then
    sed 's/^/  diff| /' "$WORK/script.diff" | head -60
    fail "c10m's replies differ from redis-server's (- redis, + c10m)"
fi
echo "differential script: $(wc -l <"$WORK/c10m.out") replies equal to redis-server's"

RAW_CASES=(
    # inline commands (telnet style), blank lines, a bare \n line end
    'PING\r\nSET x "a b"\r\nGET x\r\nECHO '"'"'q r'"'"'\r\n\r\n   \r\nGET x\nSET y "\\x41\\n"\r\nGET y\r\n'
    'PING\r\nQUIT\r\nPING\r\n'
    # empty multibulks, a pipeline ending in inline QUIT
    '*1\r\n$4\r\nPING\r\n*0\r\n*-1\r\n*2\r\n$4\r\nECHO\r\n$3\r\nabc\r\nQUIT\r\n'
    # the two bytes after a bulk are skipped, not checked (as redis does)
    '*2\r\n$4\r\nECHO\r\n$3\r\nabcXY*1\r\n$4\r\nPING\r\n'
    # protocol errors: reply, then close (what follows is not run)
    '*abc\r\n'
    '*1\r\n$4\r\nPING\r\n*x\r\n*1\r\n$4\r\nPING\r\n'
    '*1\r\nfoo\r\n'
    '*2\r\n$3\r\nGET\r\n$-5\r\n'
    '*1\r\n$99999999999\r\n'
    '*1\r\n$abc\r\n'
    'SET a "b\r\nPING\r\n'
    'SET a "b"c\r\n'
    # a command cut short by the client's FIN: no reply
    '*3\r\n$3\r\nSET\r\n$1\r\na\r\n$10\r\nabc'
)
i=0
for c in "${RAW_CASES[@]}"; do
    i=$((i + 1))
    h="$(hex "$c")"
    r_out="$(kvc "$KERNEL_IP" "$REDIS_PORT" --timeout 5 raw "$h")" || fail "raw case $i: redis-server did not close"
    c_out="$(kvc "$C10M_IP" "$KV_PORT" --timeout 5 raw "$h")" || fail "raw case $i: c10m did not close ($c_out)"
    [[ "$r_out" == "$c_out" ]] || fail "raw case $i [$c]: redis-server $r_out, c10m $c_out"
done
echo "differential raw: $i inputs (inline, pipelines, protocol errors) answered like redis-server"

# ---------------------------------------------------------------- 3. bounded input
raw_expect() { # raw_expect WANT_REPLY_BYTES_LITERAL HEX [TIMES]
    local want="$1" got
    got="$(kvc "$C10M_IP" "$KV_PORT" --timeout 5 raw "$2" --times "${3:-1}")" || fail "c10m did not close after: ${2:0:60}"
    [[ "$got" == "$want" ]] || fail "input ${2:0:60}: got $got, want $want"
}
raw_expect "b'-ERR Protocol error: invalid bulk length\\r\\n'" "$(hex '*2\r\n$3\r\nGET\r\n$20000000\r\n')"
raw_expect "b'-ERR Protocol error: invalid multibulk length\\r\\n'" "$(hex '*2000000\r\n')"
raw_expect "b'-ERR Protocol error: too big inline request\\r\\n'" 61 70000
raw_expect "b'-ERR Protocol error: too big mbulk count string\\r\\n'" 2a31 40000
kvc "$C10M_IP" "$KV_PORT" bigvalue $((10 << 20)) || fail "10 MiB value"
kvc "$C10M_IP" "$KV_PORT" truncated || fail "truncated command"
for seed in 1 2 3; do
    kvc "$C10M_IP" "$KV_PORT" --timeout 5 garbage 200000 "$seed" || fail "garbage $seed"
done
alive "$C10M_PID" || fail "c10m died on bad input"
expect PONG PING
echo "bounded input: errors and closes as expected; c10m still serving"
# Connections c10m closed first (errors, QUIT) sit in TIME-WAIT for 10 s (smoltcp's
# CLOSE_DELAY); the flow count is checked once they are gone.
LAST_ACTIVE_CLOSE="$(date +%s)"

# ---------------------------------------------------------------- 4. maxmemory
# One 5 MiB SET puts c10m over its 4 MiB (accepted: as in redis, the check comes before a
# command runs). redis-server is over at once with maxmemory 1 byte (noeviction, the
# default policy), and set back to 0 after the comparison. Keys oom:* exist on neither.
OOM_TEXT="OOM command not allowed when used memory > 'maxmemory'."
rcli() { peer timeout 10 redis-cli -h "$KERNEL_IP" -p "$REDIS_PORT" "$@" 2>&1; }
expect "$(printf 'maxmemory\n%s' "$KV_MAXMEMORY")" CONFIG GET maxmemory
kvc "$C10M_IP" "$KV_PORT" set oom:big $((5 << 20)) >/dev/null ||
    fail "c10m refused the SET that crosses --kv-maxmemory (it runs while under)"
[[ "$(rcli CONFIG SET maxmemory 1)" == OK ]] || fail "redis-server: CONFIG SET maxmemory 1 refused"
cat >"$WORK/oom.txt" <<'EOS'
# denyoom commands: refused whatever the key, options or argument count (after arity)
SET oom:k v
SET oom:k v NX
SET oom:k v bogus
SETNX oom:k v
MSET oom:a 1 oom:b 2
MSET oom:a 1 oom:b
INCR oom:n
DECR oom:n
INCRBY oom:n 5
DECRBY oom:n x
APPEND oom:k v
!pipeline 3
SET oom:k v
GET oom:k
SET oom:k v
SET oom:k
INCR
# reads and removals run
GET oom:k
MGET oom:k oom:n
EXISTS oom:k
STRLEN oom:k
TTL oom:k
EXPIRE oom:k 10
PERSIST oom:k
DEL oom:k oom:n
PING
ECHO hi
EOS
r_ok=0 c_ok=0
kvc "$KERNEL_IP" "$REDIS_PORT" script "$WORK/oom.txt" >"$WORK/redis-oom.out" && r_ok=1
kvc "$C10M_IP" "$KV_PORT" script "$WORK/oom.txt" >"$WORK/c10m-oom.out" && c_ok=1
[[ "$(rcli CONFIG SET maxmemory 0)" == OK ]] || fail "redis-server: CONFIG SET maxmemory 0 refused"
((r_ok)) || fail "the maxmemory script against redis-server failed"
((c_ok)) || fail "the maxmemory script against c10m failed"
if ! diff -u "$WORK/redis-oom.out" "$WORK/c10m-oom.out" >"$WORK/oom.diff"; then
    sed 's/^/  diff| /' "$WORK/oom.diff" | head -60
    fail "over maxmemory, c10m's replies differ from redis-server's (- redis, + c10m)"
fi
OOM_SCRIPT="$(grep -c -- "-OOM command not allowed" "$WORK/c10m-oom.out")" || true
((OOM_SCRIPT >= 13)) || fail "only $OOM_SCRIPT -OOM replies in the maxmemory script"
# Recovery: DEL frees memory; over again, FLUSHALL does.
expect "$OOM_TEXT" SET oom:k v
expect 1 DEL oom:big
expect OK SET oom:k v
kvc "$C10M_IP" "$KV_PORT" set oom:big $((5 << 20)) >/dev/null || fail "SET after DEL refused"
expect "$OOM_TEXT" INCR oom:n
expect OK FLUSHALL
expect OK SET oom:k v
expect 1 DEL oom:k
cli INFO | tr -d '\r' | grep -qx 'used_memory:0' || fail "INFO used_memory not 0 on an empty store"
echo "maxmemory: $(wc -l <"$WORK/c10m-oom.out") replies ($OOM_SCRIPT -OOM) byte-equal to redis-server's over the bound; recovered after DEL and FLUSHALL"

# ---------------------------------------------------------------- 5. redis-benchmark
for P in 1 16; do
    out="$(peer timeout 120 redis-benchmark -h "$C10M_IP" -p "$KV_PORT" -t ping,set,get,incr,mset \
        -n 20000 -c 50 -P "$P" -q 2>&1 | tr '\r' '\n')" || {
        printf '%s\n' "$out" | tail -20
        fail "redis-benchmark -P $P did not finish"
    }
    res="$(grep 'requests per second' <<<"$out" || true)"
    for t in PING_INLINE PING_MBULK SET GET INCR 'MSET (10 keys)'; do
        grep -q "^$t: [0-9.]* requests per second" <<<"$res" || {
            printf '%s\n' "$out" | tail -20
            fail "redis-benchmark -P $P: no result for $t"
        }
    done
    echo "redis-benchmark -c 50 -P $P:"
    sed 's/^/    /' <<<"$res"
done

# ---------------------------------------------------------------- 6. counters
left=$((LAST_ACTIVE_CLOSE + 11 - $(date +%s)))
((left > 0)) && sleep "$left"
c10m_stop || fail "c10m exited non-zero"
active="$(stat_of flows_active)"
[[ "$active" == 0 ]] || fail "$active flows left after all clients finished"
perr="$(stat_of app_kv_protocol_errors)"
((perr >= 12)) || fail "only $perr protocol errors counted"
oom="$(stat_of app_kv_oom_refused)"
((oom == OOM_SCRIPT + 2)) || fail "app_kv_oom_refused $oom, want $((OOM_SCRIPT + 2))"
open="$(stat_of app_kv_conns_open)"
[[ "$open" == 0 ]] || fail "app_kv_conns_open $open at the end"
echo "counters: commands=$(stat_of app_kv_commands) errors=$(stat_of app_kv_errors) protocol_errors=$perr oom_refused=$oom conns=$(stat_of app_kv_conns) keys=$(stat_of app_kv_keys) flows_active=$active"
pass "kv: redis-cli, byte-equal to redis-server, bounded input, maxmemory, redis-benchmark -P 1/16"
