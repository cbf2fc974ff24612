#!/usr/bin/env bash
# t_http - the `http` app against real clients in the peer namespace: curl (fixed body,
# files from --dir including a 1 MiB random one compared by SHA-256, HEAD, connection
# reuse, 404, 405, HTTP/1.0, IPv6), wrk (keep-alive and Connection: close runs), ab -k, and
# raw-socket abuse (tests/ns/http_raw.py: garbage -> 400, a never-ending header -> 431 at
# the limit with c10m's memory unchanged, a truncated request, Content-Length 999999999
# -> 413, HTTP/3.0 -> 505, pipelining in order). Ends with c10m's counters: no flow left,
# every status counted, the Date header formatted at most once per second.
#
#   netns TB-stack: c10m --app http --port 80 --dir $WORK/www
#   netns TB-peer:  curl, wrk, ab, python3 tests/ns/http_raw.py
set -euo pipefail
source "$(dirname "$0")/common.sh"

for t in curl wrk ab; do
    command -v "$t" >/dev/null || fail "$t not installed (run scripts/setup)"
done

URL="http://$C10M_IP"
BODY="fixed body from t_http"
DOC="$WORK/www"
mkdir -p "$DOC/docs" "$DOC/css"
printf '<h1>docs</h1>\n' >"$DOC/docs/index.html"
printf 'body { color: #222 }\n' >"$DOC/css/site.css"
head -c 1048576 /dev/urandom >"$DOC/big.bin"

raw() { peer python3 "$NS_DIR/http_raw.py" "$1" --host "$C10M_IP" --port 80 "${@:2}"; }
code_of() { peer curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@"; }
stat_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], 0))' "$C10M_STATS" "$1"; }
show() { printf '%s\n' "$2" | sed "s/^/  $1| /"; } # show PREFIX TEXT: indented output
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$C10M_PID/status"; }

started="$(date +%s)"
c10m_start --app http --port 80 --dir "$DOC" --body "$BODY"

# --- curl
got="$(peer curl -sf --max-time 10 "$URL/")" || fail "GET / failed"
[[ "$got" == "$BODY" ]] || fail "GET / returned '$got', expected '$BODY'"
hdrs="$(peer curl -sf -D - -o /dev/null --max-time 10 "$URL/")"
grep -qi '^date: .* GMT' <<<"$hdrs" || fail "no Date header: $hdrs"
grep -qi "^content-length: ${#BODY}" <<<"$hdrs" || fail "wrong Content-Length: $hdrs"
echo "curl GET /: fixed body, Date and Content-Length present"

want="$(sha256sum <"$DOC/big.bin" | cut -d' ' -f1)"
got="$(peer curl -sf --max-time 20 "$URL/big.bin" | sha256sum | cut -d' ' -f1)"
[[ "$got" == "$want" ]] || fail "GET /big.bin: sha256 $got, expected $want"
echo "curl GET /big.bin: 1 MiB, sha256 matches"
[[ "$(peer curl -sf --max-time 10 "$URL/docs/")" == "<h1>docs</h1>" ]] || fail "GET /docs/ (index.html)"
peer curl -sf -D - -o /dev/null --max-time 10 "$URL/css/site.css" | grep -qi '^content-type: text/css' ||
    fail "GET /css/site.css: not text/css"
echo "curl: /docs/ -> docs/index.html, /css/site.css is text/css"

# HEAD: curl -I shows the length; the raw client checks no body follows the head.
peer curl -sfI --max-time 10 "$URL/big.bin" | grep -qi '^content-length: 1048576' || fail "HEAD: Content-Length"
raw head --path /big.bin --length 1048576 || fail "HEAD /big.bin"

# One connection for two requests.
out="$(peer curl -sv --max-time 10 -o /dev/null -o /dev/null "$URL/" "$URL/css/site.css" 2>&1)"
grep -Eqi 're-?using existing|reusing connection' <<<"$out" || {
    show curl "$out"
    fail "curl did not reuse the connection"
}
echo "curl: second request re-used the connection"

[[ "$(code_of "$URL/nope")" == 404 ]] || fail "unknown path is not 404"
[[ "$(code_of -X POST -d x "$URL/")" == 405 ]] || fail "POST is not 405"
peer curl -s -D - -o /dev/null -X DELETE --max-time 10 "$URL/" | grep -qi '^allow: GET, HEAD' || fail "405 without Allow"
[[ "$(peer curl -sf -0 --max-time 10 "$URL/")" == "$BODY" ]] || fail "HTTP/1.0 GET"
[[ "$(peer curl -sf -g --max-time 10 "http://[$C10M_IP6]/")" == "$BODY" ]] || fail "GET over IPv6"
echo "curl: 404, 405 with Allow, HTTP/1.0, IPv6"

# --- wrk keep-alive (the Connection: close run comes last, see below)
wrk_check() { # wrk_check NAME OUTPUT
    local reqs
    reqs="$(awk '/requests in/ { print $1 }' <<<"$2")"
    if [[ -z "$reqs" || "$reqs" == 0 ]] || grep -Eq 'Socket errors|Non-2xx' <<<"$2"; then
        show wrk "$2"
        fail "wrk $1: requests=${reqs:-none} or errors"
    fi
    echo "wrk $1: $reqs requests, $(awk '/Requests\/sec/ { print $2 }' <<<"$2") req/s, latency avg $(awk '/Latency/ { print $2; exit }' <<<"$2"), no errors"
}
out="$(peer timeout 20 wrk -t1 -c10 -d2s "$URL/" 2>&1)" || fail "wrk keep-alive: $out"
wrk_check keep-alive "$out"

# --- ab -k (HTTP/1.0 keep-alive)
out="$(peer timeout 30 ab -q -n 1000 -c 10 -k "$URL/" 2>&1)" || {
    show ab "$out"
    fail "ab failed"
}
if ! grep -Eq '^Complete requests: +1000$' <<<"$out" || ! grep -Eq '^Failed requests: +0$' <<<"$out" ||
    ! grep -Eq '^Keep-Alive requests: +1000$' <<<"$out"; then
    show ab "$out"
    fail "ab: not 1000 complete keep-alive requests without failures"
fi
echo "ab -k: 1000 requests, 0 failed, all keep-alive ($(awk '/^Requests per second/ { print $4 }' <<<"$out") req/s)"

# --- hostile and malformed input
rss0="$(rss_kb)"
raw garbage || fail "garbage"
raw bigbody || fail "Content-Length 999999999"
raw version || fail "HTTP/3.0"
raw truncated || fail "truncated request"
raw pipeline --count 30 || fail "pipelining"
for i in 1 2 3; do
    raw longheader --bytes $((2 << 20)) || fail "never-ending header line ($i)"
done
[[ "$(peer curl -sf --max-time 10 "$URL/")" == "$BODY" ]] || fail "not serving after the hostile clients"
rss1="$(rss_kb)"
echo "after hostile clients: still serving; c10m RSS ${rss0} -> ${rss1} KiB"
((rss1 - rss0 < 8192)) || fail "c10m RSS grew by $((rss1 - rss0)) KiB"

# --- wrk with a new connection per request. c10m closes first, so each of these
# connections stays in TIME-WAIT in c10m for 10 s (smoltcp's CLOSE_DELAY). The peer's
# kernel keeps no TIME-WAIT of its own for them and picks those ports again: the engine
# then reopens the 4-tuple on the new SYN (counter time_wait_reused). This run goes last
# and the TIME-WAIT flows drain before flows_active is read.
out="$(peer timeout 20 wrk -t1 -c10 -d2s -H 'Connection: close' "$URL/" 2>&1)" || fail "wrk close: $out"
wrk_check "Connection: close" "$out"
sleep 11

# --- counters
c10m_stop || fail "c10m exited non-zero"
elapsed=$(($(date +%s) - started))
for k in app_http_400:2 app_http_413:1 app_http_505:1; do
    [[ "$(stat_of "${k%%:*}")" == "${k#*:}" ]] || fail "${k%%:*} is $(stat_of "${k%%:*}"), expected ${k#*:}"
done
(($(stat_of app_http_431_header_too_large) == 3)) || fail "431 not counted 3 times"
(($(stat_of app_http_404) >= 7 && $(stat_of app_http_405) >= 8)) || fail "404/405 not counted"
(($(stat_of app_http_keepalive_reuse) >= 1000)) || fail "keep-alive reuse not counted"
(($(stat_of app_http_streamed) >= 1)) || fail "the 1 MiB response did not stream"
dates="$(stat_of app_http_date_formats)"
((dates <= elapsed + 2)) || fail "Date formatted $dates times in ${elapsed}s"
echo "counters: time_wait_reused=$(stat_of time_wait_reused) requests=$(stat_of app_http_requests) 200=$(stat_of app_http_200) 404=$(stat_of app_http_404) 405=$(stat_of app_http_405) 431=$(stat_of app_http_431_header_too_large) closes=$(stat_of app_http_closes) linger_resets=$(stat_of app_http_linger_resets) date_formats=$dates in ${elapsed}s flows_active=$(stat_of flows_active)"
active="$(stat_of flows_active)"
[[ "$active" == 0 ]] || fail "$active flows left after all clients finished"
pass "http: curl, wrk, ab and hostile clients served correctly; bounded; counters consistent"
