#!/usr/bin/env bash
# bptt train from the command line: bad flags and bad data are one-line errors with a non-zero
# exit, found before the corpus is read; SIGINT finishes the step, saves latest and prints the
# resume command; SIGKILL at random moments never leaves an unreadable checkpoint, and --resume
# continues from it; a run directory is never destroyed (a second run is refused, a second
# process too, only stale temporaries of the run's own files go); nothing aborts.
#   tests/cli/train_cli_test.sh BPTT_BINARY
set -uo pipefail
bptt="$1"
program="$bptt"
source "$(dirname "${BASH_SOURCE[0]}")/testlib.sh"

# A corpus of ~60 KB of varied lines.
for i in $(seq 1 2000); do
  echo "line $i: the quick brown fox $((i * 7 % 13)) jumps over $((i % 5)) lazy dogs — ça va? ✓"
done > "$work/corpus.txt"
base=(--corpus "$work/corpus.txt" --layers 1 --seq-len 16 --threads 1)
step_of() { "$bptt" inspect --json "$1" 2> /dev/null | sed -n 's/^  "step": *\([0-9]*\).*/\1/p' | head -1; }
small=("${base[@]}" --hidden 32 --batch 4)

expect_error "negative hidden" "--hidden must be positive" train "${base[@]}" --batch 4 --hidden -1 --out "$work/x"
expect_error "zero batch" "--batch must be positive" train "${base[@]}" --hidden 32 --batch 0 --out "$work/x"
expect_error "unknown cell" "--cell 'transformer' is not one of" train "${small[@]}" --cell transformer --out "$work/x"
expect_error "layer norm of an Elman RNN" "--layer-norm applies to lstm, gru, not to rnn-tanh" train "${small[@]}" --cell rnn-tanh --layer-norm --out "$work/x"
expect_error "unknown optimizer" "--optimizer 'adamax' is not one of" train "${small[@]}" --optimizer adamax --out "$work/x"
expect_error "unknown flag" "unrecognised option '--hiden'" train "${small[@]}" --hiden 3 --out "$work/x"
expect_error "missing corpus" "$work/nope.txt" train --corpus "$work/nope.txt" --out "$work/x"
expect_error "not a number" "--hidden" train "${base[@]}" --batch 4 --hidden lots --out "$work/x"
expect_error "batch too large" "fewer than --batch x --seq-len + 1" train "${base[@]}" --hidden 32 --batch 100000 --out "$work/x"
expect_error "model too large" "MiB are available" train "${base[@]}" --batch 4 --hidden 200000 --out "$work/x"
expect_error "int8 training" "--precision must be fp32 or bf16 for training, got 'int8'" train "${small[@]}" --precision int8 --out "$work/x"
expect_error "bad average" "--average must be off, ema:DECAY with DECAY in (0, 1) or asgd:N with N >= 1, got 'ema:1'" train "${small[@]}" --average ema:1 --out "$work/x"
# The training regularisers: refused where they do not apply; a regularised run trains, bptt
# inspect shows its options, and evaluation and sampling run without them.
expect_error "input dropout of 1" "--input-dropout must be in [0, 1), got 1" train "${small[@]}" --input-dropout 1 --out "$work/x"
expect_error "negative output dropout" "--output-dropout must be in [0, 1), got -0.1" train "${small[@]}" --output-dropout -0.1 --out "$work/x"
expect_error "weight drop of a minGRU" "--weight-drop drops weights of the recurrent matrix W_hh, which mingru does not have" \
  train "${small[@]}" --cell mingru --weight-drop 0.2 --out "$work/x"
expect_error "variational without dropout" "--variational locks the dropout masks over time: it needs --dropout" \
  train "${small[@]}" --variational --out "$work/x"
expect_error "dropout between one layer" "--dropout drops units between stacked layers, and --layers 1 has none" \
  train "${small[@]}" --dropout 0.2 --out "$work/x"
expect_error "negative AR" "--ar must be zero or positive" train "${small[@]}" --ar -1 --out "$work/x"
expect_error "negative TAR" "--tar must be zero or positive" train "${small[@]}" --tar -2 --out "$work/x"
if "$bptt" train "${small[@]}" --cell gru --input-dropout 0.1 --output-dropout 0.2 --variational --weight-drop 0.3 \
     --ar 2 --tar 1 --max-steps 4 --eval-every 2 --out "$work/reg" > /dev/null 2> "$work/reg.err" &&
   "$bptt" inspect "$work/reg/latest.safetensors" |
     grep -F "regularise  input-dropout 0.1, output-dropout 0.2, variational, weight-drop 0.3, ar 2, tar 1" > /dev/null &&
   "$bptt" inspect --json "$work/reg/latest.safetensors" | grep '"weight_drop": 0.3' > /dev/null &&
   "$bptt" eval "$work/reg/latest.safetensors" "$work/corpus.txt" > /dev/null 2>> "$work/reg.err" &&
   "$bptt" sample "$work/reg/latest.safetensors" --length 20 > /dev/null 2>> "$work/reg.err"; then pass
else fail "a regularised run: $(cat "$work/reg.err"; "$bptt" inspect "$work/reg/latest.safetensors")"; fi
expect_error "resume adds weight drop" "--weight-drop cannot be changed on --resume" train --resume "$work/reg" --weight-drop 0.5
# --average: inspect names the averaged weights of best and the average kept beside latest's.
if "$bptt" train "${small[@]}" --average ema:0.9 --max-steps 6 --eval-every 3 --out "$work/avg" > /dev/null 2> "$work/avg.err" &&
   "$bptt" inspect "$work/avg/best.safetensors" | grep "weights     the average of the training weights (--average ema:0.9)" > /dev/null &&
   "$bptt" inspect "$work/avg/latest.safetensors" | grep "average     --average ema:0.9 over 6 steps, kept beside the weights" > /dev/null; then pass
else fail "--average ema:0.9: $(cat "$work/avg.err"; "$bptt" inspect "$work/avg/best.safetensors")"; fi
# --prune: bad values refused naming the flag; a pruned run ends with half the blocks of its
# W_hh (128x32: 64 blocks of 16x4) zero, which bptt inspect shows, and samples (int8: the
# block-sparse kernel) and evaluates.
expect_error "prune of 1" "--prune must be in [0, 1) (0 = off), got 1" train "${small[@]}" --prune 1 --out "$work/x"
expect_error "prune ramp backwards" "--prune-end must be in [--prune-start, 1]" train "${small[@]}" --prune 0.5 --prune-start 0.6 --prune-end 0.2 --out "$work/x"
if "$bptt" train "${small[@]}" --prune 0.5 --prune-start 0 --prune-end 0.5 --max-steps 6 --eval-every 3 --out "$work/pruned" > /dev/null 2> "$work/pruned.err" &&
   "$bptt" inspect "$work/pruned/best.safetensors" | grep -F "pruned      50% of the 16x4 blocks" > /dev/null &&
   "$bptt" inspect --json "$work/pruned/latest.safetensors" | grep '"block_sparsity": 0.5,' > /dev/null &&
   "$bptt" sample "$work/pruned/best.safetensors" --length 20 > /dev/null 2>> "$work/pruned.err" &&
   "$bptt" eval "$work/pruned/best.safetensors" "$work/corpus.txt" > /dev/null 2>> "$work/pruned.err"; then pass
else fail "--prune 0.5: $(cat "$work/pruned.err"; "$bptt" inspect "$work/pruned/best.safetensors")"; fi
# --precision bf16 trains where the CPU has AMX or AVX-512 BF16 (bptt --version says which) and is
# refused elsewhere, as on this CPU with the kernels capped below them (BPTT_MAX_ISA).
if ! "$bptt" --version | grep -q '^bf16 training: no'; then
  if "$bptt" train "${small[@]}" --precision bf16 --max-steps 3 --out "$work/bf16" > /dev/null 2> "$work/bf16.err" &&
     "$bptt" inspect --json "$work/bf16/latest.safetensors" | grep '"precision": *"bf16"' > /dev/null; then pass
  else fail "--precision bf16: $(cat "$work/bf16.err")"; fi
fi
BPTT_MAX_ISA=avx512 expect_error "bf16 without bf16 products" "--precision bf16 needs a CPU with AMX-BF16 or AVX-512 BF16" \
  train "${small[@]}" --precision bf16 --out "$work/x"
BPTT_MAX_ISA=sse9 expect_error "bad BPTT_MAX_ISA" "BPTT_MAX_ISA must be portable, avx2, avx512, avx512-bf16 or amx, got 'sse9'" \
  train "${small[@]}" --precision bf16 --out "$work/x"
expect_error "absurd threads" "--threads must be in [0, 1024]" train --corpus "$work/corpus.txt" --threads 100000 --out "$work/x"
# The model's flags are checked before the corpus is read: a bad one is named even when the
# corpus is missing, and nothing is created.
expect_error "model before corpus" "--hidden must be positive" train --corpus "$work/nope.txt" --hidden -1 --out "$work/early"
[ -e "$work/early" ] && fail "a refused run created its directory" || pass
expect_error "unknown command" "unknown command 'trian'" trian
for v in --version version; do
  if "$bptt" "$v" > "$work/version" && grep -q '^bptt [0-9]*\.[0-9]*\.[0-9]*$' "$work/version" && grep -q '^kernels: ' "$work/version"; then pass
  else fail "bptt $v: $(cat "$work/version")"; fi
done
expect_error "resume without checkpoint" "no checkpoint to resume from" train --resume "$work/empty"

# SIGINT: finish the step, save, print the resume command, exit 0.
"$bptt" train "${small[@]}" --out "$work/int" --max-steps 100000 --checkpoint-every 100000 > /dev/null 2> "$work/int.err" &
pid=$!
for _ in $(seq 1 100); do
  [ -s "$work/int/metrics.jsonl" ] && break
  sleep 0.1
done
kill -INT "$pid"
wait "$pid"
status=$?
if [ "$status" -ne 0 ]; then fail "SIGINT: exit status $status"; else pass; fi
if grep -qF "resume with: bptt train --resume $work/int" "$work/int.err"; then pass; else fail "SIGINT: no resume command in: $(cat "$work/int.err")"; fi
if "$bptt" inspect "$work/int/latest.safetensors" > /dev/null 2>&1; then pass; else fail "SIGINT: latest.safetensors does not load"; fi
step=$("$bptt" inspect --json "$work/int/latest.safetensors" | sed -n 's/^  "step": *\([0-9]*\).*/\1/p' | head -1)
if "$bptt" train --resume "$work/int" --max-steps $((step + 3)) > /dev/null 2> "$work/resume.err"; then pass; else fail "resume after SIGINT: $(cat "$work/resume.err")"; fi

# --resume: options that may change are taken, the others refused; nothing is ignored.
expect_error "resume changes the model" "--hidden cannot be changed on --resume" train --resume "$work/int" --hidden 64
expect_error "resume adds layer norm" "--layer-norm cannot be changed on --resume" train --resume "$work/int" --layer-norm
expect_error "resume changes the batch" "--batch cannot be changed on --resume" train --resume "$work/int" --batch 8
expect_error "resume with another out" "--out cannot be given with --resume" train --resume "$work/int" --out "$work/y"
step=$("$bptt" inspect --json "$work/int/latest.safetensors" | sed -n 's/^  "step": *\([0-9]*\).*/\1/p' | head -1)
if "$bptt" train --resume "$work/int" --lr 0.0005 --max-steps $((step + 1)) > /dev/null 2> "$work/lr.err"; then pass; else fail "resume --lr: $(cat "$work/lr.err")"; fi
if "$bptt" inspect --json "$work/int/latest.safetensors" | grep '"lr": 0.0005' > /dev/null; then pass; else fail "resume --lr 0.0005 was not taken"; fi

# Training curves: the trainer draws DIR/curves.svg at each validation; bptt plot draws runs.
[ -s "$work/int/curves.svg" ] && pass || fail "the run has no curves.svg"
if "$bptt" plot "$work/int" --out "$work/curves.svg" --no-png > /dev/null 2> "$work/err"; then pass; else fail "plot: $(cat "$work/err")"; fi
grep -q '<path class="series"' "$work/curves.svg" && pass || fail "plot drew no series"
expect_error "plot without runs" "missing RUN_DIR" plot
expect_error "plot a directory without metrics" "$work/empty/metrics.jsonl" plot "$work/empty"

# SIGKILL at random moments: latest always loads, and --resume continues from it.
"$bptt" train "${small[@]}" --out "$work/kill" --max-steps 3 --checkpoint-every 1 > /dev/null 2>&1 || fail "SIGKILL: first run"
for round in 1 2 3 4 5; do
  "$bptt" train --resume "$work/kill" --max-steps 100000 --checkpoint-every 1 > /dev/null 2>&1 &
  pid=$!
  sleep "0.$((RANDOM % 9 + 1))"
  kill -KILL "$pid" 2> /dev/null
  wait "$pid" 2> /dev/null
  if "$bptt" inspect "$work/kill/latest.safetensors" > /dev/null 2> "$work/kill.err"; then pass; else fail "SIGKILL round $round: latest does not load: $(cat "$work/kill.err")"; fi
  leftovers=$(find "$work/kill" -name '*.tmp*' | wc -l)
  [ "$leftovers" -le 1 ] || fail "SIGKILL round $round: $leftovers temporary files left"
done
before=$("$bptt" inspect --json "$work/kill/latest.safetensors" | sed -n 's/^  "step": *\([0-9]*\).*/\1/p' | head -1)
if "$bptt" train --resume "$work/kill" --max-steps $((before + 2)) > /dev/null 2> "$work/kill.err"; then pass; else fail "resume after SIGKILL: $(cat "$work/kill.err")"; fi
after=$("$bptt" inspect --json "$work/kill/latest.safetensors" | sed -n 's/^  "step": *\([0-9]*\).*/\1/p' | head -1)
[ "$after" = "$((before + 2))" ] && pass || fail "resume after SIGKILL: step $after, expected $((before + 2))"

# A directory walk skips empty and binary files, says so in one line and lists them in the run directory.
mkdir -p "$work/mixed"
cp "$work/corpus.txt" "$work/mixed/a.txt"
: > "$work/mixed/empty.txt"
printf 'ELF\0\1\2' > "$work/mixed/program"
if "$bptt" train --corpus "$work/mixed" --layers 1 --seq-len 16 --threads 1 --hidden 32 --batch 4 --max-steps 2 \
     --out "$work/mixed-run" > /dev/null 2> "$work/mixed.err"; then pass; else fail "walk with skipped files: $(cat "$work/mixed.err")"; fi
summary="skipped 2 files: 1 empty, 1 not text; list in $work/mixed-run/skipped-files.txt"
if [ "$(grep -c '^bptt train: skipped' "$work/mixed.err")" = 1 ] && grep -qxF "bptt train: $summary" "$work/mixed.err"; then pass
else fail "walk with skipped files: no line '$summary' in: $(cat "$work/mixed.err")"; fi
expected_list="$work/mixed/empty.txt: empty
$work/mixed/program: not text (NUL byte at byte 3)"
if [ "$(cat "$work/mixed-run/skipped-files.txt" 2>&1)" = "$expected_list" ]; then pass
else fail "skipped-files.txt: '$(cat "$work/mixed-run/skipped-files.txt" 2>&1)'"; fi

# A run directory is never destroyed. A second run into it is refused in one line naming
# --resume and --force, and leaves it as it was; --force replaces it and says what it removed.
"$bptt" train "${small[@]}" --max-steps 4 --log-every 1 --out "$work/r1" > /dev/null 2>&1 || fail "r1: first run"
before=$(cat "$work/r1/metrics.jsonl" "$work/r1/best.safetensors" | md5sum)
expect_error "a second run into a run directory" "$work/r1 holds a run already (give --resume $work/r1" train "${small[@]}" --max-steps 1 --out "$work/r1"
[ "$(cat "$work/r1/metrics.jsonl" "$work/r1/best.safetensors" | md5sum)" = "$before" ] && pass || fail "the refused run changed $work/r1"
if "$bptt" train "${small[@]}" --max-steps 1 --force --out "$work/r1" > /dev/null 2> "$work/err"; then pass; else fail "--force: $(cat "$work/err")"; fi
grep -qF "bptt train: --force: replaced the run in $work/r1: removed latest.safetensors (step 4), best.safetensors, metrics.jsonl (4 lines)" "$work/err" \
  && pass || fail "--force did not say what it replaced: $(cat "$work/err")"
[ "$(wc -l < "$work/r1/metrics.jsonl")" = 1 ] && pass || fail "--force: metrics.jsonl has $(wc -l < "$work/r1/metrics.jsonl") lines"

# While a run owns its directory, another process is refused, naming the owner's pid.
"$bptt" train "${small[@]}" --max-steps 100000 --checkpoint-every 100000 --out "$work/owned" > /dev/null 2>&1 &
owner=$!
for _ in $(seq 1 100); do
  [ -s "$work/owned/metrics.jsonl" ] && break
  sleep 0.1
done
expect_error "a second owner" "$work/owned is in use by another bptt run (pid $owner on " train --resume "$work/owned" --max-steps 3
expect_error "a second owner, forced" "is in use by another bptt run (pid $owner on " train "${small[@]}" --max-steps 3 --force --out "$work/owned"
kill -INT "$owner"
wait "$owner" && pass || fail "the owner did not end well after SIGINT"

# Only the stale temporaries of the run's own files are removed: not a user's file, not one of a
# writer that still runs.
mkdir -p "$work/tmps"
: > "$work/tmps/.notes.tmp1-2"
( exit 0 ) &
gone=$!
wait "$gone"
: > "$work/tmps/.latest.safetensors.tmp$gone-0"
: > "$work/tmps/.best.safetensors.tmp$$-0"  # this shell runs
"$bptt" train "${small[@]}" --max-steps 1 --out "$work/tmps" > /dev/null 2> "$work/err" || fail "temporaries: $(cat "$work/err")"
[ -e "$work/tmps/.notes.tmp1-2" ] && pass || fail "a user's file .notes.tmp1-2 was removed"
[ -e "$work/tmps/.best.safetensors.tmp$$-0" ] && pass || fail "the temporary of a live process was removed"
[ -e "$work/tmps/.latest.safetensors.tmp$gone-0" ] && fail "a stale temporary was left" || pass

# Nothing aborts. A path that cannot be a run directory is a one-line error before any training;
# a corpus whose name is not UTF-8 trains, checkpoints and resumes.
expect_error "out under a file" "/dev/null/x: cannot create the run directory" train "${small[@]}" --out /dev/null/x
latin1="$work/caf$(printf '\xe9').txt"
cp "$work/corpus.txt" "$latin1"
if "$bptt" train --corpus "$latin1" --layers 1 --seq-len 16 --threads 1 --hidden 32 --batch 4 --max-steps 2 \
     --checkpoint-every 1 --out "$work/latin1" > /dev/null 2> "$work/err"; then pass
else fail "a corpus named in Latin-1: $(cat "$work/err")"; fi
if "$bptt" train --resume "$work/latin1" --max-steps 3 > /dev/null 2> "$work/err"; then pass
else fail "resume on a corpus named in Latin-1: $(cat "$work/err")"; fi

# A plot is never worth a run: curves.svg that cannot be written is a warning, and the run ends
# with its checkpoint; so is a decay profile that cannot be drawn. A decay_train.csv that cannot
# be read back is refused before the resumed run's first step.
mkdir -p "$work/nocurves/curves.svg"
if "$bptt" train "${small[@]}" --max-steps 2 --eval-every 1 --checkpoint-every 1000 --out "$work/nocurves" \
     > /dev/null 2> "$work/err"; then pass; else fail "unwritable curves.svg: $(cat "$work/err")"; fi
grep -qF "bptt train: warning: $work/nocurves/curves.svg not drawn" "$work/err" && pass || fail "no warning: $(cat "$work/err")"
[ "$(step_of "$work/nocurves/latest.safetensors")" = 2 ] && pass || fail "unwritable curves.svg: no latest at step 2"
"$bptt" train "${small[@]}" --max-steps 2 --decay-every 1 --decay-steps 4 --decay-batch 1 --out "$work/decay" \
  > /dev/null 2>&1 || fail "decay run"
rm "$work/decay/heatmap.svg"
mkdir "$work/decay/heatmap.svg"
if "$bptt" train --resume "$work/decay" --max-steps 3 > /dev/null 2> "$work/err"; then pass; else fail "unwritable heatmap.svg: $(cat "$work/err")"; fi
grep -qF "warning: the gradient-decay profile of step 3 was not recorded" "$work/err" && pass || fail "no warning: $(cat "$work/err")"
[ "$(step_of "$work/decay/latest.safetensors")" = 3 ] && pass || fail "unwritable heatmap.svg: no latest at step 3"
echo "x,y,h,z,1,1" >> "$work/decay/decay_train.csv"
expect_error "malformed decay_train.csv" "$work/decay/decay_train.csv:" train --resume "$work/decay" --max-steps 4
[ "$(step_of "$work/decay/latest.safetensors")" = 3 ] && pass || fail "malformed decay_train.csv: latest moved"

# --memory-budget: refused beside --checkpoint-steps, unreadable, or below the least a chunk
# needs (the error says how much); a budget that keeps only some segment starts says its plan and
# trains the weights of the run with every step kept, byte for byte, resumed with another budget too.
compare="$(dirname "${BASH_SOURCE[0]}")/compare_checkpoints.py"
long=(--corpus "$work/corpus.txt" --layers 1 --hidden 64 --batch 4 --seq-len 512 --threads 1 --eval-every 100 --seed 3)
expect_error "budget and checkpoint steps" "give it or --checkpoint-steps, not both" train "${long[@]}" --memory-budget 64M --checkpoint-steps 8 --out "$work/x"
expect_error "unreadable budget" "--memory-budget must be a size such as 512M" train "${long[@]}" --memory-budget lots --out "$work/x"
expect_error "budget too small" "is less than this model needs to train a chunk of 512 steps: at least" train "${long[@]}" --memory-budget 1M --out "$work/x"
least=$(sed -n 's/.*at least \([0-9]*\) bytes.*/\1/p' "$work/err")
if [ -n "$least" ]; then
  "$bptt" train "${long[@]}" --max-steps 3 --out "$work/plain" > "$work/plain.log" 2>&1 || fail "a run without a budget: $(cat "$work/plain.log")"
  "$bptt" train "${long[@]}" --max-steps 3 --memory-budget $((least + 80000)) --out "$work/budget" > "$work/budget.log" 2>&1 ||
    fail "a run with a budget: $(cat "$work/budget.log")"
  grep -qE "memory-budget [0-9]+, chunks of 512 steps: segments of [0-9]+ steps?, at most [0-9]+ of their starts kept" "$work/budget.log" &&
    pass || fail "the budget's plan is not in: $(cat "$work/budget.log")"
  python3 "$compare" "$work/plain/latest.safetensors" "$work/budget/latest.safetensors" --exact > "$work/cmp" 2>&1 &&
    pass || fail "the budget changed the weights: $(cat "$work/cmp")"
  "$bptt" train --resume "$work/plain" --max-steps 5 > "$work/plain.log" 2>&1 || fail "resume without a budget: $(cat "$work/plain.log")"
  "$bptt" train --resume "$work/budget" --max-steps 5 --memory-budget $((least + 20000)) > "$work/budget.log" 2>&1 ||
    fail "resume with another budget: $(cat "$work/budget.log")"
  python3 "$compare" "$work/plain/latest.safetensors" "$work/budget/latest.safetensors" --exact > "$work/cmp" 2>&1 &&
    pass || fail "the resumed budget run's weights: $(cat "$work/cmp")"
else
  fail "budget too small: the error does not say the bytes needed: $(cat "$work/err")"
fi

finish
