#!/usr/bin/env bash
# Makes the load tool's media (Debian: espeak-ng, opus-tools, vpx-tools, python3), by
# default at the bitrates of the seed's benchmarks ("Media specifications": speech
# 80 kbps, screen sharing 1.6 Mbps), so that `make bench` rows read against its table:
#   lt-media/speech.ogg  Opus, 20 ms packets, spoken English, LT_SPEECH_KBPS (80), CBR
#   lt-media/screen.ivf  VP8, LT_SCREEN_SIZE (1280x720) at LT_SCREEN_FPS (15), CBR at
#                        LT_SCREEN_KBPS (1600), a keyframe every 2 s; the picture has
#                        a part that changes unpredictably every frame (as text and
#                        windows being scrolled do), so the encoder spends its budget
set -euo pipefail
out="${1:-lt-media}"
SPEECH_KBPS="${LT_SPEECH_KBPS:-80}"
SCREEN_KBPS="${LT_SCREEN_KBPS:-1600}"
SCREEN_SIZE="${LT_SCREEN_SIZE:-1280x720}"
SCREEN_FPS="${LT_SCREEN_FPS:-15}"
mkdir -p "$out"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

espeak-ng -s 150 -w "$tmp/speech.wav" \
  "This is the Calls load test speaking. One, two, three, four, five. The quick brown fox jumps over the lazy dog. Testing audio forwarding through the selective forwarding unit."
opusenc --quiet --hard-cbr --bitrate "$SPEECH_KBPS" --framesize 20 "$tmp/speech.wav" "$out/speech.ogg"

python3 - "$tmp/screen.y4m" "$SCREEN_SIZE" "$SCREEN_FPS" <<'PY'
import random, sys
w, h = (int(x) for x in sys.argv[2].split("x"))
fps = int(sys.argv[3])
n = fps * 10
rng = random.Random(7)
# A wide texture slid sideways (what the encoder predicts well) and a band of fresh
# blocky noise (8x8 blocks), a third of the height, that it cannot predict.
tex = bytes(rng.randrange(256) for _ in range(2 * w))
band = h // 3
def noise():
    rows = []
    for _ in range(band // 8):
        row = bytes(v for v in rng.randbytes(w // 8) for _ in range(8))
        rows.extend([row] * 8)
    rows.extend([rows[-1]] * (band - len(rows)))
    return b"".join(rows)
with open(sys.argv[1], "wb") as f:
    f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
    for i in range(n):
        f.write(b"FRAME\n")
        rows = []
        for r in range(h):
            if band <= r < 2 * band:
                continue
            o = (r * 13 + 4 * i) % w
            rows.append(tex[o:o + w])
        top = b"".join(rows[:band])
        bottom = b"".join(rows[band:])
        f.write(top)
        f.write(noise())
        f.write(bottom)
        f.write(bytes([128]) * (w * h // 4))
        f.write(bytes([(64 + 2 * i) & 0xFF]) * (w * h // 4))
PY
vpxenc --quiet --codec=vp8 --ivf --end-usage=cbr --target-bitrate="$SCREEN_KBPS" \
  --buf-initial-sz=500 --buf-optimal-sz=600 --buf-sz=1000 --drop-frame=0 \
  --kf-max-dist=$((2 * SCREEN_FPS)) --kf-min-dist=$((2 * SCREEN_FPS)) --good --cpu-used=4 \
  -o "$out/screen.ivf" "$tmp/screen.y4m"
python3 - "$out" <<'PY'
import os, struct, sys
out = sys.argv[1]
# The files' own bitrates: Ogg pages' payloads over the granule time, IVF frames over
# the frame count and rate.
def ivf(path):
    b = open(path, "rb").read()
    rate, scale, frames = struct.unpack_from("<IIi", b, 16)
    i, size = 32, 0
    while i + 12 <= len(b):
        n = struct.unpack_from("<I", b, i)[0]
        size += n
        i += 12 + n
    return size * 8 / (frames * scale / rate) / 1000
def ogg(path):
    b = open(path, "rb").read()
    i, payload, granule = 0, 0, 0
    while i < len(b):
        granule = max(granule, struct.unpack_from("<q", b, i + 6)[0])
        segs = b[i + 26]
        table = b[i + 27:i + 27 + segs]
        payload += sum(table)
        i += 27 + segs + sum(table)
    return payload * 8 / (granule / 48000) / 1000
print(f"speech.ogg  {ogg(os.path.join(out, 'speech.ogg')):.0f} kbit/s")
print(f"screen.ivf  {ivf(os.path.join(out, 'screen.ivf')):.0f} kbit/s")
PY
