#!/usr/bin/env bash
# Runs every test in the workspace and ends with one summary line over all test binaries.
set -uo pipefail
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --workspace "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
summary=$(awk '/^test result: /{ for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
               END { printf "%d passed, %d failed", p, f }' "$log")
echo
echo "Summary: $summary"
exit "$status"
