#!/bin/sh
# free-calibrate measures a curve on the committed tiny model and writes it as a calibration
# file and into a model copy; free-cli takes both (--calibration FILE, the copy's keys) for
# --min-agreement; bad files and arguments are refused with a message.
# Args: FREE_CALIBRATE FREE_CLI MODEL.gguf
set -u
cal=$1 cli=$2 model=$3
[ -f "$model" ] || { echo "SKIP: $model absent"; exit 77; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
i=0
while [ $i -lt 40 ]; do
  echo "Once upon a time there was a little girl who liked to play in the park with her dog."
  i=$((i + 1))
done > "$tmp/text.txt"
printf 'Once upon a time\nThe little dog\nLily and Tom went\n' > "$tmp/prompts.txt"
out=$("$cal" -m "$model" -f "$tmp/text.txt" -c 64 -o "$tmp/c.gguf" \
  --write-model "$tmp/m.gguf" 2>&1) || fail "free-calibrate -f: $out"
echo "$out" | grep -q '^0.500 ' || fail "no table row for 0.5: $out"
[ -s "$tmp/c.gguf" ] && [ -s "$tmp/m.gguf" ] || fail "outputs not written"
out=$("$cal" -m "$model" -p "$tmp/prompts.txt" -n 16 --decode 0.9 2>&1) ||
  fail "free-calibrate --decode: $out"
echo "$out" | grep -q 'FREE decoding' || fail "--decode table: $out"
# The calibration file and the copy's own curve both serve --min-agreement.
out=$("$cli" -m "$model" --calibration "$tmp/c.gguf" --min-agreement 0.5 -p "Once" -n 8 \
  --stats 2>&1) || fail "free-cli --calibration: $out"
echo "$out" | grep -q '"mode": "free"' || fail "not free mode: $out"
out=$("$cli" -m "$tmp/m.gguf" --min-agreement 0.5 -p "Once" -n 8 --stats 2>&1) ||
  fail "free-cli on the copy: $out"
# Without a curve, --min-agreement is refused (the copy has one, the original not).
out=$("$cli" -m "$model" --exit free --min-agreement 0.5 -p "Once" -n 8 2>&1) &&
  fail "no curve, no refusal: $out"
echo "$out" | grep -q 'free.calib' || fail "refusal does not name free.calib: $out"
# A truncated calibration file: a format error naming the file.
head -c 40 "$tmp/c.gguf" > "$tmp/bad.gguf"
out=$("$cli" -m "$model" --calibration "$tmp/bad.gguf" --min-agreement 0.5 -p "Once" -n 8 \
  2>&1) && fail "truncated file accepted: $out"
echo "$out" | grep -q "bad.gguf" || fail "message does not name the file: $out"
# Bad arguments.
"$cal" -m "$model" >/dev/null 2>&1; [ $? -eq 2 ] || fail "no -p/-f: not exit 2"
"$cal" -m "$model" -f "$tmp/text.txt" --decode 0.5 >/dev/null 2>&1; [ $? -eq 2 ] ||
  fail "--decode with -f: not exit 2"
"$cal" -m "$model" -f "$tmp/missing.txt" >/dev/null 2>&1 && fail "missing text accepted"
echo "free-calibrate: ok"
