#!/bin/sh
# Command-line checks of bptt sample, eval, inspect and tokenize.
#
#   sample_cli_test.sh BPTT [--end-to-end]
#
# Bad flags and missing files must exit non-zero with exactly one line on stderr,
# "bptt COMMAND: ...", naming the flag or file, and nothing on stdout. With --end-to-end a tiny
# model is trained with `bptt train` and sampled, evaluated, inspected and tokenized.
set -u
BPTT=$1
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bptt_sample_cli.XXXXXX") || exit 1
trap 'rm -rf "$WORK"' EXIT INT TERM
FAILED=0

fail() {
  echo "FAIL: $*" >&2
  FAILED=1
}

# expect_error COMMAND SUBSTRING ARGS...: non-zero exit, one line on stderr containing
# "bptt COMMAND: " and SUBSTRING, empty stdout.
expect_error() {
  command=$1 substring=$2
  shift 2
  "$BPTT" "$command" "$@" >"$WORK/out" 2>"$WORK/err"
  status=$?
  lines=$(wc -l <"$WORK/err")
  message=$(cat "$WORK/err")
  if [ "$status" -eq 0 ]; then
    fail "bptt $command $*: exit status 0, expected non-zero"
  elif [ "$lines" -ne 1 ]; then
    fail "bptt $command $*: $lines lines on stderr, expected 1: $message"
  elif ! grep -qF "bptt $command: " "$WORK/err" || ! grep -qF -- "$substring" "$WORK/err"; then
    fail "bptt $command $*: message '$message' lacks '$substring'"
  elif [ -s "$WORK/out" ]; then
    fail "bptt $command $*: wrote to stdout"
  fi
}

# expect_ok ARGS...: exit status 0; stdout in $WORK/out.
expect_ok() {
  "$BPTT" "$@" >"$WORK/out" 2>"$WORK/err" || fail "bptt $*: exit status $?: $(cat "$WORK/err")"
}

# Flags are checked before the checkpoint is read, so no checkpoint is needed here.
expect_error sample "--temperature must be positive" model.safetensors --temperature 0
expect_error sample "--temperature must be positive" model.safetensors --temperature -2
expect_error sample "--top-p" model.safetensors --top-p 0
expect_error sample "--top-p" model.safetensors --top-p 1.5
expect_error sample "--top-k" model.safetensors --top-k -1
expect_error sample "--num" model.safetensors --num 0
expect_error sample "--length" model.safetensors --length -5
expect_error sample "--length" model.safetensors --length many
expect_error sample "bogus" model.safetensors --bogus
expect_error sample "--threads must be in [0, 1024]" model.safetensors --threads 5000
expect_error sample "--temperature does not apply with --argmax" model.safetensors --argmax --temperature 0.5
expect_error sample "--top-k does not apply with --argmax" model.safetensors --argmax --top-k 3
expect_error sample "--top-p must be a number, got 'nan'" model.safetensors --top-p nan
expect_error sample "--dynamic adapts the weights to the prime: give --prime or --prime-file" model.safetensors --dynamic
expect_error sample "--prime-file cannot be combined with --prime" model.safetensors --prime a --prime-file b.txt
expect_error sample "--dynamic-segment applies only with --dynamic" model.safetensors --dynamic-segment 5
expect_error eval "--threads must be in [0, 1024]" "$WORK/none.safetensors" "$WORK/none.txt" --threads 2000
expect_error eval "--seq-len does not apply with --precision" "$WORK/none.safetensors" "$WORK/none.txt" \
  --precision fp32 --seq-len 8
# FILE is checked before the checkpoint is read: one line naming it.
expect_error eval "$WORK: is a directory, not a text file" "$WORK/none.safetensors" "$WORK"
: >"$WORK/empty.txt"
expect_error eval "$WORK/empty.txt: empty file" "$WORK/none.safetensors" "$WORK/empty.txt"
expect_error eval "$WORK/none.txt: no such file or directory" "$WORK/none.safetensors" "$WORK/none.txt"
expect_error inspect "--symbols must be an integer" "$WORK/none.safetensors" --symbols -3
expect_error sample "CHECKPOINT"
expect_error sample "$WORK/none.safetensors" "$WORK/none.safetensors"
expect_error eval "CHECKPOINT or FILE" "$WORK/none.safetensors"
expect_error eval "--batch" "$WORK/none.safetensors" "$WORK/none.txt" --batch 0
expect_error eval "--dynamic-lr applies only with --dynamic" "$WORK/none.safetensors" "$WORK/none.txt" --dynamic-lr 0.1
expect_error eval "--dynamic-decay must be in [0, 1], got" "$WORK/none.safetensors" "$WORK/none.txt" --dynamic \
  --dynamic-decay 1.5
expect_error eval "--dynamic-rule must be sgd or rms, got 'adam'" "$WORK/none.safetensors" "$WORK/none.txt" \
  --dynamic --dynamic-rule adam
expect_error eval "--batch does not apply with --dynamic" "$WORK/none.safetensors" "$WORK/none.txt" --dynamic --batch 4
expect_error eval "--dynamic-stats applies only with --dynamic-rule rms" "$WORK/none.safetensors" "$WORK/none.txt" \
  --dynamic --dynamic-rule sgd --dynamic-stats "$WORK/none.txt"
echo "text" >"$WORK/text.txt"
expect_error eval "$WORK/none.safetensors" "$WORK/none.safetensors" "$WORK/text.txt"
expect_error inspect "CHECKPOINT"
expect_error inspect "$WORK/none.safetensors" "$WORK/none.safetensors"
expect_error tokenize "--corpus"
expect_error tokenize "--unit" --corpus "$WORK" --unit syllable
expect_error tokenize "--on-invalid" --corpus "$WORK" --on-invalid ignore
expect_error tokenize "--max-vocab applies to --unit word only" --corpus "$WORK" --max-vocab 100
expect_error tokenize "--no-normalize does not apply to --unit byte" --corpus "$WORK" --unit byte --no-normalize
expect_error tokenize "$WORK/none.txt" --corpus "$WORK/none.txt"
printf 'ab\377c\n' >"$WORK/invalid.txt"
expect_error tokenize "invalid UTF-8" --corpus "$WORK/invalid.txt"
for command in sample eval inspect tokenize; do
  expect_ok "$command" --help
  grep -q -- "--help" "$WORK/out" || fail "bptt $command --help does not list its options"
done

if [ "${2:-}" = "--end-to-end" ]; then
  i=0
  : >"$WORK/corpus.txt"
  while [ $i -lt 200 ]; do
    echo "the cat sat on the mat. the dog sat on the log." >>"$WORK/corpus.txt"
    i=$((i + 1))
  done
  expect_ok train --corpus "$WORK/corpus.txt" --out "$WORK/run" --hidden 16 --layers 1 --batch 4 \
    --seq-len 16 --max-steps 20 --eval-every 10 --checkpoint-every 10 --threads 1
  CK="$WORK/run/latest.safetensors"
  [ -f "$CK" ] || fail "bptt train wrote no $CK"

  expect_ok sample "$CK" --length 200 --seed 5 && cp "$WORK/out" "$WORK/a"
  expect_ok sample "$CK" --length 200 --seed 5
  cmp -s "$WORK/a" "$WORK/out" || fail "the same seed gave different text"
  expect_ok sample "$CK" --length 200 --seed 6
  cmp -s "$WORK/a" "$WORK/out" && fail "different seeds gave the same text"
  expect_ok sample "$CK" --length 100 --argmax && cp "$WORK/out" "$WORK/argmax"
  expect_ok sample "$CK" --length 100 --top-k 1 --seed 9
  cmp -s "$WORK/argmax" "$WORK/out" || fail "--top-k 1 differs from --argmax"
  expect_ok sample "$CK" --length 30 --prime "the dog" --num 3
  [ "$(grep -c '^the dog' "$WORK/out")" -ge 3 ] || fail "--num 3 --prime: $(cat "$WORK/out")"
  expect_error sample '"Q"' "$CK" --prime "the Quiz"

  expect_ok eval "$CK" "$WORK/corpus.txt" --json
  for key in nats_per_symbol bpc perplexity symbols unknown streams method; do
    grep -q "\"$key\"" "$WORK/out" || fail "bptt eval --json lacks $key: $(cat "$WORK/out")"
  done
  grep -q '"streams":1' "$WORK/out" || fail "bptt eval does not score one stream by default: $(cat "$WORK/out")"
  expect_ok eval "$CK" "$WORK/corpus.txt" --json --batch 4
  grep -q 'approximation' "$WORK/out" || fail "bptt eval --batch 4 does not name its approximation: $(cat "$WORK/out")"
  expect_error eval "cannot be combined with --batch" "$CK" "$WORK/corpus.txt" --batch 4 --precision int8
  expect_ok eval "$CK" "$WORK/corpus.txt" --threads 2
  expect_error eval "--held-out applies to a model trained on sequences" "$CK" "$WORK/corpus.txt" --held-out 3
  # Dynamic evaluation: both scores, the learning rate 0 giving the static one exactly, and the
  # checkpoint on disk unchanged.
  sum_before=$(sha256sum <"$CK")
  expect_ok eval "$CK" "$WORK/corpus.txt" --json --dynamic --dynamic-segment 20 --dynamic-lr 0 --threads 1
  grep -q '"static_nats_per_symbol"' "$WORK/out" || fail "bptt eval --dynamic --json lacks the static score: $(cat "$WORK/out")"
  python3 -c 'import json, sys; r = json.load(sys.stdin); sys.exit(r["nats_per_symbol"] != r["static_nats_per_symbol"])' \
    <"$WORK/out" || fail "bptt eval --dynamic --dynamic-lr 0 differs from the static score: $(cat "$WORK/out")"
  expect_ok eval "$CK" "$WORK/corpus.txt" --dynamic --dynamic-rule sgd --dynamic-lr 0.5 --threads 1
  grep -q "static nats per symbol" "$WORK/out" || fail "bptt eval --dynamic prints no static score: $(cat "$WORK/out")"
  expect_ok eval "$CK" "$WORK/corpus.txt" --dynamic --dynamic-stats "$WORK/corpus.txt" --dynamic-stats-symbols 500
  grep -q "statistics from the first 500 symbols of $WORK/corpus.txt" "$WORK/out" ||
    fail "bptt eval --dynamic-stats: $(cat "$WORK/out")"
  printf 'the dog ate the cat. the dog ate the cat. ' >"$WORK/prime.txt"
  expect_ok sample "$CK" --prime-file "$WORK/prime.txt" --dynamic --dynamic-rule sgd --length 30 --seed 2
  grep -q '^the dog ate the cat. the dog ate the cat. ' "$WORK/out" || fail "bptt sample --prime-file: $(cat "$WORK/out")"
  expect_error sample "--prime-file: $WORK/none.txt" "$CK" --prime-file "$WORK/none.txt"
  [ "$(sha256sum <"$CK")" = "$sum_before" ] || fail "bptt eval or sample --dynamic changed the checkpoint"
  expect_error eval "--dynamic-stats $WORK/none.txt: " "$CK" "$WORK/corpus.txt" --dynamic --dynamic-stats "$WORK/none.txt"
  expect_error eval "--threads must be in [0, 1024]" "$CK" "$WORK/corpus.txt" --threads=-1
  echo "QQQ" >"$WORK/unknown.txt"
  expect_error eval "$WORK/unknown.txt: has 4 symbols, 1 of them in the model's vocabulary" "$CK" "$WORK/unknown.txt"
  echo "the cat ate a fish." >"$WORK/other.txt"
  expect_ok eval "$CK" "$WORK/other.txt" --json
  grep -q '"unknown":2' "$WORK/out" || fail "bptt eval: expected 2 unknown symbols (f, i): $(cat "$WORK/out")"
  expect_ok inspect "$CK"
  grep -q "lstm" "$WORK/out" || fail "bptt inspect shows no cell: $(cat "$WORK/out")"
  expect_ok tokenize --corpus "$WORK/corpus.txt" --top 3 --out "$WORK/vocab.json"
  grep -q "round trip   ok" "$WORK/out" || fail "bptt tokenize: no round trip: $(cat "$WORK/out")"
  [ -s "$WORK/vocab.json" ] || fail "bptt tokenize --out wrote nothing"
fi

[ $FAILED -eq 0 ] && echo "all checks passed"
exit $FAILED
