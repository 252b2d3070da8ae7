#!/usr/bin/env bash
# `make fuzz`: every fuzz target (fuzz/fuzz_targets/) for FUZZ_RUNS executions or
# FUZZ_SECONDS, whichever comes first, on its corpus (fuzz/corpus/<target>, seeded by
# scripts/fuzz-seeds.py), then one line per target: executions, time, speed, crashes.
# cargo-fuzz with `--sanitizer none` runs on the stable toolchain. A crash leaves its
# input in fuzz/artifacts/<target>/ and makes the script exit 1; once understood and
# fixed, it goes to fuzz/regressions/<target>/ (committed), which every run replays.
#   FUZZ_TARGETS="rtcd_envelope sdp"  FUZZ_RUNS=10000000  FUZZ_SECONDS=1800  FUZZ_JOBS=1
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS="${FUZZ_RUNS:-10000000}"
SECONDS_MAX="${FUZZ_SECONDS:-1800}"
JOBS="${FUZZ_JOBS:-1}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
all="$(cargo fuzz list)"
TARGETS="${FUZZ_TARGETS:-$all}"
cargo fuzz build -s none

out="$(mktemp -d)"
run_one() {
  local t="$1"
  local corpus="fuzz/corpus/$t"
  if [ ! -d "$corpus" ] || [ -z "$(ls -A "$corpus")" ]; then
    python3 scripts/fuzz-seeds.py fuzz/corpus >/dev/null
  fi
  mkdir -p "fuzz/artifacts/$t"
  # Inputs that once crashed a target (fuzz/regressions/<target>) are replayed first.
  local extra=()
  [ -d "fuzz/regressions/$t" ] && extra=("fuzz/regressions/$t")
  local start rc=0
  start=$(date +%s)
  touch "$out/$t.start"
  cargo fuzz run -s none "$t" "$corpus" "${extra[@]}" -- -runs="$RUNS" -max_total_time="$SECONDS_MAX" \
    -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" > "$out/$t.log" 2>&1 || rc=$?
  local secs=$(( $(date +%s) - start ))
  local execs
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/$t.log" | tail -1)"
  local crashes
  crashes="$(find "fuzz/artifacts/$t" -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' \) -newer "$out/$t.start" | wc -l)"
  printf '%-16s %12s execs %6s s %9s exec/s  crashes %s  exit %s\n' "$t" "${execs:-?}" "$secs" \
    "$(( ${execs:-0} / (secs > 0 ? secs : 1) ))" "$crashes" "$rc" | tee -a "$out/table"
}
export -f run_one
export RUNS SECONDS_MAX out

printf '%s\n' $TARGETS | xargs -P "$JOBS" -I{} bash -c 'run_one {}'
echo
echo "fuzz summary (runs <= $RUNS, <= $SECONDS_MAX s per target; logs in $out):"
sort "$out/table"
if grep -Eq 'crashes [1-9]|exit [1-9]' "$out/table"; then
  echo "fuzz: crashes found (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
