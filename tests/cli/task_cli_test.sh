#!/usr/bin/env bash
# bptt task from the command line: --list, one-line errors for bad names and flags, a tiny run
# with its summary, --resume of a task run (bptt train --resume and bptt task --resume, to a new
# --max-sequences), a stopped --trials run resumed, bptt decay on the task model, and
# sample/eval refusing a model that is not a language model.
#   tests/cli/task_cli_test.sh BPTT_BINARY
set -uo pipefail
bptt="$1"
program="$bptt"
source "$(dirname "${BASH_SOURCE[0]}")/testlib.sh"

if "$bptt" task --list > "$work/list"; then pass; else fail "--list: exit status $?"; fi
for name in adding temporal-order temporal-order-3 adding-2ch copy; do
  if grep -q "^$name " "$work/list"; then pass; else fail "--list does not name $name"; fi
done

expect_error "unknown task" 'unknown task "addition"' task addition --out "$work/x"
expect_error "no name" "missing the task's NAME" task --out "$work/x"
expect_error "no out" "--out is required" task adding --T 20
expect_error "bad T" "--T must be at least 20" task adding --T 5 --out "$work/x"
expect_error "T of temporal order" "--T does not apply to temporal-order" task temporal-order --T 50 --out "$work/x"
expect_error "embed" "unrecognised option '--embed'" task copy --embed 4 --out "$work/x"
expect_error "corpus" "unrecognised option '--corpus'" task copy --corpus x.txt --out "$work/x"
expect_error "bad cell" "--cell 'lstn' is not one of" task copy --cell lstn --out "$work/x"
# The flags that follow the fraction of the run done need the run to have an end.
expect_error "prune without an end" "--prune follows the fraction of the run done" task adding --T 20 --max-sequences 0 --prune 0.5 --out "$work/x"
expect_error "anneal without an end" "--lr-anneal follows the fraction of the run done" task adding --T 20 --max-sequences 0 --lr-anneal 0.5 --out "$work/x"

small=(--hidden 8 --batch 4 --test-size 32 --threads 1)
if "$bptt" task adding --T 20 "${small[@]}" --max-steps 4 --eval-every 2 --out "$work/add" > "$work/summary" 2> "$work/err"; then pass; else fail "tiny run: $(cat "$work/err")"; fi
for key in task T cell seed solved train_sequences test_size test_wrong test_mse baseline; do
  if grep -q "\"$key\"" "$work/add/summary.json"; then pass; else fail "summary.json lacks $key"; fi
done
if grep -q '"train_sequences": 16' "$work/add/summary.json"; then pass; else fail "train_sequences is not 4 x 4"; fi
if "$bptt" train --resume "$work/add" --max-steps 6 > /dev/null 2> "$work/err"; then pass; else fail "resume a task run: $(cat "$work/err")"; fi
if grep -q '"train_sequences": 24' "$work/add/summary.json"; then pass; else fail "resumed run's summary: $(cat "$work/add/summary.json")"; fi
expect_error "resume with another T" "--T" train --resume "$work/add" --T 40
# bptt task --resume takes the task's own limits: a capped run goes on to a larger cap.
if "$bptt" task --resume "$work/add" --max-steps 0 --max-sequences 32 > /dev/null 2> "$work/err"; then pass; else fail "task --resume: $(cat "$work/err")"; fi
if grep -q '"train_sequences": 32' "$work/add/summary.json"; then pass; else fail "task --resume --max-sequences 32: $(cat "$work/add/summary.json")"; fi
expect_error "task --resume with another T" "--T cannot be changed on --resume" task --resume "$work/add" --T 40
expect_error "task --resume with a name" "a task NAME cannot be given with --resume" task adding --resume "$work/add"
expect_error "a second run into a task run" "holds a run already" task adding --T 20 "${small[@]}" --max-steps 1 --out "$work/add"
if "$bptt" decay --checkpoint "$work/add/latest.safetensors" --batch 4 --out "$work/decay" > /dev/null 2> "$work/err"; then pass; else fail "decay on a task model: $(cat "$work/err")"; fi
if [ -s "$work/decay/summary.json" ]; then pass; else fail "decay wrote no summary"; fi
expect_error "sample a task model" "sampling needs a language model" sample "$work/add/latest.safetensors"
echo "x" > "$work/text.txt"
expect_error "eval a task model" "trained on a task" eval "$work/add/latest.safetensors" "$work/text.txt"

if "$bptt" task copy --T 5 "${small[@]}" --max-steps 2 --trials 2 --out "$work/copy" > /dev/null 2> "$work/err"; then pass; else fail "trials: $(cat "$work/err")"; fi
if [ -f "$work/copy/seed-1/summary.json" ] && [ -f "$work/copy/seed-2/summary.json" ] && grep -q '"trials": 2' "$work/copy/summary.json"; then pass; else fail "trials summaries"; fi
expect_error "--trials with --resume" "--trials cannot be given with --resume" task --resume "$work/copy" --trials 3

# A --trials run stopped by SIGINT says how to resume it, and --resume continues the trials that
# did not finish (to the limit given with it).
"$bptt" task copy --T 5 "${small[@]}" --max-steps 1000000 --trials 2 --out "$work/stopped" > /dev/null 2> "$work/err" &
job=$!
for _ in $(seq 1 100); do
  [ -s "$work/stopped/seed-1/metrics.jsonl" ] && break
  sleep 0.1
done
kill -INT "$job"
wait "$job" && pass || fail "SIGINT during trials: exit status $?"
grep -qF "resume with: bptt task --resume $work/stopped" "$work/err" && pass || fail "SIGINT during trials: $(cat "$work/err")"
[ -e "$work/stopped/summary.json" ] && fail "a stopped trials run wrote its summary" || pass
if "$bptt" task --resume "$work/stopped" --max-steps 3 > /dev/null 2> "$work/err"; then pass; else fail "trials --resume: $(cat "$work/err")"; fi
if grep -q '"trials": 2' "$work/stopped/summary.json" 2> /dev/null && [ -f "$work/stopped/seed-2/summary.json" ]; then pass
else fail "resumed trials: no summary"; fi

finish
