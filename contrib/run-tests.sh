#!/bin/sh
# run-tests.sh — the README's second command: install, build (with
# AddressSanitizer and UndefinedBehaviorSanitizer), run every test program,
# and end with one line "N passed, M failed" counted over all of them.
# Exits non-zero on any failure.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
contrib/bootstrap.sh --test
[ -x configure ] || autoreconf -fi
build=${PETREL_BUILD_DIR:-$top/build-tests}
mkdir -p "$build"
cd "$build"
[ -f Makefile ] || "$top/configure" --enable-sanitizers -q
make -j"$(nproc)" >/dev/null
make -j"$(nproc)" check-programs-only >/dev/null
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export top_builddir="$build" top_srcdir="$top"

passed=0; failed=0; bad_programs=""
mkdir -p "$build/test-logs"
for t in $(make -s print-tests); do
    name=$(echo "$t" | tr '/' '_')
    log="$build/test-logs/$name.log"
    case "$t" in
        /*) path="$t" ;;
        *.sh|*.py) path="$top/$t" ;;
        *) path="$build/$t" ;;
    esac
    start=$(date +%s)
    if timeout 900 "$path" >"$log" 2>&1; then rc=0; else rc=$?; fi
    secs=$(( $(date +%s) - start ))
    # counts: cmocka's summary, or our own "N passed, M failed"
    p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
    f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1 || true)
    if [ -n "$line" ]; then
        p=$((p + $(echo "$line" | awk '{print $1}')))
        f=$((f + $(echo "$line" | awk '{print $3}')))
    fi
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ] && [ "$f" -eq 0 ]; then
        f=1     # crashed, leaked or failed without counting: one failure
    fi
    if [ "$rc" -eq 77 ]; then
        echo "SKIP $t (${secs}s)"
    elif [ "$rc" -eq 0 ] && [ "$f" -eq 0 ]; then
        echo "PASS $t: $p passed (${secs}s)"
    else
        echo "FAIL $t: $p passed, $f failed, exit $rc (${secs}s); log: $log"
        tail -n 30 "$log" | sed 's/^/    /'
        bad_programs="$bad_programs $t"
    fi
    passed=$((passed + p)); failed=$((failed + f))
done
echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ -z "$bad_programs" ]
