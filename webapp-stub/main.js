// webapp-stub: a small Calls client for calls-host, in plain browser JavaScript.
// It logs in, lists the user's channels, and starts, joins and leaves calls over the
// Mattermost websocket with the Calls protocol (custom_com.mattermost.calls_*), and
// carries the call's media over WebRTC: the client offers first (data channel only),
// the server answers and offers the other participants' tracks, SDP travels as a
// msgpack binary frame with zlib JSON (or over the data channel with EnableDCSignaling).
(function () {
  'use strict';
  const PLUGIN = '/plugins/com.mattermost.calls';
  const PREFIX = 'custom_com.mattermost.calls_';
  const app = document.getElementById('app');
  const state = {
    me: null, channels: [], calls: {}, users: {}, ws: null, seq: 0, connID: '', originalConnID: '',
    serverSeq: 0, inCall: '', muted: true, hand: false, sharing: false, config: {}, talking: {}, events: [], peer: null,
  };

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => { if (k.startsWith('on')) el.addEventListener(k.slice(2), v); else el.setAttribute(k, v); });
    children.flat().forEach((c) => el.append(c instanceof Node ? c : document.createTextNode(String(c))));
    return el;
  }

  // The plugin allows a user 1 request a second (burst 10): a refused one is tried
  // again once the budget has refilled, a few times, instead of failing what the user
  // did (a quick leave and rejoin makes a burst of requests).
  async function api(method, path, body) {
    let r;
    for (let attempt = 0; ; attempt++) {
      r = await fetch(path, {
        method, credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json', 'X-Requested-With': 'XMLHttpRequest' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      if (r.status !== 429 || attempt >= 3) break;
      await new Promise((ok) => setTimeout(ok, 1100));
    }
    const text = await r.text();
    let data; try { data = JSON.parse(text); } catch (e) { data = text; }
    if (!r.ok) throw new Error((data && data.message) || text || r.status);
    return data;
  }

  function log(msg) {
    const el = document.getElementById('log');
    if (el) { el.textContent += new Date().toISOString().slice(11, 19) + ' ' + msg + '\n'; el.scrollTop = el.scrollHeight; }
    if (window.callsStubConsole) console.log('[calls] ' + msg);
  }

  async function userName(id) {
    if (!state.users[id]) {
      try { state.users[id] = (await api('GET', '/api/v4/users/' + id)).username; } catch (e) { state.users[id] = id.slice(0, 8); }
    }
    return state.users[id];
  }

  // --- msgpack, only what the Calls protocol needs -------------------------------
  const enc = new TextEncoder();
  const dec = new TextDecoder();

  function mpEncode(v, out) {
    if (v === null || v === undefined) out.push(0xc0);
    else if (typeof v === 'boolean') out.push(v ? 0xc3 : 0xc2);
    else if (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v < 0x80) out.push(v);
    else if (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffffffff) out.push(0xce, v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255);
    else if (typeof v === 'number') { const b = new DataView(new ArrayBuffer(8)); b.setFloat64(0, v); out.push(0xcb, ...new Uint8Array(b.buffer)); }
    else if (typeof v === 'string') { const b = enc.encode(v); if (b.length < 32) out.push(0xa0 | b.length); else out.push(0xda, b.length >> 8, b.length & 255); out.push(...b); }
    else if (v instanceof Uint8Array) { out.push(0xc6, v.length >>> 24, (v.length >>> 16) & 255, (v.length >>> 8) & 255, v.length & 255); for (const x of v) out.push(x); }
    else { const ks = Object.keys(v); out.push(0x80 | ks.length); ks.forEach((k) => { mpEncode(k, out); mpEncode(v[k], out); }); }
    return out;
  }

  // Decodes every value in `buf` (the data channel sends "flat" type + payload).
  function mpDecodeAll(buf) {
    const b = new Uint8Array(buf); const dv = new DataView(b.buffer, b.byteOffset, b.byteLength); let i = 0;
    const str = (n) => { const s = dec.decode(b.subarray(i, i + n)); i += n; return s; };
    const bin = (n) => { const s = b.slice(i, i + n); i += n; return s; };
    const map = (n) => { const o = {}; for (let k = 0; k < n; k++) { const key = one(); o[key] = one(); } return o; };
    const arr = (n) => { const a = []; for (let k = 0; k < n; k++) a.push(one()); return a; };
    function one() {
      const t = b[i++];
      if (t < 0x80) return t;
      if (t >= 0xe0) return t - 256;
      if ((t & 0xf0) === 0x80) return map(t & 15);
      if ((t & 0xf0) === 0x90) return arr(t & 15);
      if ((t & 0xe0) === 0xa0) return str(t & 31);
      switch (t) {
        case 0xc0: return null; case 0xc2: return false; case 0xc3: return true;
        case 0xc4: return bin(b[i++]); case 0xc5: { const n = dv.getUint16(i); i += 2; return bin(n); }
        case 0xc6: { const n = dv.getUint32(i); i += 4; return bin(n); }
        case 0xca: { const f = dv.getFloat32(i); i += 4; return f; } case 0xcb: { const f = dv.getFloat64(i); i += 8; return f; }
        case 0xcc: return b[i++]; case 0xcd: { const n = dv.getUint16(i); i += 2; return n; }
        case 0xce: { const n = dv.getUint32(i); i += 4; return n; }
        case 0xd9: return str(b[i++]); case 0xda: { const n = dv.getUint16(i); i += 2; return str(n); }
        case 0xdb: { const n = dv.getUint32(i); i += 4; return str(n); }
        case 0xde: { const n = dv.getUint16(i); i += 2; return map(n); }
        case 0xdc: { const n = dv.getUint16(i); i += 2; return arr(n); }
        default: throw new Error('unsupported msgpack type 0x' + t.toString(16));
      }
    }
    const vals = []; while (i < b.length) vals.push(one()); return vals;
  }

  async function zlib(text, mode) {
    const s = new Blob([text]).stream().pipeThrough(mode === 'inflate' ? new DecompressionStream('deflate') : new CompressionStream('deflate'));
    return new Uint8Array(await new Response(s).arrayBuffer());
  }

  // --- websocket --------------------------------------------------------------------
  function send(type, data) {
    if (!state.ws || state.ws.readyState !== 1) return;
    state.ws.send(JSON.stringify({ action: PREFIX + type, seq: ++state.seq, data: data || {} }));
  }

  async function sendSDP(desc) {
    const bytes = await zlib(JSON.stringify({ type: desc.type, sdp: desc.sdp }));
    if (!state.ws || state.ws.readyState !== 1) return;
    state.ws.send(new Uint8Array(mpEncode({ action: PREFIX + 'sdp', seq: ++state.seq, data: { data: bytes } }, [])));
  }

  function connect() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    // The host resumes the same connection (and replays what we missed) when we give
    // back its id and the next sequence number we expect.
    const ws = new WebSocket(proto + '//' + location.host + '/api/v4/websocket?connection_id=' + state.connID + '&sequence_number=' + (state.connID ? state.serverSeq : 0));
    state.ws = ws;
    ws.onopen = () => {
      if (state.inCall) send('reconnect', { channelID: state.inCall, originalConnID: state.originalConnID, prevConnID: state.connID });
    };
    ws.onmessage = (m) => {
      const ev = JSON.parse(m.data);
      if (typeof ev.seq === 'number') state.serverSeq = ev.seq + 1;
      onEvent(ev);
    };
    ws.onclose = () => { if (state.ws === ws) { log('websocket closed, reconnecting'); setTimeout(connect, 1000); } };
  }

  // --- the peer connection (the RTCPeer role of calls-common) -----------------------
  class CallsPeer {
    constructor(iceServers, dcSignaling, simulcast) {
      this.dcSignaling = dcSignaling;
      this.simulcast = simulcast;
      this.mediaMap = {};
      this.pendingCandidates = [];
      this.voiceSender = null;
      this.screenSenders = [];
      this.rtt = 0;
      this.elements = {};
      this.sdpOverDC = 0;
      // The type of each track received, null for one that came without its info,
      // and when it came (ms since this peer was made).
      this.tracks = [];
      this.trackTimes = [];
      this.createdAt = performance.now();
      const pc = this.pc = new RTCPeerConnection({ iceServers });
      const dc = this.dc = pc.createDataChannel('calls-dc');
      dc.binaryType = 'arraybuffer';
      dc.onopen = () => { this.pinger = setInterval(() => { this.pingAt = performance.now(); this.dcSend([1]); }, 1000); };
      dc.onclose = () => clearInterval(this.pinger);
      dc.onmessage = (m) => this.onDC(m.data);
      pc.onnegotiationneeded = () => this.negotiate();
      pc.onicecandidate = (e) => { if (e.candidate && e.candidate.candidate) send('ice', { data: JSON.stringify(e.candidate.toJSON()) }); };
      pc.onconnectionstatechange = () => {
        log('peer connection ' + pc.connectionState);
        if (pc.connectionState === 'failed') leave();
        render();
      };
      pc.ontrack = (e) => this.onTrack(e);
    }

    dcSend(values) {
      if (this.dc.readyState === 'open') this.dc.send(new Uint8Array(values.reduce((out, v) => mpEncode(v, out), [])));
    }

    async sendDescription(desc) {
      if (this.dcSignaling && this.dc.readyState === 'open') this.dcSend([3, await zlib(JSON.stringify({ type: desc.type, sdp: desc.sdp }))]);
      else await sendSDP(desc);
    }

    async negotiate() {
      try {
        await this.pc.setLocalDescription();
        await this.sendDescription(this.pc.localDescription);
      } catch (e) { log('negotiation failed: ' + e.message); }
    }

    // The server's offer wins over ours (we are the polite peer): setRemoteDescription
    // rolls ours back implicitly and negotiationneeded fires again afterwards.
    async onDescription(desc) {
      await this.pc.setRemoteDescription(desc);
      for (const c of this.pendingCandidates.splice(0)) await this.pc.addIceCandidate(c);
      if (desc.type === 'offer') {
        await this.pc.setLocalDescription();
        await this.sendDescription(this.pc.localDescription);
        // Tracks the server stopped forwarding (a leaver, a screen share ended).
        for (const t of this.pc.getTransceivers()) {
          const el = this.elements[t.mid];
          if (el && (t.currentDirection === 'inactive' || t.currentDirection === 'stopped')) { el.remove(); delete this.elements[t.mid]; }
        }
      }
    }

    async onSignal(json) {
      const msg = JSON.parse(json);
      if (msg.type === 'candidate') {
        if (this.pc.remoteDescription) await this.pc.addIceCandidate(msg.candidate);
        else this.pendingCandidates.push(msg.candidate);
      } else {
        await this.onDescription(msg);
      }
    }

    async onDC(data) {
      if (typeof data === 'string') return; // legacy text pong
      const [type, payload] = mpDecodeAll(data);
      if (type === 2) this.rtt = (performance.now() - this.pingAt) / 1000;
      else if (type === 3) {
        this.sdpOverDC += 1;
        await this.onDescription(JSON.parse(dec.decode(await zlib(payload, 'inflate'))));
      }
      else if (type === 9) this.mediaMap = payload || {};
    }

    onTrack(e) {
      // As the Calls client: the track's info is looked up once, now, by its mid.
      const known = this.mediaMap[e.transceiver.mid];
      this.tracks.push(known ? known.type : null);
      this.trackTimes.push(performance.now() - this.createdAt);
      const info = known || { type: e.track.kind === 'audio' ? 'voice' : 'screen' };
      const stream = new MediaStream([e.track]);
      log('receiving ' + info.type + ' from ' + (info.sender_id || '?'));
      if (e.track.kind === 'audio') {
        const el = h('audio', { autoplay: '' });
        el.srcObject = stream;
        document.body.append(el);
        this.elements[e.transceiver.mid] = el;
      } else {
        const el = h('video', { autoplay: '', playsinline: '', class: 'screen' });
        el.muted = true;
        el.srcObject = stream;
        const box = document.getElementById('screen') || document.body;
        box.append(el);
        this.elements[e.transceiver.mid] = el;
      }
    }

    async unmute() {
      if (!this.voiceSender) {
        const stream = await navigator.mediaDevices.getUserMedia({ audio: { autoGainControl: true, echoCancellation: true, noiseSuppression: true } });
        this.voice = stream.getAudioTracks()[0];
        this.voiceSender = this.pc.addTrack(this.voice, stream);
      } else {
        await this.voiceSender.replaceTrack(this.voice);
      }
    }

    async mute() {
      if (this.voiceSender) await this.voiceSender.replaceTrack(null);
    }

    async shareScreen() {
      const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
      this.screen = stream;
      // The server classifies the tracks by this stream id: announce it first.
      send('screen_on', { data: JSON.stringify({ screenStreamID: stream.id }) });
      for (const track of stream.getTracks()) {
        if (track.kind === 'video') {
          // With EnableSimulcast: a low (5 fps) and a high (20 fps) layer at the same
          // resolution; the server picks one per receiver.
          const sendEncodings = this.simulcast
            ? [{ rid: 'l', maxBitrate: 500000, maxFramerate: 5, scaleResolutionDownBy: 1 }, { rid: 'h', maxBitrate: 2500000, maxFramerate: 20, scaleResolutionDownBy: 1 }]
            : [{ maxBitrate: 1000000, maxFramerate: 10 }];
          this.screenSenders.push(this.pc.addTransceiver(track, { direction: 'sendonly', streams: [stream], sendEncodings }).sender);
          // With AV1 on (and no simulcast): a second, AV1-only copy of the same track,
          // for receivers that decode AV1; the server gives everyone else the VP8 one.
          const av1 = av1Codecs();
          if (state.av1 && av1.length) {
            const t = this.pc.addTransceiver(track, { direction: 'sendonly', streams: [stream], sendEncodings: [{ maxBitrate: 1000000, maxFramerate: 10 }] });
            t.setCodecPreferences(av1);
            this.screenSenders.push(t.sender);
          }
        } else {
          this.screenSenders.push(this.pc.addTrack(track, stream));
        }
        track.addEventListener('ended', () => stopScreen());
      }
    }

    stopScreen() {
      for (const s of this.screenSenders.splice(0)) this.pc.removeTrack(s);
      if (this.screen) this.screen.getTracks().forEach((t) => t.stop());
      this.screen = null;
    }

    close() {
      clearInterval(this.pinger);
      if (this.voice) this.voice.stop();
      this.stopScreen();
      this.pc.close();
      document.querySelectorAll('audio, video.screen').forEach((el) => el.remove());
    }
  }

  function iceServers() {
    return (state.config.ICEServersConfigs || []).filter((s) => s && s.urls && s.urls.length);
  }

  async function startPeer() {
    let servers = iceServers();
    if (state.config.NeedsTURNCredentials) {
      try { servers = servers.concat(await api('GET', PLUGIN + '/turn-credentials')); } catch (e) { log('turn credentials: ' + e.message); }
    }
    const opts = { iceServers: servers, dcSignaling: !!state.config.EnableDCSignaling, simulcast: !!state.config.EnableSimulcast };
    // Another implementation of the peer role (a test harness running the Calls
    // client's own RTCPeer) may stand in for ours, given the means to signal.
    const other = window.callsStubPeerFactory;
    state.peer = other ? other(opts, { send, sendSDP, log }) : new CallsPeer(opts.iceServers, opts.dcSignaling, opts.simulcast);
  }

  // --- call state and UI -------------------------------------------------------------
  async function refreshCalls() {
    const list = await api('GET', PLUGIN + '/channels');
    state.calls = {};
    list.forEach((c) => { state.calls[c.channel_id] = c; });
    render();
  }

  function onEvent(ev) {
    if (!ev.event) return;
    if (ev.event === 'hello') {
      state.connID = ev.data.connection_id;
      // Which server (a cluster node) this connection is on.
      state.serverHostname = ev.data.server_hostname;
      if (!state.originalConnID) state.originalConnID = state.connID;
      return;
    }
    if (!ev.event.startsWith(PREFIX)) return;
    const type = ev.event.slice(PREFIX.length);
    const d = ev.data || {};
    state.events.push(type);
    if (type === 'signal') {
      if (state.peer && (d.connID === state.originalConnID || d.connID === state.connID)) {
        state.peer.onSignal(d.data).catch((e) => log('signal failed: ' + e.message));
      }
      return;
    }
    log(type + ' ' + JSON.stringify(d));
    if (type === 'user_voice_on' || type === 'user_voice_off') {
      state.talking[d.session_id] = type === 'user_voice_on';
      render();
      return;
    }
    if (type === 'join' && state.pendingJoin) {
      state.inCall = state.pendingJoin; state.pendingJoin = '';
      state.originalConnID = d.connID; state.muted = true; state.hand = false;
      startPeer().catch((e) => log('peer failed: ' + e.message));
    }
    if (type === 'error') {
      log('call error: ' + d.data);
      // A start the server refused for the channel's calls setting: the user sees why,
      // in the Calls webapp's words, not a bare error.
      if (state.pendingJoin && d.data === 'insufficient permissions') notice(TEST_MODE_NOTICE);
      else if (state.pendingJoin && d.data === 'calls are disabled in the channel') notice(DISABLED_NOTICE);
      state.pendingJoin = '';
      // As the webapp: an error for this connection ends the call here (the user may
      // join again), e.g. when the media server restarted under it.
      if (state.inCall && (d.connID === state.connID || d.connID === state.originalConnID)) endCall();
    }
    if (type === 'host_mute' && d.session_id === state.originalConnID && !state.muted) toggleMute();
    if (type === 'host_screen_off' && d.session_id === state.originalConnID) stopScreen();
    if ((type === 'user_left' || type === 'host_removed') && d.session_id === state.originalConnID) endCall();
    if (type === 'call_end' && d.channelID === state.inCall) endCall();
    refreshCalls().catch((e) => log('refresh failed: ' + e.message));
  }

  function av1Codecs() {
    const caps = window.RTCRtpSender && RTCRtpSender.getCapabilities && RTCRtpSender.getCapabilities('video');
    return caps ? caps.codecs.filter((c) => c.mimeType.toLowerCase() === 'video/av1') : [];
  }

  // What the Calls webapp shows a user who may not start a call in a channel.
  const TEST_MODE_NOTICE = {
    id: 'calls-test-mode',
    title: 'Calls is not currently enabled',
    body: 'Calls are currently running in test mode and only system admins can start them. Reach out directly to your system admin for assistance',
    button: 'Understood',
  };
  const DISABLED_NOTICE = {
    id: 'calls-disabled',
    title: 'Unable to start or join call',
    body: 'Calls are disabled in this channel.',
    button: 'Understood',
  };

  function notice(n) {
    state.notice = n;
    render();
  }

  function isAdmin() { return !!state.me && (state.me.roles || '').split(' ').includes('system_admin'); }

  // Whether calls are on for everyone in a channel: its own choice, else the server's
  // default (test mode is DefaultEnabled = false).
  function callsEnabled(channelID) {
    const info = state.calls[channelID] || {};
    return info.enabled !== undefined ? info.enabled : !!state.config.DefaultEnabled;
  }

  // As the webapp: joining a call in progress is always allowed; starting one is
  // refused here, with the reason, when the server would refuse it.
  function startOrJoin(channelID) {
    const info = state.calls[channelID] || {};
    if (!info.call && !callsEnabled(channelID) && !isAdmin()) {
      notice(info.enabled === false ? DISABLED_NOTICE : TEST_MODE_NOTICE);
      return;
    }
    join(channelID);
  }

  function join(channelID) {
    // As the webapp: AV1 only when enabled, without simulcast, and decodable here.
    state.av1 = !!state.config.EnableAV1 && !state.config.EnableSimulcast && av1Codecs().length > 0;
    state.pendingJoin = channelID;
    send('join', { channelID, dcSignaling: !!state.config.EnableDCSignaling, av1Support: state.av1 });
  }
  function endCall() {
    if (state.peer) state.peer.close();
    state.peer = null; state.inCall = ''; state.sharing = false; state.talking = {};
    render();
  }
  function leave() { send('leave'); endCall(); }
  async function toggleMute() {
    try {
      if (state.muted) { await state.peer.unmute(); state.muted = false; send('unmute'); } else { await state.peer.mute(); state.muted = true; send('mute'); }
    } catch (e) { log('microphone: ' + e.message); }
    render();
  }
  function toggleHand() { state.hand = !state.hand; send(state.hand ? 'raise_hand' : 'unraise_hand'); render(); }
  async function shareScreen() {
    try { await state.peer.shareScreen(); state.sharing = true; } catch (e) { log('screen share: ' + e.message); }
    render();
  }
  function stopScreen() {
    if (!state.sharing) return;
    state.peer.stopScreen(); state.sharing = false; send('screen_off'); render();
  }

  async function setEnabled(channelID, enabled) {
    try { await api('POST', PLUGIN + '/' + channelID, { enabled }); await refreshCalls(); } catch (e) { alert(e.message); }
  }

  // Renders wait for user names, so two can overlap: only the latest one started may
  // show its result (an older one finishing last would show stale buttons, e.g. Leave
  // after the call was left, and no Join until the next event).
  let renders = 0;
  async function render() {
    const mine = ++renders;
    const list = h('ul', {});
    for (const ch of state.channels) {
      const info = state.calls[ch.id] || {};
      const call = info.call;
      const row = h('li', { 'data-channel': ch.id }, h('b', {}, ch.display_name || ch.name), ' ');
      row.append(h('small', { class: 'calls-state' }, callsEnabled(ch.id) ? '(calls enabled) '
        : info.enabled === false ? '(calls disabled) ' : '(test mode: only admins start calls) '));
      if (call) {
        const names = await Promise.all(call.sessions.map(async (s) => (await userName(s.user_id)) + (s.unmuted ? ' 🎤' : ' 🔇')
          + (state.talking[s.session_id] ? ' 🗣' : '') + (s.raised_hand ? ' ✋' : '') + (s.session_id === call.screen_sharing_session_id ? ' 🖥' : '')
          + (s.user_id === call.host_id ? ' (host)' : '')));
        row.append(h('span', { class: 'participants' }, 'in call: ' + names.join(', ') + ' '));
      }
      if (state.inCall === ch.id) {
        row.append(h('button', { onclick: leave, class: 'leave' }, 'Leave'),
          h('button', { onclick: toggleMute, class: 'mute' }, state.muted ? 'Unmute' : 'Mute'),
          h('button', { onclick: toggleHand, class: 'hand' }, state.hand ? 'Lower hand' : 'Raise hand'));
        if (state.config.AllowScreenSharing !== false) {
          row.append(state.sharing ? h('button', { onclick: stopScreen, class: 'screen-off' }, 'Stop sharing')
            : h('button', { onclick: shareScreen, class: 'screen-on' }, 'Share screen'));
        }
        if (state.peer) row.append(h('small', { class: 'rtc' }, ' media: ' + state.peer.pc.connectionState));
      } else if (!state.inCall && (call || info.enabled !== false)) {
        // A channel where calls were disabled shows no start button (as the webapp).
        row.append(h('button', { onclick: () => startOrJoin(ch.id), class: 'join' }, call ? 'Join call' : 'Start call'));
      }
      if (isAdmin()) {
        // One switch, named for what it will do.
        row.append(callsEnabled(ch.id)
          ? h('button', { onclick: () => setEnabled(ch.id, false), class: 'calls-disable' }, 'Disable calls')
          : h('button', { onclick: () => setEnabled(ch.id, true), class: 'calls-enable' }, 'Enable calls'));
      }
      list.append(row);
    }
    let screen = document.getElementById('screen');
    if (!screen) screen = h('div', { id: 'screen' });
    let logEl = document.getElementById('log');
    if (!logEl) logEl = h('div', { id: 'log' });
    // The raw event log is for debugging: behind a toggle, closed unless opened.
    let debug = document.getElementById('debug');
    if (!debug) debug = h('details', { id: 'debug' }, h('summary', {}, 'Debug: event log'), logEl);
    const n = state.notice;
    const dialog = n ? h('div', { role: 'dialog', id: n.id, class: 'notice', 'aria-labelledby': n.id + '-title' },
      h('h3', { id: n.id + '-title' }, n.title), h('p', {}, n.body),
      h('button', { class: 'notice-ok', onclick: () => { state.notice = null; render(); } }, n.button)) : '';
    if (mine !== renders) return;
    app.replaceChildren(h('p', {}, 'Signed in as ', h('b', { id: 'me' }, state.me.username)), dialog, list, screen, debug);
  }

  function loginForm(err) {
    const user = h('input', { id: 'login', placeholder: 'username' });
    const pass = h('input', { id: 'password', type: 'password', placeholder: 'password' });
    const form = h('form', { onsubmit: async (e) => {
      e.preventDefault();
      try { await api('POST', '/api/v4/users/login', { login_id: user.value, password: pass.value }); start(); } catch (x) { loginForm(x.message); }
    } }, user, ' ', pass, ' ', h('button', { type: 'submit' }, 'Log in'));
    app.replaceChildren(h('h2', {}, 'Log in'), form, err ? h('p', { style: 'color:red' }, err) : '');
  }

  async function start() {
    try { state.me = await api('GET', '/api/v4/users/me'); } catch (e) { loginForm(); return; }
    state.channels = await api('GET', '/api/v4/users/me/channels');
    state.config = await api('GET', PLUGIN + '/config');
    connect();
    await refreshCalls();
  }

  // For operators and tests: the live call, its peer connection and events.
  window.callsStub = {
    state,
    peer: () => state.peer,
    stats: async () => (state.peer ? Array.from((await state.peer.pc.getStats()).values()) : []),
    dropWebSocket: () => { if (state.ws) state.ws.close(); },
  };

  start();
})();
