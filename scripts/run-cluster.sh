#!/usr/bin/env bash
# `make run-cluster`: a PostgreSQL-backed cluster of three calls-host nodes on
# 127.0.0.2-4:8065 (each with its plugin and its integrated SFU on its own address,
# port 8443) behind nginx on http://127.0.0.1:8080 (deploy/nginx/calls-cluster.conf),
# the demo users and channels seeded once. Ctrl-C stops everything.
#
# CLUSTER_DATABASE_URL: the database (default: the local PostgreSQL, database
# calls_cluster, created when missing). CLUSTER_NODES: how many nodes (2 or 3).
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE="${1:?usage: run-cluster.sh BUNDLE}"
NODES="${CLUSTER_NODES:-3}"
DIR="${CLUSTER_DATA_DIR:-data-cluster}"
HOST_BIN="${CALLS_HOST:-./target/release/calls-host}"
BASE_URL="postgres://postgres@127.0.0.1:5432"

need=()
command -v pg_ctlcluster >/dev/null 2>&1 || need+=(postgresql)
[ -x /usr/sbin/nginx ] || need+=(nginx)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "run-cluster needs: ${need[*]} (apt-get install ${need[*]})" >&2
    exit 1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
if [ -z "${CLUSTER_DATABASE_URL:-}" ]; then
  ver="$(ls /etc/postgresql | head -1)"
  hba="/etc/postgresql/$ver/main/pg_hba.conf"
  if ! grep -Eq '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
    pg_ctlcluster --skip-systemctl-redirect "$ver" main reload 2>/dev/null || true
  fi
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start 2>/dev/null || true
  pg_isready -h 127.0.0.1 -p 5432 -t 30 -q
  if ! psql "$BASE_URL/postgres" -tAc "SELECT 1 FROM pg_database WHERE datname = 'calls_cluster'" | grep -q 1; then
    psql "$BASE_URL/postgres" -qc "CREATE DATABASE calls_cluster"
  fi
  CLUSTER_DATABASE_URL="$BASE_URL/calls_cluster"
fi

mkdir -p "$DIR/nginx"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

start_node() {
  local ip="127.0.0.$1"
  MM_CALLS_UDP_SERVER_ADDRESS="$ip" MM_CALLS_TCP_SERVER_ADDRESS="$ip" MM_CALLS_ICE_HOST_OVERRIDE="$ip" \
    "$HOST_BIN" --listen "$ip:8065" --data-dir "$DIR/node$1" \
      --database-url "$CLUSTER_DATABASE_URL" --cluster demo \
      --site-url http://127.0.0.1:8080 --plugin-bundle "$BUNDLE" \
      > >(sed -u "s/^/[node $ip] /") 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do
    curl -fsS "http://$ip:8065/api/v4/system/ping" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "node $ip did not start" >&2
  exit 1
}

# The first node seeds the demo (once per database); the others join it.
for i in $(seq 2 $((NODES + 1))); do start_node "$i"; done

d="$(cd "$DIR/nginx" && pwd)"
cp deploy/nginx/calls-cluster.conf "$d/calls-cluster.conf"
if [ "$NODES" -lt 3 ]; then sed -i '/server 127\.0\.0\.4:8065/d' "$d/calls-cluster.conf"; fi
cat > "$d/nginx.conf" <<CONF
daemon off;
user root;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log;
events { worker_connections 1024; }
http {
  access_log $d/access.log;
  client_body_temp_path $d/body;
  proxy_temp_path $d/proxy;
  fastcgi_temp_path $d/fastcgi;
  uwsgi_temp_path $d/uwsgi;
  scgi_temp_path $d/scgi;
  include $d/calls-cluster.conf;
}
CONF
/usr/sbin/nginx -p "$d" -c "$d/nginx.conf" &
pids+=($!)
echo "cluster of $NODES nodes behind nginx: open http://127.0.0.1:8080 (each node's ping names it: curl -s http://127.0.0.1:8080/api/v4/system/ping)"
echo "demo users: admin / admin-password (system admin), alice / alice-password, bob / bob-password"
wait
