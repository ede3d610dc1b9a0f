#!/bin/sh
# free-cli refuses bad input with a message that names the problem, and never reads without
# limit: numbers are parsed strictly, files are checked (directory, size cap, NUL byte),
# contradictory options are refused, and the library's reasons reach the user.
# Args: FREE_CLI MODEL.gguf
set -u
cli=$1 model=$2
[ -f "$model" ] || { echo "SKIP: $model absent"; exit 77; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
n=0
# refused EXPECTED-TEXT ARGS...: exit status 1 and the text on stderr, within 20 s.
refused() {
  want=$1; shift
  timeout 20 "$cli" "$@" >"$tmp/out" 2>"$tmp/err"
  rc=$?
  [ $rc -eq 124 ] && fail "free-cli $* did not finish in 20 s"
  [ $rc -eq 1 ] || fail "free-cli $*: exit status $rc, expected 1 (stderr: $(cat "$tmp/err"))"
  grep -qF -- "$want" "$tmp/err" || fail "free-cli $*: stderr lacks '$want': $(cat "$tmp/err")"
  n=$((n + 1))
}
accepted() {
  timeout 60 "$cli" "$@" >"$tmp/out" 2>"$tmp/err" ||
    fail "free-cli $*: failed: $(cat "$tmp/err")"
  n=$((n + 1))
}
m="-m $model"
# Strict numbers, everywhere.
for v in 2.5 0x10 1e3 " 7" "" 7x inf; do
  refused "not an integer" $m -n "$v"
done
refused "not an integer" $m -c 0x40
refused "not an integer" $m -t 1.5
refused "not an integer" $m --top-k 1e2
refused "not an integer" $m --exit-layer 0x2
refused "not an integer" $m --max-queue 4.0
refused "not an integer in [0, 2^64)" $m --seed -1
refused "not an integer in [0, 2^64)" $m --seed 1.5
refused "not a decimal number" $m --temp 0x1p-2
refused "not a decimal number" $m --threshold nan
refused "out of range" $m --temp 1e999
refused "out of range" $m -n 99999999999
refused "--top-p must be in (0, 1]" $m --top-p 2
refused "--top-p must be in (0, 1]" $m --top-p 0
refused "--zeta must be in (0, 1)" $m --zeta 1
refused "--temp must be in [0, 100]" $m --temp -1
# The library's own reasons come through.
refused "exit_layer 9 must be in [1, 5)" $m --exit free --exit-layer 9
# Files: a directory, endless devices, NUL bytes.
refused "is a directory" $m -f "$tmp"
refused "larger than the limit" $m -f /dev/zero
refused "larger than the limit" $m --calibration /dev/zero --exit free
refused "larger than the limit" $m --calibrate /dev/zero --exit free
printf 'Once upon\000 a time' >"$tmp/nul.txt"
refused "NUL byte at offset 9" $m -f "$tmp/nul.txt"
refused "NUL byte at offset 9" $m --calibration "$tmp/nul.txt" --exit free
refused "No such file" $m -f "$tmp/absent.txt"
# Contradictions.
printf 'libfree-calibration 1\nthreshold 0.5\nrule grid\nzeta 0.4\nagree 0 0\ndisagree 0 0\nfits 0\nsamples 0 0\nfrozen 0\n' >"$tmp/cal.txt"
refused "--exit none contradicts --calibration" $m --exit none --calibration "$tmp/cal.txt"
refused "--exit none contradicts --adaptive" $m --exit none --adaptive
# The same inputs done right are accepted.
printf 'Once upon a time' >"$tmp/p.txt"
accepted $m -f "$tmp/p.txt" -n 4
accepted $m -n 4 --calibration "$tmp/cal.txt" --exit free --seed 18446744073709551615
accepted $m -n 4 --calibration "$tmp/cal.txt"
accepted $m -n 4 --top-p 1 --zeta 0.5 --temp 0.5 -n +4 -c 64
accepted $m -n 4 --check-tensors
echo "ok: $n free-cli input cases"
