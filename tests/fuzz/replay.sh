#!/bin/sh
# Replay the fuzz corpora through the standalone builds of the fuzz targets:
#   tests/fuzz/corpus/stream  fuzz_stream_replay  every input parses or fails
#                             cleanly, and round-trips through the serializer
#   tests/fuzz/corpus/sasl    fuzz_sasl_replay    every SASL exchange keeps the
#                             sasl.h contract (see tests/fuzz/fuzz_sasl.c)
# Runs under the sanitizers of the build. Each corpus must hold at least one
# file, and every file must pass.
top_builddir=${top_builddir:-.}
top_srcdir=${top_srcdir:-.}
passed=0; failed=0
for target in stream sasl; do
    bin="$top_builddir/tests/fuzz/fuzz_${target}_replay"
    corpus="$top_srcdir/tests/fuzz/corpus/$target"
    if [ ! -x "$bin" ]; then
        echo "not ok - missing $bin"; failed=$((failed + 1)); continue
    fi
    n=0
    for f in "$corpus"/*; do
        [ -f "$f" ] || continue
        n=$((n + 1))
        if "$bin" "$f" >/dev/null 2>&1; then passed=$((passed + 1)); else
            failed=$((failed + 1)); echo "not ok - $target/$(basename "$f")"; fi
    done
    if [ "$n" -eq 0 ]; then
        echo "not ok - $corpus is empty"; failed=$((failed + 1))
    else
        echo "$target: $n inputs replayed"
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
