#!/usr/bin/env python3
"""Seed corpora for the fuzz targets (fuzz/fuzz_targets/), written to DIR/<target>/:
the messages the tests exchange (tests/*.rs, the webapp stub's client), in each
target's input format. Run by `make fuzz` when a corpus is missing."""

import io
import json
import os
import struct
import sys
import tarfile
import zlib


def mp(v):
    """A small msgpack encoder: nil, bool, int, float, str, bytes, list, dict."""
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 128:
            return bytes([v])
        if -32 <= v < 0:
            return struct.pack("b", v)
        return b"\xd3" + struct.pack(">q", v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, str):
        b = v.encode()
        if len(b) < 32:
            return bytes([0xA0 | len(b)]) + b
        return b"\xdb" + struct.pack(">I", len(b)) + b
    if isinstance(v, (bytes, bytearray)):
        return b"\xc6" + struct.pack(">I", len(v)) + bytes(v)
    if isinstance(v, list):
        return b"\xdd" + struct.pack(">I", len(v)) + b"".join(mp(x) for x in v)
    if isinstance(v, dict):
        return b"\xdf" + struct.pack(">I", len(v)) + b"".join(mp(k) + mp(x) for k, x in v.items())
    raise TypeError(v)


CHANNEL = "a" * 26
SESSION = "b" * 26
SDP_OFFER = "\r\n".join([
    "v=0",
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0 1",
    "a=extmap-allow-mixed",
    "a=msid-semantic: WMS stream-1",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111",
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=ice-ufrag:abcd",
    "a=ice-pwd:abcdefghijklmnopqrstuvwx",
    "a=ice-options:trickle",
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
    "a=setup:actpass",
    "a=mid:0",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=sendrecv",
    "a=msid:stream-1 track-1",
    "a=rtcp-mux",
    "a=rtpmap:111 opus/48000/2",
    "a=rtcp-fb:111 transport-cc",
    "a=fmtp:111 minptime=10;useinbandfec=1",
    "a=ssrc:1111 cname:abc",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
    "c=IN IP4 0.0.0.0",
    "a=ice-ufrag:abcd",
    "a=ice-pwd:abcdefghijklmnopqrstuvwx",
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
    "a=setup:actpass",
    "a=mid:1",
    "a=sctp-port:5000",
    "a=max-message-size:262144",
    "",
])
DESC = json.dumps({"type": "offer", "sdp": SDP_OFFER})
CANDIDATE = json.dumps({"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host", "sdpMid": "0", "sdpMLineIndex": 0})


def calls_message():
    # First byte: the action, in the order of `ActionKind::ALL`.
    kinds = ["join", "reconnect", "leave", "call_state", "ping", "caption", "sdp", "ice",
             "mute", "unmute", "screen_on", "screen_off", "video_on", "video_off",
             "raise_hand", "unraise_hand", "react", "metric"]
    data = {
        "join": mp({"channelID": CHANNEL, "title": "t", "threadID": "", "av1Support": True, "dcSignaling": True}),
        "reconnect": mp({"channelID": CHANNEL, "originalConnID": SESSION, "prevConnID": SESSION}),
        "call_state": mp({"channelID": CHANNEL}),
        "sdp": mp({"data": zlib.compress(DESC.encode())}),
        "ice": mp({"data": CANDIDATE}),
        "screen_on": mp({"data": json.dumps({"screenStreamID": "stream-2"})}),
        "video_on": mp({"data": json.dumps({"videoStreamID": "stream-3"})}),
        "react": mp({"data": json.dumps({"name": "+1", "unified": "1f44d", "skin": None})}),
        "metric": mp({"metric_name": "client_ice_candidate_pair", "data": json.dumps(
            {"state": "succeeded", "local": {"type": "host", "protocol": "udp"},
             "remote": {"type": "srflx", "protocol": "udp"}})}),
    }
    for i, t in enumerate(kinds):
        yield bytes([i]) + data.get(t, b"")


def host_ws_frame():
    for action, d in [("custom_com.mattermost.calls_join", {"channelID": CHANNEL}),
                      ("ping", None),
                      ("authentication_challenge", {"token": "t" * 26}),
                      ("custom_com.mattermost.calls_leave", {})]:
        frame = {"action": action, "seq": 1}
        if d is not None:
            frame["data"] = d
        yield b"\x00" + json.dumps(frame).encode()
        yield b"\x01" + mp(frame)


def host_event_routing():
    # Connections (user, flags), channel members, selector, connection pick, omitted
    # users, then the plugin's data JSON, as the plugin publishes them.
    conns = bytes([3, 0, 0, 1, 0, 2, 1])
    events = [{"session_id": SESSION, "user_id": "u0"},
              {"channelID": CHANNEL, "participants": [], "screen_state": None},
              {"data": "{\"type\":\"offer\",\"sdp\":\"v=0\"}", "connID": SESSION}]
    for sel in [0x00, 0x01, 0x14, 0x20, 0x21]:
        for ev in events:
            yield conns + bytes([0b0111, sel, 1, 0b0010]) + json.dumps(ev).encode()


def dc_message():
    yield mp(1)
    yield mp(2)
    yield mp(3) + mp(zlib.compress(DESC.encode()))
    yield mp(4) + mp(0.25)
    yield mp(7)
    yield mp(7) + mp(True)
    yield mp(8)
    yield mp(9) + mp({"0": {"type": "voice", "sender_id": SESSION}})
    yield zlib.compress(DESC.encode())


def rtcd_envelope():
    yield mp("join") + mp({"callID": CHANNEL, "userID": "u" * 26, "sessionID": SESSION,
                           "channelID": CHANNEL, "av1Support": False, "dcSignaling": True})
    yield mp("leave") + mp({"sessionID": SESSION})
    yield mp("reconnect") + mp({"sessionID": SESSION})
    yield mp("hello") + mp({"clientID": "plugin", "connID": "c" * 26})
    yield mp("rtc") + mp({"groupID": "g", "userID": "u", "sessionID": SESSION, "callID": "c",
                          "type": 2, "data": DESC.encode()})
    yield mp("vad") + mp({"groupID": "g", "userID": "u", "sessionID": SESSION, "callID": "c", "type": 9})


def ice_tcp_framing():
    stun = bytes.fromhex("000100002112a442") + bytes(range(12))
    yield struct.pack(">H", len(stun)) + stun
    yield struct.pack(">H", 0) + struct.pack(">H", 3) + b"abc" + b"\x00"
    yield b"\xff\xff" + b"x" * 10


def tar_gz(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def bundle():
    root = os.path.join(os.path.dirname(__file__), "..")
    with open(os.path.join(root, "plugin.json"), "rb") as f:
        manifest = f.read()
    yield tar_gz([("com.mattermost.calls/plugin.json", manifest),
                  ("com.mattermost.calls/server/dist/plugin-linux-amd64", b"#!/bin/sh\n"),
                  ("com.mattermost.calls/webapp/dist/main.js", b"console.log(1)\n")])
    yield tar_gz([("plugin.json", json.dumps({"id": "com.example.x", "server": {"executable": "server/plugin"}}).encode()),
                  ("server/plugin", b"#!/bin/sh\n")])


def plugin_settings():
    yield json.dumps({"DefaultEnabled": True, "UDPServerPort": 8443, "TCPServerPort": 8443,
                      "ICEServersConfigs": '[{"urls":["stun:stun.example.com:3478"]}]',
                      "TURNStaticAuthSecret": "s3cret", "TURNCredentialsExpirationMinutes": 60}).encode()
    yield json.dumps({"RTCDServiceURL": "http://id:key@rtcd:8045", "EnableRecordings": True,
                      "EnableTranscriptions": True, "TranscribeAPI": "whisper.cpp"}).encode()
    yield b"{}"


def rtcd_config():
    root = os.path.join(os.path.dirname(__file__), "..", "deploy")
    for name in sorted(os.listdir(root)):
        if name.endswith(".toml") or name.endswith(".toml.sample"):
            with open(os.path.join(root, name), "rb") as f:
                yield f.read()
    yield b'[api.http]\nlisten_address = ":8045"\n[rtc]\nice_port_udp = 8443\n'


def sdp():
    yield SDP_OFFER.encode()
    yield SDP_OFFER.replace("a=setup:actpass", "a=setup:active").encode()


TARGETS = {f.__name__: f for f in [calls_message, host_ws_frame, host_event_routing, dc_message, rtcd_envelope,
                                   ice_tcp_framing, bundle, plugin_settings, rtcd_config, sdp]}

if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "fuzz/corpus"
    for name, gen in TARGETS.items():
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        for i, seed in enumerate(gen()):
            with open(os.path.join(d, f"seed-{i}"), "wb") as f:
                f.write(seed)
    print(f"seeds written to {out}/")
