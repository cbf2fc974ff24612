#!/usr/bin/env bash
# t_proxy - the `proxy` app between real kernel clients and real kernel servers, both in
# the peer namespace, relaying through c10m's AF_XDP stack:
#   1. backend nginx: curl GET (IPv4, and IPv6 to the proxy), two requests on one
#      connection, a 1 GiB file compared by SHA-256 with c10m's memory bounded meanwhile,
#      wrk -c50 with no errors; then nginx stops and a request through the proxy is reset
#      promptly (not left hanging).
#   2. backend kernel echo (tests/ns/kernel_echo.py): 64 MiB both ways at once (SHA-256),
#      100 concurrent connections, and half-close (nc -N: the client's FIN travels to the
#      backend, the echo and the backend's FIN come back).
# Ends with c10m's counters: every accepted connection got its backend connection, every
# relayed byte counted, no flow left but TIME-WAIT.
#
#   netns TB-peer:  curl / wrk / nc / echo_client.py --> 198.18.0.2:8080 (c10m proxy)
#                   nginx 198.18.0.1:80, kernel_echo.py 198.18.0.1:7  <-- c10m connects
set -euo pipefail
source "$(dirname "$0")/common.sh"

for t in curl wrk nginx nc; do
    command -v "$t" >/dev/null || fail "$t not installed (run scripts/setup)"
done

PORT=8080
URL="http://$C10M_IP:$PORT"
stat_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], 0))' "$C10M_STATS" "$1"; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$C10M_PID/status"; }

# --- backend 1: nginx in the peer namespace, serving $WWW
WWW="$WORK/www"
mkdir -p "$WWW"
chmod 755 "$WWW" # nginx's worker runs as an unprivileged user
printf 'index through the proxy\n' >"$WWW/index.html"
log "writing a 1 GiB random file"
head -c $((1 << 30)) /dev/urandom >"$WWW/big.bin"
chmod 644 "$WWW"/*
want_big="$(sha256sum <"$WWW/big.bin" | cut -d' ' -f1)"

nginx_start "$PEER_NS" "$PEER_IP:80" "root $WWW;"

c10m_start --app proxy --port "$PORT" --backend "$PEER_IP:80"

got="$(peer curl -sf --max-time 10 "$URL/index.html")" || fail "curl GET through the proxy failed"
[[ "$got" == "index through the proxy" ]] || fail "GET /index.html through the proxy returned '$got'"
echo "curl GET through the proxy: nginx's file"
got="$(peer curl -sf --max-time 10 -g "http://[$C10M_IP6]:$PORT/index.html")" ||
    fail "curl over IPv6 to the proxy (IPv4 backend) failed"
[[ "$got" == "index through the proxy" ]] || fail "GET over IPv6 through the proxy returned '$got'"
echo "curl over IPv6 to the proxy, relayed to the IPv4 backend"

out="$(peer curl -sv --max-time 10 -o /dev/null -o /dev/null "$URL/index.html" "$URL/index.html" 2>&1)"
grep -Eqi 're-?using existing|reusing connection' <<<"$out" || {
    printf '%s\n' "$out" | sed 's/^/  curl| /'
    fail "second request did not reuse the proxied connection"
}
echo "curl: two requests on one proxied connection"

rss0="$(rss_kb)"
res="$(peer curl -sf --max-time 180 -w '%{speed_download}\n' -o >(sha256sum | cut -d' ' -f1 >"$WORK/big.sha") "$URL/big.bin")" ||
    fail "1 GiB GET through the proxy failed"
wait_for "[[ -s '$WORK/big.sha' ]]" 10 || fail "no SHA-256 of the 1 GiB download"
rss1="$(rss_kb)"
[[ "$(cat "$WORK/big.sha")" == "$want_big" ]] ||
    fail "1 GiB through the proxy: sha256 $(cat "$WORK/big.sha"), expected $want_big"
grow=$(((rss1 - rss0) / 1024))
((grow < 64)) || fail "c10m RSS grew by $grow MiB while relaying 1 GiB (buffers not bounded)"
echo "1 GiB through the proxy: sha256 matches, $(awk '{ printf "%.0f", $1 / 1e6 }' <<<"$res") MB/s, c10m RSS +$grow MiB"

out="$(peer wrk -t1 -c50 -d3s "$URL/index.html" 2>&1)" || fail "wrk through the proxy failed: $out"
printf '%s\n' "$out" | sed 's/^/  wrk| /'
if grep -Eq 'Socket errors|Non-2xx' <<<"$out"; then
    fail "wrk through the proxy reported errors"
fi
reqs="$(awk '/requests in/ { print $1 }' <<<"$out")"
((reqs > 0)) || fail "wrk made no requests through the proxy"
echo "wrk -c50 3 s through the proxy: $reqs requests, no errors"

# Backend gone: the client must see a reset quickly, not a hang.
nginx_stop
t0="$(date +%s%N)"
rc=0
peer curl -s --max-time 10 -o /dev/null "$URL/index.html" || rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
((rc != 0 && rc != 28)) || fail "curl with the backend down: exit $rc (28 is a timeout: the reset was not passed on)"
echo "backend down: curl failed in $ms ms (exit $rc), not hung"

c10m_stop || fail "c10m exited non-zero after SIGINT"
acc="$(stat_of app_proxy_accepted)"
con="$(stat_of app_proxy_backend_connected)"
down="$(stat_of app_proxy_bytes_to_client)"
((down >= 1 << 30)) || fail "app_proxy_bytes_to_client $down < 1 GiB"
((acc == con + 1)) || fail "accepted $acc, backend connected $con: expected one refused (backend down)"
(($(stat_of app_proxy_resets_relayed) >= 1)) || fail "the refused backend connection did not reset the client"
echo "counters: $acc accepted, $con backend connections, $down bytes to clients"

# --- backend 2: kernel echo in the peer namespace
(exec ip netns exec "$PEER_NS" python3 "$NS_DIR/kernel_echo.py" --bind "$PEER_IP" --port 7 --max-seconds 300 \
    >"$WORK/echo.log" 2>&1) &
ECHO_PID=$!
on_exit "kill -TERM $ECHO_PID 2>/dev/null; wait $ECHO_PID 2>/dev/null || true"
wait_for "grep -q 'kernel_echo: ready' '$WORK/echo.log'" 10 || fail "kernel_echo.py did not start"

c10m_start --app proxy --port "$PORT" --backend "$PEER_IP:7"
out="$(echo_client bulk --bytes $((64 << 20)) --host "$C10M_IP" --port "$PORT" --timeout 120)" || {
    echo "$out"
    fail "64 MiB echo through the proxy"
}
echo "$out"
out="$(echo_client conc --count 100 --host "$C10M_IP" --port "$PORT" --timeout 60)" || {
    echo "$out"
    fail "100 concurrent connections through the proxy"
}
echo "$out"
got="$(printf 'half-closed hello' | peer timeout 10 nc -N "$C10M_IP" "$PORT")" ||
    fail "nc -N through the proxy did not end (half-close not passed on?)"
[[ "$got" == "half-closed hello" ]] || fail "nc -N through the proxy got '$got'"
echo "half-close: the client's FIN reached the backend; the echo and its FIN came back"

c10m_stop || fail "c10m exited non-zero after SIGINT"
acc="$(stat_of app_proxy_accepted)"
con="$(stat_of app_proxy_backend_connected)"
((acc == con && acc >= 102)) || fail "accepted $acc, backend connected $con"
up="$(stat_of app_proxy_bytes_to_backend)"
((up >= 64 << 20)) || fail "app_proxy_bytes_to_backend $up < 64 MiB"
pass "proxy: curl, 1 GiB, wrk, reset, 64 MiB echo, 100 connections and half-close through c10m"
