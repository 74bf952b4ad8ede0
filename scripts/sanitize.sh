#!/usr/bin/env bash
# Build pyconv with AddressSanitizer + UndefinedBehaviorSanitizer in a fresh
# virtual environment and run the test suite (or the pytest arguments given)
# against it. Any heap/stack overflow, use-after-free or undefined behaviour
# in the C++ core aborts the run with a report.
#
#   scripts/sanitize.sh                          # the whole suite (slow: ~10x)
#   scripts/sanitize.sh tests/test_conv2d.py -x  # a subset
#
# Needs g++ (libasan, libubsan), cmake, ninja and pip access to PyPI for the
# venv (numpy, pytest, hypothesis, scikit-build-core, pybind11). torch is
# not installed in the venv, so its comparison tests are skipped there.
# Leak detection is off: CPython itself does not free everything at exit.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${SANITIZE_VENV:-$root/build/asan-venv}"
py="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet numpy tqdm pytest hypothesis pytest-benchmark scikit-build-core pybind11
fi

flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"
"$venv/bin/pip" install --quiet --no-build-isolation \
  -Cbuild-dir="$root/build/asan" \
  -Ccmake.build-type=RelWithDebInfo \
  -Ccmake.define.CMAKE_CXX_FLAGS="$flags" \
  -Ccmake.define.CMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" \
  "$root"

asan="$(g++ -print-file-name=libasan.so)"
ubsan="$(g++ -print-file-name=libubsan.so)"
export LD_PRELOAD="$asan $ubsan"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export PYCONV_SANITIZED=1

# Run outside the source tree so that `import pyconv` finds the sanitized
# install; test paths given relative to the repository are made absolute.
args=()
has_path=0
for a in "$@"; do
  if [ -e "$root/$a" ]; then args+=("$root/$a"); else args+=("$a"); fi
  case "$a" in -*) ;; *) has_path=1 ;; esac
done
if [ "$has_path" -eq 0 ]; then args+=("$root/tests"); fi
set -- "${args[@]}"
cd "$root/build"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider --rootdir "$root" -c "$root/pyproject.toml" "$@"
