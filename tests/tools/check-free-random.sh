#!/bin/sh
# free-random writes a model libfree loads and decodes, the same seed gives the same bytes,
# and bad arguments are refused with a message. Args: FREE_RANDOM FREE_CLI VOCAB.gguf
set -u
rnd=$1 cli=$2 vocab=$3
[ -f "$vocab" ] || { echo "SKIP: $vocab absent"; exit 77; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
"$rnd" "$tmp/a.gguf" --vocab-from "$vocab" --dim 64 --layers 4 --ff 96 --heads 4 \
  --kv-heads 2 --seed 7 2>/dev/null || fail "free-random failed"
"$rnd" "$tmp/b.gguf" --vocab-from "$vocab" --dim 64 --layers 4 --ff 96 --heads 4 \
  --kv-heads 2 --seed 7 2>/dev/null || fail "free-random failed (2)"
cmp -s "$tmp/a.gguf" "$tmp/b.gguf" || fail "same seed, different files"
"$rnd" "$tmp/c.gguf" --vocab-from "$vocab" --dim 64 --layers 4 --ff 96 --heads 4 \
  --kv-heads 2 --seed 8 2>/dev/null || fail "free-random failed (3)"
cmp -s "$tmp/a.gguf" "$tmp/c.gguf" && fail "different seeds, same file"
out=$("$cli" -m "$tmp/a.gguf" -p "hello" -n 8 --stats 2>&1) || fail "free-cli: $out"
echo "$out" | grep -q '"tokens": 8' || fail "free-cli did not decode 8 tokens: $out"
for bad in "--dim 65" "--layers 0" "--type q9" "--dim 1e3" "--exit-layer 4"; do
  # shellcheck disable=SC2086
  if "$rnd" "$tmp/d.gguf" --vocab-from "$vocab" --layers 4 $bad 2>"$tmp/err"; then
    fail "accepted $bad"
  fi
  grep -q "free-random: " "$tmp/err" || fail "no message for $bad"
done
echo "free-random: 4 checks passed"
