#!/usr/bin/env bash
# `make bench`: the seed's capacity shapes at this machine's scale, on the integrated
# SFU and on rtcd. The SFU process is pinned to CPU 0, calls-lt to CPU 1 (taskset).
#   (a) 1 call x A participants, 2 unmuted            (A: BENCH_A, default 500)
#   (b) 1 call x B participants, 1 unmuted + 1 screen (B: BENCH_B, default 200)
#   (c) C calls x 2 participants, both unmuted        (C: BENCH_C, default 250)
#   (d) 1 call x D participants, all muted (idle cost) (D: BENCH_D, default 500)
# Per shape: CPU us per forwarded packet (total and user space), memory per
# participant, loss, join latency; for (d) CPU us per idle participant per second.
# BENCH_TARGETS (integrated rtcd) and BENCH_SHAPES (a b c) select what runs.
# BENCH_BUNDLE runs that plugin bundle instead of building one (A/B of two builds;
# the host, rtcd and calls-lt still come from target/release).
set -euo pipefail
if [ -n "${BENCH_BUNDLE:-}" ]; then BENCH_BUNDLE="$(realpath -m -- "$BENCH_BUNDLE")"; fi
cd "$(dirname "$0")/.."
A="${BENCH_A:-500}"; B="${BENCH_B:-200}"; C="${BENCH_C:-250}"; D="${BENCH_D:-500}"
DUR="${BENCH_DURATION:-30}"; RATE="${BENCH_JOIN_RATE:-20}"
TARGETS="${BENCH_TARGETS:-integrated rtcd}"
OUT="${BENCH_OUT:-bench-results}"
missing=()
for tool in taskset:util-linux espeak-ng:espeak-ng opusenc:opus-tools vpxenc:vpx-tools; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "make bench needs: apt-get install ${missing[*]}" >&2; exit 1
fi

if [ -n "${BENCH_BUNDLE:-}" ]; then
  [ -f "$BENCH_BUNDLE" ] || { echo "BENCH_BUNDLE: no such file: $BENCH_BUNDLE" >&2; exit 1; }
  BUNDLE="$BENCH_BUNDLE"
else
  make dist >/dev/null
  BUNDLE="$(ls dist/com.mattermost.calls-*.tar.gz | head -1)"
fi
# The same features as `make dist`'s build: nothing built twice.
cargo build --release -p mattermost-calls --no-default-features \
  --bin calls-host --bin rtcd --bin calls-lt >/dev/null
# Media at the seed's bitrates, made again when the script that makes it changed.
if ! [ lt-media/speech.ogg -nt scripts/lt-media.sh ] || ! [ lt-media/screen.ivf -nt scripts/lt-media.sh ]; then
  scripts/lt-media.sh lt-media
fi
mkdir -p "$OUT"
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

# A port free for TCP and UDP within the settings' range [80, 49151].
free_port() {
  python3 - <<'PY'
import random, socket
while True:
    p = random.randint(20000, 49151)
    try:
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            s = socket.socket(socket.AF_INET, kind); s.bind(("0.0.0.0", p)); s.close()
        print(p); break
    except OSError:
        pass
PY
}

# Starts host (+ rtcd) for a target; sets HOST_URL and SFU_PID.
start_target() {
  local target="$1" port rtc rtcd_http
  port="$(free_port)"; rtc="$(free_port)"
  local env=(MM_CALLS_UDP_SERVER_PORT="$rtc" MM_CALLS_TCP_SERVER_PORT="$rtc" MM_CALLS_ICE_HOST_OVERRIDE=127.0.0.1 MM_CALLS_DEFAULT_ENABLED=true)
  if [ "$target" = rtcd ]; then
    rtcd_http="$(free_port)"
    RTCD_API_HTTP_LISTENADDRESS="127.0.0.2:$rtcd_http" RTCD_API_SECURITY_ALLOWSELFREGISTRATION=true \
    RTCD_RTC_ICEADDRESSUDP=127.0.0.2 RTCD_RTC_ICEADDRESSTCP=127.0.0.2 RTCD_RTC_ICEPORTUDP="$rtc" \
    RTCD_RTC_ICEPORTTCP="$rtc" RTCD_RTC_ICEHOSTOVERRIDE=127.0.0.2 RTCD_STORE_DATASOURCE="$WORK/rtcd-db" \
    RTCD_LOGGER_ENABLEFILE=false RTCD_LOGGER_CONSOLELEVEL=warn \
      taskset -c 0 target/release/rtcd --config "$WORK/none.toml" > "$WORK/rtcd.log" 2>&1 &
    PIDS+=($!); SFU_PID=$!
    sleep 1
    env+=(MM_CALLS_RTCD_SERVICE_URL="http://127.0.0.2:$rtcd_http")
  fi
  rm -rf "$WORK/host-$target"
  env "${env[@]}" RUST_LOG=warn target/release/calls-host --listen "127.0.0.1:$port" --login-rate-limit 0 \
    --data-dir "$WORK/host-$target" --plugin-bundle "$BUNDLE" > "$WORK/host-$target.log" 2>&1 &
  local host=$!
  PIDS+=($host)
  HOST_URL="http://127.0.0.1:$port"
  for _ in $(seq 1 100); do curl -sf "$HOST_URL/plugins/com.mattermost.calls/version" >/dev/null 2>&1 && break; sleep 0.2; done
  if [ "$target" = integrated ]; then
    # This host's own plugin process: one of the previous shape's may still be exiting.
    SFU_PID="$(pgrep -P "$host" -f "$WORK/host-$target/plugins" | head -1)"
    [ -n "$SFU_PID" ] || { echo "bench: the host started no plugin process (see $WORK/host-$target.log)" >&2; return 1; }
    taskset -p -c 0 "$SFU_PID" >/dev/null
    for t in /proc/"$SFU_PID"/task/*; do taskset -p -c 0 "$(basename "$t")" >/dev/null 2>&1 || true; done
  fi
}

run_shape() {
  local target="$1" name="$2" calls="$3" parts="$4" unmuted="$5" sharers="$6"
  rm -rf "$OUT/$target-$name"
  start_target "$target" 2>"$OUT/$target-$name.txt" || { stop_all; return 0; }
  taskset -c 1 target/release/calls-lt --url "$HOST_URL" --calls "$calls" --participants "$parts" \
    --unmuted "$unmuted" --sharers "$sharers" --duration "$DUR" --join-rate "$RATE" \
    --pid "$SFU_PID" --user-prefix "b$name" --out "$OUT/$target-$name" > "$OUT/$target-$name.txt" 2>"$OUT/$target-$name.progress" || true
  stop_all
}

# Stops the host, its plugin and rtcd, and waits for them to be gone, so that the
# next shape starts on an SFU that is alone on its core.
stop_all() {
  local ours="$WORK/host-|target/release/rtcd --config $WORK"
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; PIDS=()
  for _ in $(seq 1 50); do
    pgrep -f "$ours" >/dev/null || break
    sleep 0.2
  done
  pkill -9 -f "$ours" 2>/dev/null || true
  sleep 1
}

SHAPES="${BENCH_SHAPES:-a b c d}"
for target in $TARGETS; do
  for shape in $SHAPES; do
    case "$shape" in
      a) run_shape "$target" a 1 "$A" 2 0 ;;
      b) run_shape "$target" b 1 "$B" 1 1 ;;
      c) run_shape "$target" c "$C" 2 2 0 ;;
      d) run_shape "$target" d 1 "$D" 0 0 ;;
    esac
  done
done

python3 - "$OUT" $TARGETS <<'PY'
import json, os, sys
out, targets = sys.argv[1], sys.argv[2:]
rows = []
# The seed's benchmark row of the same shape (calls, participants/call, unmuted, screen
# share: bandwidth in / out, Mbit/s), from its "Results" table. Out grows with the
# receivers, so both are also given per participant.
SEED = {
    "a": ("1 x 1000, 2 unmuted", 1, 1000, 1.0, 194.0),
    "b": ("1 x 1000, 1 unmuted + screen", 1, 1000, 2.9, 1680.0),
    "c": ("1000 x 2, 2 unmuted", 1000, 2, 178.0, 195.0),
}
def bandwidth(name, r, n):
    bin_, bout = r.get("sfu_in_mbit_per_s"), r.get("sfu_out_mbit_per_s")
    if bin_ is None or bout is None:
        return "bandwidth n/a"
    ours = f"in/out {bin_:.1f} / {bout:.1f} Mbit/s ({bout*1000/n:.0f} kbit/s out per participant)"
    if name not in SEED:
        return ours
    label, calls, parts, sin, sout = SEED[name]
    return (f"{ours}  [seed {label}: {sin:g} / {sout:g} Mbit/s, "
            f"{sout*1000/(calls*parts):.0f} kbit/s out per participant]")
# Join -> first media; an idle shape has no media, hence no such time.
def ms(v):
    return "n/a" if v is None else f"{v:.0f} ms"
for t in targets:
    for name in os.environ.get("BENCH_SHAPES", "a b c d").split():
        p = os.path.join(out, f"{t}-{name}", "report.json")
        if not os.path.exists(p):
            rows.append((t, name, "failed: see " + os.path.join(out, f"{t}-{name}.txt"))); continue
        r = json.load(open(p))
        s = [x for x in r["samples"] if x.get("cpu_pct") is not None]
        if not s:
            rows.append((t, name, "no SFU CPU samples: its process was gone (see "
                         + os.path.join(out, f"{t}-{name}.txt") + ")")); continue
        # Steady state: the last half of the run.
        half = s[len(s)//2:] or s
        cpu_s = sum(x["cpu_pct"] for x in half) / 100.0
        user_s = sum(x.get("cpu_user_pct") or 0.0 for x in half) / 100.0
        pkts = sum(x["rx_packets_per_s"] for x in half)
        rss = r.get("sfu_rss_max_mb") or 0.0
        n = r["calls"] * r["participants_per_call"]
        if r["unmuted_per_call"] == 0 and r["sharers_per_call"] == 0:
            # Idle shape: nothing is forwarded; the cost is per participant.
            cost = f"{cpu_s / len(half) / max(r['joins_ok'], 1) * 1e6:6.1f} us CPU/s per idle participant"
        else:
            us = cpu_s / pkts * 1e6 if pkts else float("nan")
            us_user = user_s / pkts * 1e6 if pkts else float("nan")
            cost = f"{us:6.2f} us/pkt ({us_user:.2f} user)"
        bw = bandwidth(name, r, n)
        rows.append((t, name, f"{cost}  {rss*1024/n:7.1f} KiB RSS/participant (max {rss:.0f} MB)  {bw}  "
                     f"loss {r['loss_pct']:.2f} %  join->media p50 {ms(r['first_media_p50_ms'])} p99 {ms(r['first_media_p99_ms'])}  "
                     f"joins {r['joins_ok']}/{n}  {pkts/len(half):.0f} pkt/s  "
                     f"load tool {r.get('lt_cpu_avg_pct') or 0:.0f} % CPU  "
                     f"VM steal {r.get('steal_avg_pct') or 0:.1f} %"))
print(f"{'target':<11} shape  result")
for t, n, v in rows:
    print(f"{t:<11} ({n})    {v}")
print("user: the kernel's tick-sampled split, biased when wake-ups fall on the tick; "
      "perf record -e cpu-clock gives the true one")
print("VM steal: the machine's CPU time the hypervisor gave to other guests during the run; "
      "above a few %, rerun: the figures of a stolen run are not the SFU's")
PY
