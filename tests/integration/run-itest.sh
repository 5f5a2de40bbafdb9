#!/bin/sh
# run-itest.sh — runs the integration tests (tests/integration/itest) against
# the petreld and petrelctl of $top_builddir; automake's "make check" exports
# top_builddir and top_srcdir. Arguments are passed on (test name filters).
# The exit status is itest's: 0 all passed, 1 a test failed; 99 (a hard error
# for automake) when the program is missing; 124 when it hung for 300 s.
top_builddir=${top_builddir:-$(cd "$(dirname "$0")/../.." && pwd)}
export top_builddir
itest="$top_builddir/tests/integration/itest"
if [ ! -x "$itest" ]; then
    echo "run-itest.sh: $itest is missing; build it first (make check, or make tests/integration/itest)" >&2
    echo "0 passed, 1 failed"
    exit 99
fi
for prog in src/petreld src/petrelctl; do
    if [ ! -x "$top_builddir/$prog" ]; then
        echo "run-itest.sh: $top_builddir/$prog is missing; build it first" >&2
        echo "0 passed, 1 failed"
        exit 99
    fi
done
timeout -k 10 300 "$itest" "$@"
rc=$?
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "run-itest.sh: $itest did not finish within 300 s: killed" >&2
    echo "0 passed, 1 failed"
fi
exit "$rc"
