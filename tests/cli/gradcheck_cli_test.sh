#!/usr/bin/env bash
# bptt gradcheck from the command line: a fresh model passes with exit status 0, --json holds the
# documented keys, a threshold it cannot meet gives exit status 2, a checkpoint is checked with
# its own model, and every flag of a fresh model (architecture, initialisation, input symbols)
# beside a checkpoint is refused, as is --seq-len beside a task's checkpoint.
#   tests/cli/gradcheck_cli_test.sh BPTT_BINARY
set -uo pipefail
bptt="$1"
program="$bptt"
source "$(dirname "${BASH_SOURCE[0]}")/testlib.sh"

if "$bptt" gradcheck --cell gru --hidden 6 --layers 2 > "$work/out" 2> "$work/err"; then pass; else fail "fresh gru: $(cat "$work/err")"; fi
grep -q "overall max relative error" "$work/out" && pass || fail "no overall error: $(cat "$work/out")"
if "$bptt" gradcheck --cell lstm --hidden 5 --sample 4 --json > "$work/json" 2> "$work/err"; then pass; else fail "--json: $(cat "$work/err")"; fi
for key in max_rel_error backward_s fd_s_per_parameter parameters ratio; do
  grep -q "\"$key\"" "$work/json" && pass || fail "--json lacks $key"
done
"$bptt" gradcheck --cell rnn-tanh --hidden 4 --threshold 1e-30 > /dev/null 2> "$work/err"
status=$?
[ "$status" -eq 2 ] && pass || fail "an unmet threshold gave exit status $status"
grep -q "above --threshold" "$work/err" && pass || fail "no threshold message: $(cat "$work/err")"
printf 'abcabcabc\n%.0s' $(seq 1 300) > "$work/corpus.txt"
"$bptt" train --corpus "$work/corpus.txt" --hidden 8 --layers 1 --batch 2 --seq-len 8 --max-steps 2 --threads 1 --out "$work/run" > /dev/null 2>&1 || fail "training the checkpoint"
if "$bptt" gradcheck "$work/run/latest.safetensors" --sample 3 > "$work/out" 2> "$work/err"; then pass; else fail "checkpoint: $(cat "$work/err")"; fi
"$bptt" gradcheck "$work/run/latest.safetensors" --hidden 16 > /dev/null 2> "$work/err" && fail "--hidden beside a checkpoint was accepted" || pass
grep -q -- "--hidden describes a fresh model" "$work/err" && pass || fail "message: $(cat "$work/err")"
for flag in --layer-norm --residual "--init identity" "--forget-bias 2" "--symbols 9" "--embed 4"; do
  # shellcheck disable=SC2086
  expect_error "$flag beside a checkpoint" "${flag%% *} describes a fresh model; $work/run/latest.safetensors has its own" \
    gradcheck "$work/run/latest.safetensors" $flag
done
expect_error "too many threads" "--threads must be in [1, 1024], got 5000" gradcheck --threads 5000
# A check runs the model as evaluation does: training's regularisers are not its options.
for flag in "--dropout 0.2" "--input-dropout 0.2" "--output-dropout 0.2" --variational "--weight-drop 0.2" "--ar 1" "--tar 1"; do
  # shellcheck disable=SC2086
  expect_error "gradcheck $flag" "unrecognised option '${flag%% *}'" gradcheck $flag
done
"$bptt" task adding --T 20 --hidden 4 --max-steps 1 --test-size 8 --threads 1 --out "$work/task" > /dev/null 2>&1 \
  || fail "training the task checkpoint"
expect_error "--seq-len beside a task checkpoint" "--seq-len does not apply to $work/task/latest.safetensors" \
  gradcheck "$work/task/latest.safetensors" --seq-len 5
if "$bptt" gradcheck "$work/task/latest.safetensors" --sample 2 > "$work/out" 2> "$work/err"; then pass
else fail "task checkpoint: $(cat "$work/err")"; fi

finish
