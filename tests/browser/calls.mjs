// Real browsers in a real call: Debian's Chromium, driven by playwright-core, against
// calls-host + calls-plugin started by tests/it/browser.rs (which passes BASE_URL,
// CHANNEL_ID, USERS and PASSWORD). Each participant is its own browser context.
// Every step waits for an outcome read from RTCPeerConnection.getStats(), never for
// a fixed time alone; it exits non-zero with the reason on the first failure.
import { chromium } from 'playwright-core';

const BASE = process.env.BASE_URL;
// BASES=<url>,<url>,...: each user's own server (a cluster's nodes), in USERS order.
const BASES = (process.env.BASES || '').split(',').filter(Boolean);
const CHANNEL = process.env.CHANNEL_ID;
const USERS = (process.env.USERS || '').split(',');
// PASSWORD may name each user's own: `{user}-password` is alice-password for alice.
const PASSWORD = process.env.PASSWORD;
const SCENARIO = process.env.SCENARIO || 'full';
const EXTRA_FLAGS = (process.env.CHROMIUM_FLAGS || '').split(' ').filter(Boolean);

const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--autoplay-policy=no-user-gesture-required',
  ...EXTRA_FLAGS,
];

// The screen source: an animated canvas stands in for getDisplayMedia headless.
const FAKE_SCREEN = () => {
  navigator.mediaDevices.getDisplayMedia = async () => {
    const c = document.createElement('canvas');
    // Large enough for Chromium to send two simulcast layers.
    c.width = 640; c.height = 480;
    const g = c.getContext('2d');
    let n = 0;
    setInterval(() => {
      n += 1;
      g.fillStyle = `hsl(${(n * 7) % 360}, 80%, 50%)`;
      g.fillRect(0, 0, 640, 480);
      g.fillStyle = '#000';
      g.font = '40px sans-serif';
      g.fillText(String(n), 20 + (n % 200), 120);
    }, 50);
    return c.captureStream(20);
  };
};

// RELAY_ONLY=1: every peer connection of the page may use relay candidates only, as
// a client behind a firewall that lets nothing through but its TURN server.
const RELAY_ONLY = () => {
  const Native = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends Native {
    constructor(config, ...rest) { super({ ...(config || {}), iceTransportPolicy: 'relay' }, ...rest); }
  };
};

// CALLS_COMMON_BUNDLE=<file>: the page runs the Calls client's own RTCPeer (a browser
// bundle of @mattermost/calls-common exposing `CallsCommon`, built outside this
// repository) in place of the stub's peer; the stub keeps the websocket and the UI.
const REAL_PEER = () => {
  window.callsStubPeerFactory = (opts, { send, sendSDP, log }) => {
    const logger = { logDebug() {}, logInfo() {}, logWarn: (...a) => log(a.join(' ')), logErr: (...a) => log(a.join(' ')) };
    const peer = new window.CallsCommon.RTCPeer({ ...opts, dcLocking: true, logger });
    const self = { pc: peer.pc, tracks: [], trackTimes: [], createdAt: performance.now(), sdpOverDC: 0, rtt: 0, voice: null };
    peer.on('offer', (d) => sendSDP(d));
    peer.on('answer', (d) => sendSDP(d));
    peer.on('candidate', (c) => send('ice', { data: JSON.stringify(c) }));
    peer.on('error', (e) => log('rtc peer error: ' + e));
    peer.on('stream', (stream, info) => {
      self.tracks.push(info ? info.type : null);
      self.trackTimes.push(performance.now() - self.createdAt);
      if (stream.getAudioTracks().length) {
        const el = document.createElement('audio');
        el.autoplay = true;
        el.srcObject = stream;
        document.body.append(el);
      }
    });
    self.onSignal = (json) => peer.signal(json);
    self.unmute = async () => {
      if (!self.voice) {
        const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
        self.voice = stream.getAudioTracks()[0];
        await peer.addStream(stream);
      } else {
        await peer.replaceTrack(self.voice.id, self.voice);
      }
    };
    self.mute = async () => { if (self.voice) await peer.replaceTrack(self.voice.id, null); };
    self.shareScreen = async () => {
      const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
      self.screen = stream;
      send('screen_on', { data: JSON.stringify({ screenStreamID: stream.id }) });
      await peer.addStream(stream);
    };
    self.stopScreen = () => {
      if (!self.screen) return;
      for (const t of self.screen.getTracks()) { peer.removeTrack(t.id); t.stop(); }
      self.screen = null;
    };
    self.close = () => {
      if (self.voice) self.voice.stop();
      peer.destroy();
      document.querySelectorAll('audio').forEach((el) => el.remove());
    };
    return self;
  };
};

function step(msg) { console.log(`[browser] ${new Date().toISOString().slice(11, 23)} ${msg}`); }

async function waitFor(what, fn, timeoutMs = 20000, everyMs = 250) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    last = await fn();
    if (last && last.ok) return last;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(last)}`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class Person {
  constructor(name, page) { this.name = name; this.page = page; }

  static async open(browser, name) {
    const base = BASES[USERS.indexOf(name)] || BASE;
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    page.on('console', (m) => { if (m.type() === 'error' || process.env.BROWSER_CONSOLE) step(`${name} console: ${m.text()}`); });
    page.on('pageerror', (e) => step(`${name} page error: ${e.message}`));
    await page.addInitScript(FAKE_SCREEN);
    if (process.env.RELAY_ONLY === '1') await page.addInitScript(RELAY_ONLY);
    if (process.env.CALLS_COMMON_BUNDLE) {
      await page.addInitScript({ path: process.env.CALLS_COMMON_BUNDLE });
      await page.addInitScript(REAL_PEER);
      if (process.env.BROWSER_CONSOLE) await page.addInitScript(() => { window.callsStubConsole = true; });
    }
    await page.goto(base);
    await page.fill('#login', name);
    await page.fill('#password', PASSWORD.replaceAll('{user}', name));
    await page.click('button[type=submit]');
    await page.waitForSelector(`li[data-channel="${CHANNEL}"] button.join`);
    return new Person(name, page);
  }

  row() { return `li[data-channel="${CHANNEL}"]`; }
  async click(cls) { await this.page.click(`${this.row()} button.${cls}`); }

  async join() {
    await this.click('join');
    await waitFor(`${this.name}'s peer connection`, async () => ({
      ok: await this.page.evaluate(() => window.callsStub.peer()?.pc.connectionState === 'connected'),
    }));
  }

  // Sums of the inbound RTP streams of one kind, and the loudest audio level seen.
  async inbound(kind) {
    return this.page.evaluate(async (kind) => {
      const all = await window.callsStub.stats();
      const s = all.filter((x) => x.type === 'inbound-rtp' && x.kind === kind);
      return {
        streams: s.length,
        packets: s.reduce((a, x) => a + (x.packetsReceived || 0), 0),
        frames: s.reduce((a, x) => a + (x.framesDecoded || 0), 0),
        level: Math.max(0, ...s.map((x) => x.audioLevel || 0)),
      };
    }, kind);
  }

  async events() { return this.page.evaluate(() => window.callsStub.state.events.slice()); }
  async sessionId() { return this.page.evaluate(() => window.callsStub.state.originalConnID); }

  async participants() {
    return this.page.evaluate(async (ch) => {
      const r = await fetch('/plugins/com.mattermost.calls/channels', { credentials: 'same-origin', headers: { 'X-Requested-With': 'XMLHttpRequest' } });
      const list = await r.json();
      const c = list.find((x) => x.channel_id === ch);
      return c && c.call ? c.call.sessions.map((s) => s.session_id) : [];
    }, CHANNEL);
  }
}

// Waits until `p` receives `kind` media that keeps growing: packets for audio
// (and a level above zero from the fake microphone), decoded frames for video.
async function receives(p, kind, from) {
  const first = await waitFor(`${p.name} to receive ${kind} from ${from}`, async () => {
    const s = await p.inbound(kind);
    return { ok: kind === 'audio' ? s.packets > 50 && s.level > 0 : s.frames > 10, ...s };
  }, 30000);
  await waitFor(`${p.name}'s ${kind} to keep flowing`, async () => {
    const s = await p.inbound(kind);
    return { ok: kind === 'audio' ? s.packets > first.packets + 25 : s.frames > first.frames + 5, ...s };
  });
  step(`${p.name} receives ${kind} from ${from}: ${JSON.stringify(await p.inbound(kind))}`);
}

// The flow has stopped: at most `slack` more packets/frames over two seconds.
async function stopped(p, kind, why, slack) {
  const field = kind === 'audio' ? 'packets' : 'frames';
  await waitFor(`${p.name}'s ${kind} to stop (${why})`, async () => {
    const a = (await p.inbound(kind))[field];
    await sleep(2000);
    const b = (await p.inbound(kind))[field];
    return { ok: b - a <= slack, before: a, after: b };
  }, 20000, 0);
  step(`${p.name}'s ${kind} stopped (${why})`);
}

async function expectEvent(p, name) {
  await waitFor(`${p.name} to get ${name}`, async () => ({ ok: (await p.events()).includes(name) }));
}

async function full(browser) {
  const [alice, bob, carol] = await Promise.all(USERS.slice(0, 3).map((u) => Person.open(browser, u)));

  step('alice starts the call, bob joins');
  await alice.join();
  await bob.join();

  step('both unmute: each hears the other');
  await alice.click('mute');
  await receives(bob, 'audio', 'alice');
  await bob.click('mute');
  await receives(alice, 'audio', 'bob');

  step('bob mutes: alice stops receiving, user_muted arrives');
  await bob.click('mute');
  await expectEvent(alice, 'user_muted');
  await stopped(alice, 'audio', 'bob muted', 5);

  step('alice shares her screen: bob decodes it until she stops');
  await alice.click('screen-on');
  await expectEvent(bob, 'user_screen_on');
  await receives(bob, 'video', 'alice (screen)');
  await alice.click('screen-off');
  await expectEvent(bob, 'user_screen_off');
  await stopped(bob, 'video', 'screen off', 2);

  step('alice shares again; carol joins mid-call and gets the existing tracks');
  await alice.click('screen-on');
  await receives(bob, 'video', 'alice (second screen)');
  await carol.join();
  await receives(carol, 'audio', 'alice');
  await receives(carol, 'video', 'alice (screen)');

  step("bob's websocket drops and reconnects: his media keeps flowing, he stays in the call");
  const bobSession = await bob.sessionId();
  await bob.page.evaluate(() => window.callsStub.dropWebSocket());
  await waitFor('bob to reconnect', async () => ({ ok: await bob.page.evaluate(() => window.callsStub.state.ws.readyState === 1) }));
  await receives(bob, 'audio', 'alice (after reconnect)');
  // Past the 10 s reconnect grace: a session that was not re-bound would be gone.
  await sleep(11000);
  const present = await alice.participants();
  if (!present.includes(bobSession)) throw new Error(`bob's session ${bobSession} left after reconnect: ${present}`);
  await receives(bob, 'audio', 'alice (after the grace period)');

  step('carol leaves: her session is freed');
  const carolSession = await carol.sessionId();
  await carol.click('leave');
  await waitFor("carol's session to leave the call", async () => {
    const s = await alice.participants();
    return { ok: !s.includes(carolSession), sessions: s };
  });
  console.log(`RESULT ${JSON.stringify({ ok: true, carol: carolSession, bob: bobSession })}`);
}

// Alice and Bob in a call, Bob hearing Alice.
async function talkingPair(browser) {
  const [alice, bob] = await Promise.all(USERS.slice(0, 2).map((u) => Person.open(browser, u)));
  await alice.join();
  await bob.join();
  await alice.click('mute');
  await receives(bob, 'audio', 'alice');
  return [alice, bob];
}

// Two participants, audio and a screen share, reporting how the media went: the
// codec bob decodes, alice's simulcast layers, SDP messages over the data channel.
async function screen(browser) {
  const [alice, bob] = await talkingPair(browser);
  await alice.click('screen-on');
  await receives(bob, 'video', 'alice (screen)');
  await sleep(3000);
  await receives(bob, 'video', 'alice (screen, later)');
  const codec = await bob.page.evaluate(async () => {
    const all = await window.callsStub.stats();
    const v = all.filter((x) => x.type === 'inbound-rtp' && x.kind === 'video' && x.framesDecoded > 0);
    const c = v.length && all.find((x) => x.id === v[v.length - 1].codecId);
    return c ? c.mimeType : null;
  });
  const rids = await alice.page.evaluate(async () => {
    const all = await window.callsStub.stats();
    return all.filter((x) => x.type === 'outbound-rtp' && x.kind === 'video' && x.rid && x.packetsSent > 0).map((x) => x.rid).sort();
  });
  const dcSdp = await bob.page.evaluate(() => window.callsStub.peer().sdpOverDC);
  console.log(`RESULT ${JSON.stringify({ ok: true, codec, rids, dcSdp })}`);
}

// Two participants talking while the plugin process is killed (SIGKILL) and the
// host restarts it: bob's inbound audio must keep growing the whole time.
async function restart(browser) {
  const [alice, bob] = await talkingPair(browser);
  const samples = [];
  const sample = async () => samples.push({ t: Date.now(), packets: (await bob.inbound('audio')).packets });
  const pluginUp = () => alice.page.evaluate(async () => {
    try {
      const r = await fetch('/plugins/com.mattermost.calls/version', { credentials: 'same-origin', headers: { 'X-Requested-With': 'XMLHttpRequest' } });
      return r.ok;
    } catch (e) { return false; }
  });
  for (let i = 0; i < 6; i++) { await sample(); await sleep(500); }
  const killedAt = Date.now();
  process.kill(Number(process.env.PLUGIN_PID), 'SIGKILL');
  step('plugin killed');
  let sawDown = false;
  let backAt = 0;
  while (Date.now() - killedAt < 60000) {
    await sample();
    const up = await pluginUp();
    if (!up) sawDown = true;
    if (up && sawDown) { backAt = Date.now(); break; }
    await sleep(500);
  }
  if (!backAt) throw new Error('the plugin did not come back');
  step(`plugin back after ${backAt - killedAt} ms`);
  for (let i = 0; i < 12; i++) { await sample(); await sleep(500); }
  // Every 2 s window from the kill on must show new packets.
  for (const s of samples.filter((x) => x.t >= killedAt - 1000)) {
    const later = samples.find((x) => x.t >= s.t + 2000);
    if (later && later.packets <= s.packets) throw new Error(`audio stalled at ${s.t - killedAt} ms: ${JSON.stringify(samples)}`);
  }
  console.log(`RESULT ${JSON.stringify({ ok: true, sawDown, backAfterMs: backAt - killedAt, first: samples[0].packets, last: samples[samples.length - 1].packets })}`);
}

// Integrated SFU, the plugin killed mid-call: its media died with it and cannot be
// resumed, so each client is told on its connection (`error`) and leaves the call
// by itself; joining again gives a working call.
async function crash(browser) {
  const [alice, bob] = await talkingPair(browser);
  const killedAt = Date.now();
  process.kill(Number(process.env.PLUGIN_PID), 'SIGKILL');
  step('plugin killed');
  for (const p of [alice, bob]) {
    await waitFor(`${p.name} to be told and leave the call`, async () => ({
      ok: await p.page.evaluate(() => window.callsStub.state.inCall === '' && window.callsStub.state.events.includes('error')),
    }), 60000);
  }
  const toldAfterMs = Date.now() - killedAt;
  step(`both told after ${toldAfterMs} ms`);
  // The restarted plugin tells them while it activates; a join sent before the host
  // counts it as running would be lost (as a user's click would be: they click again).
  await waitFor('the plugin to serve again', async () => ({
    ok: await alice.page.evaluate(async () => {
      try {
        const r = await fetch('/plugins/com.mattermost.calls/version', { credentials: 'same-origin', headers: { 'X-Requested-With': 'XMLHttpRequest' } });
        return r.ok;
      } catch (e) { return false; }
    }),
  }), 30000);
  await alice.join();
  await bob.join();
  await alice.click('mute');
  await receives(bob, 'audio', 'alice');
  console.log(`RESULT ${JSON.stringify({ ok: true, toldAfterMs, participants: (await alice.participants()).length })}`);
}

// The plugin paused (SIGSTOP) for 15 s and resumed: the participants are still
// there, so is the call, and audio flows again.
async function pause(browser) {
  const [alice, bob] = await talkingPair(browser);
  const pid = Number(process.env.PLUGIN_PID);
  process.kill(pid, 'SIGSTOP');
  step('plugin stopped');
  await sleep(15000);
  process.kill(pid, 'SIGCONT');
  step('plugin resumed');
  const before = (await bob.inbound('audio')).packets;
  await waitFor('audio after the pause', async () => {
    const s = await bob.inbound('audio');
    return { ok: s.packets > before + 100, ...s };
  }, 30000);
  const inCall = await Promise.all([alice, bob].map((p) => p.page.evaluate(() => window.callsStub.state.inCall !== '')));
  const participants = (await alice.participants()).length;
  if (!inCall.every(Boolean) || participants !== 2) throw new Error(`call lost: inCall ${inCall}, ${participants} participants, events ${await bob.events()}`);
  console.log(`RESULT ${JSON.stringify({ ok: true, participants })}`);
}

// Two participants only, for the network tests (UDP blocked: ICE-TCP).
async function pair(browser) {
  const [alice, bob] = await talkingPair(browser);
  const pairInfo = await selectedPair(bob);
  console.log(`RESULT ${JSON.stringify({ ok: true, pair: pairInfo })}`);
}

// The candidate pair a participant's media uses: local candidate type and protocol,
// remote address.
async function selectedPair(p) {
  return p.page.evaluate(async () => {
    const all = await window.callsStub.stats();
    const pair = all.find((x) => x.type === 'candidate-pair' && x.nominated && x.state === 'succeeded');
    const local = pair && all.find((x) => x.id === pair.localCandidateId);
    const remote = pair && all.find((x) => x.id === pair.remoteCandidateId);
    return {
      local: local && local.protocol,
      localType: local && local.candidateType,
      relayProtocol: local && local.relayProtocol,
      remote: remote && `${remote.protocol} ${remote.address}:${remote.port}`,
    };
  });
}

// Gathers relay candidates with the given ICE servers in `p`'s page: how many it got
// and the error codes the TURN server answered.
async function gatherRelay(p, iceServers) {
  return p.page.evaluate(async (iceServers) => {
    const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: 'relay' });
    const out = { relay: 0, errors: [] };
    pc.onicecandidate = (e) => { if (e.candidate && e.candidate.type === 'relay') out.relay += 1; };
    pc.onicecandidateerror = (e) => out.errors.push(e.errorCode);
    pc.createDataChannel('probe');
    await pc.setLocalDescription();
    await new Promise((resolve) => {
      const done = () => { if (pc.iceGatheringState === 'complete') resolve(); };
      pc.onicegatheringstatechange = done;
      done();
      setTimeout(resolve, 15000);
    });
    pc.close();
    return out;
  }, iceServers);
}

// Clients that may only relay (RELAY_ONLY=1) through the TURN server the plugin hands
// out, with credentials from /turn-credentials: audio both ways over relay pairs; the
// same TURN server refuses credentials that have expired (EXPIRED_USER/CREDENTIAL).
async function relay(browser) {
  const [alice, bob] = await talkingPair(browser);
  await bob.click('mute');
  await receives(alice, 'audio', 'bob');
  const pairs = { alice: await selectedPair(alice), bob: await selectedPair(bob) };
  const minted = await alice.page.evaluate(async () => {
    const r = await fetch('/plugins/com.mattermost.calls/turn-credentials', { credentials: 'same-origin', headers: { 'X-Requested-With': 'XMLHttpRequest' } });
    return r.json();
  });
  const fresh = await gatherRelay(alice, minted);
  const expired = await gatherRelay(alice, [{ urls: [process.env.TURN_URL], username: process.env.EXPIRED_USER, credential: process.env.EXPIRED_CREDENTIAL }]);
  console.log(`RESULT ${JSON.stringify({ ok: true, ...pairs, minted: minted.map((s) => s.username), fresh, expired })}`);
}

// Alice talks and shares her screen; Bob joins and leaves JOINS times (20 by
// default). Each time the tracks he receives must come with their info (the data
// channel's MediaMap), as the Calls client looks it up once, when the track arrives:
// a video track without it is not shown.
async function rejoin(browser) {
  const [alice, bob] = await talkingPair(browser);
  await alice.click('screen-on');
  const joins = Number(process.env.JOINS || 20);
  const tracks = [];
  const times = [];
  for (let i = 0; i < joins; i++) {
    if (i > 0) await bob.join();
    await receives(bob, 'audio', `alice (join ${i + 1})`);
    await receives(bob, 'video', `alice's screen (join ${i + 1})`);
    const got = await bob.page.evaluate(() => ({ types: window.callsStub.peer().tracks, times: window.callsStub.peer().trackTimes }));
    tracks.push(...got.types);
    times.push(...got.times);
    await bob.click('leave');
    await waitFor('bob to leave', async () => ({ ok: await bob.page.evaluate(() => window.callsStub.state.inCall === '') }));
  }
  const withoutInfo = tracks.filter((t) => t === null).length;
  times.sort((a, b) => a - b);
  const at = (q) => Math.round(times[Math.min(times.length - 1, Math.floor(q * times.length))] || 0);
  // Time from the peer's creation (the `join` event) to the track, median and 90th.
  console.log(`RESULT ${JSON.stringify({ ok: true, joins, tracks: tracks.length, withoutInfo, trackMs: [at(0.5), at(0.9)] })}`);
}

// A cluster (BASES: alice on node A, bob on B, carol on C): alice starts the call on
// A, bob and carol join from their nodes; audio both ways, mute, hand and screen
// share reach every participant on every node.
async function cluster(browser) {
  const [alice, bob, carol] = await Promise.all(USERS.slice(0, 3).map((u) => Person.open(browser, u)));
  await alice.join();
  await bob.join();
  await carol.join();
  step('alice (A) is heard on B and C; bob (B) is heard on A');
  await alice.click('mute');
  await receives(bob, 'audio', 'alice');
  await receives(carol, 'audio', 'alice');
  await bob.click('mute');
  await receives(alice, 'audio', 'bob');
  step('events from B reach A and C; from A reach B and C');
  await bob.click('mute');
  await expectEvent(alice, 'user_muted');
  await expectEvent(carol, 'user_muted');
  await stopped(alice, 'audio', 'bob muted', 5);
  await alice.click('hand');
  await expectEvent(bob, 'user_raise_hand');
  await expectEvent(carol, 'user_raise_hand');
  step('alice shares her screen: bob and carol decode it');
  await alice.click('screen-on');
  await expectEvent(bob, 'user_screen_on');
  await expectEvent(carol, 'user_screen_on');
  await receives(bob, 'video', 'alice (screen)');
  await receives(carol, 'video', 'alice (screen)');
  const sessions = await Promise.all([alice, bob, carol].map((p) => p.sessionId()));
  const pairs = await Promise.all([alice, bob, carol].map((p) => selectedPair(p)));
  console.log(`RESULT ${JSON.stringify({ ok: true, sessions, pairs, participants: (await carol.participants()).length })}`);
}

// Behind a load balancer (BASE is nginx): two participants talk; bob's websocket
// drops and comes back through the balancer, and his session stays.
async function balanced(browser) {
  const alice = await Person.open(browser, USERS[0]);
  const bob = await Person.open(browser, USERS[1]);
  // Each on its own node: the balancer decides where a websocket goes, so bob's
  // reconnects (a new connection each time, before the call) until it lands on a
  // node other than alice's. `hello` names the node.
  const node = (p) => p.page.evaluate(() => (window.callsStub.state.ws?.readyState === 1 ? window.callsStub.state.serverHostname : null));
  await waitFor('both websockets', async () => ({ ok: (await node(alice)) && (await node(bob)) }));
  for (let i = 0; i < 10 && (await node(alice)) === (await node(bob)); i++) {
    await bob.page.evaluate(() => { window.callsStub.state.connID = ''; window.callsStub.dropWebSocket(); });
    await sleep(1500);
    await waitFor("bob's websocket", async () => ({ ok: !!(await node(bob)) }));
  }
  const nodes = [await node(alice), await node(bob)];
  if (nodes[0] === nodes[1]) throw new Error(`alice and bob stay on one node: ${nodes}`);
  step(`alice on ${nodes[0]}, bob on ${nodes[1]}`);
  await alice.join();
  await bob.join();
  await alice.click('mute');
  await receives(bob, 'audio', 'alice');
  await bob.click('mute');
  await receives(alice, 'audio', 'bob');
  const bobSession = await bob.sessionId();
  await bob.page.evaluate(() => window.callsStub.dropWebSocket());
  await waitFor('bob to reconnect', async () => ({ ok: await bob.page.evaluate(() => window.callsStub.state.ws.readyState === 1) }));
  await sleep(11000);
  const present = await alice.participants();
  if (!present.includes(bobSession)) throw new Error(`bob's session ${bobSession} left after reconnect: ${present}`);
  await receives(alice, 'audio', 'bob (after his reconnect)');
  await receives(bob, 'audio', 'alice (after his reconnect)');
  console.log(`RESULT ${JSON.stringify({ ok: true, bob: bobSession, nodes })}`);
}

// The README's first flow on the demo `make run` seeds (CHANNEL is its Calls channel,
// TEST_MODE_CHANNEL its Town Square): in Town Square, left in test mode, alice is told
// why she cannot start a call; in Calls she starts one, bob joins, and they hear each
// other.
async function readme(browser) {
  const [alice, bob] = await Promise.all(USERS.slice(0, 2).map((u) => Person.open(browser, u)));
  const town = `li[data-channel="${process.env.TEST_MODE_CHANNEL}"]`;
  step('alice tries to start a call in Town Square (test mode)');
  const state = await alice.page.textContent(`${town} .calls-state`);
  if (!state.includes('test mode')) throw new Error(`Town Square shows ${state}`);
  await alice.page.click(`${town} button.join`);
  const dialog = await alice.page.waitForSelector('#calls-test-mode', { timeout: 5000 });
  const said = await dialog.textContent();
  for (const want of ['Calls is not currently enabled', 'only system admins can start them']) {
    if (!said.includes(want)) throw new Error(`the notice says: ${said}`);
  }
  if (await alice.page.evaluate(() => window.callsStub.state.inCall || window.callsStub.state.pendingJoin)) throw new Error('a join was sent');
  await alice.page.click('#calls-test-mode button.notice-ok');
  await alice.page.waitForSelector('#calls-test-mode', { state: 'detached', timeout: 5000 });
  if (await alice.page.isVisible('#log')) throw new Error('the raw event log shows without the debug toggle');

  step('alice starts a call in Calls, bob joins; both unmute and hear each other');
  await alice.join();
  await bob.join();
  await alice.click('mute');
  await receives(bob, 'audio', 'alice');
  await bob.click('mute');
  await receives(alice, 'audio', 'bob');
  console.log(`RESULT ${JSON.stringify({ ok: true })}`);
}

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: FLAGS, headless: true });
try {
  const scenarios = { pair, screen, full, restart, crash, pause, relay, rejoin, cluster, balanced, readme };
  await scenarios[SCENARIO](browser);
} catch (e) {
  console.log(`FAILED ${e.stack || e}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
