#!/usr/bin/env bash
# Instructions the SFU core spends per forwarded packet (1 publisher -> N subscribers),
# counted by callgrind: exact and repeatable, unlike wall time on a shared machine.
# Runs the forward bench at two talk times; the difference in instructions inside
# Sfu::poll / Sfu::handle_receive over the difference in forwarded packets is the
# cost per packet, setup excluded.   Usage: scripts/forward-instructions.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-100}"
command -v valgrind >/dev/null || { echo "valgrind is required (apt-get install valgrind)" >&2; exit 1; }
cargo bench --bench forward --no-run >/dev/null 2>&1
BIN="$(ls -t "${CARGO_TARGET_DIR:-target}"/release/deps/forward-* | grep -v '\.d$' | head -1)"
run() {
  local out
  out="$(FORWARD_SECONDS="$1" valgrind --tool=callgrind --callgrind-out-file=/dev/null \
    --collect-atstart=no --toggle-collect='calls_sfu::Sfu::poll' \
    --toggle-collect='calls_sfu::Sfu::handle_receive' "$BIN" "$N" 2>&1)"
  local fwd ins
  fwd="$(sed -n 's/.* forwarded=\([0-9]*\) .*/\1/p' <<<"$out")"
  ins="$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' <<<"$out")"
  echo "$fwd $ins"
}
read -r f1 i1 < <(run 2)
read -r f2 i2 < <(run 6)
python3 -c "print(f'subscribers=$N instructions per forwarded packet: {($i2-$i1)/($f2-$f1):.0f}')"
