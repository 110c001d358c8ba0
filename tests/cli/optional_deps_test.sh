#!/usr/bin/env bash
# Optional packages stay optional: the whole project configures with broken ones first on the
# search path (a oneDNN and a pybind11 whose CMake files fail, a help2man that does not run, an
# "OpenBLAS" that does not link, no MPI), and says in one line each what is off; then
# cmake/optional-package.cmake on its own: a package of an incompatible version (oneDNN 3.x),
# one that is absent, one that is found. Given the Python module of a build, its tests with a
# torch that does not import: the round trip through PyTorch is skipped, nothing fails.
#   tests/cli/optional_deps_test.sh SOURCE_DIR [PYTHON MODULE_DIR BPTT]
set -uo pipefail
source_dir="$1"
source "$(dirname "${BASH_SOURCE[0]}")/testlib.sh"

# A prefix of broken packages.
prefix="$work/prefix"
mkdir -p "$prefix/lib/cmake/dnnl" "$prefix/lib/cmake/pybind11" "$prefix/bin"
# oneDNN 2.x whose config ends the configure (as Debian's does without OpenCL's development files).
echo 'set(PACKAGE_VERSION 2.7.0)
set(PACKAGE_VERSION_COMPATIBLE TRUE)' > "$prefix/lib/cmake/dnnl/dnnlConfigVersion.cmake"
echo 'message(FATAL_ERROR "deliberately broken oneDNN")' > "$prefix/lib/cmake/dnnl/dnnlConfig.cmake"
# pybind11 whose config requires a dependency that is not there.
echo 'set(PACKAGE_VERSION 2.11.0)
set(PACKAGE_VERSION_COMPATIBLE TRUE)' > "$prefix/lib/cmake/pybind11/pybind11ConfigVersion.cmake"
echo 'find_package(bptt_test_missing_dependency REQUIRED)' > "$prefix/lib/cmake/pybind11/pybind11Config.cmake"
printf '#!/bin/sh\necho "help2man: broken" >&2\nexit 1\n' > "$prefix/bin/help2man"
chmod +x "$prefix/bin/help2man"
echo 'not a library' > "$prefix/libopenblas.so"

cmake -S "$source_dir" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_DISABLE_FIND_PACKAGE_MPI=ON -DBPTT_OPENBLAS_LIBRARY="$prefix/libopenblas.so" > "$work/log" 2>&1
status=$?
if [ "$status" -eq 0 ]; then pass; else fail "configure with broken packages failed: $(grep -A3 'CMake Error' "$work/log" | head -8)"; fi

# expect_note PATTERN: the configure printed exactly one line matching PATTERN (grep -E).
expect_note() {
  local count
  count=$(grep -cE -- "$1" "$work/log")
  if [ "$count" -eq 1 ]; then pass; else fail "$count lines match '$1' in: $(grep -E '^-- .*: off' "$work/log")"; fi
}
expect_note "^-- bptt_onednn: off \(oneDNN 2\.x: its CMake files fail: deliberately broken oneDNN \($prefix/lib/cmake/dnnl/dnnlConfig\.cmake\);"
expect_note "^-- Python module: off \(pybind11 2\.10 or later: its CMake files fail: .*bptt_test_missing_dependency.* \($prefix/lib/cmake/pybind11/pybind11Config\.cmake\);"
expect_note "^-- Man pages: off \($prefix/bin/help2man --version fails\)"
expect_note "^-- bptt_bench: OpenBLAS's SGEMM off \($prefix/libopenblas.so does not link a call to sgemm_\)"
expect_note "^-- MPI: off, bptt trains in one process"
# Nothing of what is off is in the build; the rest is.
targets=$(cmake --build "$work/build" --target help 2> /dev/null)
for target in bptt_cli bptt_bench; do
  grep -qw "$target" <<< "$targets" && pass || fail "no target $target"
done
for target in bptt_onednn bptt_python bptt_man; do
  grep -qw "$target" <<< "$targets" && fail "target $target despite its broken package" || pass
done

# cmake/optional-package.cmake on its own, in a small project: oneDNN 3.x (bench/onednn.cc is
# written against 2.x) is not taken; an absent package and a good one.
mkdir -p "$work/v3/lib/cmake/dnnl" "$work/good/lib/cmake/bptt_test_good" "$work/small"
sed 's/2\.7\.0/3.1.0/' "$prefix/lib/cmake/dnnl/dnnlConfigVersion.cmake" > "$work/v3/lib/cmake/dnnl/dnnlConfigVersion.cmake"
# oneDNN's own version file accepts only its major version.
echo 'set(PACKAGE_VERSION 3.1.0)
set(PACKAGE_VERSION_COMPATIBLE FALSE)
if(PACKAGE_FIND_VERSION_MAJOR STREQUAL "3")
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
endif()' > "$work/v3/lib/cmake/dnnl/dnnlConfigVersion.cmake"
echo 'add_library(DNNL::dnnl INTERFACE IMPORTED)' > "$work/v3/lib/cmake/dnnl/dnnlConfig.cmake"
echo 'set(bptt_test_good_VERSION 1.0)
add_library(bptt_test_good::good INTERFACE IMPORTED)' > "$work/good/lib/cmake/bptt_test_good/bptt_test_goodConfig.cmake"
cat > "$work/small/CMakeLists.txt" <<EOF
cmake_minimum_required(VERSION 3.25)
project(optional_deps_test LANGUAGES NONE)
include("$source_dir/cmake/optional-package.cmake")
foreach(package IN ITEMS dnnl bptt_test_absent bptt_test_good)
  if(package STREQUAL "dnnl")
    bptt_find_optional(dnnl 2 CONFIG)
  else()
    bptt_find_optional(\${package} CONFIG)
  endif()
  if(\${package}_FOUND AND NOT TARGET bptt_test_good::good)
    message(FATAL_ERROR "\${package} found, but not its target")
  endif()
  message(STATUS "result \${package}: [\${\${package}_FOUND}] [\${BPTT_OPTIONAL_REASON}]")
endforeach()
EOF
if cmake -S "$work/small" -B "$work/small/build" -DCMAKE_PREFIX_PATH="$work/v3;$work/good" > "$work/small.log" 2>&1; then
  pass
else
  fail "small project: $(cat "$work/small.log")"
fi
expect_result() {
  grep -qxF -- "-- result $1" "$work/small.log" && pass || fail "wanted '$1' in: $(grep -e '-- result' "$work/small.log")"
}
expect_result "dnnl: [FALSE] [found only version 3.1.0, which is not compatible]"
expect_result "bptt_test_absent: [FALSE] [not found]"
expect_result "bptt_test_good: [1] []"

if [ $# -ge 4 ]; then
  python="$2" module_dir="$3" bptt="$4"
  mkdir -p "$work/broken-torch/torch"
  echo 'raise RuntimeError("deliberately broken torch")' > "$work/broken-torch/torch/__init__.py"
  if PYTHONPATH="$work/broken-torch:$module_dir" BPTT_PROGRAM="$bptt" BPTT_TEST_DATA_DIR="$source_dir/tests" \
      "$python" -m pytest -q -rs -p no:cacheprovider "$source_dir/tests/python/test_bptt.py" -k test_torch_round_trip \
      > "$work/pytest.log" 2>&1; then
    pass
  else
    fail "pytest with a broken torch: $(tail -5 "$work/pytest.log")"
  fi
  grep -q "SKIPPED.*deliberately broken torch" "$work/pytest.log" && pass || fail "round trip not skipped: $(tail -5 "$work/pytest.log")"
fi
finish
