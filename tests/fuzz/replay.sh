#!/bin/sh
# Replay the stream-parser fuzz corpus (tests/fuzz/corpus/stream) through the
# standalone build of the fuzz target: every input must parse or fail cleanly,
# and round-trip through the serializer. Runs under the sanitizers of the build.
top_builddir=${top_builddir:-.}
top_srcdir=${top_srcdir:-.}
bin="$top_builddir/tests/fuzz/fuzz_stream_replay"
corpus="$top_srcdir/tests/fuzz/corpus/stream"
[ -x "$bin" ] || { echo "missing $bin"; echo "0 passed, 1 failed"; exit 1; }
passed=0; failed=0
for f in "$corpus"/*; do
    [ -f "$f" ] || continue
    if "$bin" "$f" >/dev/null 2>&1; then passed=$((passed + 1)); else
        failed=$((failed + 1)); echo "not ok - $(basename "$f")"; fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
