#!/usr/bin/env bash
# bptt train --data, eval, predict and forecast from the command line on small CSV files the test
# writes (and an .npz where Debian's NumPy is installed): one-line errors for malformed files and
# flags that do not apply, a classifier of each CSV layout trained, scored and used, a resumed run
# that ends with the weights of an uninterrupted one, a forecast, and, with MPI, two ranks that
# train the weights of one process.
#   tests/cli/sequences_cli_test.sh BPTT_BINARY [MPIEXEC|none]
set -uo pipefail
bptt="$1"
mpiexec="${2:-none}"
program="$bptt"
source "$(dirname "${BASH_SOURCE[0]}")/testlib.sh"
compare="$(dirname "${BASH_SOURCE[0]}")/compare_checkpoints.py"

# Wide CSV: 8 steps, the label (the sign of the steps' sum) last; awk's srand makes it repeatable.
awk 'BEGIN { srand(3); print "x0,x1,x2,x3,x4,x5,x6,x7,label";
  for (n = 0; n < 400; n++) { s = 0; line = "";
    for (t = 0; t < 8; t++) { v = rand() * 2 - 1; s += v; line = line sprintf("%.4f,", v + 5) }
    print line (s > 0 ? "up" : "down") } }' > "$work/wide.csv"
head -n 101 "$work/wide.csv" > "$work/wide-test.csv"
# Long CSV: one step per row, sequences of 3..7 steps of 2 features, a class per sequence.
awk 'BEGIN { srand(4); print "id,a,b,y";
  for (n = 0; n < 300; n++) { L = 3 + int(rand() * 5); s = 0; for (t = 0; t < L; t++) { a[t] = rand() * 2 - 1; s += a[t] }
    for (t = 0; t < L; t++) printf "s%d,%.4f,%.4f,%d\n", n, a[t], rand(), (s > 0) } }' > "$work/long.csv"
# A series: a noisy season of 12.
awk 'BEGIN { srand(5); print "value"; for (t = 0; t < 300; t++) printf "%.4f\n", 10 + 3 * sin(6.2831853 * t / 12) + rand() * 0.2 }' > "$work/series.csv"

small=(--hidden 16 --layers 1 --batch 16 --lr 0.01 --threads 1 --eval-every 40 --log-every 40)

# Malformed files and flags that do not apply: one line, naming the file and what is wrong.
printf 'a,b,label\n1,2,0\n3,4\n' > "$work/ragged.csv"
expect_error "ragged rows" "ragged.csv: line 3 has 2 fields, the table 3 (ragged rows)" train --data "$work/ragged.csv" --out "$work/x"
printf 'a,b,label\n1,nan,0\n3,4,1\n' > "$work/nan.csv"
expect_error "NaN" "nan.csv: line 2, column 'b': NaN is not a finite number" train --data "$work/nan.csv" --out "$work/x"
printf 'a,b,label\n1,2,0\n3,4,7\n' > "$work/range.csv"
expect_error "label out of range" "range.csv: label 7 of sequence 1 is not below --classes 2" train --data "$work/range.csv" --classes 2 --out "$work/x"
expect_error "no such file" "nothing.npz: no such file" train --data "$work/nothing.npz" --out "$work/x"
expect_error "unknown format" "unknown data format" train --data "$work/wide.dat" --out "$work/x"
expect_error "corpus flag" "--unit applies to a text corpus (--corpus), not to sequences (--data)" train --data "$work/wide.csv" --unit word --out "$work/x"
expect_error "sequence flag" "--head applies to sequences of your own (--data), not to a corpus" train --corpus "$work/wide.csv" --head regress --out "$work/x"
expect_error "seq-len" "--seq-len applies to --head forecast" train --data "$work/wide.csv" --seq-len 5 --out "$work/x"
expect_error "both" "--corpus cannot be given with --data: a run trains on a corpus or on sequences, not both" train --data "$work/wide.csv" --corpus "$work/wide.csv" --out "$work/x"
expect_error "horizon" "--horizon applies to --head forecast" train --data "$work/wide.csv" --horizon 3 --out "$work/x"
expect_error "pool of a label head" "--pool applies to --head classify and regress, not label" train --data "$work/wide.csv" --head label --pool mean --out "$work/x"
expect_error "huber-delta" "--huber-delta applies to --loss huber" train --data "$work/wide.csv" --head regress --huber-delta 2 --out "$work/x"
expect_error "label head in the wide layout" "--head label needs a label at every step" train --data "$work/wide.csv" --head label --out "$work/x"
expect_error "bad head" "--head 'sort' is not one of classify, label, regress, forecast" train --data "$work/wide.csv" --head sort --out "$work/x"
expect_error "short series" "fewer than --batch 16" train --data "$work/series.csv" --head forecast --seq-len 290 "${small[@]}" --out "$work/x"

# A classifier of the wide layout: trained, scored, used.
if "$bptt" train --data "$work/wide.csv" "${small[@]}" --max-steps 200 --val-frac 0.2 --test-data "$work/wide-test.csv" \
    --out "$work/wide" > /dev/null 2> "$work/err"; then pass; else fail "wide: $(cat "$work/err")"; fi
grep -q "validation accuracy" "$work/err" && pass || fail "train does not report the validation accuracy: $(cat "$work/err")"
for key in '"validation"' '"test"' '"accuracy"' '"confusion"' '"per_class_recall"' '"class_names"'; do
  grep -q "$key" "$work/wide/summary.json" && pass || fail "summary.json lacks $key"
done
if "$bptt" eval "$work/wide/best.safetensors" "$work/wide-test.csv" --json > "$work/eval.json" 2> "$work/err"; then pass; else fail "eval: $(cat "$work/err")"; fi
accuracy=$(sed 's/.*"accuracy":\([0-9.e-]*\).*/\1/' "$work/eval.json")
awk -v a="$accuracy" 'BEGIN { exit !(a > 0.85) }' && pass || fail "eval accuracy $accuracy is not above 0.85"
"$bptt" eval "$work/wide/best.safetensors" "$work/wide-test.csv" > "$work/eval.txt" 2>&1
grep -q "confusion matrix" "$work/eval.txt" && grep -q "down" "$work/eval.txt" && pass || fail "eval text: $(cat "$work/eval.txt")"
if "$bptt" predict "$work/wide/best.safetensors" "$work/wide-test.csv" > "$work/pred.csv" 2> "$work/err"; then pass; else fail "predict: $(cat "$work/err")"; fi
[ "$(head -n 1 "$work/pred.csv")" = "class" ] && [ "$(wc -l < "$work/pred.csv")" -eq 101 ] && pass || fail "predict CSV: $(head -3 "$work/pred.csv")"
grep -qxE "up|down" <(sed -n 2p "$work/pred.csv") && pass || fail "predictions are not the class names"
# The file without its label column (a header says so; --no-labels for one without).
cut -d, -f1-8 "$work/wide-test.csv" > "$work/unlabelled.csv"
"$bptt" predict "$work/wide/best.safetensors" "$work/unlabelled.csv" > "$work/pred2.csv" 2> "$work/err"
cmp -s "$work/pred.csv" "$work/pred2.csv" && pass || fail "predictions without the label column differ: $(cat "$work/err")"
"$bptt" predict "$work/wide/best.safetensors" "$work/wide-test.csv" --probabilities --out "$work/p.csv" 2> "$work/err"
[ "$(head -n 1 "$work/p.csv")" = "p_down,p_up" ] && pass || fail "probabilities CSV: $(head -2 "$work/p.csv") $(cat "$work/err")"
expect_error "predict --out bad" "--out $work/p.txt: name it .npy or .csv" predict "$work/wide/best.safetensors" "$work/wide-test.csv" --out "$work/p.txt"
expect_error "no checkpoint" "no.safetensors: cannot open" predict "$work/no.safetensors" "$work/wide-test.csv"
expect_error "forecast a classifier" "not forecast: bptt predict CHECKPOINT DATA" forecast "$work/wide/best.safetensors" "$work/series.csv" --horizon 3
expect_error "eval flag" "--held-out applies to a forecasting model" eval "$work/wide/best.safetensors" "$work/wide-test.csv" --held-out 3
expect_error "a language model's flag" "--precision applies to a language model; CHECKPOINT was trained on sequences" eval "$work/wide/best.safetensors" "$work/wide-test.csv" --precision fp32
printf 'x0,x1\n1,2\n' > "$work/narrow.csv"
expect_error "other columns" "is not a column of the table" predict "$work/wide/best.safetensors" "$work/narrow.csv" --no-labels

# The long layout, mean pooling; resumed runs end with the uninterrupted run's weights.
long=(--data "$work/long.csv" --id-column id --label-column y --pool mean "${small[@]}" --checkpoint-every 5)
"$bptt" train "${long[@]}" --max-steps 30 --out "$work/long" > /dev/null 2> "$work/err" && pass || fail "long: $(cat "$work/err")"
"$bptt" train "${long[@]}" --max-steps 17 --out "$work/long-half" > /dev/null 2> "$work/err" && pass || fail "long half: $(cat "$work/err")"
"$bptt" train --resume "$work/long-half" --max-steps 30 > /dev/null 2> "$work/err" && pass || fail "resume: $(cat "$work/err")"
python3 "$compare" "$work/long/latest.safetensors" "$work/long-half/latest.safetensors" --exact > "$work/cmp" 2>&1 && pass || fail "resumed weights differ: $(cat "$work/cmp")"
expect_error "resume with another pooling" "--pool cannot be changed on --resume" train --resume "$work/long-half" --pool last
cp "$work/long.csv" "$work/long-copy.csv"
echo "s999,0.5,0.5,1" >> "$work/long.csv"
expect_error "resume on other data" "is not the data this run was trained on" train --resume "$work/long-half" --max-steps 40

# A forecast: trained, scored against the seasonal-naive forecast, continued.
"$bptt" train --data "$work/series.csv" --head forecast --seq-len 24 --season 12 --val-frac 0.2 --horizon 2 "${small[@]}" \
  --max-steps 150 --out "$work/fc" > /dev/null 2> "$work/err" && pass || fail "forecast training: $(cat "$work/err")"
"$bptt" eval "$work/fc/best.safetensors" "$work/series.csv" --json > "$work/fc.json" 2> "$work/err" && pass || fail "eval forecast: $(cat "$work/err")"
for key in mse mae mase naive_mse naive_mae naive_mase held_out; do
  grep -q "\"$key\"" "$work/fc.json" && pass || fail "forecast eval lacks $key: $(cat "$work/fc.json")"
done
grep -q '"held_out":60' "$work/fc.json" && pass || fail "the held-out part is not the run's --val-frac: $(cat "$work/fc.json")"
"$bptt" forecast "$work/fc/best.safetensors" "$work/series.csv" --horizon 5 > "$work/f.csv" 2> "$work/err" && pass || fail "forecast: $(cat "$work/err")"
[ "$(head -n 1 "$work/f.csv")" = "step,value" ] && [ "$(sed -n 2p "$work/f.csv" | cut -d, -f1)" = "300" ] && [ "$(wc -l < "$work/f.csv")" -eq 6 ] && pass || fail "forecast CSV: $(cat "$work/f.csv")"
expect_error "forecast without a horizon" "--horizon H is required" forecast "$work/fc/best.safetensors" "$work/series.csv"
expect_error "predict with a forecaster" "a forecasting model: bptt forecast" predict "$work/fc/best.safetensors" "$work/series.csv"

# .npz (where NumPy is): a label head at every step, and a mismatched label count.
if /usr/bin/python3 -c "import numpy" 2> /dev/null; then
  /usr/bin/python3 - "$work" <<'EOF'
import sys, numpy as np
rng = np.random.default_rng(1)
x = rng.normal(size=(200, 6, 2)).astype(np.float32)
np.savez_compressed(f"{sys.argv[1]}/label.npz", x=x, y=(x[:, :, 0] > 0).astype(np.int64), lengths=rng.integers(2, 7, 200))
np.savez(f"{sys.argv[1]}/short.npz", x=x, y=np.zeros(199, np.int64))
EOF
  "$bptt" train --data "$work/label.npz" --head label "${small[@]}" --max-steps 60 --out "$work/label" > /dev/null 2> "$work/err" && pass || fail "label head: $(cat "$work/err")"
  "$bptt" predict "$work/label/best.safetensors" "$work/label.npz" --out "$work/l.npy" 2> "$work/err" && pass || fail "predict labels: $(cat "$work/err")"
  /usr/bin/python3 -c "import numpy as np, sys; a = np.load('$work/l.npy'); z = np.load('$work/label.npz'); sys.exit(not (a.shape == (200, 6) and (a[np.arange(6)[None] >= z['lengths'][:, None]] == -1).all()))" \
    && pass || fail "per-step predictions: shape or padding"
  expect_error "mismatched N" "member 'y': targets for 199 sequences, but the inputs" train --data "$work/short.npz" --out "$work/x"
fi

# Two ranks train the weights of one process (distributed.h), where MPI is built in.
if [ "$mpiexec" != "none" ]; then
  mpi=(--data "$work/long-copy.csv" --id-column id --label-column y "${small[@]}" --max-steps 12)
  "$bptt" train "${mpi[@]}" --out "$work/one" > /dev/null 2> "$work/err" && pass || fail "one process: $(cat "$work/err")"
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1  # CI runs as root
  env "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" "$mpiexec" --oversubscribe --bind-to none -n 2 \
    "$bptt" train "${mpi[@]}" --out "$work/two" > /dev/null 2> "$work/err" && pass || fail "two ranks: $(cat "$work/err")"
  python3 "$compare" "$work/one/latest.safetensors" "$work/two/latest.safetensors" --rel 1e-5 > "$work/cmp" 2>&1 && pass || fail "two ranks' weights: $(cat "$work/cmp")"
fi

finish
