#!/usr/bin/env bash
# preauth.sh — login time of a real client while a pre-authentication flood
# holds the server at its connection caps (or at its open-file limit).
#
# Starts petreld from a build on free loopback ports (pinned to CPU 0, with
# the 20 000 open files a process may hold here), with a temporary data
# folder, one account and a certificate made here, then runs
# contrib/loadgen/petrel-preauth (pinned to CPU 1):
#   baseline  the measuring client alone: a full login (STARTTLS, SASL PLAIN,
#             bind) every 250 ms, for --baseline seconds
#   flood     attacker processes open --attackers connections that never
#             authenticate (silent / half a ClientHello / a stream header /
#             STARTTLS then half a ClientHello), from 127.0.0.2 ... (at most
#             --per-addr per address), reopening what the server closes at
#             --open-rate at most; once they hold their target (or after
#             --ramp-max seconds) the measuring client runs for --duration
#   after     the measuring client alone again, --after seconds after the
#             attackers stopped (does the server recover?)
# then prints a table (Markdown, ready for doc/performance.md).
#
# Loopback only; everything started here is stopped on exit (also on
# Ctrl-C); every wait is bounded. See doc/performance.md, "Pre-authentication
# flood".
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

# ---------------------------------------------------------------- options
BUILD="$ROOT"          # build folder: src/petreld, src/petrelctl, contrib/loadgen/petrel-preauth
SERVER_BIN=""          # where petreld and petrelctl are (default: BUILD/src)
DO_MAKE=1
ATTACKERS=22000        # more than the server's 20 000 descriptors: without a cap it runs out
ATTACK_PROCS=2         # one process holds at most ~19 900 (its own file limit)
MIX="silent=25,hello=25,header=25,starttls=25"
PER_ADDR=900           # under connections_per_address (default 1000)
OPEN_RATE=2000         # new attacker connections per second in all, reconnects included
DURATION=60            # measuring window under the flood
BASELINE=20
AFTER=10
RAMP_MAX=60            # wait at most this long for the attackers to hold their target
INTERVAL=0.25
TIMEOUT=10
REPORT=5
MEASURE_TLS=starttls
LIMITS=""              # extra lines for the server's limits { } section
SERVER_CPU=0
GEN_CPU=1
PORT_BASE=17222
QUIET_WAIT=120         # wait at most this long for other processes to go quiet
QUIET_MAX_PCT=30       # quiet: other processes use less than this (% of one core)
OUT=""
KEEP=0

usage() {
    cat <<EOF
usage: $0 [options]
  --build DIR          build folder with src/petreld, src/petrelctl and
                       contrib/loadgen/petrel-preauth (default $BUILD); 'make' runs there
  --server-bin DIR     take petreld and petrelctl from DIR instead (e.g. a build of
                       another commit; the generator still comes from --build)
  --no-make            do not run make
  --attackers N        attacker connections in all (default $ATTACKERS)
  --attack-procs K     ... spread over K processes (default $ATTACK_PROCS; each holds
                       at most its open-file limit minus 32)
  --mix LIST           shape weights (default $MIX)
  --per-addr M         attacker connections per source address (default $PER_ADDR)
  --open-rate R        attacker connections opened per second in all (default $OPEN_RATE)
  --duration S         measuring window under the flood (default $DURATION)
  --baseline S         measuring window without attackers, before (default $BASELINE; 0: none)
  --after S            measuring window after the attackers stopped (default $AFTER; 0: none)
  --ramp-max S         wait at most S s for the attackers to hold their target (default $RAMP_MAX)
  --interval S         a login every S seconds (default $INTERVAL)
  --timeout S          a login not bound after S s has failed (default $TIMEOUT)
  --report S           a progress line every S seconds (default $REPORT)
  --measure-tls starttls|direct  how the measuring client starts TLS (default $MEASURE_TLS)
  --limits TEXT        extra options in the server's limits { } section, e.g.
                       'unauthenticated_connections = 15000 first_byte_timeout = 10'
  --quiet-wait S       wait at most S s for other processes to use less than
                       $QUIET_MAX_PCT % of a core before starting (default $QUIET_WAIT)
  --out DIR            copy the raw results (JSON lines, logs, table) to DIR
  --keep               keep the temporary folder (config, data, logs)
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --build) BUILD=$2; shift 2 ;;
        --server-bin) SERVER_BIN=$2; shift 2 ;;
        --no-make) DO_MAKE=0; shift ;;
        --attackers) ATTACKERS=$2; shift 2 ;;
        --attack-procs) ATTACK_PROCS=$2; shift 2 ;;
        --mix) MIX=$2; shift 2 ;;
        --per-addr) PER_ADDR=$2; shift 2 ;;
        --open-rate) OPEN_RATE=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --baseline) BASELINE=$2; shift 2 ;;
        --after) AFTER=$2; shift 2 ;;
        --ramp-max) RAMP_MAX=$2; shift 2 ;;
        --interval) INTERVAL=$2; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --report) REPORT=$2; shift 2 ;;
        --measure-tls) MEASURE_TLS=$2; shift 2 ;;
        --limits) LIMITS=$2; shift 2 ;;
        --quiet-wait) QUIET_WAIT=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 1 ;;
    esac
done

isnum() { [[ "$1" =~ ^[0-9]+$ ]]; }
for v in ATTACKERS ATTACK_PROCS PER_ADDR OPEN_RATE DURATION BASELINE AFTER RAMP_MAX TIMEOUT REPORT \
         QUIET_WAIT; do
    isnum "${!v}" || { echo "$v must be a whole number" >&2; exit 1; }
done
[[ "$INTERVAL" =~ ^[0-9]*\.?[0-9]+$ ]] || { echo "--interval must be a number" >&2; exit 1; }
case "$MEASURE_TLS" in starttls|direct) ;; *) echo "--measure-tls must be starttls or direct" >&2; exit 1 ;; esac
[ "$ATTACK_PROCS" -ge 1 ] && [ "$ATTACK_PROCS" -le 8 ] || { echo "--attack-procs 1..8" >&2; exit 1; }
[ "$DURATION" -ge 5 ] && [ "$DURATION" -le 3600 ] || { echo "--duration 5..3600" >&2; exit 1; }
[ "$RAMP_MAX" -le 600 ] && [ "$BASELINE" -le 600 ] && [ "$AFTER" -le 600 ] ||
    { echo "--ramp-max, --baseline, --after at most 600" >&2; exit 1; }
[ "$PER_ADDR" -ge 1 ] || { echo "--per-addr at least 1" >&2; exit 1; }
[[ "$LIMITS" != *[\{\}\"]* ]] || { echo "--limits must not contain braces or quotes" >&2; exit 1; }

NOFILE=$(ulimit -Hn)
[ "$NOFILE" != unlimited ] || NOFILE=1048576
PER_PROC=$(( (ATTACKERS + ATTACK_PROCS - 1) / ATTACK_PROCS ))
if [ "$ATTACKERS" -gt 0 ] && [ $((PER_PROC + 32)) -gt "$NOFILE" ]; then
    echo "$PER_PROC attacker connections per process need more than the $NOFILE open files" \
         "a process may hold here: use more --attack-procs" >&2
    exit 1
fi
ADDRS_PER_PROC=$(( (PER_PROC + PER_ADDR - 1) / PER_ADDR ))
if [ $((2 + ATTACK_PROCS * ADDRS_PER_PROC - 1)) -gt 254 ]; then
    echo "$ATTACKERS connections at $PER_ADDR per address need more than 127.0.0.2..254" >&2
    exit 1
fi
ulimit -n "$NOFILE" 2>/dev/null || true

HOST=127.0.0.1         # loopback only
DOMAIN=localhost
USER_NAME=probe
PASSWORD=secret

log() { printf '[preauth %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------- cleanup
WORK=$(mktemp -d /tmp/petrel-preauth.XXXXXX)
STARTED_PIDS=()

alive() {
    local st
    st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [ -n "$st" ] && [[ "$st" != Z* ]]
}

# stop one process we started: TERM, then KILL after 10 s
stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid did not stop on TERM; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

forget_pid() {
    local pid=$1 keep=() p
    for p in "${STARTED_PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
    STARTED_PIDS=("${keep[@]}")
}

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${STARTED_PIDS[@]}"; do stop_pid "$pid"; done
    if [ "$KEEP" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "failed at line $LINENO: $BASH_COMMAND"' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- build
for t in taskset openssl ss timeout awk make; do
    command -v "$t" >/dev/null || { echo "missing tool: $t" >&2; exit 1; }
done
BUILD=$(cd "$BUILD" && pwd)
if [ "$DO_MAKE" = 1 ]; then
    log "make in $BUILD"
    if [ -z "$SERVER_BIN" ]; then
        make -C "$BUILD" -s src/petreld src/petrelctl contrib/loadgen/petrel-preauth >/dev/null
    else
        make -C "$BUILD" -s contrib/loadgen/petrel-preauth >/dev/null
    fi
fi
SERVER_BIN=$(cd "${SERVER_BIN:-$BUILD/src}" && pwd)
for f in "$SERVER_BIN/petreld" "$SERVER_BIN/petrelctl" "$BUILD/contrib/loadgen/petrel-preauth"; do
    [ -x "$f" ] || { echo "$f is not built (run make)" >&2; exit 1; }
done
# copies, so that a rebuild during the run does not change what is measured
mkdir -p "$WORK/bin"
cp "$SERVER_BIN/petreld" "$WORK/bin/petrel-server"
cp "$SERVER_BIN/petrelctl" "$WORK/bin/petrel-ctl"
cp "$BUILD/contrib/loadgen/petrel-preauth" "$WORK/bin/petrel-preauth"
PETRELD="$WORK/bin/petrel-server"
PETRELCTL="$WORK/bin/petrel-ctl"
GEN="$WORK/bin/petrel-preauth"

# which petreld: the commit of the tree it was built from (its build folder
# is inside that tree) and whether src/ or modules/ had changes there
SRC_TOP=$(git -C "$SERVER_BIN" rev-parse --show-toplevel 2>/dev/null) || SRC_TOP=""
REV="not in git"
if [ -n "$SRC_TOP" ]; then
    REV=$(git -C "$SRC_TOP" rev-parse --short HEAD)
    git -C "$SRC_TOP" diff --quiet HEAD -- src modules 2>/dev/null || REV="$REV with uncommitted changes"
fi
VERSION=$("$PETRELD" --version 2>/dev/null | head -n 1) || VERSION="?"

# ---------------------------------------------------------------- server
port_busy() { ss -Htln "sport = :$1" | grep -q .; }
pick_ports() {
    local base=$1 k p
    for ((k = 0; k < 20; k++)); do
        p=$((base + 10 * k))
        if ! port_busy "$p" && ! port_busy $((p + 1)); then echo "$p $((p + 1))"; return 0; fi
    done
    log "no free port pair from $base up"
    return 1
}
read -r P_STARTTLS P_TLS <<<"$(pick_ports "$PORT_BASE")"

SDIR="$WORK/server"
mkdir -p "$SDIR/var" "$SDIR/certs"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/CN=$DOMAIN" -addext "subjectAltName=DNS:$DOMAIN" \
    -keyout "$SDIR/certs/$DOMAIN.key" -out "$SDIR/certs/$DOMAIN.crt" >/dev/null 2>&1
chmod 600 "$SDIR/certs/$DOMAIN.key"
CONF="$SDIR/petrel.conf"
cat > "$CONF" <<CFG
# written by contrib/loadgen/preauth.sh
data_dir = "$SDIR/var"
log_level = "warning"
scram_iterations = 4096
listen "$HOST:$P_STARTTLS" { type = "c2s" tls = "starttls" }
listen "$HOST:$P_TLS" { type = "c2s" tls = "direct" }
# the server's own limits (connections_per_address: default 1000; the
# attackers stay under it with $PER_ADDR per source address)
limits {
    $LIMITS
}
host "$DOMAIN" {
    certificate = "$SDIR/certs/$DOMAIN.crt"
    key = "$SDIR/certs/$DOMAIN.key"
    modules = { "disco", "ping", "version" }
}
CFG

# the account, written into a store that does not exist yet: a petrelctl that
# knows --create-store has to be told to make it (older ones make it anyway)
add_user() {
    local out="$SDIR/petrelctl.log" opts=()
    "$PETRELCTL" --help 2>&1 | grep -q -- --create-store && opts=(--create-store)
    if printf '%s@%s %s\n' "$USER_NAME" "$DOMAIN" "$PASSWORD" |
        timeout 60 "$PETRELCTL" -c "$CONF" "${opts[@]}" adduser --batch >>"$out" 2>&1; then
        return 0
    fi
    log "petrelctl adduser failed:"; tail -n 20 "$out" >&2
    return 1
}
add_user

SERVER_PID=""
wait_listen() {
    local port=$1 i
    for ((i = 0; i < 300; i++)); do
        alive "$SERVER_PID" || { log "petreld exited"; tail -n 20 "$SDIR/petreld.log" >&2; return 1; }
        port_busy "$port" && return 0
        sleep 0.1
    done
    log "petreld does not listen on $port after 30 s"
    return 1
}
# the server gets the whole open-file limit of a process here (no more)
(ulimit -n "$NOFILE" && exec taskset -c "$SERVER_CPU" "$PETRELD" -c "$CONF") \
    >>"$SDIR/petreld.log" 2>&1 &
SERVER_PID=$!
STARTED_PIDS+=("$SERVER_PID")
wait_listen "$P_STARTTLS"
wait_listen "$P_TLS"
SERVER_NOFILE=$(awk '/^Max open files/ { print $4 }' "/proc/$SERVER_PID/limits")
log "petreld pid $SERVER_PID on $HOST:$P_STARTTLS (STARTTLS) and $HOST:$P_TLS (direct TLS)," \
    "open-file limit $SERVER_NOFILE, $REV"
sleep 1

# ---------------------------------------------------------------- runs
RES="$WORK/results"
mkdir -p "$RES"

# jget FILE KIND KEY: one value from the JSON lines of petrel-preauth
jget() {
    local file=$1 kind=$2 key=$3
    [ -f "$file" ] || return 0
    { grep "\"kind\":\"$kind\"" "$file" | tail -n 1 |
        sed -n "s/.*\"$key\":\"\{0,1\}\([^\",}]*\).*/\1/p"; } || true
}

run_measure() {     # run_measure LABEL SECONDS [--attack-status F ...]
    local label=$1 secs=$2; shift 2
    local out="$RES/measure-$label.jsonl" errf="$RES/measure-$label.log" rc=0
    log "$label: measuring logins for $secs s"
    timeout --signal=TERM --kill-after=10 $((secs + TIMEOUT + 20)) \
        taskset -c "$GEN_CPU" "$GEN" --mode measure --json --label "$label" \
        --host "$HOST" --starttls-port "$P_STARTTLS" --tls-port "$P_TLS" --domain "$DOMAIN" \
        --tls "$MEASURE_TLS" --user "$USER_NAME" --password "$PASSWORD" \
        --interval "$INTERVAL" --timeout "$TIMEOUT" --report "$REPORT" --duration "$secs" \
        --server-pid "$SERVER_PID" "$@" >"$out" 2>"$errf" &
    local pid=$!
    STARTED_PIDS+=("$pid")
    # show the progress lines while it runs
    tail -n +1 -f "$errf" --pid "$pid" 2>/dev/null | sed 's/^/    /' >&2 &
    local tailpid=$!
    wait "$pid" || rc=$?
    forget_pid "$pid"
    wait "$tailpid" 2>/dev/null || true
    [ "$rc" = 0 ] || log "$label: measurer exit $rc"
    alive "$SERVER_PID" || log "$label: the server is gone"
}

ATTACK_PIDS=()
STATUS_ARGS=()
start_attackers() {
    local k src_first target left=$ATTACKERS secs=$((RAMP_MAX + DURATION + 15))
    local rate
    rate=$(awk -v r="$OPEN_RATE" -v k="$ATTACK_PROCS" 'BEGIN { printf "%.0f", r / k < 1 ? 1 : r / k }')
    for ((k = 0; k < ATTACK_PROCS && left > 0; k++)); do
        target=$PER_PROC
        [ "$target" -le "$left" ] || target=$left
        left=$((left - target))
        src_first=$((2 + k * ADDRS_PER_PROC))
        timeout --signal=TERM --kill-after=10 $((secs + 20)) \
            taskset -c "$GEN_CPU" "$GEN" --mode attack --json --label "attack$k" \
            --host "$HOST" --starttls-port "$P_STARTTLS" --tls-port "$P_TLS" --domain "$DOMAIN" \
            --target "$target" --mix "$MIX" --src-first "$src_first" --per-addr "$PER_ADDR" \
            --open-rate "$rate" --report "$REPORT" --duration "$secs" \
            --status-file "$RES/attack$k.status" \
            >"$RES/attack$k.jsonl" 2>"$RES/attack$k.log" &
        ATTACK_PIDS+=("$!")
        STARTED_PIDS+=("$!")
        STATUS_ARGS+=(--attack-status "$RES/attack$k.status")
    done
}

attack_open() {     # connections the attackers hold now (sum of their status files)
    local f n=0 v
    for f in "$RES"/attack*.status; do
        [ -f "$f" ] || continue
        v=$(sed -n 's/.* open=\([0-9]*\).*/\1/p' "$f")
        n=$((n + ${v:-0}))
    done
    echo "$n"
}

stop_attackers() {
    local p
    for p in "${ATTACK_PIDS[@]}"; do stop_pid "$p"; forget_pid "$p"; done
    ATTACK_PIDS=()
}

# CPU used by all processes over 2 s, in % of one core (the server is idle now)
machine_busy_pct() {
    local a b
    a=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
    sleep 2
    b=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
    awk -v a="$a" -v b="$b" -v n="$(nproc)" 'BEGIN { split(a, x, " "); split(b, y, " ");
        t = y[2] - x[2]; if (t <= 0) { print 0; exit } printf "%.0f\n", 100 * n * (y[1] - x[1]) / t }'
}
QUIET_BUSY=$(machine_busy_pct)
quiet_deadline=$((SECONDS + QUIET_WAIT))
while [ "$QUIET_BUSY" -gt "$QUIET_MAX_PCT" ] && [ $SECONDS -lt $quiet_deadline ]; do
    log "machine busy (other processes use ${QUIET_BUSY}% of a core); waiting"
    sleep 5
    QUIET_BUSY=$(machine_busy_pct)
done
log "other processes use ${QUIET_BUSY}% of a core"

START_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
RSS_FRESH=$(awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER_PID/status")
FDS_FRESH=$(find "/proc/$SERVER_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)

[ "$BASELINE" = 0 ] || run_measure baseline "$BASELINE"

RAMP_S="-"
if [ "$ATTACKERS" -gt 0 ]; then
    log "flood: $ATTACKERS attacker connections in $ATTACK_PROCS process(es), mix $MIX," \
        "$PER_ADDR per address, at most $OPEN_RATE opens/s"
    start_attackers
    # the ramp ends when the attackers hold their target, or when what they
    # hold has stopped growing for 5 s (a server that closes the oldest to
    # make room holds its cap, whatever the attackers open), or at --ramp-max
    t0=$SECONDS
    want=$((ATTACKERS * 97 / 100))
    best=0
    best_t=$SECONDS
    while :; do
        sleep 1
        n=$(attack_open)
        fds=$(find "/proc/$SERVER_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
        log "ramp: attackers hold $n of $ATTACKERS; server fds $fds"
        if [ "$n" -ge "$want" ]; then
            RAMP_S="the target held after $((SECONDS - t0)) s"
            break
        fi
        if [ $((n * 100)) -gt $((best * 101)) ]; then
            best=$n
            best_t=$SECONDS
        elif [ "$n" -gt 0 ] && [ $((SECONDS - best_t)) -ge 5 ]; then
            RAMP_S="no more than $n held (not growing since $((best_t - t0)) s: the server closes as many as they open)"
            log "attackers hold $n of $ATTACKERS and no more"
            break
        fi
        if [ $((SECONDS - t0)) -ge "$RAMP_MAX" ]; then
            RAMP_S="$n held after $RAMP_MAX s, still growing"
            log "attackers hold $n of $ATTACKERS after $RAMP_MAX s; measuring anyway"
            break
        fi
        for p in "${ATTACK_PIDS[@]}"; do
            alive "$p" || { log "attacker pid $p exited early:"; tail -n 5 "$RES"/attack*.log >&2; exit 1; }
        done
    done
    run_measure flood "$DURATION" "${STATUS_ARGS[@]}"
    stop_attackers
    for f in "$RES"/attack*.log; do sed 's/^/    /' "$f" | grep -v '^    attack t=' >&2 || true; done
    if [ "$AFTER" != 0 ]; then
        sleep 2
        run_measure after "$AFTER"
    fi
fi

SERVER_ALIVE=yes
alive "$SERVER_PID" || SERVER_ALIVE="no (it exited during the run)"
FDS_END=$(find "/proc/$SERVER_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
stop_pid "$SERVER_PID"
forget_pid "$SERVER_PID"
EMFILE_LINES=$(grep -c -i 'too many open files' "$SDIR/petreld.log" || true)
WARN_LINES=$(wc -l < "$SDIR/petreld.log")
cp "$SDIR/petreld.log" "$CONF" "$RES/"

# ---------------------------------------------------------------- table
val() {     # val LABEL KEY
    local f="$RES/measure-$1.jsonl" v
    v=$(jget "$f" measure "$2")
    echo "${v:-n/a}"
}
fails() {   # failures by cause, "-" when none
    local f="$RES/measure-$1.jsonl" line out="" c v
    line=$(grep '"kind":"measure"' "$f" 2>/dev/null | tail -n 1) || true
    [ -n "$line" ] || { echo "n/a"; return; }
    for c in refused timeout stream_error tls auth bind closed protocol local; do
        v=$(sed -n "s/.*\"fail_$c\":\([0-9]*\).*/\1/p" <<<"$line")
        [ "${v:-0}" = 0 ] || out+="${out:+, }$c $v"
    done
    v=$(sed -n 's/.*"stream_errors":"\([^"]*\)".*/\1/p' <<<"$line")
    [ -z "$v" ] || out+=" ($v)"
    echo "${out:--}"
}
mib() { awk -v k="$1" 'BEGIN { if (k ~ /^[0-9]+$/) printf "%.0f", k / 1024; else print "n/a" }'; }
gencpu() {  # measurer + attackers
    awk -v a="$(val "$1" measurer_cpu_pct)" -v b="$(val "$1" attack_cpu_pct)" \
        'BEGIN { if (b < 0) b = 0; printf "%.0f (measurer %.0f, attackers %.0f)", a + b, a, b }'
}
attacks() {
    local lo hi avg
    lo=$(val "$1" attack_open_min); hi=$(val "$1" attack_open_max); avg=$(val "$1" attack_open_avg)
    if [ "$lo" = "-1" ] || [ "$lo" = n/a ]; then echo "-"; else echo "$lo / $avg / $hi"; fi
}

LABELS=()
[ "$BASELINE" = 0 ] || LABELS+=(baseline)
[ "$ATTACKERS" = 0 ] || LABELS+=(flood)
[ "$ATTACKERS" = 0 ] || [ "$AFTER" = 0 ] || LABELS+=(after)
declare -A TITLE=([baseline]="no attackers" [flood]="during the flood" [after]="after the flood")

TABLE="$RES/table.md"
{
    echo "date: $START_DATE; $(nproc) CPUs; server on CPU $SERVER_CPU (open-file limit $SERVER_NOFILE), generator on CPU $GEN_CPU"
    echo "petreld: $VERSION, tree at $REV; limits { ${LIMITS:-defaults} }"
    echo "measuring client: a login every ${INTERVAL}s ($MEASURE_TLS, SASL PLAIN, bind), timeout ${TIMEOUT}s, from 127.0.0.1"
    if [ "$ATTACKERS" -gt 0 ]; then
        echo "flood: $ATTACKERS connections in $ATTACK_PROCS process(es), mix $MIX, $PER_ADDR per source address (127.0.0.2..), at most $OPEN_RATE opens/s; ramp: $RAMP_S; then measured for $DURATION s"
    fi
    echo "other processes used ${QUIET_BUSY}% of a core just before the run (see the last row for during)"
    echo "command: contrib/loadgen/preauth.sh --attackers $ATTACKERS --attack-procs $ATTACK_PROCS --duration $DURATION${LIMITS:+ --limits '$LIMITS'}"
    echo
    printf '|'; for l in "${LABELS[@]}"; do printf ' | %s' "${TITLE[$l]}"; done; echo ' |'
    printf '| ---'; for l in "${LABELS[@]}"; do printf ' | ---'; done; echo ' |'
    row() {     # row TITLE FUNC
        local t=$1 f=$2 l
        printf '| %s' "$t"
        for l in "${LABELS[@]}"; do printf ' | %s' "$("$f" "$l")"; done
        echo ' |'
    }
    r_logins() { echo "$(val "$1" logins) / $(val "$1" ok) / $(val "$1" failed)"; }
    r_time() { echo "$(val "$1" p50_ms) / $(val "$1" p99_ms) / $(val "$1" max_ms)"; }
    r_closed() { local v; v=$(val "$1" attack_server_closed); [ "$(val "$1" attack_open_max)" != "-1" ] || v="-"; echo "$v"; }
    r_fds() { echo "$(val "$1" server_fds_min) .. $(val "$1" server_fds_max)"; }
    r_rss() { mib "$(val "$1" server_rss_kb_max)"; }
    r_srv() { val "$1" server_cpu_pct; }
    r_oth() { val "$1" other_cpu_pct; }
    row "logins started / bound / failed" r_logins
    row "failures by cause" fails
    row "login time p50 / p99 / max, ms" r_time
    row "attacker connections held (min / avg / max)" attacks
    row "... closed by the server during the window" r_closed
    row "server open fds (min .. max)" r_fds
    row "server RSS max, MiB" r_rss
    row "server CPU, % of a core" r_srv
    row "generator CPU, % of a core" gencpu
    row "other processes' CPU, % of a core" r_oth
    echo
    echo "server fresh: $FDS_FRESH fds, $(mib "$RSS_FRESH") MiB; at the end: $FDS_END fds; alive to the end: $SERVER_ALIVE;" \
         "log lines: $WARN_LINES ($EMFILE_LINES 'Too many open files')"
    if [ "$ATTACKERS" -gt 0 ]; then
        echo
        echo "| attacker shape | established | closed by the server | ... after (p50 / max), s |"
        echo "| --- | --- | --- | --- |"
        for s in silent hello header starttls; do
            est=0; clo=0; p50=0; mx=0
            for f in "$RES"/attack*.jsonl; do
                line=$(grep '"kind":"attack"' "$f" 2>/dev/null | tail -n 1) || true
                [ -n "$line" ] || continue
                e=$(sed -n "s/.*\"${s}_established\":\([0-9]*\).*/\1/p" <<<"$line")
                c=$(sed -n "s/.*\"${s}_closed\":\([0-9]*\).*/\1/p" <<<"$line")
                p=$(sed -n "s/.*\"${s}_life_p50_s\":\([0-9.]*\).*/\1/p" <<<"$line")
                m=$(sed -n "s/.*\"${s}_life_max_s\":\([0-9.]*\).*/\1/p" <<<"$line")
                est=$((est + ${e:-0})); clo=$((clo + ${c:-0}))
                p50=$(awk -v a="$p50" -v b="${p:-0}" 'BEGIN { print (b > a ? b : a) }')
                mx=$(awk -v a="$mx" -v b="${m:-0}" 'BEGIN { print (b > a ? b : a) }')
            done
            [ "$clo" != 0 ] || { p50="-"; mx="-"; }
            [ "$est" = 0 ] || echo "| $s | $est | $clo | $p50 / $mx |"
        done
    fi
    slow=$(cat "$RES"/measure-*.log 2>/dev/null | grep -c '^  slow login' || true)
    if [ "$slow" != 0 ]; then
        echo
        echo "logins slower than 250 ms ($slow; ms from connect() to each step; at most 10 shown):"
        for l in "${LABELS[@]}"; do
            grep '^  slow login' "$RES/measure-$l.log" 2>/dev/null | sed "s/^  /- $l: /" || true
        done | head -n 10
    fi
} > "$TABLE"

echo
cat "$TABLE"
if [ -n "$OUT" ]; then
    mkdir -p "$OUT"
    cp "$RES"/* "$OUT"/
    log "results copied to $OUT"
fi
