#!/usr/bin/env bash
# The installed package as another project sees it: `cmake --install` of this build into a
# scratch prefix (what it installs), then examples/adding and examples/generate configured with
# only find_package(bptt 0.2 REQUIRED) against that prefix, built and run. A version the package
# does not provide is refused. The library is not built again: the examples compile their own
# sources only.
#   tests/cli/examples_test.sh SOURCE_DIR BUILD_DIR
set -uo pipefail
source_dir="$1"
build_dir="$2"
program=false
source "$(dirname "${BASH_SOURCE[0]}")/testlib.sh"

prefix="$work/prefix"
if cmake --install "$build_dir" --prefix "$prefix" > "$work/install.log" 2>&1; then pass; else
  fail "cmake --install: $(tail -5 "$work/install.log")"
  finish
  exit
fi

# What the package holds: the program, the library, the public headers (and no private ones),
# the CMake package, bash completion and (with help2man) the man pages.
for file in bin/bptt lib/libbptt.a include/bptt/trainer.h include/bptt/sampler.h include/bptt/task.h \
            lib/cmake/bptt/bpttConfig.cmake lib/cmake/bptt/bpttConfigVersion.cmake lib/cmake/bptt/bpttTargets.cmake \
            share/bash-completion/completions/bptt; do
  if [ -s "$prefix/$file" ]; then pass; else fail "not installed: $file"; fi
done
if grep -q "help2man" "$build_dir/CMakeCache.txt" && [ -x "$(grep '^BPTT_HELP2MAN:' "$build_dir/CMakeCache.txt" | cut -d= -f2)" ]; then
  for page in bptt bptt-train bptt-sample; do
    if [ -s "$prefix/share/man/man1/$page.1" ]; then pass; else fail "not installed: share/man/man1/$page.1"; fi
  done
fi
if grep -l '#include "[a-z_]*_internal.h"\|#include "kernels/\|#include "cells/' "$prefix"/include/bptt/*.h; then
  fail "installed headers include private headers (above)"
else pass; fi
if "$prefix/bin/bptt" --version > "$work/version" && grep -q "^bptt 0\.2" "$work/version"; then pass; else
  fail "installed bptt --version: $(cat "$work/version")"; fi

# configure_and_build NAME: examples/NAME against the prefix only (no source tree, no build tree).
configure_and_build() {
  local name="$1"
  if cmake -S "$source_dir/examples/$name" -B "$work/build-$name" -DCMAKE_PREFIX_PATH="$prefix" \
       -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON > "$work/$name.log" 2>&1 &&
     cmake --build "$work/build-$name" >> "$work/$name.log" 2>&1; then
    pass
  else
    fail "examples/$name does not build against the installed package: $(tail -20 "$work/$name.log")"
    return 1
  fi
}

# examples/adding: trains on the adding problem through the library; its summary is the run's.
if configure_and_build adding; then
  if "$work/build-adding/adding" "$work/add" 6 20 > "$work/add.json" 2> "$work/add.err"; then pass; else
    fail "adding: $(cat "$work/add.err")"; fi
  for key in '"task": "adding"' '"T": 20' test_mse baseline; do
    if grep -qF "$key" "$work/add.json"; then pass; else fail "adding's summary lacks $key: $(cat "$work/add.json")"; fi
  done
  if [ -s "$work/add/latest.safetensors" ]; then pass; else fail "adding wrote no checkpoint"; fi
  if "$work/build-adding/adding" "$work/add2" 6 5 > /dev/null 2> "$work/add2.err"; then fail "adding with T = 5 succeeded"; else
    if grep -q -- "--T must be at least" "$work/add2.err"; then pass; else fail "adding with T = 5: $(cat "$work/add2.err")"; fi
  fi
fi

# examples/generate: a tiny language model trained by the installed program, then text from it.
printf 'the cat sat on the mat.\nthe dog sat on the log.\n%.0s' {1..30} > "$work/corpus.txt"
if "$prefix/bin/bptt" train --corpus "$work/corpus.txt" --hidden 16 --seq-len 16 --batch 4 --max-steps 8 \
     --eval-every 4 --threads 1 --out "$work/lm" > /dev/null 2> "$work/train.err"; then pass; else
  fail "installed bptt train: $(cat "$work/train.err")"; fi
if configure_and_build generate; then
  if "$work/build-generate/generate" "$work/lm/latest.safetensors" "the " 40 > "$work/text" 2> "$work/generate.err"; then pass; else
    fail "generate: $(cat "$work/generate.err")"; fi
  if head -c 4 "$work/text" | grep -qx "the "; then pass; else fail "generated text does not start with the prime: $(cat "$work/text")"; fi
  if [ "$(wc -c < "$work/text")" -gt 20 ]; then pass; else fail "generated text is short: $(cat "$work/text")"; fi
  if "$work/build-generate/generate" "$work/missing.safetensors" > /dev/null 2> "$work/missing.err"; then
    fail "generate from a missing file succeeded"
  else pass; fi
fi

# find_package(bptt 0.3) is refused: the version file says 0.2.
mkdir -p "$work/newer"
cat > "$work/newer/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.25)
project(newer LANGUAGES CXX)
find_package(bptt 0.3 REQUIRED)
EOF
if cmake -S "$work/newer" -B "$work/build-newer" -DCMAKE_PREFIX_PATH="$prefix" > "$work/newer.log" 2>&1; then
  fail "find_package(bptt 0.3) accepted version 0.2"
elif grep -q "0.2" "$work/newer.log"; then pass; else fail "find_package(bptt 0.3): $(tail -5 "$work/newer.log")"; fi

finish
