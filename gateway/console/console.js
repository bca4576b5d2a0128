// The operator's console (gateway/console/API.md): polls api/state every second and shows each upstream, its
// failed instances (with Retry and Discard), the transfers and the storage commitment jobs. Plain JavaScript, no
// framework; URLs are relative (the page may sit behind any prefix); every text from the server goes into the
// page through textContent, never as HTML.
'use strict';
(() => {
  const POLL_MS = 1000;
  const TOKEN_KEY = 'dwb-console-token';
  const $ = (id) => document.getElementById(id);
  const cards = new Map(); // AE title -> the parts of its card kept between polls
  let state = null;        // the last api/state
  let timer = null, inflight = false;

  // ---- small helpers ----
  // An element: props set as attributes ("class", "data-*", "title", ...) except "text" (textContent);
  // children are nodes or strings (text nodes).
  function el(tag, props, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'text') e.textContent = String(v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of kids) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
    return e;
  }
  function setText(e, text, value) {
    e.textContent = text;
    if (value !== undefined) e.dataset.value = String(value);
  }
  function bytes(n) {
    if (typeof n !== 'number' || !isFinite(n)) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? String(Math.round(n)) : n.toFixed(n < 10 ? 1 : 0)) + ' ' + units[i];
  }
  function duration(s) {
    if (typeof s !== 'number' || !(s > 0)) return '–';
    if (s < 60) return (s < 1 ? '<1' : Math.floor(s)) + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min ' + Math.floor(s % 60) + ' s';
    if (s < 172800) return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
    return Math.floor(s / 86400) + ' d ' + Math.floor((s % 86400) / 3600) + ' h';
  }
  // A server time (ISO 8601, UTC) as the time of day, with the date when it is not the server's today.
  function when(iso) {
    if (!iso) return '–';
    const day = iso.slice(0, 10), time = iso.slice(11, 19);
    return (state && state.now && state.now.slice(0, 10) === day ? '' : day + ' ') + time + ' UTC';
  }
  // Seconds from the server's now to iso.
  function fromNow(iso) {
    const t = Date.parse(iso), now = state ? Date.parse(state.now) : Date.now();
    return isFinite(t) && isFinite(now) ? (t - now) / 1000 : NaN;
  }
  function num(n) { return typeof n === 'number' ? n.toLocaleString('en-US') : '–'; }
  function count(n, what) { return num(n) + ' ' + what + (n === 1 ? '' : 's'); }
  function show(kind, text) {
    const m = $('message');
    m.hidden = false;
    m.dataset.kind = kind;
    m.className = 'message ' + kind;
    m.textContent = text;
  }

  // ---- talking to the bridge ----
  function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }
  function headers(post) {
    const h = {};
    if (token()) h.Authorization = 'Bearer ' + token();
    if (post) h['Content-Type'] = 'application/json';
    return h;
  }
  async function getJSON(url) {
    const r = await fetch(url, { headers: headers(false), cache: 'no-store', credentials: 'same-origin' });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.error || 'HTTP ' + r.status);
    return body;
  }

  // ---- upstreams ----
  function stat(dl, label, field) {
    const dd = el('dd', { 'data-field': field });
    dl.append(el('div', {}, el('dt', { text: label }), dd));
    return dd;
  }
  function card(ae) {
    let c = cards.get(ae);
    if (c) return c;
    c = { ae, failedSeen: null, loading: false, again: false, historyOpen: new Set() };
    c.root = el('article', { class: 'card', 'data-upstream': ae });
    c.badge = el('span', { class: 'badge', 'data-field': 'state' });
    c.detail = el('p', { class: 'detail', 'data-field': 'state-detail' });
    c.root.append(el('div', { class: 'card-head' }, el('h3', { text: ae }), c.badge), c.detail);
    const dl = el('dl', { class: 'stats' });
    c.queue = stat(dl, 'Queue', 'queue-instances');
    c.bytes = stat(dl, 'Queued bytes', 'queue-bytes');
    c.oldest = stat(dl, 'Oldest', 'oldest-age');
    c.failed = stat(dl, 'Failed', 'failed');
    c.delivered = stat(dl, 'Delivered, last hour', 'delivered-last-hour');
    c.rate = stat(dl, 'STOW throughput', 'stow-rate');
    c.refused = stat(dl, 'Refused filters', 'refused-filters');
    c.root.append(dl);
    c.details = el('details', { class: 'failed', 'data-role': 'failed', open: true, hidden: true });
    c.summary = el('summary', { text: 'Failed instances' });
    c.status = el('p', { class: 'failed-status', 'data-role': 'failed-status' });
    c.tbody = el('tbody');
    c.details.append(c.summary, c.status, el('table', { class: 'grid failed-table', 'data-role': 'failed-table' },
      el('thead', {}, el('tr', {}, ...['Id', 'Size', 'Failed at', 'Reason', 'History', ''].map((t) => el('th', { text: t })))),
      c.tbody));
    c.details.addEventListener('toggle', () => { if (c.details.open) loadFailed(c); });
    c.root.append(c.details);
    cards.set(ae, c);
    return c;
  }
  function renderUpstream(u) {
    const c = card(u.ae_title);
    c.root.className = 'card state-' + u.state;
    c.root.dataset.state = u.state;
    setText(c.badge, u.state === 'quota' ? 'quota exhausted' : u.state);
    const parts = [];
    if (u.state !== 'healthy' && u.reason) parts.push(u.reason);
    if (u.since) parts.push('since ' + when(u.since));
    if (u.retry_at) {
      const s = fromNow(u.retry_at);
      parts.push((u.state === 'quota' ? 'until ' : 'next attempt ') + when(u.retry_at) +
        (s > 0 ? ' (in ' + duration(s) + ')' : ''));
    }
    setText(c.detail, parts.join(' · '));
    const q = u.queue || {};
    setText(c.queue, count(q.instances, 'instance') + (q.retrying ? ' (' + num(q.retrying) + ' retrying)' : ''),
      q.instances);
    setText(c.bytes, bytes(q.bytes), q.bytes);
    setText(c.oldest, q.instances ? duration(q.oldest_age_s) : '–', q.oldest_age_s);
    setText(c.failed, num(u.failed) + (u.failed_total ? ' (' + num(u.failed_total) + ' since start)' : ''), u.failed);
    setText(c.delivered, num(u.delivered_last_hour) + ' (' + num(u.delivered_total) + ' since start)',
      u.delivered_last_hour);
    setText(c.rate, bytes(u.stow_bytes_per_s) + '/s', u.stow_bytes_per_s);
    const rf = u.refused_filters || [];
    setText(c.refused, rf.length ? rf.join(', ') : 'none', rf.length);
    c.details.hidden = !u.failed && !c.tbody.childElementCount;
    if (u.failed !== c.failedSeen && c.details.open) loadFailed(c);
  }

  // ---- failed instances ----
  async function loadFailed(c) {
    if (c.loading) { c.again = true; return; }
    c.loading = true;
    try {
      const f = await getJSON('api/failed?upstream=' + encodeURIComponent(c.ae));
      c.failedSeen = f.total;
      renderFailed(c, f);
    } catch (e) {
      setText(c.status, 'Could not load the failed instances: ' + e.message);
    } finally {
      c.loading = false;
      if (c.again) { c.again = false; loadFailed(c); }
    }
  }
  function renderFailed(c, f) {
    const items = f.items || [];
    c.summary.textContent = 'Failed instances (' + num(f.total) + ')';
    setText(c.status, f.total > items.length ? 'The newest ' + items.length + ' of ' + num(f.total) + ' shown.' : '');
    const rows = items.map((it) => {
      const idCell = el('td', {}, el('code', { text: it.id }));
      if (state && state.phi && it.name && it.name !== '***') idCell.append(el('div', { class: 'sub', text: it.name }));
      const hist = it.history || [];
      let histCell = '–';
      if (hist.length) {
        histCell = el('details', { 'data-role': 'history', open: c.historyOpen.has(it.id) },
          el('summary', { text: hist.length + (hist.length === 1 ? ' entry' : ' entries') }),
          el('ol', {}, ...hist.map((h) => el('li', { text: h }))));
        histCell.addEventListener('toggle', () => {
          if (histCell.open) c.historyOpen.add(it.id); else c.historyOpen.delete(it.id);
        });
      }
      const retry = el('button', { type: 'button', 'data-action': 'retry', text: 'Retry' });
      const discard = el('button', { type: 'button', 'data-action': 'discard', class: 'danger', text: 'Discard' });
      retry.addEventListener('click', () => act('retry', c, it.id, retry));
      discard.addEventListener('click', () => act('discard', c, it.id, discard));
      return el('tr', { 'data-failed-id': it.id },
        idCell, el('td', { class: 'num', 'data-field': 'size', 'data-value': it.size, text: bytes(it.size) }),
        el('td', { text: when(it.failed_at) }),
        el('td', { class: 'reason', 'data-field': 'reason', text: it.reason }), el('td', {}, histCell),
        el('td', { class: 'actions' }, retry, ' ', discard));
    });
    c.tbody.replaceChildren(...rows);
    c.details.hidden = !rows.length && !f.total;
    updateButtons();
  }
  async function act(kind, c, id, btn) {
    const what = kind === 'retry' ? 'Retry' : 'Discard';
    if (kind === 'discard' && !window.confirm('Discard failed instance ' + id + ' of ' + c.ae +
        '? Its file and reason are deleted from the spool; this cannot be undone.')) return;
    btn.dataset.busy = '1';
    updateButtons();
    try {
      const r = await fetch('api/failed/' + kind, {
        method: 'POST', headers: headers(true), cache: 'no-store', credentials: 'same-origin',
        body: JSON.stringify({ upstream: c.ae, id }),
      });
      const body = await r.json().catch(() => ({}));
      if (r.ok) show('ok', what + ' of ' + id + ' (' + c.ae + '): ' + (body.message || 'done'));
      else show('error', what + ' of ' + id + ' refused by the bridge (HTTP ' + r.status + '): ' +
        (body.error || r.statusText));
    } catch (e) {
      show('error', what + ' of ' + id + ': the bridge did not answer (' + e.message + ')');
    }
    delete btn.dataset.busy;
    updateButtons();
    loadFailed(c);
  }
  function updateButtons() {
    const writable = !!(state && state.writable);
    for (const b of document.querySelectorAll('button[data-action]')) {
      b.disabled = !writable || b.dataset.busy === '1';
      b.title = writable ? '' : 'Read-only: enter the admin token above';
    }
  }

  // ---- transfers and storage commitment ----
  function progress(t) {
    const total = t.total || 0, rem = t.remaining || 0;
    const bar = el('div', { class: 'bar', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': total,
      'aria-valuenow': (t.sent || 0) + (t.failed || 0) });
    for (const [cls, n] of [['sent', t.sent || 0], ['failed', t.failed || 0], ['remaining', rem]]) {
      const s = el('span', { class: cls });
      s.style.width = (total ? (100 * n) / total : 0) + '%'; // CSSOM, allowed by the page's CSP
      bar.append(s);
    }
    const text = total ? num(t.sent) + ' sent · ' + num(t.failed) + ' failed · ' + num(rem) + ' left of ' + num(total)
      : (t.state === 'running' ? 'finding the instances…' : 'nothing to send');
    return el('td', { class: 'progress' }, bar, el('div', { class: 'sub', 'data-field': 'progress', text }));
  }
  function renderTransfers(list) {
    const rows = list.map((t) => el('tr', { 'data-transfer-id': t.id, 'data-state': t.state, class: 'state-' + t.state },
      el('td', { class: 'num', text: t.id }), el('td', { text: t.service }),
      el('td', { 'data-field': 'state' }, el('span', { class: 'badge', text: t.state })),
      el('td', { text: t.caller }), el('td', { text: t.upstream }), el('td', { text: t.destination }),
      progress(t), el('td', { class: 'num', 'data-field': 'speed', text: bytes((t.mb_per_s || 0) * 1048576) + '/s' }),
      el('td', { text: when(t.started) }), el('td', { class: 'reason', 'data-field': 'error', text: t.error || '' })));
    $('transfers').tBodies[0].replaceChildren(...rows);
    $('transfers').hidden = !rows.length;
    $('transfers-empty').hidden = !!rows.length;
  }
  function renderCommitments(list) {
    const rows = list.map((j) => el('tr', { 'data-commitment-id': j.id, 'data-state': j.state, class: 'state-' + j.state },
      el('td', { class: 'num', text: j.id }), el('td', { text: j.caller }), el('td', { text: j.upstream }),
      el('td', { class: 'num', text: num(j.instances) }),
      el('td', { class: 'num', text: j.committed === undefined ? '–' : num(j.committed) }),
      el('td', {}, el('span', { class: 'badge', text: j.state })), el('td', { text: when(j.started) })));
    $('commitments').tBodies[0].replaceChildren(...rows);
    $('commitments').hidden = !rows.length;
    $('commitments-empty').hidden = !!rows.length;
  }

  // ---- the whole page ----
  function render(s) {
    state = s;
    $('version').textContent = s.version || '';
    const seen = new Set();
    const box = $('upstreams');
    for (const u of s.upstreams || []) {
      seen.add(u.ae_title);
      renderUpstream(u);
      box.append(cards.get(u.ae_title).root); // in the server's order
    }
    for (const [ae, c] of cards) if (!seen.has(ae)) { c.root.remove(); cards.delete(ae); }
    renderTransfers(s.transfers || []);
    renderCommitments(s.commitments || []);
    const access = $('access');
    access.dataset.writable = String(!!s.writable);
    access.className = 'access' + (s.writable ? ' ok' : '');
    access.textContent = s.writable ? 'Retry and Discard allowed'
      : !s.token_configured ? 'read-only (no admin token configured)'
        : token() ? 'read-only: the bridge refused this token' : 'read-only: enter the admin token';
    $('phi').textContent = s.phi ? 'log.phi is on: file names and UIDs are shown.'
      : 'No UIDs or patient data shown (log.phi is off).';
    const failed = (s.upstreams || []).reduce((n, u) => n + (u.failed || 0), 0);
    document.title = (failed ? '(' + failed + ' failed) ' : '') + 'dicomweb-bridge console';
    updateButtons();
  }
  function schedule(ms) { clearTimeout(timer); timer = setTimeout(poll, ms); }
  async function poll() {
    if (inflight) { schedule(100); return; }
    inflight = true;
    const conn = $('conn');
    try {
      render(await getJSON('api/state'));
      conn.className = 'conn live';
      conn.textContent = 'live · ' + when(state.now);
      document.body.classList.remove('stale');
    } catch (e) {
      conn.className = 'conn down';
      conn.textContent = 'cannot reach the bridge: ' + e.message;
      document.body.classList.add('stale');
    } finally {
      inflight = false;
      schedule(POLL_MS);
    }
  }

  $('token').value = token();
  $('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = $('token').value.trim();
    if (t) sessionStorage.setItem(TOKEN_KEY, t); else sessionStorage.removeItem(TOKEN_KEY);
    $('message').hidden = true; // a refusal shown was for the token before
    schedule(0);
  });
  $('token-forget').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    $('token').value = '';
    $('message').hidden = true;
    schedule(0);
  });
  poll();
})();
