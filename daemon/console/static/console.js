// The operator console: vanilla JS, no build step, nothing from outside this hub.
// Runs under the page's CSP (script-src 'self', no inline code, no eval): every element is
// made with createElement and every colour comes from a CSS class, never a style attribute.
'use strict';

(() => {
  const LANGS = ['en', 'ja', 'zh'];
  const LANG_KEY = 'da-console-lang';
  // the CSRF token is not a secret from this origin (the cookie it pairs with is HttpOnly);
  // sessionStorage keeps it across a reload of this tab only
  const CSRF_KEY = 'da-console-csrf';
  const MINUTES = 60;
  const PALETTE = 8;
  const RECENT = 20;
  const SVG = 'http://www.w3.org/2000/svg';

  const state = {
    lang: 'en',
    strings: {},
    english: {},
    overview: null,
    usage: null,
    mode: 'tenant',
    recent: [],
    node: null,
    net: null,
    socket: null,
    retry: 0,
    signedIn: false,
    timers: [],
  };

  const $ = (id) => document.getElementById(id);

  // ---- language -------------------------------------------------------------------------

  function initialLanguage() {
    const saved = localStorage.getItem(LANG_KEY);
    if (LANGS.includes(saved)) return saved;
    for (const tag of navigator.languages || [navigator.language || 'en']) {
      const primary = String(tag).toLowerCase().split('-')[0];
      if (LANGS.includes(primary)) return primary;
    }
    return 'en';
  }

  async function loadStrings(lang) {
    const response = await fetch(`/console/i18n/${lang}.json`, { credentials: 'same-origin' });
    if (!response.ok) throw new Error(`i18n ${lang}: ${response.status}`);
    return response.json();
  }

  // a missing key falls back to English, then to the key itself: a gap never breaks the page
  function tr(key, params = {}) {
    const template = state.strings[key] ?? state.english[key] ?? key;
    return template.replace(/\{(\w+)\}/g, (whole, name) => (name in params ? String(params[name]) : whole));
  }

  async function setLanguage(lang) {
    if (!LANGS.includes(lang)) lang = 'en';
    try {
      if (!Object.keys(state.english).length) state.english = await loadStrings('en');
      state.strings = lang === 'en' ? state.english : await loadStrings(lang);
    } catch (err) {
      state.strings = state.english;
    }
    state.lang = lang;
    localStorage.setItem(LANG_KEY, lang);
    document.documentElement.lang = lang;
    $('lang').value = lang;
    document.title = tr('title');
    for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = tr(el.dataset.i18n);
    $('legend').setAttribute('aria-label', tr('legend'));
    setLive(state.socket && state.socket.readyState === WebSocket.OPEN);
    if (state.signedIn) renderAll();
  }

  // ---- formatting (Intl, in the chosen language) -----------------------------------------

  const fmtDate = (iso) => new Intl.DateTimeFormat(state.lang, { year: 'numeric', month: 'long', day: 'numeric' })
    .format(new Date(iso));
  const fmtTime = (iso) => new Intl.DateTimeFormat(state.lang, { hour: '2-digit', minute: '2-digit' })
    .format(new Date(iso));
  const fmtInt = (n) => (n === null || n === undefined ? '—' : new Intl.NumberFormat(state.lang).format(n));
  // two decimals below 10 ms: an echo's 0.03 ms should not read as 0 ms
  const fmtMs = (n) => (n === null || n === undefined ? '—'
    : `${new Intl.NumberFormat(state.lang, { maximumFractionDigits: n < 10 ? 2 : 1 }).format(n)} ms`);

  function fmtMoney(amount, currency) {
    if (amount === null || amount === undefined || amount === '') return '—';
    if (typeof amount === 'object') return fmtMoney(amount.amount, amount.currency || currency);
    const value = Number(amount);
    if (!Number.isFinite(value)) return String(amount);
    if (!currency) return new Intl.NumberFormat(state.lang).format(value);
    try {
      // JPY has no minor unit: Intl gives it zero decimals by itself
      return new Intl.NumberFormat(state.lang, { style: 'currency', currency }).format(value);
    } catch (err) {
      return `${new Intl.NumberFormat(state.lang).format(value)} ${currency}`;
    }
  }

  function fmtDuration(seconds) {
    let s = Math.max(0, Math.floor(Number(seconds) || 0));
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    if (d) return tr('duration_dh', { d, h });
    if (h) return tr('duration_hm', { h, m });
    if (m) return tr('duration_ms', { m, s });
    return tr('duration_s', { s });
  }

  // ---- DOM helpers -----------------------------------------------------------------------

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function svg(tag, attrs = {}, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fillRows(table, rows) {
    const body = table.querySelector('tbody');
    body.replaceChildren();
    for (const cells of rows) {
      const tr_ = document.createElement('tr');
      for (const cell of cells) {
        const td = cell instanceof Node ? cell : el('td', cell);
        tr_.append(td.tagName === 'TD' ? td : wrapTd(td));
      }
      body.append(tr_);
    }
  }

  function wrapTd(node, cls) {
    const td = el('td', undefined, cls);
    td.append(node);
    return td;
  }

  const num = (text) => el('td', text, 'num');

  function badge(ok, yes, no) {
    const span = el('span', ok ? yes : no, `badge ${ok ? 'ok' : 'bad'}`);
    return span;
  }

  // ---- HTTP ------------------------------------------------------------------------------

  async function api(method, path, body) {
    const headers = { Accept: 'application/json', 'Accept-Language': state.lang };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const csrf = sessionStorage.getItem(CSRF_KEY);
    if (csrf && !['GET', 'HEAD', 'OPTIONS'].includes(method)) headers['X-CSRF-Token'] = csrf;
    const response = await fetch(path, {
      method, headers, credentials: 'same-origin', cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    if (response.status !== 204) {
      try { data = await response.json(); } catch (err) { data = null; }
    }
    return { status: response.status, data };
  }

  function errorText(result) {
    const code = result.data && result.data.error && result.data.error.code;
    if (code && (state.strings[`error_${code}`] || state.english[`error_${code}`])) return tr(`error_${code}`);
    const message = result.data && result.data.error && result.data.error.message;
    return message || tr('error_generic', { status: result.status });
  }

  // ---- sign in / out ---------------------------------------------------------------------

  async function signIn(event) {
    event.preventDefault();
    const key = $('api-key').value.trim();
    const email = $('email').value.trim();
    const password = $('password').value;
    const error = $('signin-error');
    error.textContent = '';
    if (!key && !(email && password)) {
      error.textContent = tr('need_credentials');
      return;
    }
    $('signin-button').disabled = true;
    try {
      const tenant = $('tenant').value.trim();
      const person = tenant ? { email, password, tenant } : { email, password };
      const result = await api('POST', '/v1/console/session', key ? { api_key: key } : person);
      if (result.status !== 200) {
        error.textContent = errorText(result);
        return;
      }
      sessionStorage.setItem(CSRF_KEY, result.data.csrf_token);
      $('api-key').value = '';
      $('password').value = '';
      await enter();
    } catch (err) {
      error.textContent = tr('error_network');
    } finally {
      $('signin-button').disabled = false;
    }
  }

  async function signOut() {
    try { await api('DELETE', '/v1/console/session'); } catch (err) { /* leaving anyway */ }
    leave();
  }

  function leave() {
    state.signedIn = false;
    sessionStorage.removeItem(CSRF_KEY);
    for (const timer of state.timers) clearInterval(timer);
    state.timers = [];
    if (state.socket) { const s = state.socket; state.socket = null; s.close(1000); }
    Object.assign(state, { overview: null, usage: null, recent: [], node: null, net: null });
    $('dashboard').hidden = true;
    $('signout').hidden = true;
    $('who').hidden = true;
    $('signin').hidden = false;
    setLive(false);
    $('api-key').focus();
  }

  async function enter() {
    const ok = await refreshOverview();
    if (!ok) return;
    state.signedIn = true;
    $('signin').hidden = true;
    $('dashboard').hidden = false;
    $('signout').hidden = false;
    $('who').hidden = false;
    await refreshUsage();
    renderAll();
    connect();
    state.timers.push(setInterval(refreshOverview, 30000));
    state.timers.push(setInterval(() => refreshUsage().then(renderUsage), 60000));
    state.timers.push(setInterval(tick, 1000));
  }

  async function refreshOverview() {
    const result = await api('GET', '/v1/console/overview');
    if (result.status === 401 || result.status === 403) {
      if (state.signedIn) {
        leave();
        $('signin-error').textContent = errorText(result);
      }
      return false;
    }
    if (result.status !== 200) return false;
    state.overview = result.data;
    state.overview.received = Date.now();
    if (state.signedIn) renderAll();
    return true;
  }

  async function refreshUsage() {
    const result = await api('GET', `/v1/console/usage?minutes=${MINUTES}`);
    if (result.status === 200) state.usage = result.data;
    // call counts are billing data: a role without billing:read gets 403 and no chart
    $('usage-title').closest('section').hidden = result.status === 403;
  }

  // ---- live events -----------------------------------------------------------------------

  function setLive(on) {
    const live = $('live');
    live.dataset.state = on ? 'on' : 'off';
    live.textContent = tr(on ? 'live_on' : 'live_off');
  }

  function connect() {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const socket = new WebSocket(`${scheme}//${location.host}/v1/events`);
    state.socket = socket;
    socket.addEventListener('open', () => { state.retry = 0; setLive(true); });
    socket.addEventListener('message', (message) => {
      let event;
      try { event = JSON.parse(message.data); } catch (err) { return; }
      onEvent(event);
    });
    socket.addEventListener('close', () => {
      if (state.socket !== socket) return;  // signed out: closed on purpose
      setLive(false);
      state.socket = null;
      // back off up to 30 s; a slow-reader close (4008) just reconnects and resyncs
      const delay = Math.min(30000, 1000 * 2 ** state.retry++);
      setTimeout(async () => {
        if (!state.signedIn) return;
        if (await refreshOverview()) { await refreshUsage(); renderUsage(); connect(); }
      }, delay);
    });
  }

  function onEvent(event) {
    const data = event.data || {};
    switch (event.type) {
      case 'call': return onCall(event.at, data);
      case 'node_status':
        state.node = data;
        return renderLive();
      case 'network_stats':
        state.net = data;
        return renderLive();
      case 'module_status':
        if (state.overview && Array.isArray(data.modules || data)) {
          state.overview.modules = data.modules || data;
          renderModules();
        }
        return undefined;
      case 'peer_status':
        if (state.overview && Array.isArray(data.peers || data)) {
          state.overview.peers = data.peers || data;
          renderPeers();
        }
        return undefined;
      default: return undefined;
    }
  }

  function onCall(at, call) {
    state.recent.unshift({ at: at || new Date().toISOString(), ...call });
    state.recent.length = Math.min(state.recent.length, RECENT);
    // hub-wide and billing numbers only move where the hub sent them (operators; billing:read)
    if (state.node && typeof state.node.calls_total === 'number') state.node.calls_total += 1;
    const tenant = state.overview && state.overview.tenants.find((t) => t.id === call.tenant_id);
    if (tenant && typeof tenant.calls_today === 'number') {
      tenant.calls_today = (tenant.calls_today || 0) + 1;
      tenant.calls_period = (tenant.calls_period || 0) + 1;
    }
    countInUsage(at, call);
    renderLive();
    renderTenants();
    renderRecent();
    renderUsage();
  }

  // the chart moves with each call; the minute-by-minute refetch corrects any drift
  function countInUsage(at, call) {
    const usage = state.usage;
    if (!usage) return;
    const start = Date.parse(usage.start);
    const minute = Math.floor((Date.parse(at) - start) / 60000);
    if (!Number.isFinite(minute) || minute < 0) return;
    const shift = minute - (usage.minutes - 1);
    if (shift > 0) {
      for (const series of usage.series) series.counts = series.counts.slice(shift).concat(new Array(Math.min(shift, usage.minutes)).fill(0)).slice(-usage.minutes);
      usage.start = new Date(start + shift * 60000).toISOString();
    }
    const index = Math.min(minute, usage.minutes - 1);
    let series = usage.series.find((s) => s.tenant_id === call.tenant_id && s.action === call.action);
    if (!series) {
      series = { tenant_id: call.tenant_id, action: call.action, counts: new Array(usage.minutes).fill(0) };
      usage.series.push(series);
    }
    series.counts[index] += 1;
  }

  // ---- rendering -------------------------------------------------------------------------

  function renderAll() {
    renderNode();
    renderLive();
    renderModules();
    renderTenants();
    renderLedger();
    renderPeers();
    renderRecent();
    renderUsage();
  }

  function renderNode() {
    const o = state.overview;
    if (!o) return;
    const node = o.node;
    $('who').textContent = tr('signed_in_as', { role: tr(`role_${o.viewer.role}`), tenant: tenantName(o.viewer.tenant_id) });
    $('node-name').textContent = node.name;
    $('node-id').textContent = node.node_id || '—';
    $('node-version').textContent = node.version;
    $('node-started-date').textContent = fmtDate(node.started_at);
    $('node-started-time').textContent = fmtTime(node.started_at);
    $('node-ready').replaceWith(Object.assign(badge(node.ready, tr('yes'), tr('no')), { id: 'node-ready' }));
    $('node-reasons').textContent = (node.reasons || []).join(', ');
    const doors = $('node-doors');
    doors.replaceChildren(...(node.doors || []).map((door) => {
      const item = el('li');
      item.append(el('span', door.name, 'door'), ' ', el('span', door.url, 'mono'));
      return item;
    }));
    tick();
  }

  function tick() {
    const o = state.overview;
    if (!o) return;
    const base = state.node && state.node.uptime_s !== undefined ? state.node : o.node;
    const since = (Date.now() - (base.received || o.received)) / 1000;
    $('node-uptime').textContent = fmtDuration(base.uptime_s + since);
  }

  function renderLive() {
    const n = state.node;
    if (n) {
      n.received = n.received || Date.now();
      $('node-calls').textContent = fmtInt(n.calls_total);
      $('node-in-flight').textContent = fmtInt(n.in_flight);
      if (state.overview && typeof n.ready === 'boolean' && n.ready !== state.overview.node.ready) {
        state.overview.node.ready = n.ready;
        renderNode();
      }
    }
    const s = state.net;
    if (s) {
      const rate = new Intl.NumberFormat(state.lang, { maximumFractionDigits: 1 });
      $('node-rates').textContent = tr('rates_value', {
        calls: rate.format(s.calls_per_s || 0), errors: rate.format(s.errors_per_s || 0), connections: fmtInt(s.connections || 0),
      });
    }
  }

  function renderModules() {
    const modules = (state.overview && state.overview.modules) || [];
    fillRows($('modules'), modules.map((m) => {
      const stateCell = wrapTd(badge(m.state === 'loaded', tr('loaded'), tr('failed')));
      if (m.error) stateCell.append(el('div', m.error, 'error small'));
      return [
        el('td', m.name, 'mono'), stateCell, m.provider || '—', (m.capabilities || []).join(', '),
        num(fmtInt(m.in_flight)), num(fmtInt(m.queue_depth)), num(fmtMs(m.p50_ms)), num(fmtMs(m.p99_ms)),
      ];
    }));
  }

  function tenantName(id) {
    const tenant = state.overview && state.overview.tenants.find((t) => t.id === id);
    return tenant ? tenant.name : (id || '—');
  }

  function renderTenants() {
    const tenants = (state.overview && state.overview.tenants) || [];
    // without billing:read the hub sends no counts or money: their columns go
    const billing = tenants.length === 0 || 'calls_today' in tenants[0];
    $('tenants').querySelectorAll('thead th').forEach((th, i) => { th.hidden = i >= 3 && !billing; });
    fillRows($('tenants'), tenants.map((t) => [
      t.name, t.plan || '—', wrapTd(badge(t.status === 'active', tr(`tenant_${t.status}`), tr(`tenant_${t.status}`))),
      ...(billing ? [num(fmtInt(t.calls_today)), num(fmtInt(t.calls_period)),
        num(fmtMoney(t.credits_balance, t.currency)), num(fmtMoney(t.estimated_invoice, t.currency))] : []),
    ]));
  }

  function renderLedger() {
    const ledger = state.overview && state.overview.ledger;
    if (!ledger) return;
    $('ledger-seq').textContent = fmtInt(ledger.last_seq);
    const verified = ledger.verified || {};
    const text = verified.ok === null || verified.ok === undefined ? tr('not_verified')
      : tr(verified.ok ? 'verified_ok' : 'verified_bad');
    $('ledger-verified').replaceChildren(el('span', text, `badge ${verified.ok ? 'ok' : verified.ok === false ? 'bad' : ''}`));
    if (verified.at) $('ledger-verified').append(' ', el('span', `${fmtDate(verified.at)} ${fmtTime(verified.at)}`, 'muted'));
    $('ledger-writer').replaceWith(Object.assign(badge(ledger.writer === 'up', tr('up'), tr('down')), { id: 'ledger-writer' }));
  }

  function renderPeers() {
    const peers = (state.overview && state.overview.peers) || [];
    $('peers-empty').hidden = peers.length > 0;
    $('peers').hidden = peers.length === 0;
    fillRows($('peers'), peers.map((p) => [
      el('td', p.node_id, 'mono'), p.site || '—', p.state, num(fmtMs(p.rtt_ms)), (p.capabilities || []).join(', '),
    ]));
  }

  function renderRecent() {
    $('calls-empty').hidden = state.recent.length > 0;
    $('calls').hidden = state.recent.length === 0;
    fillRows($('calls'), state.recent.map((c) => [
      fmtTime(c.at), el('td', c.action, 'mono'), c.module || '—', tenantName(c.tenant_id), c.door || '—',
      wrapTd(badge(c.status === 'OK', c.status, c.status)), num(fmtMs(c.latency_ms)),
    ]));
  }

  // ---- the usage chart: hand-drawn SVG ---------------------------------------------------

  function groupedSeries() {
    const usage = state.usage;
    if (!usage) return [];
    const groups = new Map();
    for (const s of usage.series) {
      const key = state.mode === 'tenant' ? s.tenant_id : s.action;
      const counts = groups.get(key) || new Array(usage.minutes).fill(0);
      s.counts.forEach((n, i) => { counts[i] += n; });
      groups.set(key, counts);
    }
    return [...groups.entries()]
      .map(([key, counts]) => ({ key, label: state.mode === 'tenant' ? tenantName(key) : key, counts, total: counts.reduce((a, b) => a + b, 0) }))
      .sort((a, b) => b.total - a.total || String(a.label).localeCompare(String(b.label)));
  }

  function renderUsage() {
    const box = $('chart');
    const usage = state.usage;
    const groups = groupedSeries();
    const W = 720; const H = 220; const L = 40; const R = 12; const T = 12; const B = 28;
    const minutes = usage ? usage.minutes : MINUTES;
    const max = Math.max(1, ...groups.flatMap((g) => g.counts));
    const top = niceCeil(max);
    const x = (i) => L + (minutes <= 1 ? 0 : (i * (W - L - R)) / (minutes - 1));
    const y = (v) => T + (H - T - B) * (1 - v / top);

    const chart = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': 'chart-title', class: 'usage' });
    chart.append(svg('title', { id: 'chart-title' }, tr('chart_label', { minutes })));
    for (let step = 0; step <= 4; step += 1) {
      const v = (top * step) / 4;
      chart.append(svg('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), class: 'grid' }));
      chart.append(svg('text', { x: L - 6, y: y(v) + 4, class: 'axis', 'text-anchor': 'end' }, fmtInt(v)));
    }
    if (usage) {
      const start = Date.parse(usage.start);
      for (let i = 0; i < minutes; i += 15) {
        chart.append(svg('text', { x: x(i), y: H - 8, class: 'axis', 'text-anchor': 'middle' }, fmtTime(new Date(start + i * 60000).toISOString())));
      }
      chart.append(svg('text', { x: x(minutes - 1), y: H - 8, class: 'axis', 'text-anchor': 'end' }, tr('now')));
    }
    groups.forEach((g, index) => {
      const points = g.counts.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
      const color = `c${index % PALETTE}`;
      chart.append(svg('polyline', { points, class: `line ${color}` }));
      const last = g.counts.length - 1;
      if (g.counts[last] > 0) chart.append(svg('circle', { cx: x(last), cy: y(g.counts[last]), r: 3, class: `dot ${color}` }));
    });
    if (!groups.length) {
      chart.append(svg('text', { x: W / 2, y: H / 2, class: 'empty', 'text-anchor': 'middle' }, tr('no_usage')));
    }
    box.replaceChildren(chart);

    $('legend').replaceChildren(...groups.map((g, index) => {
      const item = el('li');
      item.append(el('span', '', `swatch c${index % PALETTE}`), el('span', g.label), el('span', fmtInt(g.total), 'muted'));
      return item;
    }));
    $('by-tenant').setAttribute('aria-pressed', String(state.mode === 'tenant'));
    $('by-action').setAttribute('aria-pressed', String(state.mode === 'action'));
  }

  // the top of the y axis: four whole-number steps (calls are counted, a 6.25 tick reads oddly)
  function niceCeil(n) {
    const step = Math.ceil(n / 4);
    const power = 10 ** Math.floor(Math.log10(step));
    const nice = [1, 2, 3, 4, 5, 6, 8, 10].find((m) => m * power >= step) * power;
    return 4 * nice;
  }

  // ---- start -----------------------------------------------------------------------------

  async function start() {
    $('signin-form').addEventListener('submit', signIn);
    $('signout').addEventListener('click', signOut);
    $('lang').addEventListener('change', (event) => setLanguage(event.target.value));
    $('by-tenant').addEventListener('click', () => { state.mode = 'tenant'; renderUsage(); });
    $('by-action').addEventListener('click', () => { state.mode = 'action'; renderUsage(); });
    await setLanguage(initialLanguage());
    // a reload of a signed-in tab: the cookie is still there, so try it before asking again
    if (sessionStorage.getItem(CSRF_KEY)) {
      await enter();
      if (state.signedIn) return;
      sessionStorage.removeItem(CSRF_KEY);
    }
    $('signin').hidden = false;
    $('api-key').focus();
  }

  document.addEventListener('DOMContentLoaded', start);
})();
