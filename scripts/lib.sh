# shellcheck shell=bash
# scripts/lib.sh - shared helpers for c10m's shell tooling.
#
# Purpose:  sourced (never executed) by scripts/* and tests/ns/*. Provides
#             log / warn / die        logging to stderr with the script's name
#             need_root               fail unless running as root
#             on_exit CMD             push CMD on a cleanup stack; the stack runs in
#                                     reverse order from ONE trap (EXIT, INT, TERM, HUP)
#             unique_name PREFIX      PREFIX + 4 random hex digits (<= 8 chars total)
#             wait_for CMD TIMEOUT_S  re-evaluate CMD every 0.1 s until it succeeds
#             repo_root               absolute path of the repository
#             nginx_conf DIR LISTEN 'DIRECTIVES'   write DIR/nginx.conf: one worker, keep-alive,
#                                     no access log, DIRECTIVES inside its server block
#             text_file FILE BYTES    deterministic compressible text (gzip ~3x)
#             busy_pct SECONDS        whole-machine busy CPU % over SECONDS (/proc/stat)
#             wait_quiet              benches: wait (at most $QUIET_WAIT_S) until the machine
#                                     is < $QUIET_PCT % busy over 1 s; sets BG_PCT
# Prereqs:  bash >= 4, coreutils.
# Usage:    source "$(dirname "$0")/lib.sh"   (callers use `set -euo pipefail`)
#           on_exit "ip netns del foo-stack"
#
# Notes: the trap is installed when this file is sourced; a script that sources
# it must not install its own EXIT/INT/TERM traps (use on_exit instead).

if [[ -n "${_C10M_LIB_SOURCED:-}" ]]; then
    return 0
fi
_C10M_LIB_SOURCED=1

C10M_SELF="$(basename "${0:-c10m}")"

_ts() { date +%H:%M:%S; }
log()  { printf '[%s %s] %s\n' "$(_ts)" "$C10M_SELF" "$*" >&2; }
warn() { printf '[%s %s] WARNING: %s\n' "$(_ts)" "$C10M_SELF" "$*" >&2; }
die()  { printf '[%s %s] ERROR: %s\n' "$(_ts)" "$C10M_SELF" "$*" >&2; exit 1; }

need_root() {
    if [[ "$(id -u)" -ne 0 ]]; then
        die "must run as root: try sudo scripts/test"
    fi
}

repo_root() {
    local here
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    dirname "$here"
}

# ---------------------------------------------------------------- cleanup stack
_C10M_CLEANUP=()

on_exit() {
    [[ $# -ge 1 ]] || die "on_exit: missing command"
    _C10M_CLEANUP+=("$*")
}

_c10m_run_cleanup() {
    local rc=$? i cmd
    trap - EXIT INT TERM HUP
    set +e
    for ((i = ${#_C10M_CLEANUP[@]} - 1; i >= 0; i--)); do
        cmd="${_C10M_CLEANUP[$i]}"
        unset '_C10M_CLEANUP[i]'
        eval "$cmd"
    done
    exit "$rc"
}

_c10m_on_signal() {
    # Exiting runs the EXIT trap (the cleanup stack) exactly once.
    log "caught SIG$1, cleaning up"
    case "$1" in
        INT) exit 130 ;; TERM) exit 143 ;; HUP) exit 129 ;; *) exit 1 ;;
    esac
}

trap _c10m_run_cleanup EXIT
trap '_c10m_on_signal INT' INT
trap '_c10m_on_signal TERM' TERM
trap '_c10m_on_signal HUP' HUP

# ---------------------------------------------------------------- misc helpers
rand_hex() { # rand_hex NBYTES
    od -An -N"${1:-2}" -tx1 /dev/urandom | tr -d ' \n'
}

unique_name() { # unique_name PREFIX  ->  PREFIX + 4 hex digits, at most 8 chars
    local prefix="${1:-c}"
    [[ ${#prefix} -le 4 ]] || die "unique_name: prefix '$prefix' longer than 4 chars"
    [[ "$prefix" =~ ^[a-z][a-z0-9]*$ ]] || die "unique_name: prefix '$prefix' must be [a-z][a-z0-9]*"
    printf '%s%s\n' "$prefix" "$(rand_hex 2)"
}

wait_for() { # wait_for 'CMD' TIMEOUT_S   (CMD is eval'ed; 0 on success, 1 on timeout)
    local cmd="$1" timeout="${2:-10}" deadline
    deadline=$(($(date +%s%N) + ${timeout%.*} * 1000000000))
    while true; do
        if eval "$cmd" >/dev/null 2>&1; then
            return 0
        fi
        if (($(date +%s%N) >= deadline)); then
            return 1
        fi
        sleep 0.1
    done
}

now_s() { date +%s.%N; }
elapsed_s() { # elapsed_s START  -> seconds since START (from now_s), 1 decimal
    awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'
}

nginx_conf() { # nginx_conf DIR LISTEN 'SERVER DIRECTIVES'  ->  DIR/nginx.conf
    # One worker in the foreground (daemon off: its PID is the one started), keep-alive
    # without a request limit, no access log, every temp path and the pid file in DIR.
    # DIR must be readable by nginx's unprivileged worker user.
    local d="$1" listen="$2" body="$3"
    cat >"$d/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    keepalive_requests 100000000;
    client_body_temp_path $d;
    proxy_temp_path $d;
    fastcgi_temp_path $d;
    uwsgi_temp_path $d;
    scgi_temp_path $d;
    server {
        listen $listen;
        $body
    }
}
CONF
}

text_file() { # text_file FILE BYTES: deterministic compressible text (random words, ~3x gzip)
    awk -v n="$2" 'BEGIN {
        split("the of and to in is that for it as with was on be by at this are from or an " \
            "which not have but all were when there can more if has will one their its about " \
            "kernel bypass packet socket queue ring frame buffer stack server client request " \
            "reply latency connection window segment checksum offload engine poll timer flow " \
            "memory page cache core thread batch driver header payload route neighbour table", w, " ")
        srand(1); out = 0; line = ""
        while (out < n) {
            word = w[int(rand() * length(w)) + 1]
            if (length(line) + length(word) + 1 > 72) { line = line "\n"; printf "%s", substr(line, 1, n - out); out += length(line); line = "" }
            line = line (line == "" ? "" : " ") word
        }
    }' >"$1"
}

# busy_pct SECONDS: whole-machine busy CPU % over SECONDS (from /proc/stat)
busy_pct() {
    local a b
    a="$(head -1 /proc/stat)"
    sleep "$1"
    b="$(head -1 /proc/stat)"
    awk -v a="$a" -v b="$b" 'BEGIN {
        n = split(a, x); split(b, y); tot = 0
        for (i = 2; i <= n; i++) tot += y[i] - x[i]
        idle = (y[5] - x[5]) + (y[6] - x[6])
        printf "%.0f", (tot > 0 ? 100 * (tot - idle) / tot : 0) }'
}

# wait_quiet: before each case, wait (at most QUIET_WAIT_S) until the machine is idle
# (busy < QUIET_PCT over 1 s): other jobs on a 2-core machine distort every figure. Sets
# BG_PCT to the last background reading (recorded with the case).
QUIET_PCT=${QUIET_PCT:-10}
QUIET_WAIT_S=${BENCH_QUIET_WAIT_S:-90}
BG_PCT=0
wait_quiet() {
    local deadline=$((SECONDS + QUIET_WAIT_S))
    while true; do
        BG_PCT="$(busy_pct 1)"
        ((BG_PCT < QUIET_PCT)) && return 0
        if ((SECONDS >= deadline)); then
            warn "machine still ${BG_PCT}% busy after ${QUIET_WAIT_S} s of waiting: measuring anyway (recorded)"
            return 0
        fi
    done
}
