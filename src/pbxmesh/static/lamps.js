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
const want = {names: false, grid: false, detail: false, mwi: false, presence: false};
const presence = new Map();  // presentity -> {state, subtype, message, origin, origin_name}
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
  if (want.presence) { want.presence = false; renderPresence(); }
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

function renderPresence() {
  const list = [...presence.values()].sort((a, b) => collator.compare(a.presentity, b.presentity));
  const set = list.filter((p) => p.state !== "not_set" && p.state !== "available").length;
  $("prescount").textContent = `(${set} not available of ${list.length})`;
  $("presence").innerHTML = list.slice(0, MWI_MAX).map((p) => {
    const st = esc(p.state), text = [p.subtype, p.message].filter((t) => t).join(" — ");
    return `<div class="pres ${st}" role="listitem" data-presentity="${esc(p.presentity)}" title="last written by ${esc(p.origin_name || p.origin)}">` +
      `<span class="dot" aria-hidden="true"></span><span class="who">${esc(p.presentity.replace(/^CustomPresence:/, ""))}</span>` +
      `<b class="state">${st}</b><span class="msg">${esc(text)}</span></div>`;
  }).join("") + (list.length > MWI_MAX ? `<div class="muted">… and ${list.length - MWI_MAX} more</div>` : "") ||
    '<span class="muted">no presence yet</span>';
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
  presence.clear();
  for (const p of s.presence || []) presence.set(p.presentity, p);
  renderMembers(s);
  want.names = want.detail = want.mwi = want.presence = true; schedule();
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
  on("presence", (p) => { if (p.removed) presence.delete(p.presentity); else presence.set(p.presentity, p); want.presence = true; schedule(); });
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
