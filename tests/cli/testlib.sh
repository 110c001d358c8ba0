# Sourced by the bash tests in tests/cli: a scratch directory $work removed on exit, pass/fail
# counters, expect_error, and finish. A test sets $program (the command expect_error runs) and
# ends with `finish`.

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failures=0
passes=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
pass() { passes=$((passes + 1)); }

# expect_error NAME EXPECTED_TEXT ARGS...: "$program" ARGS... exits non-zero with exactly one
# line on stderr, which contains EXPECTED_TEXT.
expect_error() {
  local name="$1" text="$2"
  shift 2
  "$program" "$@" > "$work/out" 2> "$work/err"
  local status=$?
  local lines
  lines=$(wc -l < "$work/err")
  if [ "$status" -eq 0 ]; then fail "$name: exit status 0"; return; fi
  if [ "$lines" -ne 1 ]; then fail "$name: $lines lines on stderr: $(cat "$work/err")"; return; fi
  if ! grep -qF -- "$text" "$work/err"; then fail "$name: stderr '$(cat "$work/err")' lacks '$text'"; return; fi
  pass
}

# finish: prints the counts; the exit status is 0 only without failures.
finish() {
  echo "$passes passed, $failures failed"
  [ "$failures" -eq 0 ]
}
