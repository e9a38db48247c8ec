#!/usr/bin/env bash
# A bounded fuzz run of every target (SECONDS each, 20 by default) from fresh seed corpora: fails if
# any target finds a crash, a hang (-timeout=10) or unbounded memory (-rss_limit_mb=2048). Needs the
# nightly toolchain and cargo-fuzz (scripts/setup.sh installs them) and root for the kernel-made seeds.
# The long campaigns are `fuzz/run.sh TARGET SECONDS`; docs/security.md says what was run.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-20}
export FUZZ_OUT=smoke
bash seeds.sh
targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^ext4box-fuzz$')
failed=()
for t in $targets; do
    rm -rf "smoke/artifacts/$t" "smoke/logs/$t.log"
    if ./run.sh "$t" "$secs" && [[ -z $(ls -A "smoke/artifacts/$t" 2>/dev/null) ]]; then
        echo "fuzz-smoke: $t: $(grep -E '^Done [0-9]+ runs' "smoke/logs/$t.log" | tail -1), $(grep -oE 'cov: [0-9]+' "smoke/logs/$t.log" | tail -1)"
    else
        failed+=("$t")
        echo "fuzz-smoke: $t FAILED: see fuzz/smoke/logs/$t.log and fuzz/smoke/artifacts/$t/" >&2
        tail -30 "smoke/logs/$t.log" >&2
    fi
done
((${#failed[@]} == 0)) || { echo "fuzz-smoke: findings in: ${failed[*]}" >&2; exit 1; }
