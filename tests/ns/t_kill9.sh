#!/usr/bin/env bash
# tests/ns/t_kill9.sh - after `kill -9` of c10m no XDP program is left on the interface
# (c10m must attach with a BPF link owned by the process), and a new c10m starts on
# the same interface (without --force) and answers ping.
#   TB-stack: c10m #1 --SIGKILL-->  [TB-s] must show no xdp  --> c10m #2 answers ping
# Prerequisites: root, target/release/c10m. Usage: tests/ns/run t_kill9
set -euo pipefail
source "$(dirname "$0")/common.sh"

xdp_attached() { ip -n "$STACK_NS" link show "$STACK_IF" | grep -Eq 'prog/xdp|xdp'; }

c10m_start
ping_rtt "$C10M_IP" 3 2 || fail "first c10m did not answer ping"
link="$(ip -n "$STACK_NS" link show "$STACK_IF")"
attached="$(grep -Eo 'prog/xdp[a-z]* id [0-9]+' <<<"$link" | head -1 || true)"
[[ -n "$attached" ]] || attached="$(grep -Eo 'xdp[a-z]*' <<<"$link" | head -1 || true)"
echo "while running: ${attached:-no xdp program on $STACK_IF}"
if [[ -z "$attached" && "$(basename "$C10M_BIN")" != fake_c10m.py ]]; then
    fail "no XDP program attached to $STACK_IF while c10m runs: the check below would prove nothing"
fi
c10m_kill9
# The BPF link is released when the process's files close; allow a moment.
if ! wait_for '! xdp_attached' 3; then
    ip -n "$STACK_NS" link show "$STACK_IF"
    fail "XDP program left on $STACK_IF after kill -9 (netlink-attached, not a BPF link?)"
fi
echo "after kill -9: no xdp program on $STACK_IF"
c10m_start
ping_rtt "$C10M_IP" 5 4 || fail "restarted c10m did not answer ping"
c10m_stop || fail "restarted c10m exited non-zero after SIGINT"
pass "kill -9 left no XDP program; restart on the same interface works"
