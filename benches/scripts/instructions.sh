#!/usr/bin/env bash
# Instructions per authorized request, per subject of the `per-request` scenario, counted by
# callgrind: immune to the machine's load, unlike requests/s. Each subject runs twice, with N and
# N + DELTA sequential requests after the same warm-up; the difference divided by DELTA is the cost
# of one request (the client's and the in-process API server's work: the server's share is the same
# in every row). Each difference is taken REPS times and the median reported (timing-dependent
# work, polls and wake-ups across the client's and the server's threads, moves a single difference
# by up to ±1 %). Usage: benches/scripts/instructions.sh [N] [DELTA] [REPS] (defaults 300 1000 3).
# Needs valgrind (Debian: valgrind).
set -euo pipefail
cd "$(dirname "$0")/../.."
base=${1:-300}
delta=${2:-1000}
reps=${3:-3}
cargo build --release -p token-mgmt-benches --bin load --locked >&2
load=${CARGO_TARGET_DIR:-target}/release/load
subjects=(
  "reqwest 0.13, fixed header (baseline)"
  "reqwest 0.12, fixed header"
  "middle 0.5 (BasicClientCredentialAuthorizer)"
  "oauth2 5 + tokio RwLock cache"
  "middle 0.5, 100 s timeout"
  "oauth2 5 + tokio RwLock cache, 100 s timeout"
  "token-mgmt (create_client per request)"
  "token-mgmt (client reused)"
  "token-mgmt without default timeout (client reused)"
  "token-mgmt HttpClient, fixed header, no token handler"
)
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$load" per-request \
    --requests "$2" --subject "$1" 2>&1 >/dev/null | sed -n 's/.*Collected : //p'
}
echo "| subject | instructions per request | vs baseline | spread of the $reps differences |"
echo "| --- | --- | --- | --- |"
baseline=
for subject in "${subjects[@]}"; do
  samples=()
  for _ in $(seq "$reps"); do
    low=$(count "$subject" "$base")
    high=$(count "$subject" $((base + delta)))
    samples+=($(( (high - low) / delta )))
  done
  per=$(printf '%s\n' "${samples[@]}" | sort -n | sed -n "$(( (reps + 1) / 2 ))p")
  baseline=${baseline:-$per}
  ratio=$(python3 -c "print(f'{$per / $baseline:.3f}×')")
  spread=$(printf '%s\n' "${samples[@]}" | sort -n | sed -n '1p;$p' | paste -sd '-' | sed 's/-/ – /')
  echo "| $subject | $per | $ratio | $spread |"
done
echo
echo "callgrind, $base and $((base + delta)) sequential requests per subject (differenced), median of $reps, $(date -u +%F)."
