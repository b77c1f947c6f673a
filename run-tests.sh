#!/usr/bin/env bash
# run-tests.sh — build loupe and run every test: unit (ctest), language goldens, protocol,
# parity, notebooks. Exits non-zero if anything fails. Prints one summary line per suite
# and a final "N passed, N failed" over the suites.
set -uo pipefail
cd "$(dirname "$0")"
export LOUPE_BUILD="$PWD/build"

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null || exit 1
cmake --build build -j"$(nproc)" || exit 1

passed=0; failed=0; results=()
suite() {   # suite NAME COMMAND...
  local name=$1; shift
  echo "=== $name: $*"
  if "$@"; then passed=$((passed + 1)); results+=("ok      $name")
  else failed=$((failed + 1)); results+=("FAILED  $name"); fi
}

suite unit      ctest --test-dir build --output-on-failure
suite lang      tests/lang/run.sh build/cli/loupe
suite pytest    python3 -m pytest -q -p no:cacheprovider tests/protocol tests/parity tests/notebooks tests/docs

echo
printf '%s\n' "${results[@]}"
echo "suites: $passed passed, $failed failed"
[ "$failed" = 0 ]
