#!/usr/bin/env bash
# tests/ns/http_bench.sh - c10m's http app (fixed body) against nginx on the kernel, same
# client, same testbed: wrk -t1 -cC -dDs, alternating c10m / nginx, ROUNDS rounds; prints
# each run and the medians of req/s and latency. Not a pass/fail test (no t_ prefix).
#
#   netns TB-stack: c10m http 198.18.0.2:80 (AF_XDP)   nginx 198.18.0.3:80 (kernel, 1 worker)
#   netns TB-peer:  wrk
#
# Both servers are pinned to CPU $SERVER_CPU and wrk to $CLIENT_CPU (defaults 1 and 0).
# Prerequisites: root, target/release/c10m, wrk, nginx (apt-get install nginx-light).
# Usage: sudo tests/ns/http_bench.sh [ROUNDS] [CONNS] [SECONDS]   (defaults 3 50 5)
set -euo pipefail
ROUNDS="${1:-3}"
CONNS="${2:-50}"
SECS="${3:-5}"
SERVER_CPU="${SERVER_CPU:-1}"
CLIENT_CPU="${CLIENT_CPU:-0}"
source "$(dirname "$0")/common.sh"
command -v nginx >/dev/null || die "nginx not installed (apt-get install nginx-light)"
command -v wrk >/dev/null || die "wrk not installed (scripts/setup)"

BODY="hello from c10m"
# c10m: pinned, busy-polling while there is traffic (the default adaptive idle).
c10m_start --app http --port 80 --body "$BODY"$'\n'
taskset -apc "$SERVER_CPU" "$C10M_PID" >/dev/null

mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 100000000;
    client_body_temp_path $WORK/nginx;
    proxy_temp_path $WORK/nginx;
    fastcgi_temp_path $WORK/nginx;
    uwsgi_temp_path $WORK/nginx;
    scgi_temp_path $WORK/nginx;
    server {
        listen $KERNEL_IP:80 reuseport;
        location / { default_type text/plain; return 200 "$BODY\n"; }
    }
}
EOF
(exec ip netns exec "$STACK_NS" taskset -c "$SERVER_CPU" nginx -c "$WORK/nginx/nginx.conf" >"$WORK/nginx/out.log" 2>&1) &
NGINX_PID=$!
on_exit "kill -TERM $NGINX_PID 2>/dev/null; wait $NGINX_PID 2>/dev/null || true"
wait_for "peer curl -sf --max-time 1 http://$KERNEL_IP/ >/dev/null" 10 || {
    cat "$WORK/nginx/out.log" "$WORK/nginx/error.log" >&2 || true
    die "nginx did not start"
}
[[ "$(peer curl -sf "http://$C10M_IP/")" == "$BODY" ]] || die "c10m not answering"

declare -A RPS LAT P99
run_one() { # run_one NAME URL ROUND
    local out
    out="$(peer taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "$2" 2>&1)"
    if grep -Eq 'Socket errors|Non-2xx' <<<"$out"; then
        printf '%s\n' "$out" | sed 's/^/  wrk| /'
        warn "$1: wrk reported errors"
    fi
    RPS[$1.$3]="$(awk '/Requests\/sec/ { print $2 }' <<<"$out")"
    LAT[$1.$3]="$(awk '/^ +Latency / { print $2; exit }' <<<"$out")"
    P99[$1.$3]="$(awk '$1 == "99%" { print $2 }' <<<"$out")"
    printf '%-6s round %d: %10s req/s  latency avg %-9s p99 %s\n' "$1" "$3" "${RPS[$1.$3]}" "${LAT[$1.$3]}" "${P99[$1.$3]}"
}
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
to_us() { # 45.3us / 1.20ms -> microseconds
    sed -E 's/^([0-9.]+)us$/\1/; s/^([0-9.]+)ms$/\1e3/; s/^([0-9.]+)s$/\1e6/' | awk '{ printf "%.1f\n", $1 }'
}

log "wrk -t1 -c$CONNS -d${SECS}s, $ROUNDS rounds, alternating; servers on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU"
for r in $(seq 1 "$ROUNDS"); do
    run_one c10m "http://$C10M_IP/" "$r"
    run_one nginx "http://$KERNEL_IP/" "$r"
done
for n in c10m nginx; do
    rps="$(for r in $(seq 1 "$ROUNDS"); do echo "${RPS[$n.$r]}"; done | median)"
    lat="$(for r in $(seq 1 "$ROUNDS"); do echo "${LAT[$n.$r]}" | to_us; done | median)"
    p99="$(for r in $(seq 1 "$ROUNDS"); do echo "${P99[$n.$r]}" | to_us; done | median)"
    printf 'median %-6s %10s req/s  latency avg %s us  p99 %s us\n' "$n" "$rps" "$lat" "$p99"
done
c10m_stop >/dev/null 2>&1 || warn "c10m exited non-zero"
