#!/usr/bin/env bash
# Makes the load tool's media (Debian: espeak-ng, opus-tools, vpx-tools, python3):
#   lt-media/speech.ogg  Opus, 20 ms packets, spoken English
#   lt-media/screen.ivf  VP8, 640x360 at 15 fps, a moving pattern, a keyframe every 2 s
set -euo pipefail
out="${1:-lt-media}"
mkdir -p "$out"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

espeak-ng -s 150 -w "$tmp/speech.wav" \
  "This is the Calls load test speaking. One, two, three, four, five. The quick brown fox jumps over the lazy dog. Testing audio forwarding through the selective forwarding unit."
opusenc --quiet --bitrate 32 --framesize 20 "$tmp/speech.wav" "$out/speech.ogg"

python3 - "$tmp/screen.y4m" <<'PY'
import sys
w, h, fps, n = 640, 360, 15, 150
with open(sys.argv[1], "wb") as f:
    f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
    for i in range(n):
        f.write(b"FRAME\n")
        y = bytearray(w * h)
        for r in range(h):
            base = (r + 3 * i) & 0xFF
            row = bytes(((base + c + 2 * i) & 0xFF) for c in range(0, w))
            y[r * w:(r + 1) * w] = row
        f.write(y)
        f.write(bytes([128]) * (w * h // 4))
        f.write(bytes([(64 + 2 * i) & 0xFF]) * (w * h // 4))
PY
vpxenc --quiet --codec=vp8 --ivf --target-bitrate=800 --kf-max-dist=30 --good -o "$out/screen.ivf" "$tmp/screen.y4m"
ls -l "$out"
