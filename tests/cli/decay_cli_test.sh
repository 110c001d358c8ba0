#!/usr/bin/env bash
# bptt decay from the command line: --help lists every cell of the registry; fresh models and a
# checkpoint are measured into decay.csv, summary.json and decay.svg; every flag that would be
# ignored in the mode the others choose is refused with one line naming it, as are bad values.
#   tests/cli/decay_cli_test.sh BPTT_BINARY
set -uo pipefail
bptt="$1"
program="$bptt"
source "$(dirname "${BASH_SOURCE[0]}")/testlib.sh"

# The cells of --cell's help are the registry's (the completion's list comes from it too).
cells=$("$bptt" completion bash | sed -n "/prev\" = --cell/,/compgen/p" | grep -o "compgen -W '[^']*'" | sed "s/compgen -W '//; s/'$//")
[ -n "$cells" ] && pass || fail "no cells in the completion"
"$bptt" decay --help > "$work/help" || fail "bptt decay --help"
listed=$(tr -s ' \n' ' ' < "$work/help")
for cell in $cells; do
  [[ "$listed" == *"$cell"* ]] && pass || fail "bptt decay --help does not list the cell $cell"
done

for i in $(seq 1 100); do echo "the quick brown fox jumps over the lazy dog $((i % 7))"; done > "$work/corpus.txt"
"$bptt" train --corpus "$work/corpus.txt" --hidden 8 --layers 1 --batch 2 --seq-len 8 --max-steps 2 --threads 1 \
  --out "$work/run" > /dev/null 2>&1 || fail "training the checkpoint"
ck="$work/run/latest.safetensors"

if "$bptt" decay --cell rnn-tanh,gru --hidden 6 --layers 1 --steps 20 --batch 3 --jacobian-lags 3 \
     --checkpoint "$ck" --out "$work/decay" > "$work/stdout" 2> "$work/err"; then pass
else fail "decay: $(cat "$work/err")"; fi
for file in decay.csv summary.json decay.svg; do [ -s "$work/decay/$file" ] && pass || fail "no $file"; done
grep -q "^run/latest " "$work/stdout" && pass || fail "the checkpoint is not in the table: $(cat "$work/stdout")"

expect_error "no models" "give --cell or --checkpoint (or both)" decay --out "$work/x"
expect_error "no --out" "--out DIR is required" decay --cell lstm
expect_error "fresh model's flag beside a checkpoint" "--hidden describes fresh models (--cell); a checkpoint has its own" \
  decay --checkpoint "$ck" --hidden 8 --out "$work/x"
expect_error "initialisation beside a checkpoint" "--init describes fresh models (--cell)" \
  decay --checkpoint "$ck" --init identity --out "$work/x"
expect_error "tokenizer without a corpus" "--unit applies to --corpus only" decay --cell lstm --unit word --out "$work/x"
expect_error "symbols with a corpus" "--symbols does not apply with --corpus" \
  decay --cell lstm --corpus "$work/corpus.txt" --symbols 9 --out "$work/x"
expect_error "power iterations without Jacobian lags" "--power-iterations does not apply with --jacobian-lags 0" \
  decay --cell lstm --jacobian-lags 0 --power-iterations 50 --out "$work/x"
expect_error "an unknown cell" "--cell 'lstn' is not one of" decay --cell lstm,lstn --out "$work/x"
expect_error "an unknown scheme" "--init 'ortho' is not one of" decay --cell lstm --init ortho --out "$work/x"
expect_error "too many threads" "--threads must be in [1, 1024], got 4096" decay --cell lstm --threads 4096 --out "$work/x"
expect_error "a corpus that is a directory" "$work: is a directory, not a text file" \
  decay --cell lstm --corpus "$work" --out "$work/x"
# A malformed decay_train.csv in a run directory stops a run that records decay with one line.
printf 'step,layer,quantity,lag,median,relative\n1,0,h,zero,1,1\n' > "$work/run/decay_train.csv"
expect_error "a malformed decay_train.csv" "$work/run/decay_train.csv:2: not a row of step,layer,quantity,lag,median,relative" \
  train --resume "$work/run" --max-steps 4 --decay-every 1

finish
