#!/bin/sh
# free-convert quantizes exactly as llama.cpp's llama-quantize: the files it writes from the
# shared F16/F32 models equal, byte for byte, the ones llama-quantize wrote (mix rules,
# fallbacks, quantized blocks, tensor and key order, padding). The other types write files
# with the expected per-tensor types, and libfree loads and decodes every file written;
# bad arguments are refused with a message. Args: FREE_CONVERT FREE_CLI MODELS_DIR
set -u
conv=$1 cli=$2 models=$3
fl=$models/free-llama-22M st=$models/stories260K
[ -f "$fl/free-llama-22M.gguf" ] || { echo "SKIP: $fl/free-llama-22M.gguf absent"; exit 77; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
n=0
same() { # TYPE SOURCE REFERENCE
  "$conv" "$2" "$tmp/out.gguf" --type "$1" 2>"$tmp/log" >/dev/null ||
    fail "--type $1 on $2: $(cat "$tmp/log")"
  cmp -s "$tmp/out.gguf" "$3" || fail "--type $1 on $2 differs from $3"
  out=$("$cli" -m "$tmp/out.gguf" -p "Once upon a time" -n 4 --stats 2>&1) ||
    fail "--type $1: libfree cannot decode the file: $out"
  n=$((n + 1))
}
same q8_0 "$fl/free-llama-22M.gguf" "$fl/free-llama-22M-q8_0.gguf"
same q4_0 "$fl/free-llama-22M.gguf" "$fl/quant/free-llama-22M-q4_0.gguf"
same q4_k_m "$fl/free-llama-22M.gguf" "$fl/quant/free-llama-22M-q4_k_m.gguf"
same q5_k_m "$fl/free-llama-22M.gguf" "$fl/quant/free-llama-22M-q5_k_m.gguf"
if [ -f "$st/stories260K.gguf" ]; then
  # Rows of 64 and 172: Q5_0 / Q8_0 fallbacks, and F16 for ffn_down (172 % 32 != 0).
  same q4_k_m "$st/stories260K.gguf" "$st/quant/stories260K-q5_0-mix.gguf"
  same q6_k "$st/stories260K.gguf" "$st/quant/stories260K-q8_0-mix.gguf"
fi
# Progress: one line per tensor on stderr, with the fallbacks named.
"$conv" "$fl/free-llama-22M.gguf" "$tmp/k.gguf" --type q4_k_m 2>"$tmp/log" >/dev/null
[ "$(grep -c '^\[' "$tmp/log")" = 111 ] || fail "progress lines: $(head -3 "$tmp/log")"
grep -q 'blk.0.ffn_down.weight *F16 *-> Q6_K' "$tmp/log" || fail "blk.0.ffn_down not Q6_K"
grep -q 'blk.1.ffn_down.weight *F16 *-> Q4_K' "$tmp/log" || fail "blk.1.ffn_down not Q4_K"
grep -q 'blk.1.attn_q.weight *F16 *-> Q5_0 *(fallback' "$tmp/log" || fail "no fallback line"
# The other types: every matrix of the expected type (rows of 384 and 1024).
for t in q4_1:Q4_1 q5_0:Q5_0 q5_1:Q5_1 bf16:BF16 q4_k:Q5_0 q5_k:Q5_1 q6_k:Q8_0; do
  "$conv" "$fl/free-llama-22M.gguf" "$tmp/t.gguf" --type "${t%%:*}" 2>"$tmp/log" >/dev/null ||
    fail "--type ${t%%:*}: $(tail -1 "$tmp/log")"
  grep -q "blk.5.attn_q.weight *F16 *-> ${t#*:} " "$tmp/log" ||
    fail "--type ${t%%:*}: blk.5.attn_q.weight is not ${t#*:}"
  out=$("$cli" -m "$tmp/t.gguf" -p "It is a truth" -n 4 --stats 2>&1) ||
    fail "--type ${t%%:*}: libfree cannot decode the file: $out"
  echo "$out" | grep -q '"tokens": 4' || fail "--type ${t%%:*}: no 4 tokens: $out"
  n=$((n + 1))
done
# F16 -> F32 -> F16 gives the same bytes (the f32/f16 path keeps its layout).
"$conv" "$fl/free-llama-22M.gguf" "$tmp/a.gguf" --type f32 >/dev/null 2>&1 || fail "f32"
"$conv" "$tmp/a.gguf" "$tmp/b.gguf" --type f16 >/dev/null 2>&1 || fail "f16"
cmp -s "$tmp/b.gguf" "$fl/free-llama-22M.gguf" || fail "F16 -> F32 -> F16 changed bytes"
for bad in "--type q9_0" "--type" "--exit-layer 12 --type q8_0"; do
  # shellcheck disable=SC2086
  if "$conv" "$fl/free-llama-22M.gguf" "$tmp/d.gguf" $bad 2>"$tmp/err" >/dev/null; then
    fail "accepted $bad"
  fi
  grep -q "free-convert" "$tmp/err" || grep -q "usage" "$tmp/err" || fail "no message for $bad"
done
echo "free-convert: $n conversions checked"
