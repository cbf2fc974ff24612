# shellcheck shell=bash
# tests/ns/common.sh - sourced by tests/ns/t_*.sh (and scripts/demo).
#
# Purpose: on source it checks root and the c10m binary, creates a fresh testbed
# (scripts/testbed up, removed on exit/failure/signal by the lib.sh cleanup stack)
# and a scratch dir. Then offers:
#   c10m_start [EXTRA ARGS]   start `c10m serve` in NAME-stack in the background
#                             (PID in C10M_PID, stopped by PID on exit), wait for
#                             "c10m: ready", flush the peer's neighbour cache
#   c10m_stop                 SIGINT (then TERM, then KILL), wait; prints its counters;
#                             returns c10m's exit status (0 expected)
#   peer CMD...               ip netns exec NAME-peer CMD...
#   stack CMD...              ip netns exec NAME-stack CMD...
#   ping_rtt HOST COUNT [MIN_RECEIVED] [ping args]   ping from the peer, sets PING_AVG (ms)
#   echo_client MODE ARGS...  tests/ns/echo_client.py in the peer namespace
#   nginx_start NS ADDR:PORT 'DIRECTIVES' [CPUS] / nginx_stop   nginx (1 worker) by PID
#   fail MSG / pass MSG       end the test with a clear message
#
#   netns TB-stack                      netns TB-peer
#   c10m 198.18.0.2 / 2001:2::2         kernel 198.18.0.1 / 2001:2::1
#   kernel 198.18.0.3 / 2001:2::3
#          [TB-s] ======== veth ======== [TB-p]
#
# Environment: C10M_TB (testbed name; tests/ns/run sets it, else unique),
#   C10M_BIN (default target/release/c10m; tests/ns/fake_c10m.py is a kernel stand-in),
#   C10M_QUEUES (veth queues, default 1), C10M_XDP_MODE (passed as --xdp-mode),
#   C10M_ARGS (extra arguments for every `c10m serve`), C10M_MAX_SECONDS (passed as
#   --duration when the binary supports it: c10m ends by itself even if a test is SIGKILLed).
# Usage (in a test): source "$(dirname "$0")/common.sh"; c10m_start; peer ping -c 1 "$C10M_IP"
set -euo pipefail

NS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$NS_DIR/../.." && pwd)"
# shellcheck source=../../scripts/lib.sh
source "$REPO/scripts/lib.sh"
need_root

C10M_BIN="${C10M_BIN:-$REPO/target/release/c10m}"
[[ "$C10M_BIN" = /* ]] || C10M_BIN="$REPO/$C10M_BIN"
if [[ ! -x "$C10M_BIN" ]]; then
    die "build first: cargo build --release ($C10M_BIN not found)"
fi

TB="${C10M_TB:-$(unique_name t)}"
STACK_NS="$TB-stack"
PEER_NS="$TB-peer"
STACK_IF="$TB-s"
PEER_IF="$TB-p"
# Addresses used by the tests that source this file.
# shellcheck disable=SC2034
{
    PEER_IP=198.18.0.1
    PEER_IP6=2001:2::1
    C10M_IP=198.18.0.2
    C10M_IP6=2001:2::2
    KERNEL_IP=198.18.0.3
    KERNEL_IP6=2001:2::3
    ECHO_PORT=7
}

WORK="$(mktemp -d "/tmp/c10m-$TB.XXXXXX")"
on_exit "rm -rf '$WORK'"

if ! "$REPO/scripts/testbed" up "$TB" --queues "${C10M_QUEUES:-1}" >"$WORK/testbed.log" 2>&1; then
    cat "$WORK/testbed.log" >&2
    die "testbed up $TB failed"
fi
on_exit "'$REPO/scripts/testbed' down '$TB' >/dev/null 2>&1 || warn 'testbed down $TB failed'"
log "testbed $TB up (namespaces $STACK_NS $PEER_NS, c10m: $C10M_BIN)"

peer() { ip netns exec "$PEER_NS" "$@"; }
stack() { ip netns exec "$STACK_NS" "$@"; }

fail() { printf 'FAIL: %s\n' "$*"; exit 1; }
pass() { printf 'PASS: %s\n' "$*"; exit 0; }

alive() { # alive PID: running (not gone, not a zombie)
    [[ -r "/proc/$1/status" ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

C10M_PID=""
C10M_LOG=""
C10M_STATS=""
_C10M_RUNS=0

c10m_start() { # c10m_start [EXTRA ARGS...]
    _C10M_RUNS=$((_C10M_RUNS + 1))
    C10M_LOG="$WORK/c10m.$_C10M_RUNS.log"
    C10M_STATS="$WORK/c10m.$_C10M_RUNS.stats.json"
    local args=(serve --iface "$STACK_IF" --ip "$C10M_IP/24" --ip6 "$C10M_IP6/64"
        --app echo --port "$ECHO_PORT" --stats-json "$C10M_STATS")
    [[ -n "${C10M_XDP_MODE:-}" ]] && args+=(--xdp-mode "$C10M_XDP_MODE")
    # Bounded lifetime as a safety net (if this c10m supports --duration).
    if [[ -z "${_C10M_HAS_DURATION:-}" ]]; then
        _C10M_HAS_DURATION=0
        "$C10M_BIN" serve --help 2>&1 | grep -q -- '--duration' && _C10M_HAS_DURATION=1
    fi
    ((_C10M_HAS_DURATION)) && args+=(--duration "${C10M_MAX_SECONDS:-900}")
    # shellcheck disable=SC2206
    [[ -n "${C10M_ARGS:-}" ]] && args+=($C10M_ARGS)
    args+=("$@")
    log "starting: ip netns exec $STACK_NS $C10M_BIN ${args[*]}"
    # The subshell and `ip netns exec` both exec: $! is c10m's own PID. `trap - INT QUIT`
    # undoes bash's SIG_IGN for background jobs, so c10m sees SIGINT even when it
    # waits for signals with sigprocmask/signalfd (an ignored signal is discarded).
    (
        trap - INT QUIT
        exec ip netns exec "$STACK_NS" "$C10M_BIN" "${args[@]}" >"$C10M_LOG" 2>&1
    ) &
    C10M_PID=$!
    on_exit "_c10m_reap $C10M_PID"
    if ! wait_for "grep -q 'c10m: ready' '$C10M_LOG' || ! alive $C10M_PID" "${C10M_READY_TIMEOUT:-30}" ||
        ! grep -q 'c10m: ready' "$C10M_LOG"; then
        sed 's/^/  c10m| /' "$C10M_LOG" >&2
        if alive "$C10M_PID"; then
            fail "c10m (PID $C10M_PID) not ready after ${C10M_READY_TIMEOUT:-30} s"
        fi
        fail "c10m exited before it was ready"
    fi
    # FACTS: stale neighbour entries when .2 moves between servers; start clean.
    ip -n "$PEER_NS" neigh flush dev "$PEER_IF" 2>/dev/null || true
    log "c10m ready (PID $C10M_PID)"
}

_c10m_reap() { # cleanup: stop a c10m we started, by PID, if still running
    local pid="$1"
    alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    wait_for "! alive $pid" 5 || kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

c10m_stop() { # SIGINT the running c10m; prints its counters; returns its exit status
    local pid="$C10M_PID" rc=0
    [[ -n "$pid" ]] || return 0
    kill -INT "$pid" 2>/dev/null || true
    if ! wait_for "! alive $pid" 10; then
        warn "c10m ignored SIGINT for 10 s; sending SIGTERM"
        kill -TERM "$pid" 2>/dev/null || true
        wait_for "! alive $pid" 5 || {
            warn "c10m ignored SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        }
    fi
    wait "$pid" || rc=$?
    C10M_PID=""
    log "c10m exited with status $rc; its output (counters: non-zero ones, on one line):"
    grep -Ev '^[a-z][a-z0-9_]* [0-9]+$' "$C10M_LOG" | sed 's/^/  c10m| /' >&2 || true
    echo "c10m counters: $(awk '/^[a-z][a-z0-9_]* [0-9]+$/ && $2 != 0 { printf "%s=%s ", $1, $2 }' "$C10M_LOG")" >&2
    return "$rc"
}

c10m_kill9() { # SIGKILL c10m (crash simulation); waits until it is gone
    local pid="$C10M_PID"
    kill -KILL "$pid"
    wait "$pid" 2>/dev/null || true
    C10M_PID=""
}

PING_AVG=""
ping_rtt() { # ping_rtt HOST COUNT [MIN_RECEIVED] [extra ping args...]
    local host="$1" count="$2" min="${3:-$2}" out received
    shift 2
    [[ $# -gt 0 ]] && shift
    out="$(peer ping -n -c "$count" -i 0.2 -W 2 -w $((count + 10)) "$@" "$host" 2>&1)" || true
    received="$(sed -n 's/.* \([0-9]*\) received.*/\1/p' <<<"$out")"
    PING_AVG="$(sed -n 's|^rtt [^=]*= [0-9.]*/\([0-9.]*\)/.*|\1|p' <<<"$out")"
    printf 'ping %s: %s of %s answered, avg rtt %s ms\n' "$host" "${received:-0}" "$count" "${PING_AVG:-n/a}"
    if ((${received:-0} < min)); then
        printf '%s\n' "$out" | sed 's/^/  ping| /'
        return 1
    fi
}

NGINX_PID=""
_NGINX_RUNS=0
nginx_start() { # nginx_start NS ADDR:PORT 'SERVER DIRECTIVES' [taskset CPU list]
    # nginx (1 worker) in namespace NS, listening on ADDR:PORT with the given directives
    # inside its server block; stopped by PID on exit. Waits until a GET / from the peer
    # namespace is answered (any status). Sets NGINX_PID.
    local ns="$1" listen="$2" body="$3" cpus="${4:-}" d
    _NGINX_RUNS=$((_NGINX_RUNS + 1))
    d="$WORK/nginx.$_NGINX_RUNS"
    mkdir -p "$d"
    chmod 755 "$WORK" "$d" # its worker runs as an unprivileged user
    nginx_conf "$d" "$listen" "$body"
    local pin=()
    [[ -n "$cpus" ]] && command -v taskset >/dev/null && pin=(taskset -c "$cpus")
    (
        trap - INT QUIT
        exec ip netns exec "$ns" "${pin[@]}" nginx -c "$d/nginx.conf" >"$d/out.log" 2>&1
    ) &
    NGINX_PID=$!
    on_exit "_c10m_reap $NGINX_PID"
    if ! wait_for "peer curl -s -o /dev/null --max-time 1 http://$listen/ || ! alive $NGINX_PID" 10 ||
        ! alive "$NGINX_PID"; then
        cat "$d/out.log" "$d/error.log" 2>/dev/null | sed 's/^/  nginx| /' >&2
        fail "nginx on $listen in $ns did not start"
    fi
    log "nginx ready (PID $NGINX_PID) on $listen in $ns"
}

nginx_stop() { # stop the nginx nginx_start started, by PID
    [[ -n "$NGINX_PID" ]] || return 0
    _c10m_reap "$NGINX_PID"
    NGINX_PID=""
}

echo_client() { # echo_client MODE ARGS...  (runs in the peer namespace)
    peer python3 "$NS_DIR/echo_client.py" "$@"
}
