#!/usr/bin/env bash
# `pip install .` (pyproject.toml, python/packaging/bptt_build.py: PEP 517, offline) into a
# scratch directory, then the installed module imported and used from there. The backend is
# pointed at this build's directory (--config-settings build-dir), so it configures nothing and
# its build of the module is up to date: the test proves the packaging, not the compiler.
#   tests/cli/pip_install_test.sh SOURCE_DIR BUILD_DIR PYTHON
set -uo pipefail
source_dir="$1"
build_dir="$2"
python="$3"
program=none
source "$(dirname "${BASH_SOURCE[0]}")/testlib.sh"

if "$python" -m pip install --no-index --no-deps --no-cache-dir --quiet --target "$work/site" \
    --config-settings "build-dir=$build_dir" "$source_dir" > "$work/out" 2>&1; then pass
else fail "pip install: $(tail -5 "$work/out")"; fi
ls "$work/site"/bptt.cpython-*.so > /dev/null 2>&1 && pass || fail "no module in the target: $(ls "$work/site")"
ls -d "$work/site"/bptt-*.dist-info > /dev/null 2>&1 && pass || fail "no dist-info in the target"
cd "$work" || exit 1
if PYTHONPATH="$work/site" "$python" - > "$work/run" 2>&1 <<'PY'
import numpy as np, bptt
assert bptt.__file__.startswith(__import__("os").getcwd()), bptt.__file__
rng = np.random.default_rng(0)
x = rng.normal(size=(64, 5, 2)).astype(np.float32)
y = (x[:, :, 0].sum(axis=1) > 0).astype(int)
m = bptt.fit(x, y, hidden=8, layers=1, batch=16, max_steps=3, threads=1, verbose=False)
assert m.predict(x).shape == (64,)
print("ok", bptt.__version__)
PY
then pass; else fail "the installed module: $(cat "$work/run")"; fi
grep -q "^ok " "$work/run" && pass || fail "the installed module printed: $(cat "$work/run")"
finish
