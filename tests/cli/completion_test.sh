#!/usr/bin/env bash
# The bash completion that `bptt completion bash` prints, loaded into this shell and asked what
# it completes: commands, each command's flags (as its --help lists them), the values of --cell,
# the task names, and file names after a flag that takes a value.
#   tests/cli/completion_test.sh BPTT_BINARY
set -uo pipefail
bptt="$1"
program="$bptt"
source "$(dirname "${BASH_SOURCE[0]}")/testlib.sh"

if "$bptt" completion bash > "$work/completion"; then pass; else fail "bptt completion bash: exit status $?"; fi
# shellcheck disable=SC1091
source "$work/completion" || fail "the completion does not load"
expect_error "other shell" "usage: bptt completion bash" completion zsh

# complete WORDS...: COMPREPLY for the command line WORDS (the last one is being typed), sorted.
complete_words() {
  COMP_WORDS=(bptt "$@")
  COMP_CWORD=$#
  COMPREPLY=()
  _bptt
  [ "${#COMPREPLY[@]}" -eq 0 ] || printf '%s\n' "${COMPREPLY[@]}" | sort | tr '\n' ' '
}

# expect_completion NAME EXPECTED WORDS...: the completions of WORDS are exactly EXPECTED.
expect_completion() {
  local name="$1" expected="$2"
  shift 2
  local got
  got="$(complete_words "$@")"
  if [ "$got" = "$expected" ]; then pass; else fail "$name: got '$got', expected '$expected'"; fi
}

expect_completion "commands" "task tokenize train " t
expect_completion "version" "version " vers
expect_completion "a flag" "--hidden " train --hid
expect_completion "task flags" "--T " task adding --T
expect_completion "cells" "gru " train --cell g
expect_completion "tasks" "temporal-order temporal-order-3 " task temp
expect_completion "no such command" "" frobnicate --h
touch "$work/corpus-one.txt" "$work/corpus-two.txt"
expect_completion "a file after a valued flag" "$work/corpus-one.txt $work/corpus-two.txt " train --corpus "$work/corpus-"
# Every flag of every command's --help completes, and nothing else.
for command in train task sample eval inspect tokenize decay plot gradcheck credit; do
  "$bptt" "$command" --help | grep -o '^  --[A-Za-z0-9-]*' | sed 's/^  //' | sort > "$work/flags"
  complete_words "$command" -- | tr ' ' '\n' | grep -v '^$' | sort > "$work/completed"
  if [ -s "$work/flags" ] && diff "$work/flags" "$work/completed" > "$work/diff"; then pass
  else fail "$command's flags differ: $(cat "$work/diff")"; fi
done
expect_completion "a decay flag" "--jacobian-batch --jacobian-lags " decay --jac

finish
