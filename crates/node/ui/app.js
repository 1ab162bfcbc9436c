// peernet's page. Everything it shows arrives on one Server-Sent Events
// stream (/v1/events), each event replacing its part of the page (chat lines
// are appended); actions are small JSON requests to the same origin, which
// the session cookie authenticates. Every piece of text from the network is
// put in the page as text (textContent, createElement), never as HTML: a
// nickname or a file name must not be able to run code here.
'use strict';

const $ = (id) => document.getElementById(id);

// Drawing colours; app.css uses the same ones for the legend.
const COLOR = {
  root: '#d97706', self: '#2563eb', peer: '#64748b', text: '#1e293b',
  direct: '#334155', relayed: '#7c3aed', unknown: '#cbd5e1',
};

const state = {
  selfId: null,     // this peer's full id, from the status event
  status: null,     // the last status event
  graph: null,      // the last topo event
  members: [],
};

// ---------------------------------------------------------------- helpers

// An element with attributes and children; strings become text nodes.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') e.className = v;
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) {
    if (c !== null && c !== undefined && c !== false) e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

// Ids are shown by their first 10 hex characters, as the CLI and the
// server's short ids do, so a copied nickname cannot pass for someone else.
const short = (id) => String(id || '').slice(0, 10);

function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  n = Number(n) || 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

function duration(secs) {
  secs = Math.round(secs);
  if (secs < 60) return `${secs} s`;
  if (secs < 3600) return `${Math.floor(secs / 60)} min ${secs % 60} s`;
  return `${Math.floor(secs / 3600)} h ${Math.floor(secs / 60) % 60} min`;
}

const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });
// A peer's clock can say anything; an impossible date must not stop the log.
const isoTime = (ms) => { const d = new Date(ms); return Number.isNaN(d.getTime()) ? null : d.toISOString(); };
const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;
const pathKind = (path) => (path && path.via) || 'unknown';
const pathText = (path) => (path ? `${path.via}, ${path.rtt_ms} ms` : 'path unknown');

// One request to the daemon. Its errors are {"error": "one sentence"}; that
// sentence is what the user sees.
// The key the login page stored: the session cookie alone opens no API.
const pageKey = localStorage.getItem('peernet-key') || '';

async function api(method, url, body) {
  const init = { method, credentials: 'same-origin', headers: { 'x-peernet-key': pageKey } };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(url, init);
  } catch {
    throw new Error('peernet is not answering; is it still running?');
  }
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON: use the status below */ }
  if (!res.ok) {
    const err = new Error((data && data.error) || `the request failed (HTTP ${res.status})`);
    err.status = res.status;
    throw err;
  }
  return data;
}

// Shows an error in the panel where it happened (null clears it).
function showError(panel, err) {
  const box = $(`${panel}-error`);
  box.textContent = err ? err.message || String(err) : '';
  box.hidden = !err;
}

// Runs a form's action with its button disabled, so a double click does not
// send twice; a failure lands in the panel's error line.
function onSubmit(formId, panel, action) {
  const form = $(formId);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const button = form.querySelector('button');
    button.disabled = true;
    showError(panel, null);
    try {
      await action();
    } catch (err) {
      showError(panel, err);
    } finally {
      button.disabled = false;
    }
  });
}

// ---------------------------------------------------------------- tabs

// On a narrow screen one panel shows at a time (.active). On a wide one the
// map stays on the left and the last non-map tab chose the right (.side).
let side = 'chat';
function select(name) {
  if (name !== 'map') side = name;
  for (const b of document.querySelectorAll('.tabs button')) {
    b.setAttribute('aria-selected', String(b.dataset.panel === name));
  }
  for (const p of document.querySelectorAll('.panel')) {
    const n = p.id.replace('panel-', '');
    p.classList.toggle('active', n === name);
    p.classList.toggle('side', n === side);
  }
  // A hidden log cannot keep itself scrolled down; do it when it shows.
  const log = $('chat-log');
  log.scrollTop = log.scrollHeight;
}
for (const b of document.querySelectorAll('.tabs button')) {
  b.addEventListener('click', () => select(b.dataset.panel));
}
select(matchMedia('(min-width: 900px)').matches ? 'chat' : 'map');

// ---------------------------------------------------------------- map

const nodeLabel = (n) => `${n.nickname} (${n.short_id})`;
let graph = null;
let shape = '';       // node ids and links of what is drawn, to skip no-op updates
let needFit = true;   // zoom to fit once the layout settles after a change

function drawNode(n, ctx, scale) {
  const r = 6;
  const self = n.id === state.selfId;
  ctx.fillStyle = n.root ? COLOR.root : self ? COLOR.self : COLOR.peer;
  ctx.beginPath();
  if (n.root) ctx.rect(n.x - r, n.y - r, 2 * r, 2 * r);
  else ctx.arc(n.x, n.y, r, 0, 2 * Math.PI);
  ctx.fill();
  if (self) {
    ctx.strokeStyle = COLOR.self;
    ctx.lineWidth = 2 / scale;
    ctx.beginPath();
    ctx.arc(n.x, n.y, r + 5, 0, 2 * Math.PI);
    ctx.stroke();
  }
  // Labels keep one size on screen whatever the zoom.
  ctx.font = `${12 / scale}px system-ui, sans-serif`;
  ctx.textAlign = 'center';
  ctx.textBaseline = 'top';
  ctx.fillStyle = COLOR.text;
  ctx.fillText(nodeLabel(n), n.x, n.y + r + 6);
}

// The page still lists the map if the drawing library did not load.
if (typeof ForceGraph === 'function') {
  const box = $('graph');
  graph = ForceGraph()(box)
    .nodeId('id')
    .nodeRelSize(6)
    .nodeCanvasObject(drawNode)
    // force-graph puts a string label in the page as HTML; an element is safe.
    .nodeLabel((n) => el('span', null, nodeLabel(n), n.root ? ' · root' : ''))
    .linkColor((l) => COLOR[pathKind(l.path)])
    .linkLineDash((l) => (pathKind(l.path) === 'relayed' ? [5, 4] : null))
    .linkWidth(1.5)
    .linkLabel((l) => el('span', null, pathText(l.path)))
    .cooldownTime(4000)
    .onEngineStop(() => {
      if (needFit) { needFit = false; graph.zoomToFit(400, 60); }
    });
  // Room for the labels under the nodes: longer links, stronger repulsion.
  graph.d3Force('link').distance(70);
  graph.d3Force('charge').strength(-160);
  // Follow the box's size (window resizes, tab switches); a hidden box
  // measures 0 and keeps its last size.
  new ResizeObserver(() => {
    if (box.clientWidth > 0 && box.clientHeight > 0) {
      graph.width(box.clientWidth).height(box.clientHeight);
      graph.zoomToFit(0, 60);
    }
  }).observe(box);
}

function onTopo(g) {
  state.graph = g;
  const nodes = g.nodes || [];
  const ids = new Set(nodes.map((n) => n.id));
  // Older daemons sent only `edges`; links carry the path as well.
  const links = (g.links && g.links.length ? g.links : (g.edges || []).map(([a, b]) => ({ a, b, path: null })))
    .filter((l) => ids.has(l.a) && ids.has(l.b));
  renderMapLists(nodes, links);
  renderNeighbours();
  if (!graph) return;

  // Keep each node's object (and so its position) across updates, so a new
  // map moves the drawing a little instead of laying it out afresh.
  const old = new Map(graph.graphData().nodes.map((n) => [n.id, n]));
  const drawnNodes = nodes.map((n) => Object.assign(old.get(n.id) || {}, n));
  const drawnLinks = links.map((l) => ({ source: l.a, target: l.b, path: l.path || null }));
  const next = JSON.stringify([[...ids].sort(), links.map((l) => [l.a, l.b, pathKind(l.path)])]);
  if (next === shape) {
    // Same peers and links: refresh the paths' round-trip times and redraw.
    graph.graphData().links.forEach((l, i) => { l.path = drawnLinks[i].path; });
    graph.nodeCanvasObject(drawNode);
    return;
  }
  if (nodes.length !== old.size || nodes.some((n) => !old.has(n.id))) needFit = true;
  shape = next;
  graph.graphData({ nodes: drawnNodes, links: drawnLinks });
}

function renderMapLists(nodes, links) {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const name = (id) => (byId.has(id) ? nodeLabel(byId.get(id)) : short(id));
  $('map-nodes').replaceChildren(...nodes.map((n) => el('li', {
    'data-node-id': n.id, 'data-root': String(!!n.root), 'data-self': String(n.id === state.selfId),
  }, nodeLabel(n))));
  $('map-links').replaceChildren(...links.map((l) => el('li', {
    'data-a': l.a, 'data-b': l.b, 'data-path': pathKind(l.path),
  }, `${name(l.a)} — ${name(l.b)}: ${pathText(l.path)}`)));
  $('map-count').textContent = `${plural(nodes.length, 'peer')}, ${plural(links.length, 'link')}`;
}

// ---------------------------------------------------------------- chat

// Chat lines the log keeps (older ones scroll away).
const MAX_LOG = 2000;
const seenMessages = new Set();

function onChat(messages) {
  const log = $('chat-log');
  // Follow new lines unless the reader scrolled up to read older ones.
  let follow = log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  for (const m of messages) {
    // A reconnect resends the recent history: each index is shown once.
    if (seenMessages.has(m.index)) continue;
    seenMessages.add(m.index);
    // Indexes only grow: forget the oldest beyond what the log can hold.
    if (seenMessages.size > MAX_LOG * 2) seenMessages.delete(seenMessages.values().next().value);
    const mine = m.author === state.selfId;
    if (mine) follow = true;
    const li = el('li', { class: mine ? 'msg mine' : 'msg', 'data-index': m.index, 'data-author': m.author },
      el('time', { datetime: isoTime(m.sent_at_ms), title: `received ${clock(m.received_at_ms)}` }, clock(m.sent_at_ms)),
      ' ', el('span', { class: 'who' }, `${m.nickname} (${short(m.author)})`), ': ',
      el('span', { class: 'text' }, m.text));
    // Lines come in order, except ones a reconnect fills in: find the place.
    let before = log.lastElementChild;
    while (before && Number(before.dataset.index) > m.index) before = before.previousElementSibling;
    log.insertBefore(li, before ? before.nextSibling : log.firstChild);
  }
  // Bound the page's memory in a long session.
  while (log.children.length > MAX_LOG) log.firstElementChild.remove();
  if (follow) log.scrollTop = log.scrollHeight;
}

function onMembers(members) {
  state.members = members;
  const sorted = [...members].sort((a, b) => (b.online - a.online) || a.nickname.localeCompare(b.nickname));
  $('members').replaceChildren(...sorted.map((m) => el('li', {
    'data-id': m.id, 'data-online': String(!!m.online), title: m.online ? null : `last seen ${clock(m.last_seen_ms)}`,
  }, `${m.nickname} (${short(m.id)}) `,
  el('span', { class: 'muted' }, m.online ? 'online' : m.left ? 'offline (left)' : 'offline (vanished)'))));
  renderNeighbours();
}

onSubmit('chat-form', 'chat', async () => {
  const input = $('chat-input');
  if (!input.value.trim()) return;
  await api('POST', '/v1/say', { text: input.value });
  input.value = '';
  input.focus();
});

onSubmit('nick-form', 'chat', async () => {
  const input = $('nick-input');
  if (!input.value.trim()) return;
  await api('POST', '/v1/nick', { nickname: input.value.trim() });
  input.value = '';
});

// ---------------------------------------------------------------- files

// One row of a file list. The spaces between the parts keep its text
// readable when copied or read by a screen reader.
function fileRow(attrs, name, kind, details, button) {
  const parts = details.map((d) => (d instanceof Node ? d : el('span', { class: 'detail' }, d)));
  return el('li', attrs,
    el('span', { class: 'name' }, name, kind === 'folder' ? ' (folder)' : ''),
    ...parts.flatMap((p) => [' ', p]), ' ', button || null);
}

function providerNames(hit) {
  return (hit.providers || []).map((p) => {
    const id = p.peer && p.peer.addr ? p.peer.addr.id : '';
    return `${p.peer ? p.peer.nickname : '?'} (${short(id)})`;
  }).join(', ');
}

let searchSeq = 0; // only the latest search may fill the list
onSubmit('search-form', 'files', async () => {
  const q = $('search-input').value.trim();
  if (!q) return;
  const seq = ++searchSeq;
  const status = $('search-status');
  status.textContent = 'searching…';
  $('search-results').replaceChildren();
  try {
    const reply = await api('GET', `/v1/search?q=${encodeURIComponent(q)}&limit=50`);
    if (seq !== searchSeq) return;
    const hits = (reply && reply.hits) || [];
    status.textContent = hits.length ? `${plural(hits.length, 'file')} found` : `nothing matches “${q}”`;
    $('search-results').replaceChildren(...hits.map((h) => {
      const get = el('button', { type: 'button', class: 'get' }, 'Get');
      get.addEventListener('click', () => startDownload(h.hash, get));
      const n = (h.providers || []).length;
      return fileRow({ 'data-hash': h.hash }, h.name, h.kind,
        [bytes(h.size), plural(n, 'provider'), el('span', { class: 'detail full' }, providerNames(h))], get);
    }));
  } catch (err) {
    if (seq === searchSeq) status.textContent = '';
    throw err;
  }
});

async function startDownload(hash, button) {
  showError('files', null);
  button.disabled = true;
  button.textContent = 'Starting…';
  try {
    await api('POST', '/v1/downloads', { target: hash });
    button.textContent = 'Started';
  } catch (err) {
    button.disabled = false;
    button.textContent = 'Get';
    showError('files', err);
  }
}

function onDownloads(list) {
  $('downloads-empty').hidden = list.length > 0;
  $('downloads').replaceChildren(...list.map((d) => {
    const pct = d.size ? Math.floor((100 * d.done) / d.size) : d.state === 'saved' ? 100 : 0;
    // Without a size (still resolving) the bar is indeterminate.
    const bar = d.size ? el('progress', { max: d.size, value: d.done }) : el('progress', d.state === 'saved' ? { max: 1, value: 1 } : null);
    const details = d.size || d.state === 'saved' ? [`${pct}%`, `${bytes(d.done)} of ${bytes(d.size)}`] : [];
    if (d.state === 'running') {
      details.push(`${bytes(d.rate_bps)}/s`);
      if (d.eta_secs !== null && d.eta_secs !== undefined) details.push(`${duration(d.eta_secs)} left`);
    }
    if (d.sources && d.sources.length) details.push(`from ${d.sources.join(', ')}`);
    const stateText = {
      resolving: 'finding providers…',
      running: 'downloading',
      saved: `saved to ${d.path || d.name}`,
      failed: `failed: ${d.error || 'unknown error'}`,
    }[d.state] || d.state;
    details.push(el('span', { class: 'detail full state' }, stateText));
    return fileRow({ 'data-id': d.id, 'data-state': d.state }, d.name || d.hash || d.target, null, [bar, ...details]);
  }));
}

function onShares(shares) {
  $('shares').replaceChildren(...shares.map((s) => {
    const unshare = el('button', { type: 'button', class: 'unshare' }, 'Unshare');
    unshare.addEventListener('click', async () => {
      showError('files', null);
      unshare.disabled = true;
      try {
        await api('POST', '/v1/unshare', { target: s.hash });
        $('share-note').textContent = `stopped sharing ${s.name}`;
      } catch (err) {
        unshare.disabled = false;
        showError('files', err);
      }
    });
    return fileRow({ 'data-hash': s.hash }, s.name, s.kind, [bytes(s.size), el('span', { class: 'detail full' }, s.path)], unshare);
  }));
}

onSubmit('share-form', 'files', async () => {
  const input = $('share-path');
  if (!input.value.trim()) return;
  const reply = await api('POST', '/v1/share', { path: input.value.trim() });
  input.value = '';
  const share = (reply && reply.share) || {};
  $('share-note').textContent = `shared ${share.name} (${bytes(share.size)})${reply && reply.warning ? `; ${reply.warning}` : ''}`;
});

// ---------------------------------------------------------------- status

// A neighbour's short id with its nickname, when the map or the room knows it.
function peerName(shortId) {
  const n = state.graph && (state.graph.nodes || []).find((x) => x.short_id === shortId);
  if (n) return nodeLabel(n);
  const m = state.members.find((x) => String(x.id).startsWith(shortId));
  return m ? `${m.nickname} (${shortId})` : shortId;
}

// The neighbours of the last status, named from the map or the room (which
// may arrive after the status).
function renderNeighbours() {
  const s = state.status;
  if (!s) return;
  const links = s.links && s.links.length ? s.links : (s.neighbors || []).map((id) => ({ id, path: null }));
  $('status-links').replaceChildren(...(links.length
    ? links.map((l) => el('li', null, `${peerName(l.id)}: ${l.path ? pathText(l.path) : 'no connection open'}`))
    : [el('li', { class: 'muted' }, 'none yet')]));
}

function indexText(s) {
  if (s.hosts_index) return 'hosted by this peer';
  const i = s.index || {};
  const path = s.index_path ? ` (${pathText(s.index_path)})` : '';
  switch (i.state) {
    case 'joined': return `joined${path}; heartbeat every ${duration(i.heartbeat_ms / 1000)}, lease ${duration(i.lease_ttl_ms / 1000)}`;
    case 'connecting': return `connecting…${path}`;
    case 'unreachable': return `unreachable: ${i.error}`;
    case 'refused': return `refused: ${i.error}`;
    case 'none': return 'none (a LAN network has no index)';
    default: return String(i.state || 'unknown');
  }
}

// The DHT layer (`up --dht`) as `peernet status` words it.
function dhtText(s) {
  const d = s.dht;
  if (!d) return 'off (start the peer with --dht to find members and files when the index is gone)';
  const error = d.error ? `; ${d.error}` : '';
  if (!d.nodes) return `alone on udp ${d.addr || '-'} so far: waiting to meet another member’s DHT node${error}`;
  return `up on udp ${d.addr}: ${plural(d.nodes, 'node')} known, ${plural(d.announced, 'key')} announced, ${plural(d.found, 'peer')} found through it${error}`;
}

function onStatus(s) {
  const selfChanged = s.id !== state.selfId;
  state.selfId = s.id;
  state.status = s;
  $('me').textContent = `${s.nickname} (${short(s.id)})`;
  $('status-nick').textContent = s.nickname;
  $('status-id').textContent = s.id;
  let role = s.hosts_index ? 'root: this peer hosts the network’s index' : s.lan ? `peer of the LAN network ‘${s.lan}’ (no index)` : 'peer';
  if (s.relay_server) role += '; runs the network’s relay';
  $('status-role').textContent = role;
  $('status-warning').textContent = s.warning || '';
  $('status-warning').hidden = !s.warning;
  $('ticket').textContent = s.ticket || (s.lan ? `none: others on this LAN join with peernet up --lan --network ${s.lan}` : 'none');
  $('copy-ticket').disabled = !s.ticket;
  $('status-index').textContent = indexText(s);
  $('status-dht').textContent = dhtText(s);

  renderNeighbours();

  const relays = (s.relays || []).map((r) => el('li', null, `${r.url}: ${r.connected ? 'connected' : `not connected${r.error ? ` (${r.error})` : ''}`}`));
  if (s.relay_server) {
    const r = s.relay_server;
    relays.push(el('li', null, `runs ${r.url}${r.quic_port ? ` (QUIC port ${r.quic_port})` : ''}: ${r.admitted} admitted, ${r.refused} refused`));
  }
  $('status-relays').replaceChildren(...(relays.length ? relays : [el('li', { class: 'muted' }, 'none')]));
  $('status-addrs').textContent = (s.addrs || []).join(', ') || 'none';
  $('status-dirs').textContent = `data ${s.data_dir}; downloads ${s.downloads}`;

  const counters = [
    ['files shared', s.shares],
    ['flood queries handled', s.flood_handled],
    ['flood duplicates dropped', s.flood_duplicates],
    ['flood queries over budget', s.flood_over_budget],
    ['connections refused (address over budget)', s.connections_refused],
    ['outsiders refused', s.refused_outsiders],
    ['membership proofs refused', s.refused_proofs],
    ['admissions', s.admissions],
    ['keys admitted now', s.admitted_keys],
    ['node tasks', s.node_tasks],
    ['runtime tasks', s.runtime_tasks],
    ...Object.entries(s.dropped_events || {}).map(([why, n]) => [`events dropped: ${why}`, n]),
  ].filter(([, v]) => v !== undefined && v !== null);
  $('status-counters').replaceChildren(...counters.flatMap(([k, v]) => [el('dt', null, k), el('dd', null, v)]));

  // Who "you" is decides how the map and the chat mark this peer.
  if (selfChanged) {
    for (const li of document.querySelectorAll('#chat-log .msg')) li.classList.toggle('mine', li.dataset.author === s.id);
    if (state.graph) onTopo(state.graph);
  }
}

// Clipboard access needs a secure context (127.0.0.1 is one); elsewhere the
// old copy command on a hidden textarea still works in most browsers.
async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try { await navigator.clipboard.writeText(text); return true; } catch { /* fall back */ }
  }
  const area = el('textarea', { readonly: true, class: 'offscreen' });
  area.value = text;
  document.body.append(area);
  area.select();
  let ok = false;
  try { ok = document.execCommand('copy'); } catch { ok = false; }
  area.remove();
  return ok;
}

$('copy-ticket').addEventListener('click', async () => {
  const ok = await copyText($('ticket').textContent);
  $('copy-note').textContent = ok ? 'copied' : 'could not copy: select the ticket and copy it by hand';
  setTimeout(() => { $('copy-note').textContent = ''; }, 3000);
});

// ---------------------------------------------------------------- events

const handlers = { status: onStatus, topo: onTopo, members: onMembers, chat: onChat, downloads: onDownloads, shares: onShares };
let source = null;

function setConn(text, kind) {
  const conn = $('conn');
  conn.textContent = text;
  conn.dataset.state = kind;
}

function signedOut(sentence) {
  if (source) source.close();
  setConn('signed out', 'closed');
  const banner = $('banner');
  const end = /[.!?]$/.test(sentence) ? '' : '.';
  banner.textContent = `${sentence}${end} Run peernet ui again for a new link.`;
  banner.hidden = false;
}

function connect() {
  // EventSource cannot send headers: the key goes in the query.
  source = new EventSource(`/v1/events?key=${encodeURIComponent(pageKey)}`);
  source.onopen = () => setConn('live', 'live');
  source.onerror = () => {
    setConn('reconnecting…', 'reconnecting');
    // EventSource retries by itself after a dropped stream, but gives up
    // after an HTTP error (an ended session, a restart): ask why, then
    // either say so or start over.
    if (source.readyState === EventSource.CLOSED) setTimeout(recover, 2000);
  };
  for (const [name, handle] of Object.entries(handlers)) {
    source.addEventListener(name, (event) => {
      let data;
      try { data = JSON.parse(event.data); } catch { return; }
      try { handle(data); } catch (err) { console.error(`peernet: cannot show the ${name} event`, err); }
    });
  }
}

async function recover() {
  try {
    await api('GET', '/v1/status');
  } catch (err) {
    if (err.status === 401 || err.status === 403) { signedOut(err.message); return; }
  }
  connect();
}

$('logout').addEventListener('click', async () => {
  try {
    await api('POST', '/v1/logout');
    signedOut('You signed out.');
  } catch (err) {
    showError('status', err);
    select('status');
  }
});

connect();
