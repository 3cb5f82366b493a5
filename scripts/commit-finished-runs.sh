#!/usr/bin/env bash
# Commits the finished (or diverged) runs of a long preset's output folder —
# each run's metrics.json, config.toml and log.jsonl, not its checkpoint —
# and the patched configs, so that a later session (or another machine)
# resumes the preset from them: `cargo xtask reproduce` counts a run folder
# with metrics.json and the same config.toml as done.
# Usage: scripts/commit-finished-runs.sh docs/results/convergence
set -euo pipefail
dir="${1:?usage: $0 RESULTS_DIR (e.g. docs/results/convergence)}"
[ -d "$dir/runs" ] || { echo "error: $dir/runs does not exist" >&2; exit 1; }
n=0
for run in "$dir"/runs/*/; do
    [ -f "$run/metrics.json" ] || continue
    git add -- "$run/metrics.json" "$run/config.toml" "$run/log.jsonl"
    n=$((n + 1))
done
[ -d "$dir/configs" ] && git add -- "$dir/configs"
[ -f "$dir/runs/timing.csv" ] && git add -- "$dir/runs/timing.csv"
if git diff --cached --quiet -- "$dir"; then
    echo "nothing new in $dir ($n finished runs already committed)"
    exit 0
fi
git commit -q -m "$(basename "$dir"): $n runs finished so far, committed so that a later session resumes from them" -- "$dir"
echo "committed $n finished runs of $dir"
