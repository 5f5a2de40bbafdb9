#!/usr/bin/env bash
# presence.sh — presence storm: petreld against Prosody, in one run, on this host.
#
# The scenario: --heavy users (default 20), each with the same --contacts
# light users (default 5 000) in its roster, subscription 'both'; the first
# --online light users (default 1 000) are online. The heavy users log in
# (roster, initial presence), change their status at a fixed rate, log out
# and in again; meanwhile --pairs pairs of other users exchange 1:1 messages
# at --msg-rate. contrib/loadgen/petrel-presence plays every client (pinned
# to CPU 1); each server runs alone, pinned to CPU 0.
#
# The stored state (accounts, rosters) is made once per server kind:
#   petreld  accounts with `petrelctl adduser --batch`, then the subscriptions
#            through the protocol (petrel-presence --mode setup: pre-approval,
#            RFC 6121 3.4), checked, and the data folder kept in --cache-dir
#            for the next runs (the set-up takes minutes; a run takes a copy);
#   prosody  account and roster files written the way mod_storage_internal
#            keeps them (the same state: every item 'both', nothing pending).
#            Prosody 0.12 has no pre-approval, and its internal storage
#            rewrites a user's whole roster file on every change, so making
#            100 000 subscriptions through the protocol would take hours;
#            --prosody-setup protocol does it anyway (classic flow), for a
#            check at small sizes.
#
# Each server is measured --repeat times (default 3), the servers in turn,
# each run on a fresh copy of the state, and the table gives the median of
# the runs. Only loopback addresses are used; everything the script starts is
# stopped on exit; every wait is bounded. See doc/performance.md, "Presence
# storm".
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

# ---------------------------------------------------------------- options
HEAVY=20
CONTACTS=5000
ONLINE=1000
PAIRS=10
CHANGES=20             # status changes per login, then the logout
MSG_RATE=100           # 1:1 messages/s over all pairs
QUIET_LOGINS=20        # logins one at a time, before the storm
PETREL_RATES="25,50,100,150,200,250,300,400"
PROSODY_RATES="1,2,5,10,15,20,30"
DURATION=10
DRAIN=5
REPEAT=3
TLS=direct
SERVERS="petreld prosody"
SRC_ADDRS=4
SERVER_CPU=0
LOADGEN_CPU=1
PROSODY_PORT_BASE=15322
PETREL_PORT_BASE=16322
PETREL_BIN_DIR="$ROOT/src"
GENERATOR=""
ITERATIONS=4096
PROSODY_SETUP=files    # files | protocol
CACHE_DIR=/var/tmp/petrel-presence-cache
USE_CACHE=1
QUIET_WAIT=300
QUIET_MAX_PCT=20
DISTURB_PCT=25
RETRIES=2
OUT=""
KEEP=0
SUMMARIZE=""

usage() {
    cat <<EOF
usage: $0 [options]
  --heavy H            heavy users (default $HEAVY)
  --contacts C         light users in every heavy user's roster (default $CONTACTS)
  --online L           light users online, the first L (default $ONLINE)
  --pairs P            pairs exchanging 1:1 messages (default $PAIRS)
  --changes K          status changes per login before the logout (default $CHANGES)
  --msg-rate M         1:1 messages/s over all pairs (default $MSG_RATE)
  --quiet-logins N     logins one at a time before the storm (default $QUIET_LOGINS)
  --petrel-rates LIST  presence broadcasts/s of all heavy users together, one step each
                       (default $PETREL_RATES)
  --prosody-rates LIST (default $PROSODY_RATES)
  --duration S         seconds per step (default $DURATION)
  --drain S            seconds to wait for stragglers after a step (default $DRAIN)
  --repeat N           runs per server, the median is reported (default $REPEAT)
  --tls direct|starttls (default $TLS)
  --servers LIST       "petreld prosody" (default: both)
  --src-addrs K        spread connections over 127.0.0.1..127.0.0.K (default $SRC_ADDRS)
  --petrel-bin DIR     where petreld and petrelctl are (default $PETREL_BIN_DIR)
  --generator FILE     petrel-presence to use (default: built next to this script)
  --iterations N       PBKDF2 iterations of the stored credentials, both servers (default $ITERATIONS)
  --prosody-setup files|protocol  how Prosody's rosters are made (default $PROSODY_SETUP)
  --cache-dir DIR      where petreld's set-up state is kept between runs (default $CACHE_DIR)
  --no-cache           make petreld's state again (and replace the cached copy)
  --quiet-wait S       wait at most S s for other processes to go quiet (default $QUIET_WAIT)
  --disturb-pct P      a step during which other processes used more than P % of a core
                       and that saturated is repeated (default $DISTURB_PCT)
  --retries N          ... at most N times (default $RETRIES)
  --out DIR            copy raw results (JSON lines, logs, table) to DIR
  --keep               keep the temporary folder (configs, data, logs)
  --summarize DIR      only print the table again from the results an earlier run copied
                       to DIR (--out)
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --heavy) HEAVY=$2; shift 2 ;;
        --contacts) CONTACTS=$2; shift 2 ;;
        --online) ONLINE=$2; shift 2 ;;
        --pairs) PAIRS=$2; shift 2 ;;
        --changes) CHANGES=$2; shift 2 ;;
        --msg-rate) MSG_RATE=$2; shift 2 ;;
        --quiet-logins) QUIET_LOGINS=$2; shift 2 ;;
        --petrel-rates) PETREL_RATES=$2; shift 2 ;;
        --prosody-rates) PROSODY_RATES=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --drain) DRAIN=$2; shift 2 ;;
        --repeat) REPEAT=$2; shift 2 ;;
        --tls) TLS=$2; shift 2 ;;
        --servers) SERVERS=$2; shift 2 ;;
        --src-addrs) SRC_ADDRS=$2; shift 2 ;;
        --petrel-bin) PETREL_BIN_DIR=$2; shift 2 ;;
        --generator) GENERATOR=$2; shift 2 ;;
        --iterations) ITERATIONS=$2; shift 2 ;;
        --prosody-setup) PROSODY_SETUP=$2; shift 2 ;;
        --cache-dir) CACHE_DIR=$2; shift 2 ;;
        --no-cache) USE_CACHE=0; shift ;;
        --quiet-wait) QUIET_WAIT=$2; shift 2 ;;
        --disturb-pct) DISTURB_PCT=$2; shift 2 ;;
        --retries) RETRIES=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --summarize) SUMMARIZE=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 1 ;;
    esac
done

# ---------------------------------------------------------------- table
# make_table RESULTS SERVERS: the Markdown table from the JSON lines in RESULTS
# (the header lines come from RESULTS/meta.txt, written at the start of a run)
make_table() {
    [ ! -f "$1/meta.txt" ] || cat "$1/meta.txt"
    echo
    python3 - "$1" "$2" <<'PY'
import bisect, datetime, glob, json, os, re, statistics, sys

res, servers = sys.argv[1], sys.argv[2].split()
runs = {}      # server -> list of (quiet result, {offered: step result}, notes)

def pct(sorted_vals, q):
    """nearest rank, in ms (values in us)"""
    if not sorted_vals:
        return 0.0
    k = max(0, min(len(sorted_vals) - 1, -(-int(q * len(sorted_vals) * 1000) // 1000) - 1))
    return sorted_vals[k] / 1000.0

def apply_pairs(j, lat, logins):
    """the window's 1:1 figures from the pairs process (messages sent in it)"""
    t0, t1 = j["t0_ns"], j["t1_ns"]
    inwin = [(t, l) for t, l in lat if t0 <= t < t1]
    allv = sorted(l for _, l in inwin)
    # t is inside a login when the logins that started by t reach past it
    starts = [a for a, _ in logins]
    reach, m = [], 0
    for _, b in logins:
        m = max(m, b)
        reach.append(m)
    during = []
    for t, l in inwin:
        k = bisect.bisect_right(starts, t) - 1
        if k >= 0 and reach[k] >= t:
            during.append(l)
    during.sort()
    j["msg_recv"] = len(allv)
    j["msg_p50_ms"], j["msg_p99_ms"] = pct(allv, .5), pct(allv, .99)
    j["msg_max_ms"] = allv[-1] / 1000.0 if allv else 0.0
    j["msg_login_n"] = len(during)
    j["msg_login_p99_ms"] = pct(during, .99)
    j["msg_login_max_ms"] = during[-1] / 1000.0 if during else 0.0
    j["pairs_process"] = True
for s in servers:
    for f in sorted(glob.glob(os.path.join(res, s + "-run*.jsonl"))):
        if f.endswith(".pairs.jsonl"):
            continue
        quiet, steps, notes = None, {}, []
        for line in open(f):
            try:
                j = json.loads(line)
            except ValueError:
                continue
            if j.get("kind") == "logins":
                quiet = j
            elif j.get("kind") == "storm":
                steps[j["offered"]] = j      # the last try of a step counts, as for the generator
            elif j.get("kind") == "note":
                notes.append(j["text"])
        # the 1:1 messages of the separate pairs process: per window, by send time
        base = f[:-len(".jsonl")]
        if os.path.exists(base + ".lat"):
            lat = []
            for line in open(base + ".lat"):
                p = line.split()
                if len(p) == 2:
                    lat.append((int(p[0]), int(p[1])))
            lat.sort()
            logins = []
            if os.path.exists(base + ".logins"):
                for line in open(base + ".logins"):
                    p = line.split()
                    if len(p) >= 2:
                        logins.append((int(p[0]), int(p[1])))
            logins.sort()
            for j in [quiet] + list(steps.values()):
                if j and "t0_ns" in j:
                    apply_pairs(j, lat, logins)
        # the server's time per login (petreld's log), by when it was answered
        if os.path.exists(base + ".server-logins") and os.path.exists(base + ".clock"):
            off = int(open(base + ".clock").read().split()[0])
            srv = []
            for line in open(base + ".server-logins"):
                mm = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z .*login answered in ([0-9.]+) ms", line)
                if not mm:
                    continue
                t = datetime.datetime.strptime(mm.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
                rt = int(t.timestamp()) * 1000000000 + int(mm.group(2)) * 1000000
                srv.append((rt - off, int(float(mm.group(3)) * 1000)))
            for j in [quiet] + list(steps.values()):
                if j and "t0_ns" in j:
                    v = sorted(l for t, l in srv if j["t0_ns"] <= t < j["t1_ns"])
                    j["srv_login_n"] = len(v)
                    j["srv_login_p50_ms"], j["srv_login_p99_ms"] = pct(v, .5), pct(v, .99)
                    j["srv_login_max_ms"] = v[-1] / 1000.0 if v else 0.0
        runs.setdefault(s, []).append((quiet, steps, notes))

def med(vals):
    vals = [v for v in vals if v is not None and v >= 0]
    return statistics.median(vals) if vals else None

def fmt(v, d=1):
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}".replace(",", " ")
    return f"{v:.{d}f}"

def per_login(q):
    if not q or not q.get("logins_done"):
        return None
    return 1000.0 * q["server_cpu_s"] / q["logins_done"]

print("Quiet logins (heavy users one at a time; median of the runs):\n")
print("| | " + " | ".join(servers) + " |")
print("| --- |" + " --- |" * len(servers))
def quiet_cell(qs, keys, d):
    if keys == "logins":
        return f"{fmt(med([q['logins_done'] for q in qs]), 0)} / {fmt(med([q['logins_incomplete'] for q in qs]), 0)}"
    if keys[0] == "msg_login_n":
        return f"{fmt(med([q[keys[0]] for q in qs]), 0)}, " + " / ".join(fmt(med([q.get(k) for q in qs]), d) for k in keys[1:])
    return " / ".join(fmt(med([q.get(k) for q in qs]), d) for k in keys)

rows = [
    ("logins answered / incomplete", "logins", 0),
    ("roster result, p50 / p99 / max, ms", ("login_roster_p50_ms", "login_roster_p99_ms", "login_roster_max_ms"), 1),
    ("contacts' presence after the initial presence, p50 / p99 / max, ms", ("login_probes_p50_ms", "login_probes_p99_ms", "login_probes_max_ms"), 1),
    ("login answered (roster + presence), p50 / p99 / max, ms", ("login_answer_p50_ms", "login_answer_p99_ms", "login_answer_max_ms"), 1),
    ("... at the server (roster result + initial presence to the last contact's), p50 / p99 / max, ms", ("srv_login_p50_ms", "srv_login_p99_ms", "srv_login_max_ms"), 1),
    ("whole login from connect(), p50 / p99 / max, ms", ("login_full_p50_ms", "login_full_p99_ms", "login_full_max_ms"), 1),
    ("1:1 messages meanwhile, p50 / p99 / max, ms", ("msg_p50_ms", "msg_p99_ms", "msg_max_ms"), 2),
    ("... of them sent while a login was answered: count, p99 / max, ms", ("msg_login_n", "msg_login_p99_ms", "msg_login_max_ms"), 2),
    ("presence to the online contacts, p50 / p99 / max, ms", ("lat_p50_ms", "lat_p99_ms", "lat_max_ms"), 2),
]
for label, keys, d in rows:
    cells = []
    for s in servers:
        qs = [r[0] for r in runs.get(s, []) if r[0]]
        cells.append(quiet_cell(qs, keys, d) if qs else "not measured")
    print(f"| {label} | " + " | ".join(cells) + " |")
cells = []
for s in servers:
    qs = [r[0] for r in runs.get(s, []) if r[0]]
    cells.append(fmt(med([per_login(q) for q in qs]), 1) if qs else "not measured")
print("| server CPU per login (whole phase / logins, 1:1 traffic included), ms | " + " | ".join(cells) + " |")
print()

for s in servers:
    rs = runs.get(s, [])
    if not rs:
        print(f"{s}: not measured\n")
        continue
    offered = sorted({o for r in rs for o in r[1]})
    print(f"Storm, {s} (median of {len(rs)} runs; a step a run did not reach is left out of its median):\n")
    print("| offered broadcasts/s | runs | broadcasts/s sent | deliveries/s | delivered in window | presence p50 / p99 / max, ms | server CPU | server us per delivery | generator CPU | logins (answered / incomplete) | login answered p50 / p99 / max, ms | ... at the server | 1:1 p99 / max, ms | 1:1 during a login: n, p99 / max, ms | other CPU | saturated |")
    print("| ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- | --- | --- | --- | --- | ---: | ---: |")
    for o in offered:
        st = [r[1][o] for r in rs if o in r[1]]
        m = lambda k: med([x.get(k) for x in st])
        sat = sum(1 for x in st if x.get("saturated"))
        print(f"| {fmt(o, 0)} | {len(st)} | {fmt(m('broadcasts_per_s'))} | {fmt(m('deliveries_per_s'), 0)} | {fmt(m('delivered_pct'), 2)} % | "
              f"{fmt(m('lat_p50_ms'), 2)} / {fmt(m('lat_p99_ms'), 2)} / {fmt(m('lat_max_ms'), 2)} | {fmt(m('server_cpu_pct'), 0)} % | "
              f"{fmt(m('server_us_per_delivery'), 2)} | {fmt(m('loadgen_cpu_pct'), 0)} % | {fmt(m('logins_done'), 0)} / {fmt(m('logins_incomplete'), 0)} | "
              f"{fmt(m('login_answer_p50_ms'))} / {fmt(m('login_answer_p99_ms'))} / {fmt(m('login_answer_max_ms'))} | "
              f"{fmt(m('srv_login_p50_ms'))} / {fmt(m('srv_login_p99_ms'))} / {fmt(m('srv_login_max_ms'))} | "
              f"{fmt(m('msg_p99_ms'), 2)} / {fmt(m('msg_max_ms'), 2)} | {fmt(m('msg_login_n'), 0)}, {fmt(m('msg_login_p99_ms'), 2)} / {fmt(m('msg_login_max_ms'), 2)} | "
              f"{fmt(m('other_cpu_pct'), 0)} % | {sat}/{len(st)} |")
    # the sustained rate: the highest step no run found saturated, every step below it clean too
    best = None
    for o in offered:
        st = [r[1][o] for r in rs if o in r[1]]
        if len(st) < len(rs) or any(x.get("saturated") for x in st):
            break
        best = o
    if best is not None:
        st = [r[1][best] for r in rs]
        print(f"\nsustained: {fmt(best, 0)} broadcasts/s offered = {fmt(med([x['deliveries_per_s'] for x in st]), 0)} presence deliveries/s "
              f"(median), server CPU {fmt(med([x['server_cpu_pct'] for x in st]), 0)} %")
    else:
        print("\nsustained: below the first step")
    bad = sum(x.get("roster_bad", 0) for r in rs for x in list(r[1].values()) + ([r[0]] if r[0] else []))
    if bad:
        print(f"\nWARNING: {bad} heavy-user rosters were not as set up (the state is wrong)")
    for i, r in enumerate(rs):
        for n in r[2]:
            print(f"- run {i + 1}: {n}")
    print()
PY
}

if [ -n "$SUMMARIZE" ]; then
    [ -d "$SUMMARIZE" ] || { echo "--summarize: no folder $SUMMARIZE" >&2; exit 1; }
    servers=""
    for s in petreld prosody; do
        ls "$SUMMARIZE/$s"-run*.jsonl >/dev/null 2>&1 && servers="$servers $s"
    done
    [ -n "$servers" ] || { echo "--summarize: no results in $SUMMARIZE" >&2; exit 1; }
    make_table "$SUMMARIZE" "$servers"
    exit 0
fi

isnum() { [[ "$1" =~ ^[0-9]+$ ]]; }
for v in HEAVY CONTACTS ONLINE PAIRS CHANGES QUIET_LOGINS DURATION DRAIN REPEAT SRC_ADDRS ITERATIONS \
         QUIET_WAIT DISTURB_PCT RETRIES; do
    isnum "${!v}" || { echo "$v must be a whole number" >&2; exit 1; }
done
[[ "$MSG_RATE" =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "--msg-rate must be a number" >&2; exit 1; }
for v in PETREL_RATES PROSODY_RATES; do
    [[ "${!v}" =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "${v,,}: numbers separated by commas" >&2; exit 1; }
done
case "$TLS" in direct|starttls) ;; *) echo "--tls must be direct or starttls" >&2; exit 1 ;; esac
case "$PROSODY_SETUP" in files|protocol) ;; *) echo "--prosody-setup must be files or protocol" >&2; exit 1 ;; esac
[ "$HEAVY" -ge 1 ] && [ "$HEAVY" -le 1000 ] || { echo "--heavy 1..1000" >&2; exit 1; }
[ "$CONTACTS" -ge 1 ] && [ "$ONLINE" -ge 1 ] && [ "$ONLINE" -le "$CONTACTS" ] ||
    { echo "--online must be between 1 and --contacts" >&2; exit 1; }
[ "$REPEAT" -ge 1 ] && [ "$REPEAT" -le 20 ] || { echo "--repeat 1..20" >&2; exit 1; }
[ "$SRC_ADDRS" -le 254 ] || { echo "--src-addrs at most 254" >&2; exit 1; }
[ "$RETRIES" -le 5 ] || { echo "--retries at most 5" >&2; exit 1; }
[ "$ITERATIONS" -ge 4096 ] || { echo "--iterations at least 4096 (petreld's minimum)" >&2; exit 1; }
NOFILE=$(ulimit -Hn)
# the set-up logs every light and heavy user in at once; a run holds the online ones and the pairs
for n in $((CONTACTS + HEAVY)) $((ONLINE + HEAVY + 2 * PAIRS)); do
    if [ "$NOFILE" != unlimited ] && [ $((n + 64)) -gt "$NOFILE" ]; then
        echo "$n sessions need more than the $NOFILE open files a process may hold here" >&2
        exit 1
    fi
done
ulimit -n "$NOFILE" 2>/dev/null || true

HOST=127.0.0.1         # loopback only, never anything else
DOMAIN=localhost
PASSWORD=secret
HP=heavy LP=light PP=pair   # user name prefixes (petrel-presence's defaults)

log() { printf '[presence %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------- cleanup
WORK=$(mktemp -d /tmp/petrel-presence.XXXXXX)
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

# ---------------------------------------------------------------- checks
for t in taskset openssl ss timeout gcc pkg-config awk python3 md5sum; do
    command -v "$t" >/dev/null || { echo "missing tool: $t" >&2; exit 1; }
done

if [ -z "$GENERATOR" ]; then
    GENERATOR="$HERE/petrel-presence"
    if [ ! -x "$GENERATOR" ] || [ "$HERE/petrel-presence.c" -nt "$GENERATOR" ]; then
        log "building $GENERATOR"
        # shellcheck disable=SC2046
        gcc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra "$HERE/petrel-presence.c" -o "$GENERATOR" \
            $(pkg-config --cflags --libs libevent libevent_openssl openssl expat)
    fi
fi
[ -x "$GENERATOR" ] || { echo "no generator at $GENERATOR" >&2; exit 1; }

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

# Debian's Prosody, installed if missing (as root), with a policy-rc.d that
# refuses every start so that the system instance stays down; the one there
# before (if any) is put back.
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

if [ -f /run/prosody/prosody.pid ] && kill -0 "$(cat /run/prosody/prosody.pid)" 2>/dev/null; then
    log "stopping the system Prosody (pid $(cat /run/prosody/prosody.pid)); this run starts its own"
    service prosody stop >/dev/null 2>&1 || kill "$(cat /run/prosody/prosody.pid)" 2>/dev/null || true
fi

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
CERT_DIR="$WORK/certs"
mkdir -p "$CERT_DIR"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj "/CN=$DOMAIN" \
    -addext "subjectAltName=DNS:$DOMAIN" \
    -keyout "$CERT_DIR/$DOMAIN.key" -out "$CERT_DIR/$DOMAIN.crt" >/dev/null 2>&1
chmod 600 "$CERT_DIR/$DOMAIN.key"

RES="$WORK/results"
mkdir -p "$RES"

# every account: heavy, light and pair users, one per line
all_users() {
    local i
    for ((i = 0; i < HEAVY; i++)); do echo "$HP$i"; done
    for ((i = 0; i < CONTACTS; i++)); do echo "$LP$i"; done
    for ((i = 0; i < 2 * PAIRS; i++)); do echo "$PP$i"; done
}

SERVER_PID=""
server_stop() {
    [ -n "$SERVER_PID" ] || return 0
    stop_pid "$SERVER_PID"
    forget_pid "$SERVER_PID"
    SERVER_PID=""
}

# run_generator LABEL OUTFILE ERRFILE PORT BOUND ARGS...: petrel-presence on the generator's CPU
run_generator() {
    local label=$1 out=$2 errf=$3 port=$4 bound=$5; shift 5
    timeout --signal=TERM --kill-after=15 "$bound" \
        taskset -c "$LOADGEN_CPU" "$GENERATOR" --json --host "$HOST" --port "$port" --tls "$TLS" \
        --domain "$DOMAIN" --password "$PASSWORD" --heavy "$HEAVY" --contacts "$CONTACTS" \
        --src-addrs "$SRC_ADDRS" --server-pid "$SERVER_PID" --label "$label" "$@" >"$out" 2>"$errf" &
    local g=$! rc=0
    STARTED_PIDS+=("$g")
    wait "$g" || rc=$?
    forget_pid "$g"
    return $rc
}

# ---------------------------------------------------------------- prosody
PROSODY_DIR="$WORK/prosody"
PROSODY_PORTS=""
PROSODY_CREDS=""

prosody_config() {
    local p_starttls p_direct
    read -r p_starttls p_direct <<<"$PROSODY_PORTS"
    cat > "$PROSODY_DIR/prosody.cfg.lua" <<CFG
-- written by contrib/loadgen/presence.sh
run_as_root = true
pidfile = "$PROSODY_DIR/prosody.pid"
data_path = "$PROSODY_DIR/data"
log = { { levels = { min = "warn" }, to = "console" } }
plugin_paths = { }
-- roster and presence handling: mod_roster here, mod_presence always loaded
modules_enabled = { "roster", "saslauth", "tls", "disco", "ping" }
modules_disabled = { "s2s", "s2s_auth_certs" }
interfaces = { "$HOST" }
c2s_ports = { $p_starttls }
c2s_direct_tls_ports = { $p_direct }
s2s_ports = { }
c2s_require_encryption = true
authentication = "internal_hashed"
storage = "internal"
limits = { }
network_settings = { tcp_backlog = 4096 }
ssl = { certificate = "$CERT_DIR/$DOMAIN.crt"; key = "$CERT_DIR/$DOMAIN.key" }
VirtualHost "$DOMAIN"
CFG
}

# <data_path>/<host, every non-alphanumeric byte as %xx>: mod_storage_internal's layout
prosody_hostdir() {
    local i c d=""
    for ((i = 0; i < ${#DOMAIN}; i++)); do
        c=${DOMAIN:i:1}
        if [[ "$c" =~ [A-Za-z0-9] ]]; then d+=$c; else d+=$(printf '%%%02x' "'$c"); fi
    done
    echo "$PROSODY_DIR/data/$d"
}

# accounts (SCRAM-SHA-1 keys, one salt for every user, derived once with
# Prosody's own library, as bench.sh does) and, with files, the rosters
prosody_prepare() {
    rm -rf "$PROSODY_DIR"
    mkdir -p "$PROSODY_DIR/data"
    PROSODY_PORTS=$(pick_ports "$PROSODY_PORT_BASE") || return 1
    prosody_config
    local hd acc ros salt=petrel-presence-salt sk srv rec
    hd=$(prosody_hostdir)
    acc="$hd/accounts"
    ros="$hd/roster"
    mkdir -p "$acc" "$ros"
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
    all_users | while read -r u; do printf '%s\n' "$rec" > "$acc/$u.dat"; done
    [ "$PROSODY_SETUP" = files ] || return 0
    # rosters as Prosody's rostermanager saves them after the subscription
    # handshakes (checked against --prosody-setup protocol at small sizes):
    # [false] holds the version and the pending requests, then one item per contact
    local heavyfile="$WORK/prosody-heavy-roster.dat" lightfile="$WORK/prosody-light-roster.dat" i
    awk -v n="$CONTACTS" -v p="$LP" -v d="$DOMAIN" 'BEGIN {
        printf "return {\n\t[false] = {\n\t\t[\"version\"] = %d;\n\t\t[\"pending\"] = {};\n\t};\n", 2 * n
        for (i = 0; i < n; i++)
            printf "\t[\"%s%d@%s\"] = {\n\t\t[\"groups\"] = {};\n\t\t[\"subscription\"] = \"both\";\n\t};\n", p, i, d
        print "};" }' > "$heavyfile"
    awk -v n="$HEAVY" -v p="$HP" -v d="$DOMAIN" 'BEGIN {
        printf "return {\n\t[false] = {\n\t\t[\"version\"] = %d;\n\t\t[\"pending\"] = {};\n\t};\n", 2 * n
        for (i = 0; i < n; i++)
            printf "\t[\"%s%d@%s\"] = {\n\t\t[\"groups\"] = {};\n\t\t[\"subscription\"] = \"both\";\n\t};\n", p, i, d
        print "};" }' > "$lightfile"
    for ((i = 0; i < HEAVY; i++)); do cp "$heavyfile" "$ros/$HP$i.dat"; done
    for ((i = 0; i < CONTACTS; i++)); do cp "$lightfile" "$ros/$LP$i.dat"; done
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
PETREL_DIR="$WORK/petrel"
PETREL_PORTS=""
PETRELD=""
PETRELCTL=""

petrel_config() {   # petrel_config FOLDER
    local dir=$1 p_starttls p_direct items=5000
    read -r p_starttls p_direct <<<"$PETREL_PORTS"
    [ "$CONTACTS" -le "$items" ] || items=$CONTACTS
    cat > "$dir/petrel.conf" <<CFG
# written by contrib/loadgen/presence.sh
data_dir = "$dir/var"
# debug: mod_roster's line per login, with its time at the server (a few
# lines per login and connection, none per stanza)
log_level = "debug"
scram_iterations = $ITERATIONS
listen "$HOST:$p_starttls" { type = "c2s" tls = "starttls" }
listen "$HOST:$p_direct" { type = "c2s" tls = "direct" }
# every generator session comes from a few addresses
limits { connections_per_address = 1000000 }
host "$DOMAIN" {
    certificate = "$CERT_DIR/$DOMAIN.crt"
    key = "$CERT_DIR/$DOMAIN.key"
    modules = { "disco", "ping", "roster" }
    # the set-up sends $CONTACTS subscription requests per heavy user
    roster { max_items = $items subscribe_per_minute = 100000 presence_per_second = 1000 }
}
CFG
}

petrel_start() {    # petrel_start FOLDER
    local dir=$1 p_starttls p_direct
    read -r p_starttls p_direct <<<"$PETREL_PORTS"
    taskset -c "$SERVER_CPU" "$PETRELD" -c "$dir/petrel.conf" >>"$dir/petreld.log" 2>&1 &
    SERVER_PID=$!
    STARTED_PIDS+=("$SERVER_PID")
    if ! { wait_listen "$SERVER_PID" "$p_direct" && wait_listen "$SERVER_PID" "$p_starttls"; }; then
        tail -n 20 "$dir/petreld.log" >&2
        return 1
    fi
}

# the cached state belongs to these sizes, these credentials and this storage layout
petrel_cache_key() {
    local h
    h=$(cat "$ROOT"/schemas/*.md 2>/dev/null | md5sum | cut -c1-12)
    echo "h$HEAVY-c$CONTACTS-p$PAIRS-i$ITERATIONS-$DOMAIN-$h"
}

# Make petreld's state (accounts, then subscriptions through the protocol) in
# $WORK/petrel-state/var, or take it from the cache.
PETREL_STATE="$WORK/petrel-state"
petrel_state() {
    if [ -z "$PETRELD" ]; then
        mkdir -p "$WORK/bin"
        cp "$PETREL_BIN_DIR/petreld" "$WORK/bin/petrel-server"
        cp "$PETREL_BIN_DIR/petrelctl" "$WORK/bin/petrel-ctl"
        PETRELD="$WORK/bin/petrel-server"
        PETRELCTL="$WORK/bin/petrel-ctl"
    fi
    local key cached
    key=$(petrel_cache_key)
    cached="$CACHE_DIR/$key"
    rm -rf "$PETREL_STATE"
    mkdir -p "$PETREL_STATE"
    if [ "$USE_CACHE" = 1 ] && [ -f "$cached/complete" ]; then
        log "petreld: set-up state from $cached"
        cp -a "$cached/var" "$PETREL_STATE/var"
        return 0
    fi
    mkdir -p "$PETREL_STATE/var"
    PETREL_PORTS=$(pick_ports "$PETREL_PORT_BASE") || return 1
    petrel_config "$PETREL_STATE"
    local mk=() n
    if "$PETRELCTL" --help 2>&1 | grep -q -- --create-store; then mk=(--create-store); fi
    n=$((HEAVY + CONTACTS + 2 * PAIRS))
    log "petreld: making $n accounts"
    all_users | sed "s/\$/@$DOMAIN $PASSWORD/" |
        timeout $((120 + n / 50)) "$PETRELCTL" -c "$PETREL_STATE/petrel.conf" "${mk[@]}" adduser --batch \
        >>"$PETREL_STATE/petrelctl.log" 2>&1 || {
        log "petrelctl adduser --batch failed:"; tail -n 20 "$PETREL_STATE/petrelctl.log" >&2; return 1; }
    petrel_start "$PETREL_STATE" || return 1
    local port=${PETREL_PORTS#* } rc=0
    [ "$TLS" = direct ] || port=${PETREL_PORTS% *}
    log "petreld: $((4 * HEAVY * CONTACTS)) subscription stanzas through the protocol (pre-approval)"
    run_generator petreld "$RES/petreld-setup.jsonl" "$RES/petreld-setup.log" "$port" 7200 \
        --mode setup --flow preapprove || rc=$?
    sed 's/^/    /' "$RES/petreld-setup.log" >&2
    server_stop
    if [ "$rc" != 0 ] || ! grep -q '"kind":"setup".*"ok":true' "$RES/petreld-setup.jsonl"; then
        log "petreld: the set-up failed (generator exit $rc)"
        return 1
    fi
    if [ -n "$CACHE_DIR" ]; then
        rm -rf "$cached.tmp" && mkdir -p "$cached.tmp" && cp -a "$PETREL_STATE/var" "$cached.tmp/var" &&
            cp "$RES/petreld-setup.jsonl" "$cached.tmp/" && touch "$cached.tmp/complete" &&
            rm -rf "$cached" && mv "$cached.tmp" "$cached" && log "petreld: set-up state kept in $cached" ||
            log "WARNING: cannot keep the set-up state in $cached"
    fi
}

# Prosody's state through the protocol (classic flow): slow beyond small sizes
prosody_protocol_setup() {
    prosody_start || return 1
    local port=${PROSODY_PORTS#* } rc=0
    [ "$TLS" = direct ] || port=${PROSODY_PORTS% *}
    log "prosody: $((4 * HEAVY * CONTACTS)) subscription stanzas through the protocol (classic flow)"
    run_generator prosody "$RES/prosody-setup.jsonl" "$RES/prosody-setup.log" "$port" 7200 \
        --mode setup --flow classic || rc=$?
    sed 's/^/    /' "$RES/prosody-setup.log" >&2
    server_stop
    [ "$rc" = 0 ] && grep -q '"kind":"setup".*"ok":true' "$RES/prosody-setup.jsonl"
}

# ---------------------------------------------------------------- runs
PROSODY_STATE=""    # a copy of Prosody's prepared data folder

run_one() {     # run_one SERVER REP
    local s=$1 rep=$2 port rates rc=0 out errf n_rates bound
    out="$RES/$s-run$rep.jsonl"
    errf="$RES/$s-run$rep.log"
    wait_quiet
    echo "{\"kind\":\"quiet\",\"label\":\"$s\",\"run\":$rep,\"other_cpu_pct\":$QUIET_BUSY}" > "$RES/$s-run$rep.quiet"
    if [ "$s" = prosody ]; then
        rm -rf "$PROSODY_DIR/data" && cp -a "$PROSODY_STATE" "$PROSODY_DIR/data"
        : > "$PROSODY_DIR/prosody.log"
        prosody_start || { log "prosody did not start"; return 1; }
        port=${PROSODY_PORTS#* }; [ "$TLS" = direct ] || port=${PROSODY_PORTS% *}
        rates=$PROSODY_RATES
    else
        rm -rf "$PETREL_DIR" && mkdir -p "$PETREL_DIR" && cp -a "$PETREL_STATE/var" "$PETREL_DIR/var"
        PETREL_PORTS=$(pick_ports "$PETREL_PORT_BASE") || return 1
        petrel_config "$PETREL_DIR"
        petrel_start "$PETREL_DIR" || { log "petreld did not start"; return 1; }
        port=${PETREL_PORTS#* }; [ "$TLS" = direct ] || port=${PETREL_PORTS% *}
        rates=$PETREL_RATES
    fi
    sleep 1
    n_rates=$(tr ',' '\n' <<<"$rates" | wc -l)
    bound=$((660 + QUIET_LOGINS * 15 + n_rates * (RETRIES + 1) * (DURATION + 3 * DRAIN + 2)))
    # the 1:1 pairs in a process of their own (same CPU): the storm process
    # reads a thousand presences per broadcast, and a message arriving then
    # would wait for it; this one measures the server's delay only. It runs
    # longer than the storm process may, and is stopped after it.
    local pp=""
    if [ "$PAIRS" -gt 0 ]; then
        timeout --signal=TERM --kill-after=15 $((bound + 60)) \
            taskset -c "$LOADGEN_CPU" "$GENERATOR" --json --host "$HOST" --port "$port" --tls "$TLS" \
            --domain "$DOMAIN" --password "$PASSWORD" --src-addrs "$SRC_ADDRS" --server-pid "$SERVER_PID" \
            --label "$s" --mode pairs --pairs "$PAIRS" --msg-rate "$MSG_RATE" --duration $((bound + 30)) \
            --lat-file "$RES/$s-run$rep.lat" >"$RES/$s-run$rep.pairs.jsonl" 2>"$RES/$s-run$rep.pairs.log" &
        pp=$!
        STARTED_PIDS+=("$pp")
        sleep 1
    fi
    log "$s, run $rep: petrel-presence --mode run --rates $rates"
    run_generator "$s" "$out" "$errf" "$port" "$bound" --mode run --online "$ONLINE" --pairs 0 \
        --changes "$CHANGES" --quiet-logins "$QUIET_LOGINS" --rates "$rates" \
        --duration "$DURATION" --drain "$DRAIN" --stop-on-saturation --max-other-pct "$DISTURB_PCT" \
        --retries "$RETRIES" --login-file "$RES/$s-run$rep.logins" || rc=$?
    sed 's/^/    /' "$errf" >&2
    if [ -n "$pp" ]; then
        stop_pid "$pp"
        forget_pid "$pp"
        sed 's/^/    /' "$RES/$s-run$rep.pairs.log" >&2
    fi
    if ! alive "$SERVER_PID"; then
        log "$s, run $rep: the server process ended during the run"
        echo "{\"kind\":\"note\",\"label\":\"$s\",\"run\":$rep,\"text\":\"the server process ended during the run\"}" >> "$out"
    fi
    [ "$rc" = 0 ] || echo "{\"kind\":\"note\",\"label\":\"$s\",\"run\":$rep,\"text\":\"generator exit $rc\"}" >> "$out"
    server_stop
    if [ "$s" = petreld ]; then
        # the server's own time per login (mod_roster's debug line, stamped in
        # UTC when the login was answered) and what turns those stamps into
        # the generator's clock (CLOCK_MONOTONIC)
        grep -F 'login answered in' "$PETREL_DIR/petreld.log" > "$RES/$s-run$rep.server-logins" || true
        python3 -c 'import time; print(time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(time.CLOCK_MONOTONIC))' \
            > "$RES/$s-run$rep.clock"
    fi
}

START_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
PETREL_REV=$(git -C "$PETREL_BIN_DIR" rev-parse --short HEAD 2>/dev/null) || PETREL_REV="not in git"
if [ "$PETREL_REV" != "not in git" ] && ! git -C "$PETREL_BIN_DIR" diff --quiet HEAD -- . 2>/dev/null; then
    PETREL_REV="$PETREL_REV with uncommitted changes"
fi
ACTIVE=""
for s in $SERVERS; do
    case "$s" in
        petreld)
            if [ ! -x "$PETREL_BIN_DIR/petreld" ] || [ ! -x "$PETREL_BIN_DIR/petrelctl" ]; then
                log "petreld: $PETREL_BIN_DIR/petreld or petrelctl is not built: skipped"; continue
            fi
            petrel_state || { log "petreld: no state: skipped"; continue; } ;;
        prosody)
            if ! command -v prosody >/dev/null || ! command -v lua5.4 >/dev/null; then
                log "prosody is not installed: skipped"; continue
            fi
            prosody_prepare || { log "prosody: cannot prepare its data: skipped"; continue; }
            if [ "$PROSODY_SETUP" = protocol ]; then
                prosody_protocol_setup || { log "prosody: the set-up failed: skipped"; continue; }
            fi
            PROSODY_STATE="$WORK/prosody-state"
            rm -rf "$PROSODY_STATE" && cp -a "$PROSODY_DIR/data" "$PROSODY_STATE" ;;
        *) log "unknown server $s"; continue ;;
    esac
    ACTIVE="$ACTIVE $s"
done
[ -n "$ACTIVE" ] || { log "no server to measure"; exit 1; }

{
    echo "date: $START_DATE; $(nproc) CPUs, $(free -g | awk '/^Mem:/ { print $2 }') GiB; server on CPU $SERVER_CPU, generator on CPU $LOADGEN_CPU; machine shared with other work"
    echo "prosody $(dpkg-query -W -f='${Version}' prosody 2>/dev/null || echo '?'); petreld from $PETREL_BIN_DIR, tree at $PETREL_REV"
    echo "$HEAVY heavy users x $CONTACTS contacts ('both'), $ONLINE online; $CHANGES status changes per login; $PAIRS pairs at $MSG_RATE messages/s; tls $TLS; $DURATION s per step; median of $REPEAT runs per server"
} > "$RES/meta.txt"

# the servers in turn, so that a busy spell on the machine does not fall on one only
for ((rep = 1; rep <= REPEAT; rep++)); do
    for s in $ACTIVE; do run_one "$s" "$rep" || log "$s, run $rep: not measured"; done
done

TABLE="$RES/table.md"
make_table "$RES" "$ACTIVE" > "$TABLE"
echo
cat "$TABLE"
if [ -n "$OUT" ]; then
    mkdir -p "$OUT"
    cp "$RES"/* "$OUT"/
    log "results copied to $OUT"
fi
