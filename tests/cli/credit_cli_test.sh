#!/usr/bin/env bash
# bptt credit from the command line: a fresh model's table with every algorithm it allows and the
# ones it does not named; --json with RTRL equal to BPTT; a trained checkpoint measured on windows
# of a text; the combinations an algorithm does not define refused with a one-line error, and
# RTRL's memory refused with what it would need; training with --credit rtrl on a stack, resumed.
#   tests/cli/credit_cli_test.sh BPTT_BINARY
set -uo pipefail
bptt="$1"
program="$bptt"
source "$(dirname "${BASH_SOURCE[0]}")/testlib.sh"
step_of() { "$bptt" inspect --json "$1" 2> /dev/null | sed -n 's/^  "step": *\([0-9]*\).*/\1/p' | head -1; }

if "$bptt" credit --cell lstm --hidden 6 --seq-len 8 --batch 2 > "$work/out" 2> "$work/err"; then pass
else fail "fresh lstm: $(cat "$work/err")"; fi
for name in bptt rtrl uoro "uoro x100" snap1 snap2 eprop "not defined: rflo"; do
  grep -q "^$name[ :]" "$work/out" && pass || fail "the table lacks $name: $(cat "$work/out")"
done
if "$bptt" credit --cell gru --hidden 5 --seq-len 6 --algorithms rtrl,rflo --json > "$work/json" 2> "$work/err"; then pass
else fail "--json: $(cat "$work/err")"; fi
python3 - "$work/json" <<'PY' && pass || fail "--json: $(cat "$work/json")"
import json, sys
j = json.load(open(sys.argv[1]))
names = [a["algorithm"] for a in j["algorithms"]]
assert names == ["bptt", "rtrl", "rflo"], names
rtrl = j["algorithms"][1]["tensors"]["layer 0"]
assert abs(rtrl["cosine"] - 1) < 1e-12 and rtrl["rel_error"] < 1e-10, rtrl
for key in ("seconds_per_step", "bytes", "tensors"):
    assert key in j["algorithms"][2], key
assert j["T"] == 6 and j["B"] == 1 and j["layer_parameters"] > 0
PY
if "$bptt" credit --cell rnn-tanh --hidden 4 --seq-len 6 --lags 3 --hidden-sizes 2,3 --svg "$work/credit.svg" --json \
  > "$work/json" 2> "$work/err"; then pass; else fail "--svg: $(cat "$work/err")"; fi
python3 - "$work/json" <<'PY' && pass || fail "--hidden-sizes --json: $(cat "$work/json")"
import json, sys
j = json.load(open(sys.argv[1]))
assert [(c["hidden_size"], c["algorithm"]) for c in j["cost"]][:3] == [(2, "bptt"), (2, "rtrl"), (2, "uoro")], j["cost"]
assert len(j["cost"]) == 10 and all(c["seconds_per_step"] > 0 and c["bytes"] > 0 for c in j["cost"])
assert len(j["algorithms"][1]["lag_cosine"]) == 4
PY
grep -q "<svg" "$work/credit.svg" && [ "$(grep -o 'class="series"' "$work/credit.svg" | wc -l)" -eq 20 ] && pass \
  || fail "the figure lacks its 20 lines: $(grep -o 'class="series"' "$work/credit.svg" | wc -l)"
printf 'abcabcabd\n%.0s' $(seq 1 300) > "$work/corpus.txt"
"$bptt" train --corpus "$work/corpus.txt" --cell rnn-tanh --hidden 8 --layers 1 --batch 2 --seq-len 8 --max-steps 2 \
  --threads 1 --out "$work/run" > /dev/null 2>&1 || fail "training the checkpoint"
if "$bptt" credit "$work/run/latest.safetensors" --text "$work/corpus.txt" --seq-len 10 > "$work/out" 2> "$work/err"; then pass
else fail "checkpoint: $(cat "$work/err")"; fi
grep -q "^snap1 " "$work/out" && pass || fail "checkpoint table: $(cat "$work/out")"
expect_error "--hidden beside a checkpoint" "--hidden describes a fresh model" credit "$work/run/latest.safetensors" --hidden 4
expect_error "--text without a checkpoint" "--text applies to a checkpoint's vocabulary" credit --text "$work/corpus.txt"
expect_error "two layers" "bptt credit measures the algorithms on one recurrent layer on its input" credit --layers 2 --algorithms rtrl
expect_error "two layers, uoro" "uoro is defined here for one recurrent layer (--layers 1), not 2" credit --layers 2 --algorithms uoro
expect_error "e-prop on a GRU" "eprop's eligibility traces follow a cell state" credit --cell gru --algorithms eprop
expect_error "--hidden-sizes beside a checkpoint" "--hidden-sizes describes a fresh model" credit "$work/run/latest.safetensors" --hidden-sizes 4
expect_error "a size that is not one" "--hidden-sizes must list positive sizes, got 'x'" credit --hidden-sizes 4,x
expect_error "an unknown algorithm" "--algorithms 'bp' is not one of bptt, rtrl, uoro, snap1, snap2, rflo, eprop" credit --algorithms bp
expect_error "RTRL that does not fit" "rtrl needs 800808 MiB for 64 streams (N = 1024 state entries x P = 1576960 parameters each)" credit --hidden 512 --symbols 256 --batch 64 --algorithms rtrl

# Training with --credit: RTRL on a stack under an embedding, cut and resumed; inspect names it.
"$bptt" train --corpus "$work/corpus.txt" --layers 2 --embed 3 --hidden 4 --batch 2 --seq-len 6 --credit rtrl \
  --max-steps 2 --threads 1 --out "$work/online" > /dev/null 2> "$work/err" || fail "--credit rtrl on a stack: $(cat "$work/err")"
if "$bptt" train --resume "$work/online" --max-steps 4 > "$work/out" 2> "$work/err" &&
   grep -q "resuming" "$work/out" "$work/err" && [ "$(step_of "$work/online/latest.safetensors")" = 4 ]; then pass
else fail "resuming --credit rtrl: $(cat "$work/err")"; fi
"$bptt" inspect "$work/online/latest.safetensors" | grep -q "credit      --credit rtrl, its carried state kept to resume" && pass \
  || fail "inspect: $("$bptt" inspect "$work/online/latest.safetensors")"
expect_error "an online algorithm with a regulariser" "--credit uoro trains without the regularisers of bptt: --zoneout applies to bptt" \
  train --corpus "$work/corpus.txt" --layers 1 --hidden 4 --batch 2 --seq-len 6 --credit uoro --zoneout 0.2 --out "$work/reg"

finish
