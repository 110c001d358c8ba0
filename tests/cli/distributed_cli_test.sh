#!/usr/bin/env bash
# bptt train over MPI (docs/distributed.md), through mpiexec -n 2:
#  - 2 ranks x B/2 streams give, after K steps, weights within 1e-6 relative of 1 process x B
#    streams, and the two ranks end with bit-identical weights;
#  - a 2-rank checkpoint resumes in 2 ranks bit for bit and in 1 process to 1e-6, and continues;
#  - killing one rank of a running job ends it, within a bounded time, with an error naming that
#    rank; latest.safetensors loads and --resume continues from it;
#  - stopping one rank (SIGSTOP) ends the job within --collective-timeout and a grace, with an
#    error naming that rank; latest.safetensors loads;
#  - without --out, rank 0 chooses the one run directory, even for ranks that start later;
#  - ranks given different options are refused at the start, naming the rank and the option;
#  - a stop asked on rank 0 alone (the Python module's progress callback) stops every rank at
#    the same step (with the Python module, when its directory is given);
#  - what cannot be split is refused.
# In a build without MPI (MPIEXEC = none), --distributed is refused with a one-line error.
#   tests/cli/distributed_cli_test.sh BPTT_BINARY MPIEXEC|none [PYTHON_MODULE_DIR]
set -uo pipefail
bptt="$(realpath "$1")"  # absolute: one test runs the ranks in another directory
mpiexec="$2"
python_dir="${3:-}"
program="$bptt"
here="$(dirname "${BASH_SOURCE[0]}")"
source "$here/testlib.sh"

if [ "$mpiexec" = none ]; then
  echo "x" > "$work/corpus.txt"
  expect_error "--distributed without MPI" "built without MPI" train --corpus "$work/corpus.txt" --distributed \
    --out "$work/x"
  finish
  exit
fi
compare=(python3 "$here/compare_checkpoints.py")

# CI runs as root; Open MPI refuses root unless told. --oversubscribe: ctest may run this test
# next to others on a machine of 2 cores.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# In the sanitized build, the ranks run without LeakSanitizer (AddressSanitizer and UBSan stay
# on): Open MPI's plugins keep allocations to the end and are unloaded before LeakSanitizer
# looks, so their reports cannot be told from bptt's. The runs of one process keep it.
mpi=(env "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" "$mpiexec" --oversubscribe --bind-to none)
mpi2=("${mpi[@]}" -n 2)

for i in $(seq 1 2000); do
  echo "line $i: the quick brown fox $((i * 7 % 13)) jumps over $((i % 5)) lazy dogs — ça va? ✓"
done > "$work/corpus.txt"
# Dropout between the two layers: its masks are drawn for the whole batch, each rank keeping its
# own columns, so they too must not depend on the ranks.
base=(--corpus "$work/corpus.txt" --layers 2 --hidden 32 --seq-len 16 --threads 1 --seed 7 --eval-every 4
      --log-every 2)
run=("${base[@]}" --dropout 0.2 --batch 4)

step_of() { "$bptt" inspect --json "$1" | sed -n 's/^  "step": *\([0-9]*\).*/\1/p' | head -1; }

# The pid of rank R of the job training into DIR: rank_pid R DIR.
rank_pid() {
  local found="" environ pid
  for environ in /proc/[0-9]*/environ; do
    pid="${environ#/proc/}"
    pid="${pid%/environ}"
    if { tr '\0' '\n' < "$environ" | grep -qx "OMPI_COMM_WORLD_RANK=$1" \
         && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "$2"; } 2> /dev/null; then
      found="$pid"
    fi
  done
  echo "$found"
}

# 1 process x 4 streams against 2 ranks x 2 streams, 6 steps.
"$bptt" train "${run[@]}" --max-steps 6 --out "$work/one" > /dev/null 2> "$work/one.err" \
  || fail "1 process: $(cat "$work/one.err")"
if "${mpi2[@]}" "$bptt" train "${run[@]}" --max-steps 6 --out "$work/two" > /dev/null 2> "$work/two.err"; then pass
else fail "2 ranks: $(cat "$work/two.err")"; fi
grep -q "distributed over 2 ranks on 1 machine" "$work/two.err" && pass || fail "2 ranks: no distributed line in: $(cat "$work/two.err")"
if "${compare[@]}" "$work/two/latest.safetensors" "$work/one/latest.safetensors" --rel 1e-6 > "$work/cmp" 2>&1; then pass; cat "$work/cmp"
else fail "2 ranks against 1 process: $(cat "$work/cmp")"; fi
# and the two runs are not merely alike by accident: 1 process of 2 streams trains another model
"$bptt" train "${base[@]}" --dropout 0.2 --batch 2 --max-steps 6 --out "$work/half" > /dev/null 2>&1 || fail "1 process of 2 streams"
if "${compare[@]}" "$work/half/latest.safetensors" "$work/one/latest.safetensors" --rel 1e-6 > /dev/null 2>&1; then
  fail "half the streams gave the same weights: the comparison cannot fail"
else pass; fi
# Each rank's FNV-1a of its final weights, gathered by rank 0 into summary.json.
ranks=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); f=s["weights_fnv1a_by_rank"]; print(len(f), len(set(f)))' "$work/two/summary.json" 2>&1)
[ "$ranks" = "2 1" ] && pass || fail "the ranks' weights differ (ranks, distinct fingerprints: $ranks)"
# Rank 0 alone writes: one metrics line per log, no second writer.
lines=$(wc -l < "$work/two/metrics.jsonl")
[ "$lines" -eq "$(wc -l < "$work/one/metrics.jsonl")" ] && pass || fail "metrics.jsonl has $lines lines"
grep -q '"allreduce_ms"' "$work/two/metrics.jsonl" && pass || fail "metrics.jsonl has no allreduce_ms"
# The validation is split between the ranks and summed: the single process's figure.
val1=$(tail -1 "$work/one/metrics.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["val_loss"])')
val2=$(tail -1 "$work/two/metrics.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["val_loss"])')
python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); sys.exit(abs(a - b) > 1e-5 * abs(b))" "$val1" "$val2" \
  && pass || fail "validation: 1 process $val1, 2 ranks $val2"
# The model samples in one process.
if "$bptt" sample "$work/two/latest.safetensors" --length 20 > /dev/null 2> "$work/err"; then pass; else fail "sample: $(cat "$work/err")"; fi

# Resume: 2 ranks to step 4, then on to step 8 in 2 ranks and in 1 process, against 8 steps
# without a break.
"${mpi2[@]}" "$bptt" train "${run[@]}" --max-steps 8 --out "$work/full" > /dev/null 2> "$work/err" \
  || fail "2 ranks, 8 steps: $(cat "$work/err")"
"${mpi2[@]}" "$bptt" train "${run[@]}" --max-steps 4 --out "$work/part" > /dev/null 2> "$work/err" \
  || fail "2 ranks, 4 steps: $(cat "$work/err")"
cp -r "$work/part" "$work/part1"
if "${mpi2[@]}" "$bptt" train --resume "$work/part" --max-steps 8 > /dev/null 2> "$work/err"; then pass
else fail "resume in 2 ranks: $(cat "$work/err")"; fi
if "${compare[@]}" "$work/part/latest.safetensors" "$work/full/latest.safetensors" --exact > "$work/cmp" 2>&1; then pass; cat "$work/cmp"
else fail "resumed in 2 ranks against no break: $(cat "$work/cmp")"; fi
if "$bptt" train --resume "$work/part1" --max-steps 8 > /dev/null 2> "$work/err"; then pass
else fail "resume in 1 process: $(cat "$work/err")"; fi
[ "$(step_of "$work/part1/latest.safetensors")" = 8 ] && pass || fail "resume in 1 process did not reach step 8"
if "${compare[@]}" "$work/part1/latest.safetensors" "$work/full/latest.safetensors" --rel 1e-6 > "$work/cmp" 2>&1; then pass; cat "$work/cmp"
else fail "resumed in 1 process against 2 ranks: $(cat "$work/cmp")"; fi
# and a single process's checkpoint goes on in 2 ranks
if "${mpi2[@]}" "$bptt" train --resume "$work/one" --max-steps 8 > /dev/null 2> "$work/err"; then pass
else fail "1-process checkpoint resumed in 2 ranks: $(cat "$work/err")"; fi

# A rank killed: the job ends, naming it, in bounded time; latest loads and resumes.
"${mpi2[@]}" "$bptt" train "${base[@]}" --batch 4 --max-steps 1000000 --checkpoint-every 1 --out "$work/kill" \
  > /dev/null 2> "$work/kill.err" &
job=$!
for _ in $(seq 1 300); do
  [ -s "$work/kill/metrics.jsonl" ] && [ -s "$work/kill/latest.safetensors" ] && break
  sleep 0.1
done
victim=$(rank_pid 1 "$work/kill")
if [ -z "$victim" ]; then
  fail "kill: rank 1 of the job not found"
  kill -TERM "$job" 2> /dev/null
else
  kill -KILL "$victim"
  ended=""
  for _ in $(seq 1 600); do  # 60 s
    kill -0 "$job" 2> /dev/null || { ended=yes; break; }
    sleep 0.1
  done
  if [ -z "$ended" ]; then
    fail "kill: the job still runs 60 s after rank 1 was killed"
    kill -KILL "$job" 2> /dev/null
  else pass; fi
fi
wait "$job"
status=$?
echo "killed rank 1; the job ended with status $status, saying:"
grep -i "rank 1" "$work/kill.err"
[ "$status" -ne 0 ] && pass || fail "kill: the job exited with status 0"
grep -qi "rank 1" "$work/kill.err" && pass || fail "kill: the error does not name rank 1: $(cat "$work/kill.err")"
if "$bptt" inspect "$work/kill/latest.safetensors" > /dev/null 2> "$work/err"; then pass; else fail "kill: latest does not load: $(cat "$work/err")"; fi
before=$(step_of "$work/kill/latest.safetensors")
if "${mpi2[@]}" "$bptt" train --resume "$work/kill" --max-steps $((before + 2)) > /dev/null 2> "$work/err"; then pass
else fail "kill: resume: $(cat "$work/err")"; fi
[ "$(step_of "$work/kill/latest.safetensors")" = $((before + 2)) ] && pass || fail "kill: resume did not continue"

# A rank that stops (SIGSTOP: alive, silent) ends the job within --collective-timeout and a
# grace of at most as long again, naming it; the last checkpoint loads.
"${mpi2[@]}" "$bptt" train "${base[@]}" --batch 4 --max-steps 1000000 --checkpoint-every 1 --collective-timeout 3 \
  --out "$work/hung" > /dev/null 2> "$work/hung.err" &
job=$!
for _ in $(seq 1 300); do
  [ -s "$work/hung/metrics.jsonl" ] && [ -s "$work/hung/latest.safetensors" ] && break
  sleep 0.1
done
victim=$(rank_pid 1 "$work/hung")
if [ -z "$victim" ]; then
  fail "hung: rank 1 of the job not found"
  kill -TERM "$job" 2> /dev/null
else
  kill -STOP "$victim"
  ended=""
  for _ in $(seq 1 300); do  # 30 s: 3 s of timeout, at most 3 s of grace, and the teardown
    kill -0 "$job" 2> /dev/null || { ended=yes; break; }
    sleep 0.1
  done
  if [ -z "$ended" ]; then
    fail "hung: the job still runs 30 s after rank 1 stopped"
    kill -KILL "$job" 2> /dev/null
  else pass; fi
  kill -CONT "$victim" 2> /dev/null
  kill -KILL "$victim" 2> /dev/null
fi
wait "$job"
status=$?
echo "stopped rank 1; the job ended with status $status, saying:"
grep "does not answer" "$work/hung.err"
[ "$status" -ne 0 ] && pass || fail "hung: the job exited with status 0"
grep -qE "MPI_[A-Za-z]+ did not complete within 3 s \(--collective-timeout\): rank 1 does not answer" "$work/hung.err" \
  && pass || fail "hung: the error does not name rank 1: $(cat "$work/hung.err")"
if "$bptt" inspect "$work/hung/latest.safetensors" > /dev/null 2> "$work/err"; then pass; else fail "hung: latest does not load: $(cat "$work/err")"; fi

# Without --out, rank 0 chooses the run directory for every rank, even one that starts a second
# and a half later (its clock would name another).
mkdir -p "$work/cwd"
if (cd "$work/cwd" && "${mpi[@]}" -n 1 "$bptt" train "${run[@]}" --max-steps 2 \
      : -n 1 sh -c 'sleep 1.5; exec "$0" "$@"' "$bptt" train "${run[@]}" --max-steps 2) > /dev/null 2> "$work/err"; then pass
else fail "without --out: $(cat "$work/err")"; fi
[ "$(ls "$work/cwd/models" 2> /dev/null | wc -l)" = 1 ] && pass || fail "without --out: run directories '$(ls "$work/cwd/models" 2>&1)'"

# Ranks given different options (a --seq-len the gradient sums would never notice) are refused
# before training, naming the rank and the option.
other=(--corpus "$work/corpus.txt" --layers 2 --hidden 32 --seq-len 8 --threads 1 --seed 7 --eval-every 4 --log-every 2
       --dropout 0.2 --batch 4)
"${mpi[@]}" -n 1 "$bptt" train "${run[@]}" --max-steps 2 --out "$work/differ" \
  : -n 1 "$bptt" train "${other[@]}" --max-steps 2 --out "$work/differ" > /dev/null 2> "$work/err" \
  && fail "different options: exit status 0" || pass
grep -qF -- "the ranks were given different options: rank 1 differs from rank 0: --seq-len is 8 on rank 1 and 16 on rank 0" \
  "$work/err" && pass || fail "different options: $(cat "$work/err")"
[ -e "$work/differ/latest.safetensors" ] && fail "different options: a checkpoint was written" || pass

# A stop asked on rank 0 alone (the Python module's progress callback returning False at step 3)
# stops both ranks after the same step.
if [ -n "$python_dir" ] && ls "$python_dir"/bptt*.so > /dev/null 2>&1; then
  cat > "$work/stop.py" << 'EOF'
import os, sys
import bptt
r = bptt.train(corpus=sys.argv[1], out=sys.argv[2], distributed=True, layers=1, hidden=16, seq_len=16, batch=4,
               threads=1, log_every=1, max_steps=1000, verbose=False, collective_timeout=20,
               progress=lambda m: m["step"] < 3)
print("rank", os.environ.get("OMPI_COMM_WORLD_RANK"), r["end"], r["steps"], flush=True)
EOF
  if PYTHONPATH="$python_dir" timeout 120 "${mpi2[@]}" python3 "$work/stop.py" "$work/corpus.txt" "$work/pystop" \
       > "$work/out" 2> "$work/err"; then pass; else fail "python stop: $(cat "$work/err")"; fi
  [ "$(sort "$work/out")" = "rank 0 interrupted 4
rank 1 interrupted 4" ] && pass || fail "python stop: the ranks ended '$(cat "$work/out")'"
else
  echo "python stop: skipped (no Python module given)"
fi

# Refused: fewer streams than ranks; a task (a run of one process).
"${mpi2[@]}" "$bptt" train "${base[@]}" --batch 1 --max-steps 1 --out "$work/b1" > /dev/null 2> "$work/err" \
  && fail "--batch 1 on 2 ranks: exit status 0" || pass
grep -qF "fewer streams than the 2 ranks" "$work/err" && pass || fail "--batch 1 on 2 ranks: $(cat "$work/err")"
"${mpi2[@]}" "$bptt" task adding --T 10 --max-steps 1 --out "$work/task" > /dev/null 2> "$work/err" \
  && fail "a task on 2 ranks: exit status 0" || pass
grep -qF "a task trains in one process" "$work/err" && pass || fail "a task on 2 ranks: $(cat "$work/err")"

finish
