#!/bin/sh
# run.sh — run every golden script in tests/lang through `loupe run` and diff the output.
#   tests/lang/run.sh path/to/loupe            check all
#   tests/lang/run.sh path/to/loupe NAME...    check some (NAME without .loupe)
#   UPDATE=1 tests/lang/run.sh path/to/loupe   rewrite the .out files (review the diff!)
# NAME.in, when present, is the script's stdin (for `input`); otherwise stdin is empty.
# Scripts run with tests/lang as the working directory.
set -u
if [ $# -lt 1 ]; then echo "usage: $0 path/to/loupe [NAME...]" >&2; exit 2; fi
LOUPE=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
shift
cd "$(dirname "$0")" || exit 2
pass=0; fail=0
if [ $# -gt 0 ]; then names="$*"; else names=$(ls *.loupe | sed 's/\.loupe$//'); fi
tmp=$(mktemp)
for name in $names; do
    if [ -f "$name.in" ]; then input="$name.in"; else input=/dev/null; fi
    "$LOUPE" run "$name.loupe" < "$input" > "$tmp" 2>&1
    if [ "${UPDATE:-0}" = 1 ]; then cp "$tmp" "$name.out"; fi
    if cmp -s "$tmp" "$name.out"; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        echo "FAIL: $name"
        diff "$name.out" "$tmp" | head -20
    fi
done
rm -f "$tmp"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
