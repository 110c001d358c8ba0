#!/usr/bin/env bash
# .ci/run's control flow, with cmake, ctest and .ci/install-deps replaced by stubs that log their
# arguments and fail on request: every failing step fails CI and nothing after it runs; the
# README's test command is run as README.md gives it; then the checked build (sanitizers, no
# -march=native, assertions on) builds and runs the whole suite.
#   tests/cli/ci_run_test.sh SOURCE_DIR
set -uo pipefail
source_dir="$1"
source "$(dirname "${BASH_SOURCE[0]}")/testlib.sh"

# A scratch checkout: the real .ci/run and README.md, a stub .ci/install-deps.
mkdir -p "$work/repo/.ci" "$work/bin"
cp "$source_dir/.ci/run" "$work/repo/.ci/run"
cp "$source_dir/README.md" "$work/repo/README.md"
log="$work/log"
for tool in cmake ctest install-deps; do
  cat > "$work/bin/$tool" <<EOF
#!/usr/bin/env bash
step="$tool\${*:+ \$*}"
echo "\$step" >> "$log"
if [ "\$step" = "\${STUB_FAIL:-}" ]; then echo "$tool: failing as asked" >&2; exit 1; fi
exit 0
EOF
  chmod +x "$work/bin/$tool"
done
cp "$work/bin/install-deps" "$work/repo/.ci/install-deps"

# run_ci STUB_FAIL: runs .ci/run with the stubs; the step that is exactly STUB_FAIL fails.
run_ci() {
  : > "$log"
  STUB_FAIL="$1" PATH="$work/bin:$PATH" bash "$work/repo/.ci/run" > "$work/out" 2>&1
}

readme_command=$(grep -x '\.ci/install-deps && cmake .*ctest .*' "$source_dir/README.md")
[ "$(printf '%s\n' "$readme_command" | wc -l)" = 1 ] && pass || fail "README.md: not exactly one test command"
case "$readme_command" in *"ctest "*"--no-tests=error"*) pass ;; *) fail "README.md: ctest without --no-tests=error" ;; esac

# Everything passes: each step in order.
if run_ci ""; then pass; else fail "all steps pass: exit status $?: $(cat "$work/out")"; fi
expected_steps="install-deps
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j2
ctest --test-dir build --output-on-failure --no-tests=error -j2
cmake -S . -B build-checked -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DBPTT_SANITIZE=ON -DBPTT_NATIVE=OFF -DBPTT_BUILD_BENCH=OFF
cmake --build build-checked -j2
ctest --test-dir build-checked --output-on-failure --no-tests=error -j2"
[ "$(cat "$log")" = "$expected_steps" ] && pass || fail "all steps pass: ran
$(cat "$log")
expected
$expected_steps"

# Each step failing: CI fails and runs nothing after it.
steps=()
while IFS= read -r step; do steps+=("$step"); done <<< "$expected_steps"
for ((i = 0; i < ${#steps[@]}; ++i)); do
  step="${steps[$i]}"
  if run_ci "$step"; then fail "failing '$step': exit status 0"; continue; fi
  pass
  if [ "$(wc -l < "$log")" -eq $((i + 1)) ] && [ "$(tail -n 1 "$log")" = "$step" ]; then pass
  else fail "failing '$step': ran on to: $(tail -n 1 "$log")"; fi
done

# A README whose test command differs from the script's: CI fails at once, with one line.
sed -i 's/--output-on-failure --no-tests=error -j2/--output-on-failure -j2/' "$work/repo/README.md"
if run_ci ""; then fail "README differs: exit status 0"; else pass; fi
[ ! -s "$log" ] && pass || fail "README differs: steps ran: $(cat "$log")"
[ "$(wc -l < "$work/out")" -eq 1 ] && grep -qF "README.md does not give the test command" "$work/out" && pass ||
  fail "README differs: output '$(cat "$work/out")'"

finish
