#!/usr/bin/env bash
# bench/summarize.py on made-up runs: sampling ratios are bptt fp32 over PyTorch fp32 and bptt's
# fastest precision over PyTorch fp32, each taken per run and then the median; the training
# ratio likewise; the same against the oneDNN anchor; rows without the anchors have no ratios;
# a row with a reference row has its training speed over the reference's, per run then the
# median; the FMA peak fraction is over the best FMA peak on the row's threads.
#   tests/cli/bench_summary_test.sh PATH/TO/bench/summarize.py
set -uo pipefail
summarize="$1"
source "$(dirname "${BASH_SOURCE[0]}")/testlib.sh"

for t in 1 2; do
  echo '{"eigen_gflops": 100, "openblas_gflops": 200, "amx_bf16_gflops": 500}' > "$work/peak$t.0.json"
  echo '{"eigen_gflops": 120, "openblas_gflops": 150}' > "$work/peak$t.1.json"
done
# FMA peaks: 400 on 2 threads (the larger of start and end), 200 on 1 thread (only at the start).
echo '{"fma_gflops": 300}' > "$work/fma2.0.json"
echo '{"fma_gflops": 400}' > "$work/fma2.1.json"
echo '{"fma_gflops": 200}' > "$work/fma1.0.json"
# train_json CHARS_PER_S: bptt_bench train's keys.
train_json() {
  echo "{\"train_chars_per_s\": $1, \"gflops\": 60, \"peak_rss_mb\": 100, \"training_rss_mb\": 90, \"estimate_mb\": 80}"
}
sample_json() { echo "{\"sample_fp32_chars_per_s\": $1, \"sample_bf16_chars_per_s\": $2, \"sample_int8_chars_per_s\": $3}"; }
# Row "big": int8 fastest. Run 0: fp32 1000, int8 4000 against PyTorch 500; run 1: 1100 and 3000
# against 1000. fp32 ratios 2.0 and 1.1 (median 1.55), int8 ratios 8.0 and 3.0 (median 5.5).
train_json 10000 > "$work/big.0.train.json"
train_json 12000 > "$work/big.1.train.json"
echo '{"train_chars_per_s": 5000}' > "$work/big.0.torch.json"
echo '{"train_chars_per_s": 4000}' > "$work/big.1.torch.json"
sample_json 1000 2000 4000 > "$work/big.0.sample.json"
sample_json 1100 2100 3000 > "$work/big.1.sample.json"
echo '{"sample_chars_per_s": 500}' > "$work/big.0.torch_sample.json"
echo '{"sample_chars_per_s": 1000}' > "$work/big.1.torch_sample.json"
# oneDNN on "big": training 8000 and 6000 (ratios 1.25 and 2.0, median 1.625); sampling 500 and
# 1100 (fp32 ratios 2.0 and 1.0, median 1.5; int8 ratios 8.0 and 2.727, median 5.36).
echo '{"train_chars_per_s": 8000, "loss": 3.0, "impl": "onednn-2.6.3 fwd ref bwd ref"}' > "$work/big.0.onednn.json"
echo '{"train_chars_per_s": 6000, "loss": 2.0, "impl": "onednn-2.6.3 fwd ref bwd ref"}' > "$work/big.1.onednn.json"
echo '{"sample_chars_per_s": 500}' > "$work/big.0.onednn_sample.json"
echo '{"sample_chars_per_s": 1100}' > "$work/big.1.onednn_sample.json"
# bf16 training on "big" (where the CPU has bf16 products): 15000 and 18000 against PyTorch 5000 and 4000
# (ratios 3.0 and 4.5, median 3.75) and oneDNN 8000 and 6000 (1.875 and 3.0, median 2.4375).
echo '{"train_chars_per_s": 15000}' > "$work/big.0.train_bf16.json"
echo '{"train_chars_per_s": 18000}' > "$work/big.1.train_bf16.json"
# Row "small": fp32 fastest (9000 and 9600), against PyTorch 3000 and 3200: ratio 3.0 in both runs.
for r in 0 1; do
  train_json 50000 > "$work/small.$r.train.json"
  echo '{"train_chars_per_s": 25000}' > "$work/small.$r.torch.json"
done
sample_json 9000 5000 7000 > "$work/small.0.sample.json"
sample_json 9600 5000 7000 > "$work/small.1.sample.json"
echo '{"sample_chars_per_s": 3000}' > "$work/small.0.torch_sample.json"
echo '{"sample_chars_per_s": 3200}' > "$work/small.1.torch_sample.json"
# Row "alone": no anchor.
for r in 0 1; do
  train_json 7000 > "$work/alone.$r.train.json"
  sample_json 1000 2000 4000 > "$work/alone.$r.sample.json"
done
# Row "min": no anchor, timed against "big": 15000 and 30000 against 10000 and 12000 (ratios 1.5
# and 2.5, median 2.0).
train_json 15000 > "$work/min.0.train.json"
train_json 30000 > "$work/min.1.train.json"
for r in 0 1; do sample_json 1000 2000 4000 > "$work/min.$r.sample.json"; done

# Start-up (bench/startup.py's line) and the bf16 dot-product rate beside the FMA peak.
echo '{"length": 600, "runs": 5, "torch_threads": 1, "bptt_first_symbol_s": 0.05, "bptt_total_s": 0.1, "torch_first_symbol_s": 1.0, "torch_total_s": 2.5, "startup_ratio": 25.0}' > "$work/startup.json"
echo '{"fma_gflops": 200, "bf16_dot_gflops": 90}' > "$work/fma1.1.json"

if python3 "$summarize" "$work" 2 SkylakeX "big lstm 2 512 32 64 2 yes" "small lstm 2 128 50 50 1 yes" \
     "alone lstm 2 512 32 64 2 no" "min mingru 2 1240 32 64 2 no big" > "$work/out" 2> "$work/err"; then
  pass
else
  fail "summarize: $(cat "$work/err")"
fi
# field ROW KEY: the value of KEY in ROW's JSON line.
field() { grep "^{\"config\": \"$1\"" "$work/out" | jq -c ".$2"; }
expect() {
  local got
  got=$(field "$1" "$2")
  [ "$got" = "$3" ] && pass || fail "$1 $2: $got, expected $3"
}
expect big sample_ratio_fp32 1.55
expect big sample_ratio_int8 5.5
expect big sample_best_precision '"int8"'
expect big sample_ratio_best 5.5
expect big torch_sample_fp32_chars_per_s 750
expect big bptt_sample_fp32_chars_per_s 1050
expect big train_ratio 2.5
expect big openblas_coretype '"SkylakeX"'
expect small sample_ratio_fp32 3
expect small sample_best_precision '"fp32"'
expect small sample_ratio_best 3
expect alone sample_ratio_fp32 null
expect alone sample_ratio_best null
expect alone train_ratio null
expect big onednn_train_ratio 1.625
expect big onednn_train_chars_per_s 7000
expect big onednn_sample_ratio_fp32 1.5
expect big onednn_sample_ratio_best 5.36
expect big onednn_loss 2.5
expect big onednn_impl '"onednn-2.6.3 fwd ref bwd ref"'
expect big fma_peak_fraction 0.15
expect small fma_peak_fraction 0.3
expect small onednn_train_ratio null
expect alone onednn_sample_ratio_fp32 null
expect big train_bf16_ratio 3.75
expect big onednn_train_bf16_ratio 2.438
expect big bptt_train_bf16_chars_per_s 16500
expect small train_bf16_ratio null
expect min train_ratio_to_reference 2
expect min reference '"big"'
expect big train_ratio_to_reference null
grep -q '^min: training 2.00x the chars/s of big (median of per-run ratios)$' "$work/out" && pass ||
  fail "reference line: $(grep '^min:' "$work/out")"
expect startup startup_ratio 25
expect startup bptt_first_symbol_s 0.05
grep -q '^start-up, .*bptt 0.100 s (first symbol at 50 ms), PyTorch on 1 thread(s) 2.500 s .*: 25.0x$' "$work/out" && pass ||
  fail "start-up line: $(grep '^start-up' "$work/out")"
grep -q '^FMA peak (.*, 1 thread(s), .*): 200.0 GFLOP/s; AVX-512 BF16 dot products 90.0 GFLOP/s$' "$work/out" && pass ||
  fail "FMA line: $(grep '^FMA peak (.*1 thread' "$work/out")"
grep -q '^SGEMM peak (2048^3, 2 thread(s), .*): Eigen 120.0 GFLOP/s, OpenBLAS 200.0 GFLOP/s; bfloat16 on AMX 500.0 GFLOP/s$' "$work/out" &&
  pass || fail "SGEMM line: $(grep '^SGEMM peak (.*2 thread' "$work/out")"
# The table names both sampling ratios.
header=$(grep '^config ' "$work/out")
case "$header" in *"bf16/torch"*"bf16/dnnl"*"fp32 ratio"*"best ratio"*"fp32/dnnl"*"best/dnnl"*) pass ;; *) fail "table header: $header" ;; esac
grep -q '^big .* 1\.6 .* 5\.5 (int8)' "$work/out" && pass || fail "big row: $(grep '^big ' "$work/out")"

finish
