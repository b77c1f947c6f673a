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
    rc=$?
    if [ "${UPDATE:-0}" = 1 ]; then cp "$tmp" "$name.out"; fi
    # scripts named err_* or *_err must fail (exit 1); the others must succeed
    case "$name" in err_*|*_err) want_rc=1 ;; *) want_rc=0 ;; esac
    if ! cmp -s "$tmp" "$name.out"; then
        fail=$((fail + 1))
        echo "FAIL: $name"
        diff "$name.out" "$tmp" | head -20
    elif [ "$rc" -ne "$want_rc" ]; then
        fail=$((fail + 1))
        echo "FAIL: $name: exit status $rc, expected $want_rc"
    else
        pass=$((pass + 1))
    fi
done
# `loupe check`: silent and 0 on valid syntax (even when running would fail), the
# SyntaxError and 1 otherwise
if [ $# -eq 0 ]; then
    for name in if_else err_name; do
        if "$LOUPE" check "$name.loupe" > "$tmp" 2>&1 && [ ! -s "$tmp" ]; then pass=$((pass + 1));
        else fail=$((fail + 1)); echo "FAIL: check $name"; fi
    done
    "$LOUPE" check err_syntax_expr.loupe > "$tmp" 2>&1
    if [ $? -eq 1 ] && cmp -s "$tmp" err_syntax_expr.out; then pass=$((pass + 1));
    else fail=$((fail + 1)); echo "FAIL: check err_syntax_expr"; fi
fi
rm -f "$tmp"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
