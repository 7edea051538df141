"""The live lamp page served at ``/`` by the control listener: one self-contained HTML file.

No external assets (works offline). It follows ``/api/v1/events`` (Server-Sent Events): a
``snapshot`` event first (status, members, channels, devices, MWI — in the stream, so no change
can fall between a fetch and the subscription), then ``device``/``mwi``/``members`` changes as
they happen and a ``tick`` every second (event rate, links, quorum). A stream silent for 5 s, or
one the browser gave up on (HTTP 401/5xx), is reopened with backoff; while not live the page
says so and dims the lamps. Lamps are coloured by state *and* carry the state's name (colour is
never the only signal); a click or Enter on a lamp shows its per-origin states, read on demand
from ``/devices`` and refreshed each tick. The grid renders only the rows in view (virtual
scrolling, rendering coalesced to one animation frame), so 10,000 devices do not freeze the tab;
arrow keys, Page Up/Down, Home/End move between lamps. The token may be given as ``/#token=``
(kept out of server logs) or ``/?token=``.
"""

from __future__ import annotations

from typing import Final

__all__ = ["PAGE", "lamp_page"]

PAGE: Final = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pbxmesh — lamps</title>
<style>
  :root { --bg:#0f1419; --panel:#182028; --text:#e6e6e6; --muted:#9aa6b2; --line:#2a3440;
          --focus:#7cc4ff; }
  * { box-sizing: border-box; }
  body { margin:0; font:14px/1.4 system-ui, sans-serif; background:var(--bg); color:var(--text); }
  header { display:flex; gap:1.4rem; align-items:baseline; padding:.7rem 1.2rem;
           border-bottom:1px solid var(--line); flex-wrap:wrap; }
  header h1 { font-size:1.2rem; margin:0; }
  .muted { color:var(--muted); }
  main { display:grid; grid-template-columns: minmax(300px, 380px) 1fr; gap:1rem; padding:1rem 1.2rem; }
  @media (max-width: 800px) { main { grid-template-columns: 1fr; } }
  section { background:var(--panel); border:1px solid var(--line); border-radius:6px;
            padding:.6rem .8rem; margin-bottom:1rem; }
  h2 { font-size:.9rem; margin:.2rem 0 .6rem; text-transform:uppercase; letter-spacing:.05em;
       color:var(--muted); }
  table { width:100%; border-collapse:collapse; font-size:.85rem; }
  td, th { text-align:left; padding:.2rem .3rem; border-bottom:1px solid var(--line); vertical-align:top; }
  th { color:var(--muted); font-weight:600; }
  code, .eid { font-family: ui-monospace, monospace; font-size:.8rem; }
  .up { color:#4cd964; font-weight:600; } .down { color:#ff6b6b; font-weight:600; }
  #banner { display:none; padding:.4rem 1.2rem; background:#5a1d1d; color:#fff; }
  body.offline #banner { display:block; }
  body.offline #grid, body.offline #mwi { opacity:.45; }
  #filter { width:100%; padding:.45rem; background:var(--bg); color:var(--text); font:inherit;
            border:1px solid var(--line); border-radius:4px; margin-bottom:.5rem; }
  #filter.bad { border-color:#ff6b6b; }
  #grid { height:62vh; min-height:240px; overflow:auto; position:relative; outline:none; }
  #grid-inner { position:relative; }
  .row { position:absolute; left:0; right:0; display:grid; gap:6px; }
  .lamp { display:flex; gap:.5rem; align-items:center; padding:.3rem .5rem; height:34px;
          border:1px solid var(--line); border-left-width:4px; border-radius:4px; cursor:pointer;
          overflow:hidden; background:var(--bg); color:var(--text); }
  .lamp:hover { background:#1d2833; }
  .lamp:focus-visible, .lamp.sel { outline:2px solid var(--focus); outline-offset:1px; }
  .dot { width:14px; height:14px; border-radius:50%; flex:none; border:2px solid rgba(255,255,255,.4); }
  .name { flex:1; white-space:nowrap; overflow:hidden; text-overflow:ellipsis; }
  .st { font-size:.72rem; font-weight:700; letter-spacing:.02em; white-space:nowrap; }
  .NOT_INUSE { --c:#2ecc71; } .INUSE { --c:#ff4d4d; } .BUSY { --c:#c0392b; }
  .RINGING { --c:#ffb300; } .RINGINUSE { --c:#ff8c1a; } .ONHOLD { --c:#4da3ff; }
  .UNAVAILABLE { --c:#7b8794; } .INVALID { --c:#59636e; } .UNKNOWN { --c:transparent; }
  .lamp { border-left-color:var(--c, var(--line)); }
  .dot { background:var(--c, transparent); }
  .RINGINUSE .dot { background:repeating-linear-gradient(45deg,#ffb300 0 3px,#ff4d4d 3px 6px); }
  .INVALID .dot { background:repeating-linear-gradient(45deg,#59636e 0 2px,transparent 2px 4px); }
  .lamp.UNKNOWN, .lamp.INVALID, .lamp.UNAVAILABLE { border-left-color:#59636e; }
  .lamp.UNKNOWN .st, .lamp.INVALID .st, .lamp.UNAVAILABLE .st { color:var(--muted); }
  @media (prefers-reduced-motion: no-preference) {
    .RINGING .dot, .RINGINUSE .dot { animation: ring 1s steps(2, jump-none) infinite; }
    @keyframes ring { 50% { opacity:.35; } }
  }
  #detail { font-size:.85rem; margin:.2rem 0 .6rem; min-height:1.6rem; }
  #detail table { margin-top:.3rem; }
  .chip { display:inline-flex; gap:.35rem; align-items:center; }
  #mwi { max-height:40vh; overflow:auto; }
  .mwi { display:flex; gap:.5rem; align-items:center; padding:.15rem 0; }
  .mwi .dot { --c:#3a444f; border-radius:3px; }
  .mwi.waiting .dot { --c:#ff9f1a; }
  .mwi .count { font-weight:700; }
  .mwi .box { flex:1; overflow:hidden; text-overflow:ellipsis; white-space:nowrap; }
</style>
</head>
<body>
<header>
  <h1>pbxmesh</h1>
  <span id="node" class="muted">connecting…</span>
  <span id="link"></span>
  <span id="ast"></span>
  <span id="quorum"></span>
  <span>view <b id="view">-</b></span>
  <span title="cluster changes applied by this node">events <b id="rate">-</b>/s <span class="muted">(10 s avg <span id="avg">-</span>/s)</span></span>
  <span id="live" class="down" role="status">connecting…</span>
</header>
<div id="banner" role="alert">Not live: <span id="why">reconnecting…</span> — the lamps below may be out of date.</div>
<main>
  <div>
    <section aria-labelledby="h-members"><h2 id="h-members">Members <span id="mcount" class="muted"></span></h2><table id="members"><tbody></tbody></table></section>
    <section aria-labelledby="h-channels"><h2 id="h-channels">Channels</h2><table id="channels"><tbody></tbody></table></section>
    <section aria-labelledby="h-mwi"><h2 id="h-mwi">Message waiting <span id="mwicount" class="muted"></span></h2><div id="mwi" role="list"></div></section>
  </div>
  <div>
    <section aria-labelledby="h-devices">
      <h2 id="h-devices">Devices <span id="count" class="muted"></span></h2>
      <input id="filter" type="search" autocomplete="off" spellcheck="false"
             placeholder="filter devices: text, or a glob such as PJSIP/1* or Custom:*lamp?"
             aria-label="filter devices (text or glob pattern)">
      <div id="detail" class="muted" aria-live="polite">Click a lamp (or Enter on it) to see each server's state; arrow keys move between lamps.</div>
      <div id="grid" role="grid" aria-label="device lamps"><div id="grid-inner"></div></div>
    </section>
  </div>
</main>
<noscript><p>This page needs JavaScript. The same data: <code>/api/v1/devices</code>, <code>/api/v1/mwi</code>.</p></noscript>
<script>
"use strict";
// The token may come as /#token=… (never sent to the server or its logs) or /?token=….
const token = new URLSearchParams(location.hash.slice(1)).get("token") ||
              new URLSearchParams(location.search).get("token") || "";
const withToken = (p) => token ? p + (p.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : p;
const STATES = new Set(["NOT_INUSE", "INUSE", "BUSY", "INVALID", "UNAVAILABLE", "RINGING", "RINGINUSE", "ONHOLD", "UNKNOWN"]);
const cls = (s) => STATES.has(s) ? s : "UNKNOWN";
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const collator = new Intl.Collator(undefined, {numeric: true});
const ROW_H = 40, GAP = 6, MIN_W = 210, MWI_MAX = 500;

const devices = new Map();   // name -> {state, origins: {eid: state}}
const mailboxes = new Map(); // mailbox -> {new, old, origin, origin_name}
let members = [], all = [], shown = [], match = null;
let selected = null, cursor = null;

// ---- filter: plain text (substring) or a glob with * ? [...] as fnmatch; case-insensitive
function globToRegExp(g) {
  let re = "";
  for (let i = 0; i < g.length; i++) {
    const c = g[i];
    if (c === "*") re += ".*";
    else if (c === "?") re += ".";
    else if (c === "[" && g.indexOf("]", i + 2) > 0) {
      const j = g.indexOf("]", i + 2);
      let body = g.slice(i + 1, j), neg = "";
      if (body[0] === "!") { neg = "^"; body = body.slice(1); }
      re += "[" + neg + body.replace(/[\\\]^]/g, "\\$&") + "]";
      i = j;
    } else re += c.replace(/[.*+?^${}()|[\]\\\/]/g, "\\$&");
  }
  return new RegExp("^" + re + "$", "i");
}
function setFilter() {
  const f = $("filter").value.trim();
  $("filter").classList.remove("bad");
  match = null;
  if (f && /[*?[]/.test(f)) {
    try { const re = globToRegExp(f); match = (n) => re.test(n); }
    catch (e) { $("filter").classList.add("bad"); }
  }
  if (f && !match) { const low = f.toLowerCase(); match = (n) => n.toLowerCase().includes(low); }
  want.names = true; schedule();
}

// ---- rendering, coalesced to one animation frame (paused while the tab is hidden)
const want = {names: false, grid: false, detail: false, mwi: false};
let frame = 0;
function schedule() { if (!frame) frame = requestAnimationFrame(flush); }
function flush() {
  frame = 0;
  if (want.names) {
    all = [...devices.keys()].sort(collator.compare);
    want.names = false; want.grid = true;
    shown = match ? all.filter(match) : all;
    $("count").textContent = `(${shown.length.toLocaleString()} shown of ${devices.size.toLocaleString()})`;
  }
  if (want.grid) { want.grid = false; render(); }
  if (want.detail) { want.detail = false; showDetail(); }
  if (want.mwi) { want.mwi = false; renderMwi(); }
}
function perRow() {
  const w = $("grid").clientWidth || 800;
  return Math.max(1, Math.floor((w + GAP) / (MIN_W + GAP)));
}
function lampHtml(name, tab) {
  const d = devices.get(name), s = cls(d.state), e = esc(name);
  return `<div class="lamp ${s}${name === selected ? " sel" : ""}" role="gridcell" tabindex="${tab ? 0 : -1}" ` +
         `data-name="${e}" data-state="${s}" title="${e}: ${s}" aria-label="${e}: ${s}">` +
         `<span class="dot" aria-hidden="true"></span><span class="name">${e}</span><span class="st">${s}</span></div>`;
}
function render() {
  const grid = $("grid"), inner = $("grid-inner"), n = perRow();
  const rows = Math.ceil(shown.length / n);
  inner.style.height = rows * ROW_H + "px";
  const first = Math.max(0, Math.floor(grid.scrollTop / ROW_H) - 2);
  const last = Math.min(rows, Math.ceil((grid.scrollTop + grid.clientHeight) / ROW_H) + 2);
  const focused = inner.contains(document.activeElement);
  const lo = first * n, hi = Math.min(shown.length, last * n);
  let active = cursor !== null && devices.has(cursor) ? shown.indexOf(cursor, 0) : -1;
  if (active < lo || active >= hi) active = lo;   // Tab always finds one lamp in the grid
  let html = "";
  for (let r = first; r < last; r++) {
    html += `<div class="row" role="row" style="top:${r * ROW_H}px;grid-template-columns:repeat(${n},minmax(0,1fr))">`;
    for (let i = r * n; i < Math.min(shown.length, r * n + n); i++) html += lampHtml(shown[i], i === active);
    html += "</div>";
  }
  inner.innerHTML = html || (devices.size ? '<p class="muted">No device matches the filter.</p>' : '<p class="muted">No device yet.</p>');
  if (focused) { const el = inner.querySelector('.lamp[tabindex="0"]'); if (el) el.focus({preventScroll: true}); }
}
function lampAt(i) {
  if (!shown.length) return;
  i = Math.max(0, Math.min(shown.length - 1, i));
  cursor = shown[i];
  const grid = $("grid"), top = Math.floor(i / perRow()) * ROW_H;
  if (top < grid.scrollTop) grid.scrollTop = top;
  else if (top + ROW_H > grid.scrollTop + grid.clientHeight) grid.scrollTop = top + ROW_H - grid.clientHeight;
  render();
  const el = $("grid-inner").querySelector('.lamp[tabindex="0"]');
  if (el) el.focus({preventScroll: true});
}
function select(name) {
  selected = name; cursor = name; origins = null;
  want.grid = true; want.detail = true; schedule(); refreshOrigins();
}
// The per-origin states are read on demand, fresh from the node: the stream carries a device
// when its cluster value changes, not every time one server's state behind it does.
let origins = null, originsSeq = 0;
const authHeaders = () => token ? {Authorization: "Bearer " + token} : {};
async function refreshOrigins() {
  if (selected === null) return;
  const name = selected, seq = ++originsSeq;
  const pattern = name.replace(/[[*?]/g, "[$&]");   // the name itself, as an fnmatch pattern
  try {
    const r = await fetch("/api/v1/devices?pattern=" + encodeURIComponent(pattern), {headers: authHeaders(), cache: "no-store"});
    if (!r.ok) return;
    const row = (await r.json()).find((x) => x.device === name);
    if (seq !== originsSeq || name !== selected) return;   // a newer request or selection won
    origins = {name, row: row || null};
    want.detail = true; schedule();
  } catch (e) { /* the stream reports a lost node; the next tick retries */ }
}
function memberOf(eid) { return members.find((m) => (m.eids || []).includes(eid)); }
function showDetail() {
  const box = $("detail");
  if (selected === null) return;
  box.classList.remove("muted");
  const fresh = origins !== null && origins.name === selected ? origins.row : undefined;
  const d = fresh === undefined ? devices.get(selected) : fresh;
  if (!d) { box.innerHTML = `<b>${esc(selected)}</b>: removed — no server asserts it any more.`; return; }
  const rows = Object.entries(d.origins).map(([eid, st]) => [memberOf(eid), eid, st])
    .sort((x, y) => collator.compare(x[0] ? x[0].name : "~", y[0] ? y[0].name : "~")).map(([m, eid, st]) => {
    const s = cls(st);
    return `<tr class="origin"><td>${esc(m ? m.name : "(left)")}</td><td class="eid">${esc(eid)}</td>` +
           `<td><span class="chip ${s}"><span class="dot" aria-hidden="true"></span><span class="st">${s}</span></span></td></tr>`;
  }).join("");
  const s = cls(d.state);
  box.innerHTML = `<b>${esc(selected)}</b> — cluster value <span class="chip ${s}"><span class="dot" aria-hidden="true"></span><b class="st">${s}</b></span>` +
    `<table><tr><th>server</th><th>EID</th><th>its state</th></tr>${rows}</table>`;
}
function renderMembers(m) {
  members = m.members || [];
  const up = members.filter((x) => x.member).length;
  $("mcount").textContent = `(${up} up of ${members.length})`;
  $("members").querySelector("tbody").innerHTML =
    "<tr><th>node</th><th>state</th><th>EID</th><th>address</th></tr>" +
    members.map((x) => `<tr><td>${esc(x.name || x.member_id)}${x.self ? ' <span class="muted">(this node)</span>' : ""}</td>` +
      `<td class="${x.member ? "up" : "down"}">${x.member ? "up" : "down"}</td>` +
      `<td class="eid">${esc(x.eid || "-")}</td><td><code>${esc(x.address || x.host || "-")}</code>${x.nodeid ? ` <span class="muted">${esc(x.nodeid)}</span>` : ""}</td></tr>`).join("");
  setQuorum(m.quorate, m.view);
  if (selected !== null) { want.detail = true; schedule(); }
}
function setQuorum(quorate, view) {
  if (quorate !== undefined) $("quorum").innerHTML = quorate ? '<span class="up">quorate</span>' : '<span class="down">NOT quorate</span>';
  if (view !== undefined) $("view").textContent = view;
}
function setLinks(t) {
  $("link").innerHTML = t.link_up ? '<span class="up">cluster link up</span>' : '<span class="down">cluster link DOWN</span>';
  const a = t.asterisk;
  $("ast").innerHTML = a == null ? '<span class="muted">no Asterisk link</span>' :
    (a.connected ? '<span class="up">Asterisk up</span>' : '<span class="down">Asterisk DOWN</span>');
}
function renderMwi() {
  const list = [...mailboxes.values()].sort((a, b) => (b.new > 0) - (a.new > 0) || collator.compare(a.mailbox, b.mailbox));
  const waiting = list.filter((m) => m.new > 0).length;
  $("mwicount").textContent = `(${waiting} waiting of ${list.length})`;
  $("mwi").innerHTML = list.slice(0, MWI_MAX).map((m) => {
    const w = m.new > 0;
    return `<div class="mwi${w ? " waiting" : ""}" role="listitem" data-mailbox="${esc(m.mailbox)}" title="last written by ${esc(m.origin_name || m.origin)}">` +
      `<span class="dot" aria-hidden="true"></span><span class="box">${esc(m.mailbox)}</span>` +
      `<span><span class="count">${m.new}</span> new, ${m.old} old${w ? " — <b>waiting</b>" : ""}</span></div>`;
  }).join("") + (list.length > MWI_MAX ? `<div class="muted">… and ${list.length - MWI_MAX} more (waiting ones first)</div>` : "") ||
    '<span class="muted">no mailbox yet</span>';
}

// ---- the stream: a snapshot, then changes; a tick every second proves it is alive
let es = null, lastMsg = 0, backoff = 1000, retry = 0;
function setLive(ok, why) {
  document.body.classList.toggle("offline", !ok);
  $("live").textContent = ok ? "live" : "not live";
  $("live").className = ok ? "up" : "down";
  if (why) $("why").textContent = why;
}
function onSnapshot(s) {
  const st = s.status;
  $("node").textContent = `${st.name} (${st.eid}) over ${st.transport}`;
  setLinks(st);
  $("channels").querySelector("tbody").innerHTML = "<tr><th>channel</th><th>publish</th><th>subscribe</th></tr>" +
    s.channels.map((c) => `<tr><td>${esc(c.name)}</td><td>${esc(c.publish.join(", ") || "-")}</td><td>${esc(c.subscribe.join(", ") || "-")}</td></tr>`).join("");
  devices.clear();
  for (const d of s.devices) devices.set(d.device, {state: d.state, origins: d.origins});
  mailboxes.clear();
  for (const m of s.mwi) mailboxes.set(m.mailbox, m);
  renderMembers(s);
  want.names = want.detail = want.mwi = true; schedule();
}
function onDevice(d) {
  const known = devices.has(d.device);
  if (d.removed) { if (known) { devices.delete(d.device); want.names = true; } }
  else { devices.set(d.device, {state: d.state, origins: d.origins}); if (known) want.grid = true; else want.names = true; }
  if (d.device === selected) { origins = null; want.detail = true; refreshOrigins(); }
  schedule();
}
function connect() {
  clearTimeout(retry);
  if (es) es.close();
  es = new EventSource(withToken("/api/v1/events"));
  lastMsg = Date.now();
  const on = (kind, fn) => es.addEventListener(kind, (e) => { lastMsg = Date.now(); fn(JSON.parse(e.data)); });
  on("snapshot", (s) => { backoff = 1000; setLive(true); onSnapshot(s); });
  on("device", onDevice);
  on("mwi", (m) => { if (m.removed) mailboxes.delete(m.mailbox); else mailboxes.set(m.mailbox, m); want.mwi = true; schedule(); });
  on("members", renderMembers);
  on("tick", (t) => {
    $("rate").textContent = t.last_second; $("avg").textContent = t.rate.toFixed(1);
    setLinks(t); setQuorum(t.quorate, t.view); refreshOrigins();
  });
  es.onerror = () => {
    setLive(false, "connection lost, reconnecting…");
    // After an HTTP error (401, 5xx) EventSource gives up for good: retry ourselves.
    if (es.readyState === EventSource.CLOSED) retryLater();
  };
}
function retryLater() {
  if (es) { es.close(); es = null; }
  explain();
  retry = setTimeout(connect, backoff);
  backoff = Math.min(backoff * 2, 10000);
}
async function explain() {
  try {
    const r = await fetch("/api/v1/status", {headers: authHeaders(), cache: "no-store"});
    if (r.status === 401) setLive(false, token ? "the node refused the token; open the page as /#token=<the right token>" : "this node needs a token; open the page as /#token=<token>");
    else if (!r.ok) setLive(false, `the node answered ${r.status}; retrying…`);
  } catch (e) { setLive(false, "the node does not answer; retrying…"); }
}
setInterval(() => {   // no snapshot, change or tick for 5 s: the stream is dead even if open
  if (es && Date.now() - lastMsg > 5000) { setLive(false, "no data for 5 s, reconnecting…"); retryLater(); }
}, 1000);

// ---- interaction
const grid = $("grid");
grid.addEventListener("scroll", () => { want.grid = true; schedule(); }, {passive: true});
window.addEventListener("resize", () => { want.grid = true; schedule(); });
$("filter").addEventListener("input", setFilter);
grid.addEventListener("click", (e) => { const l = e.target.closest(".lamp"); if (l) select(l.dataset.name); });
grid.addEventListener("keydown", (e) => {
  const l = e.target.closest(".lamp"); if (!l) return;
  const i = shown.indexOf(l.dataset.name), n = perRow(), page = n * Math.max(1, Math.floor(grid.clientHeight / ROW_H) - 1);
  const to = {ArrowRight: i + 1, ArrowLeft: i - 1, ArrowDown: i + n, ArrowUp: i - n, PageDown: i + page, PageUp: i - page,
              Home: 0, End: shown.length - 1}[e.key];
  if (e.key === "Enter" || e.key === " ") { e.preventDefault(); select(l.dataset.name); }
  else if (to !== undefined) { e.preventDefault(); lampAt(to); }
});
connect();
</script>
</body>
</html>
"""


def lamp_page() -> str:
    """The page's HTML."""
    return PAGE
