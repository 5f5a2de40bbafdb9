#!/usr/bin/env bash
# bench.sh — c2s benchmark of petreld against Prosody, in one run, on this host.
#
# For each server and scenario: start the server fresh (pinned to CPU 0)
# with its own config and data folder in a temporary directory, create the
# users directly, and run contrib/loadgen/petrel-load (pinned to CPU 1):
#   sessions    N sessions (default 2000, at most ~19 000 per process):
#               sessions/s, failures, server RSS per idle session
#   throughput  1:1 messages between pairs, offered rate stepped up until
#               delivered < 95 % of offered or p99 > 100 ms
#   latency     1:1 messages at a fixed offered rate (10 000/s): p50/p99/max
#   spread      1:1 messages, one stanza per write and TLS record, senders in
#               turn on a 1 ms tick (1 000 sessions, 500 pairs), at each rate of
#               --spread-rates: p50/p99/p99.9/max, server CPU per message
# then print a table with both servers and the ratio petreld/prosody.
#
# Only loopback addresses are used. Everything the script starts is stopped
# on exit. Every loop is bounded in count and time. See doc/performance.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

# ---------------------------------------------------------------- options
SESSIONS=2000          # scenario "sessions"
MSG_USERS=2000         # sessions used by "throughput" and "latency" (1000 pairs)
STEP_DURATION=10       # seconds per offered-rate step
RATES="1000,2000,3000,4000,5000,6000,8000,10000,12500,15000,20000,25000,30000,40000,50000,60000,80000,100000"
LAT_RATE=10000
LAT_DURATION=20
SPREAD_USERS=1000      # scenario "spread": one stanza per write, many senders at low rates
SPREAD_RATES="2000,5000,10000,15000,20000"
SPREAD_DURATION=10
BODY_SIZE=100
TLS=direct             # direct | starttls
SCENARIOS="sessions throughput latency spread"
SERVERS="petreld prosody"
SRC_ADDRS=4            # source addresses 127.0.0.1..127.0.0.K
CONCURRENCY=200
SERVER_CPU=0
LOADGEN_CPU=1
PROSODY_PORT_BASE=15222  # STARTTLS on BASE, direct TLS on BASE+1 (moved up by 10 while busy)
PETREL_PORT_BASE=16222
PETREL_BIN_DIR="$ROOT/src"
PETREL_MODULES='"disco", "ping", "version"'
CERT_KEY=ec            # ec (P-256) | rsa (2048): one certificate, used by both servers
PETREL_OWN_CERT=0      # 1: petreld makes its own certificate instead
PROSODY_AUTH=hashed    # hashed (SCRAM keys, as petreld stores them) | plain
ITERATIONS=4096        # PBKDF2 iterations of the stored credentials, both servers
QUIET_WAIT=300         # seconds to wait at most for the machine to be quiet
QUIET_MAX_PCT=20       # quiet: other processes use less than this (% of one core)
DISTURB_PCT=25         # a measurement during which others used more is repeated
RETRIES=2              # ... at most this often
OUT=""
KEEP=0

usage() {
    cat <<EOF
usage: $0 [options]
  --sessions N         sessions in the sessions scenario (default $SESSIONS; at most ~19000)
  --msg-users N        sessions used for throughput and latency (default $MSG_USERS)
  --rates LIST         offered rates of the throughput search (default $RATES)
  --step-duration S    seconds per rate step (default $STEP_DURATION)
  --latency-rate R     offered rate of the latency scenario (default $LAT_RATE)
  --latency-duration S (default $LAT_DURATION)
  --spread-users N     sessions of the spread scenario (default $SPREAD_USERS)
  --spread-rates LIST  offered rates of the spread scenario (default $SPREAD_RATES)
  --spread-duration S  seconds per spread step (default $SPREAD_DURATION)
  --body-size B        message body bytes (default $BODY_SIZE)
  --tls direct|starttls (default $TLS)
  --servers LIST       "petreld prosody" (default: both)
  --scenarios LIST     "sessions throughput latency spread" (default: all)
  --src-addrs K        spread connections over 127.0.0.1..127.0.0.K (default $SRC_ADDRS)
  --concurrency C      handshakes in flight (default $CONCURRENCY)
  --petrel-bin DIR     where petreld and petrelctl are (default $PETREL_BIN_DIR)
  --cert-key ec|rsa    key type of the certificate both servers use (default $CERT_KEY)
  --petrel-own-cert    let petreld make its own certificate on first start
  --prosody-auth hashed|plain  Prosody's credential store (default $PROSODY_AUTH)
  --iterations N       PBKDF2 iterations of the stored credentials (default $ITERATIONS)
  --quiet-wait S       wait at most S s for other processes to go quiet (default $QUIET_WAIT)
  --disturb-pct P      repeat a measurement during which other processes used more
                       than P % of a core (default $DISTURB_PCT)
  --retries N          ... at most N times (default $RETRIES)
  --out DIR            copy raw results (JSON lines, logs, table) to DIR
  --keep               keep the temporary folder (configs, data, logs)
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --sessions) SESSIONS=$2; shift 2 ;;
        --msg-users) MSG_USERS=$2; shift 2 ;;
        --rates) RATES=$2; shift 2 ;;
        --step-duration) STEP_DURATION=$2; shift 2 ;;
        --latency-rate) LAT_RATE=$2; shift 2 ;;
        --latency-duration) LAT_DURATION=$2; shift 2 ;;
        --spread-users) SPREAD_USERS=$2; shift 2 ;;
        --spread-rates) SPREAD_RATES=$2; shift 2 ;;
        --spread-duration) SPREAD_DURATION=$2; shift 2 ;;
        --body-size) BODY_SIZE=$2; shift 2 ;;
        --tls) TLS=$2; shift 2 ;;
        --servers) SERVERS=$2; shift 2 ;;
        --scenarios) SCENARIOS=$2; shift 2 ;;
        --src-addrs) SRC_ADDRS=$2; shift 2 ;;
        --concurrency) CONCURRENCY=$2; shift 2 ;;
        --petrel-bin) PETREL_BIN_DIR=$2; shift 2 ;;
        --cert-key) CERT_KEY=$2; shift 2 ;;
        --petrel-own-cert) PETREL_OWN_CERT=1; shift ;;
        --prosody-auth) PROSODY_AUTH=$2; shift 2 ;;
        --iterations) ITERATIONS=$2; shift 2 ;;
        --quiet-wait) QUIET_WAIT=$2; shift 2 ;;
        --disturb-pct) DISTURB_PCT=$2; shift 2 ;;
        --retries) RETRIES=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 1 ;;
    esac
done

isnum() { [[ "$1" =~ ^[0-9]+$ ]]; }
for v in SESSIONS MSG_USERS STEP_DURATION LAT_RATE LAT_DURATION BODY_SIZE SRC_ADDRS \
         CONCURRENCY QUIET_WAIT ITERATIONS DISTURB_PCT RETRIES SPREAD_USERS SPREAD_DURATION; do
    isnum "${!v}" || { echo "$v must be a whole number" >&2; exit 1; }
done
[[ "$RATES" =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "--rates: numbers separated by commas" >&2; exit 1; }
[[ "$SPREAD_RATES" =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "--spread-rates: numbers separated by commas" >&2; exit 1; }
if [[ " $SCENARIOS " == *" spread "* ]] && [ "$BODY_SIZE" -lt 64 ]; then
    echo "the spread scenario carries the send time in the body: --body-size at least 64" >&2; exit 1
fi
case "$TLS" in direct|starttls) ;; *) echo "--tls must be direct or starttls" >&2; exit 1 ;; esac
case "$CERT_KEY" in ec|rsa) ;; *) echo "--cert-key must be ec or rsa" >&2; exit 1 ;; esac
case "$PROSODY_AUTH" in hashed|plain) ;; *) echo "--prosody-auth must be hashed or plain" >&2; exit 1 ;; esac
[ "$SRC_ADDRS" -le 254 ] || { echo "--src-addrs at most 254" >&2; exit 1; }
[ "$RETRIES" -le 5 ] || { echo "--retries at most 5" >&2; exit 1; }
[ "$ITERATIONS" -ge 4096 ] || { echo "--iterations at least 4096 (petreld's minimum)" >&2; exit 1; }
NOFILE=$(ulimit -Hn)
for n in "$SESSIONS" "$MSG_USERS" "$SPREAD_USERS"; do
    if [ "$NOFILE" != unlimited ] && [ $((n + 64)) -gt "$NOFILE" ]; then
        echo "$n sessions need more than the $NOFILE open files a process may hold here" >&2
        exit 1
    fi
done
ulimit -n "$NOFILE" 2>/dev/null || true

HOST=127.0.0.1         # loopback only, never anything else
DOMAIN=localhost
PASSWORD=secret
PREFIX=load

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------- cleanup
WORK=$(mktemp -d /tmp/petrel-bench.XXXXXX)
STARTED_PIDS=()

# is PID running (not gone, not a zombie waiting to be reaped)?
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

# ---------------------------------------------------------------- checks
for t in taskset openssl ss timeout gcc pkg-config awk; do
    command -v "$t" >/dev/null || { echo "missing tool: $t" >&2; exit 1; }
done

LOADGEN="$HERE/petrel-load"
if [ ! -x "$LOADGEN" ] || [ "$HERE/petrel-load.c" -nt "$LOADGEN" ]; then
    log "building $LOADGEN"
    # shellcheck disable=SC2046
    gcc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra "$HERE/petrel-load.c" -o "$LOADGEN" \
        $(pkg-config --cflags --libs libevent libevent_openssl openssl expat)
fi

port_busy() { ss -Htln "sport = :$1" | grep -q .; }

# pick_ports BASE: the first pair BASE+10k, BASE+10k+1 (k < 20) with both free
pick_ports() {
    local base=$1 k p
    for ((k = 0; k < 20; k++)); do
        p=$((base + 10 * k))
        if ! port_busy "$p" && ! port_busy $((p + 1)); then echo "$p $((p + 1))"; return 0; fi
    done
    log "no free port pair from $base up"
    return 1
}

# CPU used by all processes over 2 s, in % of one core (before a run, none is ours)
machine_busy_pct() {
    local a b
    a=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
    sleep 2
    b=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
    awk -v a="$a" -v b="$b" -v n="$(nproc)" 'BEGIN { split(a, x, " "); split(b, y, " ");
        t = y[2] - x[2]; if (t <= 0) { print 0; exit } printf "%.0f\n", 100 * n * (y[1] - x[1]) / t }'
}

# wait (bounded) until other processes leave the two CPUs mostly idle; sets
# QUIET_BUSY to the last measured share (runs in this shell, not in $(...),
# so that a signal is acted on after the current sleep)
QUIET_BUSY=0
wait_quiet() {
    local deadline=$((SECONDS + QUIET_WAIT))
    while :; do
        QUIET_BUSY=$(machine_busy_pct)
        if [ "$QUIET_BUSY" -le "$QUIET_MAX_PCT" ]; then
            log "machine quiet: other processes use ${QUIET_BUSY}% of a core"
            return 0
        fi
        if [ $SECONDS -ge $deadline ]; then
            log "WARNING: still busy after ${QUIET_WAIT}s (other processes use ${QUIET_BUSY}% of a core); results will be disturbed"
            return 0
        fi
        log "machine busy (other processes use ${QUIET_BUSY}% of a core); waiting"
        sleep 8
    done
}

# Debian's Prosody, installed if missing (as root). Installing it would start
# the system instance on 5222/5269 at once: a policy-rc.d that refuses every
# start keeps it down during the install. This script runs its own instance.
ensure_prosody() {
    command -v prosody >/dev/null && command -v lua5.4 >/dev/null && return 0
    [[ " $SERVERS " == *" prosody "* ]] || return 0
    if [ "$(id -u)" != 0 ]; then
        log "prosody is not installed and this is not root: the Prosody half is skipped"
        return 0
    fi
    local prc=/usr/sbin/policy-rc.d saved="" rc=0
    if [ -e "$prc" ]; then saved=$(mktemp); cp -p "$prc" "$saved"; fi
    printf '#!/bin/sh\nexit 101\n' > "$prc" && chmod +x "$prc"
    log "installing prosody from Debian (its service kept from starting)"
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends \
        prosody lua5.4 >/dev/null 2>&1 || rc=$?
    if [ -n "$saved" ]; then mv "$saved" "$prc"; else rm -f "$prc"; fi
    [ "$rc" = 0 ] || log "apt-get install prosody failed (exit $rc)"
}
ensure_prosody

# A system Prosody that runs anyway (started before, or by hand) is stopped:
# it would hold the default ports and its CPU would disturb the measurement.
if [ -f /run/prosody/prosody.pid ] && kill -0 "$(cat /run/prosody/prosody.pid)" 2>/dev/null; then
    log "stopping the system Prosody (pid $(cat /run/prosody/prosody.pid)); this run starts its own"
    service prosody stop >/dev/null 2>&1 || kill "$(cat /run/prosody/prosody.pid)" 2>/dev/null || true
fi

# wait until PID listens on PORT (bounded: 30 s), or fail
wait_listen() {
    local pid=$1 port=$2 i
    for ((i = 0; i < 300; i++)); do
        alive "$pid" || { log "server pid $pid exited"; return 1; }
        port_busy "$port" && return 0
        sleep 0.1
    done
    log "server pid $pid does not listen on $port after 30 s"
    return 1
}

# ---------------------------------------------------------------- certificate
# One self-signed certificate for both servers, so both do the same handshake
# work (P-256 by default, the kind petreld makes for itself).
CERT_DIR="$WORK/certs"
mkdir -p "$CERT_DIR"
if [ "$CERT_KEY" = rsa ]; then NEWKEY=(-newkey rsa:2048); else NEWKEY=(-newkey ec -pkeyopt ec_paramgen_curve:P-256); fi
openssl req -x509 "${NEWKEY[@]}" -nodes -days 30 -subj "/CN=$DOMAIN" \
    -addext "subjectAltName=DNS:$DOMAIN" \
    -keyout "$CERT_DIR/$DOMAIN.key" -out "$CERT_DIR/$DOMAIN.crt" >/dev/null 2>&1
chmod 600 "$CERT_DIR/$DOMAIN.key"

cert_desc() {   # key algorithm of a certificate file
    openssl x509 -in "$1" -noout -text 2>/dev/null |
        sed -n 's/^ *Public Key Algorithm: *//p; s/^ *NIST CURVE: *//p; s/^ *Public-Key: *//p' |
        paste -sd' ' -
}
CERT_DESC=$(cert_desc "$CERT_DIR/$DOMAIN.crt")
PETREL_CERT_DESC="same as Prosody's"
[ "$PETREL_OWN_CERT" = 0 ] || PETREL_CERT_DESC="petreld's own"

# ---------------------------------------------------------------- prosody
PROSODY_DIR=""
PROSODY_PORTS=""
PROSODY_CREDS=""     # "stored_key server_key", derived once
SERVER_PID=""

prosody_prepare() {     # prosody_prepare NUSERS
    local n=$1 p_starttls p_direct
    PROSODY_DIR="$WORK/prosody"
    rm -rf "$PROSODY_DIR"
    mkdir -p "$PROSODY_DIR/data"
    PROSODY_PORTS=$(pick_ports "$PROSODY_PORT_BASE") || return 1
    read -r p_starttls p_direct <<<"$PROSODY_PORTS"
    cat > "$PROSODY_DIR/prosody.cfg.lua" <<CFG
-- written by contrib/loadgen/bench.sh
run_as_root = true
pidfile = "$PROSODY_DIR/prosody.pid"
data_path = "$PROSODY_DIR/data"
log = { { levels = { min = "warn" }, to = "console" } }
plugin_paths = { }
modules_enabled = { "roster", "saslauth", "tls", "disco", "ping" }
-- no s2s; still autoloaded: presence, message, iq, offline, c2s, posix
modules_disabled = { "s2s", "s2s_auth_certs" }
interfaces = { "$HOST" }
c2s_ports = { $p_starttls }
c2s_direct_tls_ports = { $p_direct }
s2s_ports = { }
c2s_require_encryption = true
authentication = "internal_$PROSODY_AUTH"
storage = "internal"
-- no rate limiting (mod_limits is not loaded either)
limits = { }
-- the listen backlog (default 128) would drop SYNs while ramping; the number
-- of connections is bounded only by the open-file limit ($NOFILE)
network_settings = { tcp_backlog = 4096 }
ssl = { certificate = "$CERT_DIR/$DOMAIN.crt"; key = "$CERT_DIR/$DOMAIN.key" }
VirtualHost "$DOMAIN"
CFG
    # Accounts, written the way mod_storage_internal keeps them:
    # <data_path>/<host, every non-alphanumeric byte as %xx>/accounts/<user>.dat
    local hostdir="" i c acc rec
    for ((i = 0; i < ${#DOMAIN}; i++)); do
        c=${DOMAIN:i:1}
        if [[ "$c" =~ [A-Za-z0-9] ]]; then hostdir+=$c; else hostdir+=$(printf '%%%02x' "'$c"); fi
    done
    acc="$PROSODY_DIR/data/$hostdir/accounts"
    mkdir -p "$acc"
    if [ "$PROSODY_AUTH" = plain ]; then
        rec=$(printf 'return {\n\t["password"] = "%s";\n};' "$PASSWORD")
    else
        # internal_hashed (SCRAM-SHA-1 keys): one salt for every user, so the
        # keys are derived once, with Prosody's own library
        local salt=petrel-bench-salt sk srv
        if [ -z "$PROSODY_CREDS" ]; then
            # shellcheck disable=SC2016
            PROSODY_CREDS=$(BENCH_PW=$PASSWORD BENCH_SALT=$salt BENCH_ITER=$ITERATIONS lua5.4 -e '
                package.path = "/usr/lib/prosody/?.lua;" .. package.path
                package.cpath = "/usr/lib/prosody/?.so;" .. package.cpath
                local scram = require "util.sasl.scram"
                local hex = require "util.hex"
                local ok, sk, srv = scram.getAuthenticationDatabaseSHA1(os.getenv("BENCH_PW"),
                    os.getenv("BENCH_SALT"), tonumber(os.getenv("BENCH_ITER")))
                assert(ok, "SCRAM derivation failed")
                print(hex.encode(sk) .. " " .. hex.encode(srv))') || {
                log "cannot derive SCRAM keys with Prosody's library"; return 1; }
        fi
        read -r sk srv <<<"$PROSODY_CREDS"
        rec=$(printf 'return {\n\t["iteration_count"] = %d;\n\t["salt"] = "%s";\n\t["server_key"] = "%s";\n\t["stored_key"] = "%s";\n};' \
            "$ITERATIONS" "$salt" "$srv" "$sk")
    fi
    for ((i = 0; i < n; i++)); do
        printf '%s\n' "$rec" > "$acc/$PREFIX$i.dat"
    done
}

prosody_start() {
    local p_starttls p_direct
    read -r p_starttls p_direct <<<"$PROSODY_PORTS"
    taskset -c "$SERVER_CPU" prosody --config "$PROSODY_DIR/prosody.cfg.lua" -F \
        >>"$PROSODY_DIR/prosody.log" 2>&1 &
    SERVER_PID=$!
    STARTED_PIDS+=("$SERVER_PID")
    if ! { wait_listen "$SERVER_PID" "$p_direct" && wait_listen "$SERVER_PID" "$p_starttls"; }; then
        tail -n 20 "$PROSODY_DIR/prosody.log" >&2
        return 1
    fi
}

# ---------------------------------------------------------------- petreld
# petreld and petrelctl are copied once into the work folder, so a rebuild in
# the tree during the run does not change the binary under test.
PETREL_DIR=""
PETREL_PORTS=""
PETRELD=""
PETRELCTL=""

petrel_prepare() {      # petrel_prepare NUSERS
    local n=$1 i p_starttls p_direct certlines=""
    if [ -z "$PETRELD" ]; then
        mkdir -p "$WORK/bin"
        cp "$PETREL_BIN_DIR/petreld" "$WORK/bin/petrel-server"
        cp "$PETREL_BIN_DIR/petrelctl" "$WORK/bin/petrel-ctl"
        PETRELD="$WORK/bin/petrel-server"
        PETRELCTL="$WORK/bin/petrel-ctl"
    fi
    PETREL_DIR="$WORK/petrel"
    rm -rf "$PETREL_DIR"
    mkdir -p "$PETREL_DIR/var"
    PETREL_PORTS=$(pick_ports "$PETREL_PORT_BASE") || return 1
    read -r p_starttls p_direct <<<"$PETREL_PORTS"
    if [ "$PETREL_OWN_CERT" = 0 ]; then
        certlines="    certificate = \"$CERT_DIR/$DOMAIN.crt\"
    key = \"$CERT_DIR/$DOMAIN.key\""
    fi
    cat > "$PETREL_DIR/petrel.conf" <<CFG
# written by contrib/loadgen/bench.sh
data_dir = "$PETREL_DIR/var"
log_level = "warning"
scram_iterations = $ITERATIONS
listen "$HOST:$p_starttls" { type = "c2s" tls = "starttls" }
listen "$HOST:$p_direct" { type = "c2s" tls = "direct" }
# every generator session comes from one address
limits { connections_per_address = 1000000 }
host "$DOMAIN" {
$certlines
    modules = { $PETREL_MODULES }
}
CFG
    # a petrelctl that makes no store unless asked (--create-store) is asked
    local mk=()
    if "$PETRELCTL" --help 2>&1 | grep -q -- --create-store; then mk=(--create-store); fi
    for ((i = 0; i < n; i++)); do
        printf '%s%d@%s %s\n' "$PREFIX" "$i" "$DOMAIN" "$PASSWORD"
    done | timeout $((120 + n / 50)) "$PETRELCTL" -c "$PETREL_DIR/petrel.conf" "${mk[@]}" adduser --batch \
        >>"$PETREL_DIR/petrelctl.log" 2>&1 || {
        log "petrelctl adduser --batch failed:"; tail -n 20 "$PETREL_DIR/petrelctl.log" >&2; return 1; }
}

petrel_start() {
    local p_starttls p_direct f
    read -r p_starttls p_direct <<<"$PETREL_PORTS"
    taskset -c "$SERVER_CPU" "$PETRELD" -c "$PETREL_DIR/petrel.conf" \
        >>"$PETREL_DIR/petreld.log" 2>&1 &
    SERVER_PID=$!
    STARTED_PIDS+=("$SERVER_PID")
    if ! { wait_listen "$SERVER_PID" "$p_direct" && wait_listen "$SERVER_PID" "$p_starttls"; }; then
        tail -n 20 "$PETREL_DIR/petreld.log" >&2
        return 1
    fi
    if [ "$PETREL_OWN_CERT" = 1 ]; then
        f=$(find "$PETREL_DIR/var" -maxdepth 3 -type f -name '*.crt' | head -n 1)
        [ -z "$f" ] || PETREL_CERT_DESC="petreld's own: $(cert_desc "$f")"
    fi
}

server_stop() {
    [ -n "$SERVER_PID" ] || return 0
    stop_pid "$SERVER_PID"
    forget_pid "$SERVER_PID"
    SERVER_PID=""
}

# ---------------------------------------------------------------- results
RES="$WORK/results"
mkdir -p "$RES"
declare -A R   # R[server.metric] = value; R[server.note.scenario] = why not measured

# jget FILE KIND KEY [STEP]: one value from the JSON lines of petrel-load
jget() {
    local file=$1 kind=$2 key=$3 step=${4:-}
    [ -f "$file" ] || return 0
    { grep "\"kind\":\"$kind\"" "$file" | { if [ -n "$step" ]; then grep "\"step\":$step,"; else cat; fi; } |
        tail -n 1 | sed -n "s/.*\"$key\":\"\{0,1\}\([^\",}]*\).*/\1/p"; } || true
}

run_loadgen() {     # run_loadgen SERVER SCENARIO PORT ARGS...
    local server=$1 scen=$2 port=$3; shift 3
    local out="$RES/$server-$scen.jsonl" errf="$RES/$server-$scen.log" bound n_rates k
    # keep the files of an earlier (disturbed) attempt
    for ((k = 1; k < 10; k++)); do
        [ -e "$out" ] || break
        [ -e "$RES/$server-$scen.try$k.jsonl" ] && continue
        mv "$out" "$RES/$server-$scen.try$k.jsonl"
        mv "$errf" "$RES/$server-$scen.try$k.log" 2>/dev/null || true
    done
    n_rates=$(tr ',' '\n' <<<"$RATES" | wc -l)
    # bound on one generator run: connect phase + every step with its drain
    bound=$((400 + n_rates * (RETRIES + 1) * (STEP_DURATION + 6) + LAT_DURATION))
    if [ "$scen" = spread ]; then
        n_rates=$(tr ',' '\n' <<<"$SPREAD_RATES" | wc -l)
        bound=$((400 + n_rates * (RETRIES + 1) * (SPREAD_DURATION + 6)))
    fi
    log "$server/$scen: petrel-load $*"
    # run in the background and wait, so that a signal to this script is
    # handled at once (the trap then stops the generator and the server)
    timeout --signal=TERM --kill-after=15 "$bound" \
        taskset -c "$LOADGEN_CPU" "$LOADGEN" --json --host "$HOST" --port "$port" \
        --domain "$DOMAIN" --tls "$TLS" --user-prefix "$PREFIX" --password "$PASSWORD" \
        --src-addrs "$SRC_ADDRS" --concurrency "$CONCURRENCY" --body-size "$BODY_SIZE" \
        --server-pid "$SERVER_PID" --label "$server" "$@" >"$out" 2>"$errf" &
    local lg=$! rc=0
    STARTED_PIDS+=("$lg")
    wait "$lg" || rc=$?
    forget_pid "$lg"
    sed 's/^/    /' "$errf" >&2
    return $rc
}

scenario_sessions() {   # SERVER PORT
    local s=$1 port=$2 f="$RES/$1-sessions.jsonl" rc=0
    run_loadgen "$s" sessions "$port" --users "$SESSIONS" --idle-wait 12 || rc=$?
    if ! grep -q '"kind":"sessions"' "$f" 2>/dev/null; then
        R[$s.note.sessions]="generator exit $rc, no result"; return
    fi
    R[$s.bound]="$(jget "$f" sessions bound)/$SESSIONS"
    [ "$rc" = 0 ] || R[$s.bound]="${R[$s.bound]} (exit $rc)"
    R[$s.sess_rate]=$(jget "$f" sessions sessions_per_s)
    R[$s.rss]=$(jget "$f" sessions server_rss_per_session_kb)
    R[$s.anon]=$(jget "$f" sessions server_anon_per_session_kb)
    R[$s.sess_srv_cpu]=$(jget "$f" sessions server_cpu_pct)
    R[$s.sess_lg_cpu]=$(jget "$f" sessions loadgen_cpu_pct)
    R[$s.sess_other]=$(jget "$f" sessions other_cpu_pct)
    R[$s.lg_rss]=$(jget "$f" sessions loadgen_rss_per_session_kb)
}

scenario_throughput() {
    local s=$1 port=$2 f="$RES/$1-throughput.jsonl" rc=0
    run_loadgen "$s" throughput "$port" --users "$MSG_USERS" --idle-wait 2 \
        --rate "$RATES" --duration "$STEP_DURATION" --drain 5 --stop-on-saturation \
        --max-other-pct "$DISTURB_PCT" --retries "$RETRIES" || rc=$?
    if ! grep -q '"kind":"messages"' "$f" 2>/dev/null; then
        R[$s.note.throughput]="generator exit $rc, no result"; return
    fi
    # sustained = the last step (rates ascend) that was not saturated
    local best="" line last
    while IFS= read -r line; do
        if [[ "$line" == *'"saturated":false'* ]]; then
            best=$(sed -n 's/.*"step":\([0-9]*\),.*/\1/p' <<<"$line")
        fi
    done < <(grep '"kind":"messages"' "$f")
    last=$(grep '"kind":"messages"' "$f" | tail -n 1 | sed -n 's/.*"step":\([0-9]*\),.*/\1/p')
    if grep -q '"saturated":true' "$f"; then
        R[$s.tput_sat]=$(jget "$f" messages offered_rate "$last")
    else
        R[$s.tput_sat]="none up to $(jget "$f" messages offered_rate "$last")"
    fi
    if [ -z "$best" ]; then
        R[$s.tput]="below $(jget "$f" messages offered_rate 1) (first step saturated)"
        return
    fi
    R[$s.tput]=$(jget "$f" messages delivered_rate "$best")
    R[$s.tput_offered]=$(jget "$f" messages offered_rate "$best")
    R[$s.tput_p99]=$(jget "$f" messages lat_p99_ms "$best")
    R[$s.tput_srv_cpu]=$(jget "$f" messages server_cpu_pct "$best")
    R[$s.tput_lg_cpu]=$(jget "$f" messages loadgen_cpu_pct "$best")
    R[$s.tput_other]=$(jget "$f" messages other_cpu_pct "$best")
    if grep '"saturated":true' "$f" | tail -n 1 | grep -q '"disturbed":true'; then
        R[$s.note.throughput]="the search stopped at a step disturbed by other processes (after $RETRIES repeats)"
    fi
    if grep "\"step\":$best," "$f" | grep -q '"loadgen_bound":true'; then
        R[$s.tput]="${R[$s.tput]} (generator above 80% of a core)"
    fi
}

scenario_latency() {
    local s=$1 port=$2 f="$RES/$1-latency.jsonl" rc=0
    run_loadgen "$s" latency "$port" --users "$MSG_USERS" --idle-wait 2 \
        --rate "$LAT_RATE" --duration "$LAT_DURATION" --drain 10 || rc=$?
    if ! grep -q '"kind":"messages"' "$f" 2>/dev/null; then
        R[$s.note.latency]="generator exit $rc, no result"; return
    fi
    R[$s.lat_p50]=$(jget "$f" messages lat_p50_ms)
    R[$s.lat_p99]=$(jget "$f" messages lat_p99_ms)
    R[$s.lat_max]=$(jget "$f" messages lat_max_ms)
    R[$s.lat_deliv]=$(jget "$f" messages delivered_pct)
    R[$s.lat_srv_cpu]=$(jget "$f" messages server_cpu_pct)
    R[$s.lat_lg_cpu]=$(jget "$f" messages loadgen_cpu_pct)
    R[$s.lat_other]=$(jget "$f" messages other_cpu_pct)
}

# one stanza per write, many senders at low rates: every rate of the list, in
# order, on the same sessions; stops after the first saturated step
scenario_spread() {
    local s=$1 port=$2 f="$RES/$1-spread.jsonl" rc=0 i r line
    run_loadgen "$s" spread "$port" --shape spread --users "$SPREAD_USERS" --idle-wait 2 \
        --rate "$SPREAD_RATES" --duration "$SPREAD_DURATION" --drain 5 --stop-on-saturation \
        --max-other-pct "$DISTURB_PCT" --retries "$RETRIES" || rc=$?
    if ! grep -q '"kind":"messages"' "$f" 2>/dev/null; then
        R[$s.note.spread]="generator exit $rc, no result"; return
    fi
    i=0
    for r in ${SPREAD_RATES//,/ }; do
        i=$((i + 1))
        line=$(grep '"kind":"messages"' "$f" | grep "\"step\":$i," | tail -n 1)
        [ -n "$line" ] || continue
        R[$s.sp_deliv.$r]="$(jget "$f" messages delivered_total "$i")/$(jget "$f" messages sent "$i")"
        R[$s.sp_rate.$r]=$(jget "$f" messages delivered_rate "$i")
        R[$s.sp_p50.$r]=$(jget "$f" messages lat_p50_ms "$i")
        R[$s.sp_p99.$r]=$(jget "$f" messages lat_p99_ms "$i")
        R[$s.sp_p999.$r]=$(jget "$f" messages lat_p999_ms "$i")
        R[$s.sp_max.$r]=$(jget "$f" messages lat_max_ms "$i")
        R[$s.sp_srv_cpu.$r]=$(jget "$f" messages server_cpu_pct "$i")
        R[$s.sp_us.$r]=$(jget "$f" messages server_us_per_msg "$i")
        R[$s.sp_lg_cpu.$r]=$(jget "$f" messages loadgen_cpu_pct "$i")
        R[$s.sp_other.$r]=$(jget "$f" messages other_cpu_pct "$i")
        if [[ "$line" == *'"saturated":true'* ]]; then R[$s.sp_p99.$r]="${R[$s.sp_p99.$r]} (saturated)"; fi
        if [[ "$line" == *'"disturbed":true'* ]]; then
            R[$s.note.spread]="${R[$s.note.spread]:-}${R[$s.note.spread]:+; }$r/s disturbed by other processes"
        fi
    done
}

# ---------------------------------------------------------------- run
run_server() {
    local s=$1 scen n
    case "$s" in
        prosody)
            if ! command -v prosody >/dev/null || ! command -v lua5.4 >/dev/null; then
                R[$s.skip]="prosody is not installed (apt-get install prosody)"; return
            fi ;;
        petreld)
            if [ ! -x "$PETREL_BIN_DIR/petreld" ] || [ ! -x "$PETREL_BIN_DIR/petrelctl" ]; then
                R[$s.skip]="$PETREL_BIN_DIR/petreld or petrelctl is not built"; return
            fi ;;
    esac
    local try other key
    for scen in $SCENARIOS; do
        case "$scen" in
            sessions) n=$SESSIONS; key=sess_other ;;
            throughput) n=$MSG_USERS; key="" ;;     # repeats disturbed steps itself
            latency) n=$MSG_USERS; key=lat_other ;;
            spread) n=$SPREAD_USERS; key="" ;;       # repeats disturbed steps itself
            *) log "unknown scenario $scen"; continue ;;
        esac
        for ((try = 0; try <= RETRIES; try++)); do
            run_scenario "$s" "$scen" "$n"
            [ -n "$key" ] || break
            other=${R[$s.$key]:-0}
            awk -v o="$other" -v m="$DISTURB_PCT" 'BEGIN { exit !(o > m) }' || break
            if [ "$try" -lt "$RETRIES" ]; then
                log "$s/$scen: other processes used ${other}% of a core during the run; repeating it"
            else
                R[$s.note.$scen]="${R[$s.note.$scen]:-}${R[$s.note.$scen]:+; }disturbed: other processes used ${other}% of a core (after $RETRIES repeats)"
            fi
        done
    done
}

run_scenario() {    # run_scenario SERVER SCENARIO NUSERS
    local s=$1 scen=$2 n=$3 port
    wait_quiet
    R[$s.quiet.$scen]=$QUIET_BUSY
    if [ "$s" = prosody ]; then
        if ! { prosody_prepare "$n" && prosody_start; }; then
            R[$s.note.$scen]="prosody did not start"; server_stop; return
        fi
        port=${PROSODY_PORTS#* }; [ "$TLS" = direct ] || port=${PROSODY_PORTS% *}
    else
        if ! { petrel_prepare "$n" && petrel_start; }; then
            R[$s.note.$scen]="petreld did not start"; server_stop; return
        fi
        port=${PETREL_PORTS#* }; [ "$TLS" = direct ] || port=${PETREL_PORTS% *}
    fi
    sleep 1
    "scenario_$scen" "$s" "$port"
    if ! alive "$SERVER_PID"; then
        R[$s.note.$scen]="${R[$s.note.$scen]:-}${R[$s.note.$scen]:+; }server process ended during the run"
    fi
    server_stop
}

START_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
# which petreld: the commit of the tree it was built in, and whether src/ had changes
PETREL_REV=$(git -C "$PETREL_BIN_DIR" rev-parse --short HEAD 2>/dev/null) || PETREL_REV="not in git"
if [ "$PETREL_REV" != "not in git" ] && ! git -C "$PETREL_BIN_DIR" diff --quiet HEAD -- . 2>/dev/null; then
    PETREL_REV="$PETREL_REV with uncommitted changes"
fi
PETREL_REV="tree at $PETREL_REV"
for s in $SERVERS; do
    case "$s" in petreld|prosody) run_server "$s" ;; *) log "unknown server $s" ;; esac
done

# ---------------------------------------------------------------- table
val() {   # val SERVER KEY SCENARIO
    local s=$1 k=$2 scen=$3
    if [ -n "${R[$s.skip]:-}" ]; then echo "not measured"; return; fi
    if [ -n "${R[$s.$k]:-}" ]; then echo "${R[$s.$k]}"; return; fi
    echo "not measured"
}
ratio() {  # ratio A B: A/B when both are plain numbers
    local a=$1 b=$2
    if [[ "$a" =~ ^[0-9]+(\.[0-9]+)?$ && "$b" =~ ^[0-9]+(\.[0-9]+)?$ ]] &&
        awk -v b="$b" 'BEGIN { exit !(b > 0) }'; then
        awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", a / b }'
    else
        echo "-"
    fi
}

TABLE="$RES/table.md"
{
    echo "date: $START_DATE; $(nproc) CPUs, $(free -g | awk '/^Mem:/ { print $2 }') GiB; server on CPU $SERVER_CPU, generator on CPU $LOADGEN_CPU"
    echo "tls: $TLS; certificate: $CERT_DESC (petreld: $PETREL_CERT_DESC); SASL PLAIN against stored SCRAM keys, $ITERATIONS PBKDF2 iterations (Prosody: internal_$PROSODY_AUTH); body $BODY_SIZE bytes"
    echo "prosody $(dpkg-query -W -f='${Version}' prosody 2>/dev/null || echo '?'); petreld from $PETREL_BIN_DIR, $PETREL_REV"
    echo "sessions scenario: $SESSIONS sessions; throughput and latency: $MSG_USERS sessions ($((MSG_USERS / 2)) pairs); spread: $SPREAD_USERS sessions ($((SPREAD_USERS / 2)) pairs), one stanza per write, 1 ms tick, $SPREAD_DURATION s per rate"
    echo
    echo "| metric | petreld | prosody | petreld/prosody |"
    echo "| --- | --- | --- | --- |"
    row() {  # row LABEL KEY SCENARIO [noratio]
        local a b r
        a=$(val petreld "$2" "$3"); b=$(val prosody "$2" "$3")
        if [ -n "${4:-}" ]; then r="-"; else r=$(ratio "$a" "$b"); fi
        echo "| $1 | $a | $b | $r |"
    }
    row "sessions bound" bound sessions
    row "sessions/s (first connect to last bind)" sess_rate sessions
    row "server RSS per idle session, kB" rss sessions
    row "server anonymous RSS per idle session, kB" anon sessions
    row "server CPU while connecting, % of a core" sess_srv_cpu sessions
    row "generator CPU while connecting, % of a core" sess_lg_cpu sessions
    row "other processes' CPU while connecting, % of a core" sess_other sessions noratio
    row "sustained 1:1 messages/s" tput throughput
    row "... offered rate of that step" tput_offered throughput
    row "... p99 at that step, ms" tput_p99 throughput
    row "... server CPU at that step, %" tput_srv_cpu throughput
    row "... generator CPU at that step, %" tput_lg_cpu throughput
    row "... other processes' CPU at that step, %" tput_other throughput noratio
    row "first saturated offered rate" tput_sat throughput
    row "latency at ${LAT_RATE}/s offered: p50, ms" lat_p50 latency
    row "latency at ${LAT_RATE}/s offered: p99, ms" lat_p99 latency
    row "latency at ${LAT_RATE}/s offered: max, ms" lat_max latency
    row "... delivered within the window, % of offered" lat_deliv latency
    row "... server CPU, %" lat_srv_cpu latency
    row "... generator CPU, %" lat_lg_cpu latency
    row "... other processes' CPU, %" lat_other latency noratio
    if [[ " $SCENARIOS " == *" spread "* ]]; then
        for r in ${SPREAD_RATES//,/ }; do
            row "spread ${r}/s: delivered/sent" "sp_deliv.$r" spread noratio
            row "spread ${r}/s: achieved, messages/s in the window" "sp_rate.$r" spread
            row "spread ${r}/s: p50, ms" "sp_p50.$r" spread
            row "spread ${r}/s: p99, ms" "sp_p99.$r" spread
            row "spread ${r}/s: p99.9, ms" "sp_p999.$r" spread
            row "spread ${r}/s: max, ms" "sp_max.$r" spread
            row "spread ${r}/s: server CPU, % of a core" "sp_srv_cpu.$r" spread
            row "spread ${r}/s: server CPU per message, us" "sp_us.$r" spread
            row "spread ${r}/s: generator CPU, %" "sp_lg_cpu.$r" spread
            row "spread ${r}/s: other processes' CPU, %" "sp_other.$r" spread noratio
        done
    fi
    echo
    for s in petreld prosody; do
        [ -z "${R[$s.skip]:-}" ] || echo "- $s: not measured: ${R[$s.skip]}"
        for scen in sessions throughput latency spread; do
            [ -z "${R[$s.note.$scen]:-}" ] || echo "- $s, $scen: ${R[$s.note.$scen]}"
            [ -z "${R[$s.quiet.$scen]:-}" ] || [ "${R[$s.quiet.$scen]}" -le "$QUIET_MAX_PCT" ] ||
                echo "- $s, $scen: other processes used ${R[$s.quiet.$scen]}% of a core just before the run"
        done
    done
} > "$TABLE"

echo
cat "$TABLE"
if [ -n "$OUT" ]; then
    mkdir -p "$OUT"
    cp "$RES"/* "$OUT"/
    log "results copied to $OUT"
fi
