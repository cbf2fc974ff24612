#!/usr/bin/env bash
# t_hash - the `hash` app (processor pool) against a python client in the peer namespace:
# digests equal hashlib's for 0, 1, 64 KiB and 16 MiB bodies written in random segment
# sizes, pipelined requests, an oversized request is reset, clients that disconnect
# mid-upload leak nothing (no flow left, pool results for them dropped), and the same
# digests with --inline.
#
#   netns TB-stack: c10m --app hash --port 9      netns TB-peer: tests/ns/hash_client.py
set -euo pipefail
source "$(dirname "$0")/common.sh"

hc() { peer python3 "$NS_DIR/hash_client.py" --host "$C10M_IP" --port 9 "$@"; }
stat_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], 0))' "$C10M_STATS" "$1"; }

for mode in pool inline; do
    extra=()
    [[ $mode == inline ]] && extra=(--inline)
    c10m_start --app hash --port 9 "${extra[@]}"
    hc sizes --sizes 0,1,65536,16777216 || fail "$mode: wrong digest"
    hc pipeline --count 20 || fail "$mode: pipelined requests"
    hc oversize || fail "$mode: oversized request not refused"
    for n in 1000 300000 2000000; do
        hc abort --bytes "$n" || fail "$mode: abort client"
    done
    sleep 0.5
    hc sizes --sizes 1000 || fail "$mode: server unusable after aborted uploads"
    c10m_stop || fail "$mode: c10m exited non-zero"
    active="$(stat_of flows_active)"
    [[ "$active" == 0 ]] || fail "$mode: $active flows left after all clients finished"
    [[ "$(stat_of app_hash_too_large)" == 1 ]] || fail "$mode: oversize not counted"
    reqs="$(stat_of app_hash_requests)"
    ((reqs == 25)) || fail "$mode: $reqs requests answered, expected 25"
    echo "$mode: requests=$reqs offload_results=$(stat_of offload_results) dropped_results=$(stat_of offload_results_dropped) slow_callbacks=$(stat_of slow_callbacks) resets=$(stat_of closed_reset)"
done
pass "hash digests correct with the pool and inline; aborted uploads leak nothing"
