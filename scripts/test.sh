#!/usr/bin/env bash
# The project's test command (README): formatting, lints, then every test —
# unit, process tests on SQLite and on PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."

# The process tests create throw-away databases on this server.
export CALLS_TEST_POSTGRES="${CALLS_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432}"
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  if [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
fi
if ! pg_isready -h 127.0.0.1 -p 5432 -t 30 -q; then
  echo "PostgreSQL is not reachable on 127.0.0.1:5432 (run .ci/run once to install it)" >&2
  exit 1
fi

# The browser tests' driver (playwright-core, pinned by package-lock.json).
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  (cd tests/browser && npm ci --no-audit --no-fund)
fi

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
python3 scripts/module-cycles.py
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast
else
  cargo test --no-fail-fast
fi
