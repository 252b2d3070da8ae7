#!/usr/bin/env bash
# What the tests need from the machine, installed when it is missing (Debian's
# packages, as root), and a local PostgreSQL the tests may use. `make test` calls this
# first; on a machine that has everything it does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v pg_ctlcluster >/dev/null 2>&1 || need+=(postgresql)
command -v pgrep >/dev/null 2>&1 || need+=(procps)
# The recorder's Opus decoding and encoding links libopus (found through pkg-config).
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
dpkg -s libopus-dev >/dev/null 2>&1 || need+=(libopus-dev)
# The recording tests make their media and check the files with ffmpeg / ffprobe.
command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
# Browser tests drive Debian's Chromium (playwright-core never downloads a browser).
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
# The ICE-TCP test runs a browser in a network namespace of its own.
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
# A real STUN server for the discovery test.
[ -x /usr/bin/turnserver ] || need+=(coturn)
# The load balancer in front of a cluster (deploy/nginx, the cluster tests).
[ -x /usr/sbin/nginx ] || need+=(nginx)
# The load tool's media and plot (scripts/lt-media.sh, calls-lt).
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
command -v opusenc >/dev/null 2>&1 || need+=(opus-tools)
command -v vpxenc >/dev/null 2>&1 || need+=(vpx-tools)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
# The fuzz targets (libFuzzer is C++) and the scripts' helpers.
command -v c++ >/dev/null 2>&1 || need+=(g++)
command -v python3 >/dev/null 2>&1 || need+=(python3)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "the tests need these Debian packages: ${need[*]}" >&2
    echo "install them (apt-get install ${need[*]}) or run make test as root on Debian" >&2
    exit 1
  fi
  echo "installing what the tests need: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The process tests create throw-away databases on a local server, as `postgres` over
# loopback without a password. A server given by CALLS_TEST_POSTGRES is left alone.
if [ -z "${CALLS_TEST_POSTGRES:-}" ]; then
  ver="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)"
  if [ -n "$ver" ] && [ "$(id -u)" = 0 ]; then
    hba="/etc/postgresql/$ver/main/pg_hba.conf"
    if ! grep -Eq '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$hba"; then
      sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
      pg_ctlcluster --skip-systemctl-redirect "$ver" main reload 2>/dev/null || true
    fi
    if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
      pg_ctlcluster --skip-systemctl-redirect "$ver" main start 2>/dev/null || true
    fi
  fi
fi

# The browser tests' driver (playwright-core, pinned by package-lock.json).
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  (cd tests/browser && npm ci --no-audit --no-fund)
fi

# The lints run first.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add clippy rustfmt
fi
