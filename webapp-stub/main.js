// webapp-stub: a small Calls client for calls-host, in plain browser JavaScript.
// It logs in, lists the user's channels, and starts, joins and leaves calls over the
// Mattermost websocket with the Calls protocol (custom_com.mattermost.calls_*).
(function () {
  'use strict';
  const PLUGIN = '/plugins/com.mattermost.calls';
  const PREFIX = 'custom_com.mattermost.calls_';
  const app = document.getElementById('app');
  const state = { me: null, channels: [], calls: {}, users: {}, ws: null, seq: 0, connID: '', originalConnID: '', inCall: '', muted: true, hand: false, config: {} };

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => { if (k.startsWith('on')) el.addEventListener(k.slice(2), v); else el.setAttribute(k, v); });
    children.flat().forEach((c) => el.append(c instanceof Node ? c : document.createTextNode(String(c))));
    return el;
  }

  async function api(method, path, body) {
    const r = await fetch(path, {
      method, credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'X-Requested-With': 'XMLHttpRequest' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    let data; try { data = JSON.parse(text); } catch (e) { data = text; }
    if (!r.ok) throw new Error((data && data.message) || text || r.status);
    return data;
  }

  function log(msg) {
    const el = document.getElementById('log');
    if (el) { el.textContent += new Date().toISOString().slice(11, 19) + ' ' + msg + '\n'; el.scrollTop = el.scrollHeight; }
  }

  async function userName(id) {
    if (!state.users[id]) {
      try { state.users[id] = (await api('GET', '/api/v4/users/' + id)).username; } catch (e) { state.users[id] = id.slice(0, 8); }
    }
    return state.users[id];
  }

  function send(type, data) {
    if (!state.ws || state.ws.readyState !== 1) return;
    state.ws.send(JSON.stringify({ action: PREFIX + type, seq: ++state.seq, data: data || {} }));
  }

  function connect() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(proto + '//' + location.host + '/api/v4/websocket?connection_id=' + state.connID + '&sequence_number=0');
    state.ws = ws;
    ws.onopen = () => {
      if (state.inCall) send('reconnect', { channelID: state.inCall, originalConnID: state.originalConnID, prevConnID: state.connID });
    };
    ws.onmessage = (m) => onEvent(JSON.parse(m.data));
    ws.onclose = () => { log('websocket closed, reconnecting'); setTimeout(connect, 1000); };
  }

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
      if (!state.originalConnID) state.originalConnID = state.connID;
      return;
    }
    if (!ev.event.startsWith(PREFIX)) return;
    const type = ev.event.slice(PREFIX.length);
    const d = ev.data || {};
    log(type + ' ' + JSON.stringify(d));
    if (type === 'join') { state.inCall = state.pendingJoin; state.originalConnID = d.connID; state.muted = true; state.hand = false; }
    if (type === 'error') { alert('Call error: ' + d.data); state.pendingJoin = ''; }
    if (type === 'host_mute') { state.muted = true; send('mute'); }
    if (type === 'user_left' && d.session_id === state.originalConnID) { state.inCall = ''; }
    if (type === 'call_end' && d.channelID === state.inCall) { leave(); }
    refreshCalls().catch((e) => log('refresh failed: ' + e.message));
  }

  function join(channelID) { state.pendingJoin = channelID; send('join', { channelID }); }
  function leave() { send('leave'); state.inCall = ''; render(); }
  function toggleMute() { state.muted = !state.muted; send(state.muted ? 'mute' : 'unmute'); render(); }
  function toggleHand() { state.hand = !state.hand; send(state.hand ? 'raise_hand' : 'unraise_hand'); render(); }

  async function setEnabled(channelID, enabled) {
    try { await api('POST', PLUGIN + '/' + channelID, { enabled }); await refreshCalls(); } catch (e) { alert(e.message); }
  }

  async function render() {
    const list = h('ul', {});
    for (const ch of state.channels) {
      const info = state.calls[ch.id] || {};
      const call = info.call;
      const row = h('li', { 'data-channel': ch.id }, h('b', {}, ch.display_name || ch.name), ' ');
      if (info.enabled !== undefined) row.append(h('small', {}, info.enabled ? '(calls enabled) ' : '(calls disabled) '));
      if (call) {
        const names = await Promise.all(call.sessions.map(async (s) => (await userName(s.user_id)) + (s.unmuted ? ' 🎤' : ' 🔇') + (s.raised_hand ? ' ✋' : '') + (s.user_id === call.host_id ? ' (host)' : '')));
        row.append('in call: ' + names.join(', ') + ' ');
      }
      if (state.inCall === ch.id) {
        row.append(h('button', { onclick: leave, class: 'leave' }, 'Leave'),
          h('button', { onclick: toggleMute, class: 'mute' }, state.muted ? 'Unmute' : 'Mute'),
          h('button', { onclick: toggleHand, class: 'hand' }, state.hand ? 'Lower hand' : 'Raise hand'));
      } else if (!state.inCall) {
        row.append(h('button', { onclick: () => join(ch.id), class: 'join' }, call ? 'Join call' : 'Start call'));
      }
      if (state.me.roles.includes('system_admin')) {
        row.append(h('button', { onclick: () => setEnabled(ch.id, true) }, 'Enable calls'), h('button', { onclick: () => setEnabled(ch.id, false) }, 'Disable calls'));
      }
      list.append(row);
    }
    app.replaceChildren(h('p', {}, 'Signed in as ', h('b', { id: 'me' }, state.me.username)), list, h('h3', {}, 'Events'), h('div', { id: 'log' }));
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

  start();
})();
