#!/usr/bin/env bash
# t_baseline - measurement, not a pass/fail check of speed: c10m echo against a kernel
# echo server on the same testbed, in the same run, alternating A B A B.
#
#   netns TB-stack: c10m (AF_XDP) on 198.18.0.2:7 and the kernel echo server
#                   (tests/ns/kernel_echo.py) on 198.18.0.3:7, both on TB-s
#   netns TB-peer:  the same python client and ping for both
#
# Prints per-round figures and one line:
#   baseline: c10m echo X MB/s, kernel echo Y MB/s, ratio Z; ping rtt c10m A ms, kernel B ms
# (medians of C10M_BASELINE_ROUNDS rounds, default 3, of a C10M_BASELINE_MB MiB transfer,
# default 16). Fails only if a transfer does not complete or its bytes differ.
set -euo pipefail
source "$(dirname "$0")/common.sh"

ROUNDS="${C10M_BASELINE_ROUNDS:-3}"
BYTES=$((${C10M_BASELINE_MB:-16} << 20))
mbs() { sed -n 's/.*MB\/s=\([0-9.]*\).*/\1/p' <<<"$1"; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END { if (NR == 0) print "n/a"; else if (NR % 2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2 }'; }

c10m_start
klog="$WORK/kernel_echo.log"
stack python3 "$NS_DIR/kernel_echo.py" --bind "$KERNEL_IP" --port "$ECHO_PORT" --max-seconds 300 >"$klog" 2>&1 &
kpid=$!
on_exit "kill -TERM $kpid 2>/dev/null; wait $kpid 2>/dev/null"
wait_for "grep -q 'kernel_echo: ready' '$klog'" 10 || { cat "$klog"; fail "kernel echo server not ready"; }

c_mbs="" k_mbs="" c_rtt="" k_rtt=""
for r in $(seq 1 "$ROUNDS"); do
    ping_rtt "$C10M_IP" 10 9 || fail "c10m did not answer ping"
    c_rtt+=" $PING_AVG"
    ping_rtt "$KERNEL_IP" 10 9 || fail "kernel did not answer ping"
    k_rtt+=" $PING_AVG"
    out="$(echo_client bulk --bytes "$BYTES" --host "$C10M_IP" --timeout 90)" || fail "c10m echo: $out"
    echo "round $r c10m:   $out"
    c_mbs+=" $(mbs "$out")"
    out="$(echo_client bulk --bytes "$BYTES" --host "$KERNEL_IP" --timeout 90)" || fail "kernel echo: $out"
    echo "round $r kernel: $out"
    k_mbs+=" $(mbs "$out")"
done
cm="$(median <<<"$c_mbs")" km="$(median <<<"$k_mbs")"
cr="$(median <<<"$c_rtt")" kr="$(median <<<"$k_rtt")"
c10m_stop || warn "c10m exited non-zero"
ratio="$(awk -v a="$cm" -v b="$km" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else print "n/a" }')"
echo "baseline: c10m echo $cm MB/s, kernel echo $km MB/s, ratio $ratio; ping rtt c10m $cr ms, kernel $kr ms (medians of $ROUNDS rounds, $((BYTES >> 20)) MiB)"
pass "baseline measured"
