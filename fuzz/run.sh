#!/usr/bin/env bash
# fuzz/run.sh TARGET SECONDS [extra libFuzzer args]: fuzzes one target (seeds from fuzz/seeds.sh in
# fuzz/corpus/TARGET, new inputs kept there), with unbounded memory and hangs counted as findings
# (-rss_limit_mb=2048 -timeout=10). Findings land in fuzz/artifacts/TARGET/, the log in
# fuzz/logs/TARGET.log (its end has libFuzzer's totals: executions and coverage); with FUZZ_OUT=DIR they go
# under fuzz/DIR/ instead (the smoke run keeps apart from long campaigns that way).
set -euo pipefail
cd "$(dirname "$0")"
target=$1 secs=$2; shift 2
out=${FUZZ_OUT:-.}
mkdir -p "corpus/$target" "$out/artifacts/$target" "$out/logs"
# No AddressSanitizer by default: the engine is safe Rust (#![forbid(unsafe_code)]), so ASan finds nothing
# the Rust checks do not, and it cost 20 times the executions on image targets (inode: 2,878 exec/s
# without, about 150 with, measured side by side). FUZZ_SANITIZER=address brings it back.
cargo +nightly fuzz run -O --sanitizer "${FUZZ_SANITIZER:-none}" "$target" "corpus/$target" -- \
    -dict=ext4.dict -rss_limit_mb=2048 -timeout=10 -max_len=3200000 -len_control=0 \
    -max_total_time="$secs" -print_final_stats=1 -artifact_prefix="$out/artifacts/$target/" "$@" \
    >>"$out/logs/$target.log" 2>&1
