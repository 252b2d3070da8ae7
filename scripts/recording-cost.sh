#!/usr/bin/env bash
# The recorder's cost in the seed's shape (a 10-person call, 2 speakers, a 1.6 Mbit/s
# screen share), on release builds: CPU per recorded minute, peak memory, file size,
# next to calls-offloader's published sizing. RECORDING_COST_SECONDS (default 120).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins
CALLS_TEST_BIN_DIR="$PWD/target/release" cargo nextest run --run-ignored only \
  -E 'test(=recording::recording_cost)' --no-capture 2>&1 | grep -E '^(recording cost|  )'
