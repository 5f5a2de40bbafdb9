#!/usr/bin/env python3
"""Minimize tests/fuzz/corpus/sasl after a fuzzing run, so that it stays small.

    tests/fuzz/minimize-sasl-corpus.py BUILD/tests/fuzz/fuzz_sasl GROWN_DIR...
    tests/fuzz/minimize-sasl-corpus.py --unpack DIR

BUILD is a libFuzzer build (CC=clang ./configure --enable-fuzzers). The
hand-written seeds (every file not named packed-NN: the name says what it
does) are always kept. Everything else (the packed files of the corpus and
the grown corpora) is merged into them with libFuzzer's -merge=1 on edge
coverage (-use_counters=0), and the inputs the merge keeps are packed
PER_FILE to a file (packed-NN), separated by FD FD FD, which the replay
program (fuzz_sasl_replay, in make check) reads as separate inputs. A plain
-merge=1 keeps one file per distinct rejection point of the parser, over a
hundred tiny files; packed, the corpus stays a few dozen small files.

--unpack writes the corpus to DIR one input per file, which is what a
libFuzzer run should be seeded with (libFuzzer itself does not split):
    tests/fuzz/minimize-sasl-corpus.py --unpack /tmp/sasl-seeds
    BUILD/tests/fuzz/fuzz_sasl -dict=tests/fuzz/sasl.dict /tmp/sasl-seeds
"""

import os
import shutil
import subprocess
import sys
import tempfile

SEP = b"\xfd\xfd\xfd"
PER_FILE = 8
HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus", "sasl")


def unpack(out):
    os.makedirs(out, exist_ok=True)
    n = 0
    for name in sorted(os.listdir(CORPUS)):
        with open(os.path.join(CORPUS, name), "rb") as f:
            data = f.read()
        parts = data.split(SEP) if name.startswith("packed-") else [data]
        for i, part in enumerate(parts):
            with open(os.path.join(out, "%s.%d" % (name, i)), "wb") as o:
                o.write(part)
            n += 1
    print("%d inputs written to %s" % (n, out))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--unpack":
        unpack(sys.argv[2])
        return
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        sys.exit(__doc__)
    fuzzer, grown = sys.argv[1], sys.argv[2:]
    with tempfile.TemporaryDirectory(prefix="petrel-sasl-corpus-") as tmp:
        seeds = os.path.join(tmp, "seeds")
        others = os.path.join(tmp, "others")
        os.mkdir(seeds)
        os.mkdir(others)
        n = 0
        for name in sorted(os.listdir(CORPUS)):
            path = os.path.join(CORPUS, name)
            if not name.startswith("packed-"):
                shutil.copy(path, seeds)
                continue
            with open(path, "rb") as f:
                for part in f.read().split(SEP):
                    n += 1
                    with open(os.path.join(others, "u%05d" % n), "wb") as o:
                        o.write(part)
        named = set(os.listdir(seeds))
        subprocess.run([fuzzer, "-merge=1", "-use_counters=0", seeds, others] + grown,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        found = sorted(x for x in os.listdir(seeds) if x not in named)
        for name in os.listdir(CORPUS):
            if name.startswith("packed-"):
                os.unlink(os.path.join(CORPUS, name))
        inputs = []
        for name in found:
            with open(os.path.join(seeds, name), "rb") as f:
                inputs.append(f.read())
        # an input ending in FD would run into the separator: it goes last in its file
        groups = [[]]
        for data in sorted(inputs, key=lambda d: d.endswith(b"\xfd")):
            if len(groups[-1]) == PER_FILE or (groups[-1] and groups[-1][-1].endswith(b"\xfd")):
                groups.append([])
            groups[-1].append(data)
        groups = [g for g in groups if g]
        for i, g in enumerate(groups):
            with open(os.path.join(CORPUS, "packed-%02d" % (i + 1)), "wb") as o:
                o.write(SEP.join(g))
        files = os.listdir(CORPUS)
        size = sum(os.path.getsize(os.path.join(CORPUS, x)) for x in files)
        print("%d seeds kept, %d inputs found by the merge in %d packed files: %d files, %d bytes"
              % (len(named), len(found), len(groups), len(files), size))


if __name__ == "__main__":
    main()
