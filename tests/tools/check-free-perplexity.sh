#!/bin/sh
# free-perplexity reproduces llama.cpp's llama-perplexity figures (-c 128) on the shared
# text within 0.5% for every shared file (perplexity/llamacpp-c128.txt); the last stdout
# line has llama.cpp's form; --exit verify and --exit free at threshold 1 equal none; bad
# arguments are refused. Args: FREE_PERPLEXITY MODELS_DIR [float|quant]
# float: the F16 and F32 files and the option checks; quant: Q8_0, Q4_0, Q4_K_M, Q5_K_M
# (two meson tests, so that they run side by side; about 10 s of CPU per file).
set -u
ppl=$1 models=$2 which=${3:-float}
text=$models/perplexity/tinyshakespeare-30k.txt ref=$models/perplexity/llamacpp-c128.txt
[ -f "$text" ] && [ -f "$ref" ] || { echo "SKIP: $text or $ref absent"; exit 77; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
n=0
# Each line of the reference: "models/DIR/FILE.gguf Final estimate: PPL = X +/- E".
while read -r path _ _ _ _ want _ _; do
  model=$models/${path#models/}
  [ -f "$model" ] || fail "$model absent"
  case $path in
    *q8_0*|*q4_0*|*q4_k_m*|*q5_k_m*) [ "$which" = quant ] || continue ;;
    *) [ "$which" = float ] || continue ;;
  esac
  "$ppl" -m "$model" -f "$text" -c 128 -t 2 >"$tmp/out" 2>"$tmp/err" ||
    fail "$path: $(tail -2 "$tmp/err")"
  last=$(tail -1 "$tmp/out")
  echo "$last" | grep -Eq '^PPL = [0-9]+\.[0-9]{4} \+/- [0-9]+\.[0-9]{4}$' ||
    fail "$path: last line is '$last'"
  got=$(echo "$last" | awk '{print $3}')
  awk -v g="$got" -v w="$want" 'BEGIN { d = (g - w) / w; if (d < 0) d = -d; exit !(d <= 0.005) }' ||
    fail "$path: PPL $got, llama.cpp $want (more than 0.5% apart)"
  echo "$path: PPL $got (llama.cpp $want)"
  n=$((n + 1))
done <"$ref"
if [ "$which" = quant ]; then
  [ "$n" = 4 ] || fail "$n quantized files checked, 4 expected"
  echo "free-perplexity: $n quantized files within 0.5% of llama.cpp"
  exit 0
fi
[ "$n" = 2 ] || fail "$n files checked, 2 expected"
fl=$models/free-llama-22M/free-llama-22M.gguf
"$ppl" -m "$fl" -f "$text" --chunks 4 -t 2 2>/dev/null | tail -1 >"$tmp/none"
"$ppl" -m "$fl" -f "$text" --chunks 4 -t 2 --exit verify 2>/dev/null | tail -1 >"$tmp/verify"
"$ppl" -m "$fl" -f "$text" --chunks 4 -t 2 --exit free --threshold 1 2>/dev/null |
  tail -1 >"$tmp/free1"
"$ppl" -m "$fl" -f "$text" --chunks 4 -t 2 --exit free --threshold 0.3 2>/dev/null >"$tmp/free"
cmp -s "$tmp/none" "$tmp/verify" || fail "--exit verify differs from none"
cmp -s "$tmp/none" "$tmp/free1" || fail "--exit free at threshold 1 differs from none"
grep -Eq '^exited [1-9][0-9]* of 252 ' "$tmp/free" || fail "--exit free 0.3: $(cat "$tmp/free")"
cmp -s "$tmp/none" "$(tail -1 "$tmp/free" >"$tmp/f3"; echo "$tmp/f3")" &&
  fail "--exit free at threshold 0.3 equals none"
for bad in "-c 7" "-c 2" "--exit maybe" "--chunks 0" "--bogus 1" "-c"; do
  # shellcheck disable=SC2086
  if "$ppl" -m "$fl" -f "$text" $bad >/dev/null 2>"$tmp/err"; then fail "accepted $bad"; fi
  grep -q "free-perplexity" "$tmp/err" || fail "no message for $bad"
done
"$ppl" -m "$fl" -f "$text" -c 8192 >/dev/null 2>"$tmp/err" && fail "accepted a too short text"
grep -q "needs at least" "$tmp/err" || fail "no message for a too short text"
echo "free-perplexity: $n files within 0.5% of llama.cpp"
