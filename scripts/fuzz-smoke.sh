#!/usr/bin/env bash
# A bounded fuzz run of every target (SECONDS each, 20 by default) from fresh seed corpora: fails if
# any target finds a crash, a hang (-timeout=10) or unbounded memory (-rss_limit_mb=2048). Needs the
# nightly toolchain and cargo-fuzz (scripts/setup.sh installs them) and root for the kernel-made seeds.
# The long campaigns are `fuzz/run.sh TARGET SECONDS`; docs/security.md says what was run.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-20}
bash seeds.sh
targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^ext4box-fuzz$')
failed=()
for t in $targets; do
    rm -rf "artifacts/$t" "logs/$t.log"
    if ./run.sh "$t" "$secs" && [[ -z $(ls -A "artifacts/$t" 2>/dev/null) ]]; then
        echo "fuzz-smoke: $t: $(grep -E '^Done [0-9]+ runs' "logs/$t.log" | tail -1), $(grep -oE 'cov: [0-9]+' "logs/$t.log" | tail -1)"
    else
        failed+=("$t")
        echo "fuzz-smoke: $t FAILED: see fuzz/logs/$t.log and fuzz/artifacts/$t/" >&2
        tail -30 "logs/$t.log" >&2
    fi
done
((${#failed[@]} == 0)) || { echo "fuzz-smoke: findings in: ${failed[*]}" >&2; exit 1; }
