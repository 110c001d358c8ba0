#!/usr/bin/env bash
# bptt_bench's command line: train takes every model option of bptt train (its table) and reports
# the model it timed; a flag its mode does not use, an unknown mode or a bad value is refused
# with one line.
#   tests/cli/bench_cli_test.sh BPTT_BENCH_BINARY
set -uo pipefail
program="$1"
source "$(dirname "${BASH_SOURCE[0]}")/testlib.sh"

python3 -c "print('the quick brown fox jumps over the lazy dog. ' * 200)" > "$work/corpus.txt"
if "$program" train --corpus "$work/corpus.txt" --cell gru --hidden 16 --layers 2 --batch 4 --seq 8 --steps 2 \
  --warmup 1 --threads 1 --dropout 0.25 --variational --zoneout 0.1 --weight-drop 0.5 --ar 2 --residual \
  --work-dir "$work" > "$work/json" 2> "$work/err"; then pass; else fail "train: $(cat "$work/err")"; fi
python3 - "$work/json" <<'PY' && pass || fail "train's JSON: $(cat "$work/json")"
import json, sys
j = json.load(open(sys.argv[1]))
m = j["model"]
assert (j["cell"], j["hidden"], j["layers"]) == ("gru", 16, 2), j
assert (m["cell"], m["hidden_size"], m["layers"]) == ("gru", 16, 2), m
assert (m["dropout"], m["variational"], m["zoneout"], m["weight_drop"], m["ar"], m["residual"]) == \
    (0.25, True, 0.1, 0.5, 2.0, True), m
assert m["tar"] == 0 and m["zoneout_cell"] == 0 and m["input_dropout"] == 0, m
assert j["train_chars_per_s"] > 0 and j["steps"] == 2 and j["batch"] == 4 and j["seq"] == 8, j
PY
expect_error "a regulariser outside train" "--dropout does not apply to bptt_bench peak" peak --size 64 --dropout 0.5
expect_error "--corpus to peak" "--corpus does not apply to bptt_bench peak" peak --size 64 --corpus "$work/corpus.txt"
expect_error "--threads to sample" "--threads does not apply to bptt_bench sample" sample --corpus "$work/corpus.txt" --threads 2
expect_error "--layers to recurrent" "--layers does not apply to bptt_bench recurrent" recurrent --layers 3
expect_error "unknown mode" "MODE must be train, sample, peak, fma or recurrent, got 'trian'" trian
expect_error "no mode" "MODE must be train, sample, peak, fma or recurrent, got ''" --size 64
expect_error "bad value" "--dropout must be" train --corpus "$work/corpus.txt" --dropout lots
expect_error "unknown cell" "--cell" train --corpus "$work/corpus.txt" --cell lstn
expect_error "--threads 0" "--threads must be in [1, 1024]" peak --threads 0
# --help lists the model's options beside the benchmark's.
if "$program" --help > "$work/help" 2>&1; then pass; else fail "--help: $(cat "$work/help")"; fi
for flag in --zoneout-cell --layer-norm --checkpoint-steps --sample-threads; do
  grep -q -- "$flag" "$work/help" && pass || fail "--help lacks $flag"
done
finish
