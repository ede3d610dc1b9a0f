#!/bin/sh
# Runs libFuzzer targets one after another (one process at a time, no -jobs) until each has
# run SECONDS in total, restarting after a crash (the input is kept under
# $WORK/<target>/artifacts). The working corpus starts from tests/fuzz/corpus/<target>.
#
#   CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined \
#       -Db_lundef=false && ninja -C build-fuzz
#   tests/fuzz/run-fuzzers.sh build-fuzz/tests/fuzz 1800 gguf tokenize detokenize params bpe chat
#
# Totals go to $WORK/<target>/totals (one line per run: seconds, executions, coverage,
# features). WORK defaults to /tmp/libfree-fuzz.
set -u
bin_dir=$1
seconds=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
work=${WORK:-/tmp/libfree-fuzz}
for t in "$@"; do
    dir=$work/$t
    mkdir -p "$dir/corpus" "$dir/artifacts"
    cp -n "$here/corpus/$t"/* "$dir/corpus/" 2>/dev/null
    dict=
    [ -f "$here/$t.dict" ] && dict=-dict=$here/$t.dict
    done_s=0
    [ -f "$dir/totals" ] && done_s=$(awk '{s += $1} END {print s + 0}' "$dir/totals")
    while [ "$done_s" -lt "$seconds" ]; do
        left=$((seconds - done_s))
        start=$(date +%s)
        "$bin_dir/fuzz-$t" -max_total_time="$left" -max_len=65536 \
            -timeout=20 -rss_limit_mb=3072 -print_final_stats=1 $dict \
            -artifact_prefix="$dir/artifacts/" "$dir/corpus" >>"$dir/log" 2>&1
        rc=$?
        took=$(($(date +%s) - start))
        execs=$(grep -a 'stat::number_of_executed_units' "$dir/log" | tail -1 | awk '{print $2}')
        cov=$(grep -a '#[0-9]*.*cov:' "$dir/log" | tail -1 |
              sed 's/.*cov: \([0-9]*\).*ft: \([0-9]*\).*/\1 \2/')
        echo "$took ${execs:-0} ${cov:-0 0} rc=$rc" >>"$dir/totals"
        done_s=$((done_s + took))
        [ "$took" -lt 2 ] && break # fails at once: a setup problem, not a finding
    done
done
