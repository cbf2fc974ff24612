#!/usr/bin/env bash
# t_bench_smoke - keeps the benchmark harness working: `scripts/bench --smoke` end to end
# (every scenario a few seconds, 1 round), then checks its output. Not a speed check.
#
#   scripts/bench's own testbed (named after this test's, so tests/ns/run's leak check
#   covers it):  netns TB-stack: c10m 198.18.0.2 | nginx, redis, epoll/thread_echo 198.18.0.3
#                netns TB-peer:  wrk, redis-benchmark, lat_client, echo_client.py, loadgen
#
# Passes if scripts/bench exits 0, the Markdown table is on its stdout and in results.md,
# meta.json / runs.jsonl / results.json exist, every scenario in results.json is either
# "not run" with a reason or has, for every system, a number (median throughput) or an
# explicit failure with a reason, and the throughput chart was written (SVG and PNG).
# Scenario failures are printed but do not fail this test: the harness reporting them
# is what is tested. Takes ~60-90 s.
# Prerequisites: those of scripts/bench (root, release build incl. benches, wrk, nginx,
#   redis, strace, fonts-dejavu-core: scripts/setup).
set -euo pipefail
NS_DIR="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$NS_DIR/../.." && pwd)"
# shellcheck source=../../scripts/lib.sh
source "$REPO/scripts/lib.sh"
need_root

fail() { printf 'FAIL: %s\n' "$*"; exit 1; }
pass() { printf 'PASS: %s\n' "$*"; exit 0; }

WORK="$(mktemp -d /tmp/c10m-bench-smoke.XXXXXX)"
on_exit "rm -rf '$WORK'"
OUT="$WORK/results"

t0="$(now_s)"
rc=0
C10M_BENCH_TB="${C10M_TB:-}" "$REPO/scripts/bench" --smoke --out "$OUT" >"$WORK/stdout" 2>"$WORK/stderr" || rc=$?
log "scripts/bench --smoke: exit $rc after $(elapsed_s "$t0") s"
if ((rc != 0)); then
    tail -n 30 "$WORK/stderr" | sed 's/^/  bench| /'
    fail "scripts/bench --smoke exited with status $rc"
fi
cat "$WORK/stdout"

for f in meta.json runs.jsonl results.json results.md; do
    [[ -s "$OUT/$f" ]] || fail "$f missing or empty in $OUT"
done
grep -q '^| scenario | system | throughput ' "$WORK/stdout" || fail "no Markdown table on stdout"
cmp -s "$WORK/stdout" "$OUT/results.md" || fail "stdout and results.md differ"

python3 - "$OUT/results.json" <<'EOF' || fail "results.json check failed (above)"
import json, sys
r = json.load(open(sys.argv[1]))
bad, failed, n = [], [], 0
for sc in r["scenarios"]:
    n += 1
    if sc["status"] == "not_run":
        if not sc.get("reason"):
            bad.append(f"{sc['id']}: not run without a reason")
        continue
    if not sc["systems"]:
        bad.append(f"{sc['id']}: no systems")
    for s in sc["systems"]:
        if s["status"] == "ok":
            t = (s.get("throughput") or {}).get("median")
            if not isinstance(t, (int, float)) or t <= 0:
                bad.append(f"{sc['id']}/{s['name']}: ok without a positive throughput ({t!r})")
        elif s["status"] == "failed":
            if not s.get("reason"):
                bad.append(f"{sc['id']}/{s['name']}: failed without a reason")
            failed.append(f"{sc['id']}/{s['name']}: {s['reason']}")
        else:
            bad.append(f"{sc['id']}/{s['name']}: status {s['status']!r}")
if n < 12:
    bad.append(f"only {n} scenarios in results.json, expected 12")
for f in failed:
    print("scenario failure (reported by the harness):", f)
for b in bad:
    print("BAD:", b)
sys.exit(1 if bad else 0)
EOF

grep -q '<svg' "$OUT/throughput.svg" 2>/dev/null || fail "throughput.svg not written"
[[ "$(head -c 4 "$OUT/throughput.png" 2>/dev/null | od -An -c | tr -d ' ')" == '211PNG' ]] ||
    fail "throughput.png not written (or not a PNG)"
pass "scripts/bench --smoke: table, JSON and charts for all scenarios in $(elapsed_s "$t0") s"
