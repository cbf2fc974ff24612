#!/usr/bin/env bash
# t_loadgen - `c10m loadgen` (AF_XDP on the peer side, 198.18.0.4 on TB-p beside the peer
# kernel's 198.18.0.1) against c10m echo and against nginx on the stack-side kernel:
#   (1) echo, closed loop, against c10m: every reply equal to its request, no errors;
#   (2) HTTP GET, closed loop, against nginx for 3 s, then wrk -t1 -c10 -d3s against the
#       same nginx (both clients on CPU 1, nginx on CPU 0): both complete without errors;
#       req/s, medians and their ratios are printed (agreement is reported, not
#       asserted: no timing assertions in tests). Twice: a 6-byte `return 200`, where
#       each client's own cost per request sets the pace, and a 16 KiB text file gzipped
#       at level 1 (`Accept-Encoding: gzip`; nginx answers chunked), where nginx's does;
#       there both tools must have read gzip-sized responses (bytes / requests);
#       scripts/bench-loadgen measures the same comparison in rounds. c10m is stopped
#       meanwhile (its XDP program on TB-s changes the path of nginx's frames);
#   (3) echo, open loop at 2000 req/s for 3 s, against c10m: achieved rate within 15 % of
#       the target (it is a schedule, not a race), latency percentiles ordered and bounded.
#
#   netns TB-stack: c10m serve --app echo (198.18.0.2:7), nginx on the kernel (198.18.0.3:80)
#   netns TB-peer:  c10m loadgen --iface TB-p --ip 198.18.0.4/24, wrk (kernel, 198.18.0.1)
# TB-s gets TX offloads off here: nginx's segments go to an AF_XDP stack (FACTS: partial
# checksums and TSO super-segments break it), as the testbed does for TB-p.
# Prerequisites: root, target/release/c10m, nginx (nginx-light), wrk, python3, ethtool, curl.
set -euo pipefail
source "$(dirname "$0")/common.sh"

for t in nginx wrk python3 ethtool curl gzip; do
    command -v "$t" >/dev/null || fail "$t not installed (run scripts/setup)"
done

LG_IP=198.18.0.4
# The comparison with wrk runs both clients on the same CPU, nginx on another (when there
# are two): the same placement for both measurements.
PIN_SERVER=""
PIN_CLIENT=""
if command -v taskset >/dev/null && (($(nproc) >= 2)); then
    PIN_SERVER="taskset -c 0"
    PIN_CLIENT="taskset -c 1"
fi
LG_N=0

json() { # json FILE EXPR: a value from a loadgen --json file (EXPR in python, j = the object)
    python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

loadgen() { # loadgen NAME ARGS...: c10m loadgen in the peer namespace, by PID; JSON in $WORK/NAME.json
    local name="$1" rc=0 pid
    shift
    LG_N=$((LG_N + 1))
    local args=(loadgen --iface "$PEER_IF" --ip "$LG_IP/24" --json "$WORK/$name.json")
    [[ -n "${C10M_XDP_MODE:-}" ]] && args+=(--xdp-mode "$C10M_XDP_MODE")
    args+=("$@")
    log "loadgen $name: ip netns exec $PEER_NS $C10M_BIN ${args[*]}"
    (
        trap - INT QUIT
        # shellcheck disable=SC2086 # PIN_* and pcts split into words on purpose
        exec ip netns exec "$PEER_NS" timeout -k 5 120 $PIN_CLIENT "$C10M_BIN" "${args[@]}" >"$WORK/$name.out" 2>&1
    ) &
    pid=$!
    on_exit "_c10m_reap $pid"
    wait "$pid" || rc=$?
    sed "s/^/  $name| /" "$WORK/$name.out"
    # The next run (or wrk) starts from clean neighbour caches.
    ip -n "$PEER_NS" neigh flush dev "$PEER_IF" 2>/dev/null || true
    ip -n "$STACK_NS" neigh flush dev "$STACK_IF" 2>/dev/null || true
    return "$rc"
}

no_errors() { # no_errors NAME: the loadgen run NAME had requests and no error of any kind
    local f="$WORK/$1.json" reqs errs
    [[ -s "$f" ]] || fail "$1: no JSON report"
    reqs="$(json "$f" 'j["requests"]')"
    errs="$(json "$f" 'sum(j["errors"].values())')"
    ((reqs > 0)) || fail "$1: no request completed"
    ((errs == 0)) || fail "$1: errors $(json "$f" 'j["errors"]')"
}

# --- servers: c10m echo on .2, nginx on the kernel's .3
c10m_start
ip netns exec "$STACK_NS" ethtool -K "$STACK_IF" tx off tso off gso off >/dev/null

WWW="$WORK/www"
mkdir -p "$WWW"
chmod 755 "$WORK" "$WWW"
text_file "$WWW/t16.txt" 16384
chmod 644 "$WWW/t16.txt"
nginx_start "$STACK_NS" "$KERNEL_IP:80" "location / { return 200 \"hello\\n\"; }
        location /gz1/ { alias $WWW/; gzip on; gzip_comp_level 1; gzip_types *; }" "${PIN_SERVER#taskset -c }"
got="$(peer curl -sf --max-time 5 "http://$KERNEL_IP/")" || fail "nginx on $KERNEL_IP:80 does not answer"
[[ "$got" == hello ]] || fail "nginx answered '$got'"
GZ_URL="http://$KERNEL_IP/gz1/t16.txt"
gz_size="$(peer curl -sf --max-time 5 -H 'Accept-Encoding: gzip' -D "$WORK/gz.head" -o "$WORK/gz.body" -w '%{size_download}' "$GZ_URL")" ||
    fail "nginx does not answer $GZ_URL"
tr -d '\r' <"$WORK/gz.head" | grep -qix 'content-encoding: gzip' || fail "$GZ_URL came without Content-Encoding: gzip"
gzip -dc <"$WORK/gz.body" | cmp -s - "$WWW/t16.txt" || fail "$GZ_URL: the gzip body is not the file"

# --- (1) echo, closed loop, against c10m
loadgen echo_closed --target "$C10M_IP:$ECHO_PORT" -c 10 --proto echo --size 100 -d 2 --warmup 0.5 ||
    fail "loadgen echo closed loop exited non-zero"
no_errors echo_closed
f="$WORK/echo_closed.json"
echo "(1) echo closed loop vs c10m: $(json "$f" 'j["requests"]') requests, $(json "$f" 'round(j["requests_per_sec"])') req/s, p50 $(json "$f" 'j["latency_us"]["p50"]') us, mismatches $(json "$f" 'j["errors"]["mismatch"]')"

# --- (2) HTTP GET, closed loop, against nginx; then wrk against the same nginx.
# Without c10m: with it running, loadgen's gzip run here had ms tails (p90 8.9 ms, p50
# 0.8 ms; 0.50x wrk) that bench-loadgen, without c10m, never shows. Likely cause: its
# XDP program on TB-s sends every frame to nginx through veth's NAPI path, whose softirq
# work then competes with the spinning loadgen on CPU 1 (wrk's CPU is mostly idle).
c10m_stop || fail "c10m exited non-zero"
WRK_RPS="" WRK_P50="" WRK_BPR=""
wrk_run() { # wrk_run SECONDS CONNS URL [wrk args]: no errors; sets WRK_RPS, WRK_P50 (us), WRK_BPR
    local secs="$1" conns="$2" url="$3" out
    shift 3
    # shellcheck disable=SC2086 # PIN_CLIENT splits into words on purpose
    out="$(peer timeout 30 $PIN_CLIENT wrk -t1 -c"$conns" -d"${secs}s" --latency "$@" "$url" 2>&1)" || {
        printf '%s\n' "$out" | sed 's/^/  wrk| /'
        fail "wrk failed"
    }
    printf '%s\n' "$out" | sed 's/^/  wrk| /'
    if grep -Eq 'Socket errors|Non-2xx' <<<"$out"; then
        fail "wrk reported errors"
    fi
    read -r WRK_RPS WRK_P50 WRK_BPR < <(awk '
        function us(v,  u) { u = v; sub(/^[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
            return v * (u == "us" ? 1 : u == "ms" ? 1000 : u == "s" ? 1000000 : 0) }
        function bytes(v,  u) { u = v; sub(/^[0-9.]+/, "", u); sub(/[A-Z]+$/, "", v)
            return v * (u == "B" ? 1 : u == "KB" ? 1024 : u == "MB" ? 1048576 : u == "GB" ? 1073741824 : 0) }
        /^Requests\/sec:/ { rps = $2 }
        $1 == "50%" { p50 = us($2) }
        / requests in / { n = $1; b = bytes($5) }
        END { if (rps > 0 && p50 > 0 && n > 0) printf "%s %.0f %.0f\n", rps, p50, b / n }' <<<"$out")
    [[ -n "$WRK_RPS" && -n "$WRK_P50" ]] || fail "could not read wrk's Requests/sec, 50% latency and bytes read"
}
compare() { # compare LABEL LOADGEN_RUN: loadgen's and wrk's req/s and p50, reported, not asserted
    local f="$WORK/$2.json"
    python3 - "$1" "$(json "$f" 'round(j["requests_per_sec"], 2)')" "$WRK_RPS" "$(json "$f" 'j["latency_us"]["p50"]')" "$WRK_P50" <<'PY'
import sys
label = sys.argv[1]
lr, wr, lp, wp = map(float, sys.argv[2:])
print(f"{label}: loadgen {lr:.0f} req/s p50 {lp:.0f} us; "
      f"wrk {wr:.0f} req/s p50 {wp:.0f} us; ratio loadgen/wrk: req/s {lr / wr:.2f}, p50 {lp / wp:.2f} "
      f"({'within' if abs(lr / wr - 1) <= 0.2 and abs(lp / wp - 1) <= 0.2 else 'NOT within'} 20 %; reported, not asserted)")
PY
}

# (2a) 6-byte body: client-bound on two cores (each tool measures its own cost per request).
loadgen http_nginx --target "$KERNEL_IP:80" -c 10 --proto http --path / -d 3 ||
    fail "loadgen http against nginx exited non-zero"
no_errors http_nginx
wrk_run 3 10 "http://$KERNEL_IP/"
compare "(2a) http closed loop vs nginx, 6-byte body, -c10 3 s (client-bound)" http_nginx

# (2b) gzip level 1 of 16 KiB: nginx-bound; both tools must have read gzip-sized responses.
loadgen http_gzip --target "$KERNEL_IP:80" -c 10 --proto http --path /gz1/t16.txt -H 'Accept-Encoding: gzip' -d 2 ||
    fail "loadgen http (gzip) against nginx exited non-zero"
no_errors http_gzip
wrk_run 2 10 "$GZ_URL" -H 'Accept-Encoding: gzip'
lg_bpr="$(json "$WORK/http_gzip.json" 'round(j["bytes"] / j["requests"])')"
echo "(2b) bytes per response (head + body; gzip body $gz_size B, file 16384 B): loadgen $lg_bpr, wrk $WRK_BPR"
for b in "$lg_bpr" "$WRK_BPR"; do
    ((b > gz_size && b < gz_size + 1024)) || fail "a client read $b bytes per response: not the $gz_size-byte gzip body plus a head"
done
compare "(2b) http closed loop vs nginx, gzip -1 of 16 KiB, -c10 2 s (server-bound)" http_gzip

# --- (3) echo, open loop at 2000 req/s, against c10m
c10m_start
loadgen echo_open --target "$C10M_IP:$ECHO_PORT" -c 10 --proto echo --size 64 -R 2000 -d 3 --warmup 0.5 ||
    fail "loadgen echo open loop exited non-zero"
no_errors echo_open
f="$WORK/echo_open.json"
rate="$(json "$f" 'j["requests_per_sec"]')"
pcts="$(json "$f" '" ".join(str(j["latency_us"][k]) for k in ("min","p50","p90","p99","p99_9","max"))')"
echo "(3) echo open loop at 2000 req/s vs c10m: achieved $rate req/s; latency us min/p50/p90/p99/p99.9/max: $pcts"
# shellcheck disable=SC2086 # PIN_* and pcts split into words on purpose
python3 - "$rate" $pcts <<'PY' || fail "open loop: rate or latency out of bounds"
import sys
rate = float(sys.argv[1]); mn, p50, p90, p99, p999, mx = map(int, sys.argv[2:])
ok = abs(rate - 2000) <= 300 and 0 < mn <= p50 <= p90 <= p99 <= p999 <= mx < 2_000_000
sys.exit(0 if ok else 1)
PY

c10m_stop || fail "c10m exited non-zero"
pass "loadgen: echo closed/open loop against c10m and HTTP against nginx without errors"
