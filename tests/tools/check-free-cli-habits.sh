#!/bin/sh
# free-cli's habits (issue 15, item 10): -f - reads standard input; -p with -f is refused;
# the seed is random unless --seed (and --stats prints it); -t 0 is all cores; --threshold
# and --exit-map select --exit free and are refused with --exit none; --stats says
# "threshold": null at full depth; --exit-map prints a legend and never puts a mark around
# a line break. Args: FREE_CLI STORIES.gguf
set -u
cli=$1 model=$2
[ -f "$model" ] || { echo "SKIP: $model absent"; exit 77; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
stat_of() { # FIELD FILE: the value of "FIELD" in the --stats line
  sed -n 's/.*"'"$1"'": \("[^"]*"\|[^,}]*\).*/\1/p' "$2" | tail -1
}
# -f - and -p.
printf 'Once upon a time' | "$cli" -m "$model" -f - -n 8 >"$tmp/stdin.out" 2>"$tmp/err" ||
  fail "-f -: $(cat "$tmp/err")"
"$cli" -m "$model" -p 'Once upon a time' -n 8 >"$tmp/p.out" 2>"$tmp/err" || fail "-p"
cmp -s "$tmp/stdin.out" "$tmp/p.out" || fail "-f - and -p give different texts"
printf 'x' >"$tmp/p.txt"
"$cli" -m "$model" -p x -f "$tmp/p.txt" >/dev/null 2>"$tmp/err" && fail "-p with -f accepted"
grep -q -- "-p and -f" "$tmp/err" || fail "-p with -f: $(cat "$tmp/err")"
# Seeds.
for i in 1 2; do
  "$cli" -m "$model" -p Once -n 4 --temp 1 --stats >/dev/null 2>"$tmp/s$i" || fail "seed run"
done
s1=$(stat_of seed "$tmp/s1") s2=$(stat_of seed "$tmp/s2")
[ -n "$s1" ] && [ "$s1" != "$s2" ] || fail "the default seed is not random: '$s1' '$s2'"
"$cli" -m "$model" -p Once -n 4 --seed 42 --stats >/dev/null 2>"$tmp/s3" || fail "--seed"
[ "$(stat_of seed "$tmp/s3")" = 42 ] || fail "--seed 42 not in --stats: $(tail -1 "$tmp/s3")"
# Threads.
"$cli" -m "$model" -p Once -n 4 -t 0 --stats >/dev/null 2>"$tmp/t0" || fail "-t 0 refused"
[ "$(stat_of threads "$tmp/t0")" -ge 1 ] || fail "-t 0: $(tail -1 "$tmp/t0")"
# Exit-mode options.
"$cli" -m "$model" -p Once -n 4 --stats >/dev/null 2>"$tmp/none" || fail "full depth"
[ "$(stat_of threshold "$tmp/none")" = null ] || fail "threshold at full depth: $(tail -1 "$tmp/none")"
"$cli" -m "$model" -p Once -n 4 --threshold 0.3 --stats >/dev/null 2>"$tmp/thr" || fail "--threshold"
[ "$(stat_of mode "$tmp/thr")" = '"free"' ] || fail "--threshold did not select free"
[ "$(stat_of threshold "$tmp/thr")" = 0.3 ] || fail "threshold: $(tail -1 "$tmp/thr")"
for opt in "--threshold 0.3" "--exit-map"; do
  "$cli" -m "$model" -p Once -n 4 --exit none $opt >/dev/null 2>"$tmp/err" &&
    fail "--exit none $opt accepted"
  grep -q "contradicts" "$tmp/err" || fail "--exit none $opt: $(cat "$tmp/err")"
done
# The exit map: a legend on stderr, marks that never enclose a line break.
"$cli" -m "$model" -p 'Once upon a time' -n 120 --exit-map --threshold 0 >"$tmp/map" \
  2>"$tmp/legend" || fail "--exit-map"
grep -q "exit map: \[bracketed\]" "$tmp/legend" || fail "no legend: $(cat "$tmp/legend")"
grep -q '\[' "$tmp/map" || fail "nothing marked at threshold 0"
awk '{ o = gsub(/\[/, "["); c = gsub(/\]/, "]"); if (o != c) bad = 1 } END { exit bad }' \
  "$tmp/map" || fail "a mark spans a line break: $(cat "$tmp/map")"
# The end of the context: a clean stop (status 0, a message), or a context shift.
"$cli" -m "$model" -p 'Once upon a time' -n -1 -c 64 >/dev/null 2>"$tmp/full" ||
  fail "a full context is an error: $(cat "$tmp/full")"
grep -q "is full: stopped" "$tmp/full" || fail "no message at the end: $(cat "$tmp/full")"
"$cli" -m "$model" -p 'Once upon a time' -n 300 -c 64 --context-shift --keep 5 --stats \
  >/dev/null 2>"$tmp/shift" || fail "--context-shift: $(cat "$tmp/shift")"
[ "$(stat_of tokens "$tmp/shift")" = 300 ] || fail "--context-shift: $(tail -1 "$tmp/shift")"
echo "ok: free-cli habits"
