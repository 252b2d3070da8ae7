#!/usr/bin/env bash
# The project's test command (README): formatting, lints, then every test —
# unit, process tests on SQLite and on PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests need from the machine, installed when it is missing.
./scripts/test-deps.sh

# The process tests create throw-away databases on this server.
if [ -z "${CALLS_TEST_POSTGRES:-}" ]; then
  export CALLS_TEST_POSTGRES=postgres://postgres@127.0.0.1:5432
  if ! pg_isready -h 127.0.0.1 -p 5432 -t 30 -q; then
    echo "PostgreSQL is not reachable on 127.0.0.1:5432 (scripts/test-deps.sh starts a local one as root; or set CALLS_TEST_POSTGRES)" >&2
    exit 1
  fi
fi

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
python3 scripts/module-cycles.py
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast
else
  cargo test --no-fail-fast
fi
