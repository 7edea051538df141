"""The live lamp page served at ``/`` by the control listener: one self-contained HTML file.

No external assets (works offline). It reads ``/api/v1/status``, ``/members``, ``/channels``,
``/devices`` and ``/mwi`` once, then follows ``/api/v1/events`` (Server-Sent Events) and updates
within the same second. Lamps are coloured by state *and* carry the state's name (colour is never
the only signal); a lamp opens its per-origin states on click. The grid renders only the rows in
view (virtual scrolling), so 10,000 devices do not freeze the tab. A ``?token=`` in the page's
address is passed on to the API when the listener requires one.
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
  :root { --bg:#0f1419; --panel:#182028; --text:#e6e6e6; --muted:#8a96a3; --line:#2a3440; }
  * { box-sizing: border-box; }
  body { margin:0; font:14px/1.4 system-ui, sans-serif; background:var(--bg); color:var(--text); }
  header { display:flex; gap:1.5rem; align-items:baseline; padding:.8rem 1.2rem;
           border-bottom:1px solid var(--line); flex-wrap:wrap; }
  header h1 { font-size:1.2rem; margin:0; }
  .muted { color:var(--muted); }
  main { display:grid; grid-template-columns: 340px 1fr; gap:1rem; padding:1rem 1.2rem; }
  section { background:var(--panel); border:1px solid var(--line); border-radius:6px;
            padding:.6rem .8rem; margin-bottom:1rem; }
  h2 { font-size:.95rem; margin:.2rem 0 .6rem; text-transform:uppercase; letter-spacing:.05em;
       color:var(--muted); }
  table { width:100%; border-collapse:collapse; font-size:.85rem; }
  td, th { text-align:left; padding:.2rem .3rem; border-bottom:1px solid var(--line); }
  .up { color:#4cd964; } .down { color:#ff5b5b; }
  #filter { width:100%; padding:.4rem; background:var(--bg); color:var(--text);
            border:1px solid var(--line); border-radius:4px; margin-bottom:.5rem; }
  #grid { height:60vh; overflow:auto; position:relative; }
  #grid-inner { position:relative; }
  .row { position:absolute; left:0; right:0; display:grid;
         grid-template-columns: repeat(auto-fill, minmax(210px, 1fr)); gap:6px; }
  .lamp { display:flex; gap:.5rem; align-items:center; padding:.3rem .5rem; height:34px;
          border:1px solid var(--line); border-radius:4px; cursor:pointer; overflow:hidden;
          background:var(--bg); }
  .dot { width:14px; height:14px; border-radius:50%; flex:none;
         border:2px solid rgba(255,255,255,.35); }
  .name { flex:1; white-space:nowrap; overflow:hidden; text-overflow:ellipsis; }
  .st { font-size:.72rem; font-weight:600; }
  .NOT_INUSE .dot { background:#2ecc71; } .INUSE .dot { background:#ff4d4d; }
  .BUSY .dot { background:#b30000; } .RINGING .dot { background:#ffb300; }
  .RINGINUSE .dot { background:repeating-linear-gradient(45deg,#ffb300 0 4px,#ff4d4d 4px 8px); }
  .ONHOLD .dot { background:#4da3ff; } .UNAVAILABLE .dot, .INVALID .dot { background:#555; }
  .UNKNOWN .dot { background:transparent; }
  .origins { font-size:.8rem; margin:.4rem 0; }
  #detail { min-height:2rem; }
  .mwi { display:inline-flex; gap:.4rem; align-items:center; margin:.2rem .6rem .2rem 0; }
  .mwi .dot { background:#444; } .mwi.waiting .dot { background:#ff9f1a; }
</style>
</head>
<body>
<header>
  <h1>pbxmesh</h1>
  <span id="node" class="muted">connecting…</span>
  <span id="link"></span>
  <span id="quorum"></span>
  <span>view <b id="view">-</b></span>
  <span>event rate <b id="rate">0</b>/s</span>
  <span id="live" class="muted"></span>
</header>
<main>
  <div>
    <section><h2>Members</h2><table id="members"><tbody></tbody></table></section>
    <section><h2>Channels</h2><table id="channels"><tbody></tbody></table></section>
    <section><h2>Message waiting</h2><div id="mwi"></div></section>
  </div>
  <div>
    <section>
      <h2>Devices <span id="count" class="muted"></span></h2>
      <input id="filter" placeholder="filter devices: glob pattern, e.g. PJSIP/1* or *mystate*"
             aria-label="filter devices">
      <div id="detail" class="origins muted">Click a lamp to see each server's state.</div>
      <div id="grid" role="list"><div id="grid-inner"></div></div>
    </section>
  </div>
</main>
<script>
"use strict";
const token = new URLSearchParams(location.search).get("token");
const api = (p) => "/api/v1" + p + (token ? (p.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : "");
const devices = new Map();   // name -> {state, origins}
const mailboxes = new Map(); // id -> {new, old, origin}
let names = [], members = [], selected = null, hits = 0;
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));

function globToRegExp(g) {
  return new RegExp("^" + g.replace(/[.+^${}()|\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".") + "$");
}
function refilter() {
  const f = $("filter").value.trim();
  const re = f ? (f.includes("*") || f.includes("?") ? globToRegExp(f) : null) : null;
  names = [...devices.keys()].filter((n) => !f || (re ? re.test(n) : n.includes(f))).sort();
  $("count").textContent = `(${names.length} shown of ${devices.size})`;
  render();
}
const ROW_H = 40;
function perRow() {
  const w = $("grid").clientWidth || 800;
  return Math.max(1, Math.floor((w + 6) / 216));
}
function render() {
  const grid = $("grid"), inner = $("grid-inner"), n = perRow();
  const rows = Math.ceil(names.length / n);
  inner.style.height = rows * ROW_H + "px";
  const first = Math.max(0, Math.floor(grid.scrollTop / ROW_H) - 2);
  const last = Math.min(rows, first + Math.ceil(grid.clientHeight / ROW_H) + 4);
  let html = "";
  for (let r = first; r < last; r++) {
    html += `<div class="row" style="top:${r * ROW_H}px">`;
    for (const name of names.slice(r * n, r * n + n)) {
      const d = devices.get(name);
      html += `<div class="lamp ${d.state}" role="listitem" data-name="${esc(name)}" title="${esc(name)}: ${d.state}">` +
              `<span class="dot"></span><span class="name">${esc(name)}</span><span class="st">${d.state}</span></div>`;
    }
    html += "</div>";
  }
  inner.innerHTML = html;
}
function showDetail() {
  if (!selected) return;
  const d = devices.get(selected);
  if (!d) { $("detail").textContent = `${selected}: no server has it any more`; return; }
  const rows = Object.entries(d.origins).map(([eid, st]) => {
    const m = members.find((x) => (x.eids || []).includes(eid));
    return `<tr><td>${esc(m ? m.name : "?")}</td><td>${esc(eid)}</td><td class="${st}"><span class="st">${st}</span></td></tr>`;
  }).join("");
  $("detail").innerHTML = `<b>${esc(selected)}</b> cluster value <b>${d.state}</b>` +
      `<table><tr><th>server</th><th>EID</th><th>its state</th></tr>${rows}</table>`;
}
function renderMembers(list, quorate, view) {
  members = list;
  $("members").querySelector("tbody").innerHTML =
    "<tr><th>node</th><th>id</th><th>address</th><th>EID</th><th>member</th></tr>" +
    list.map((m) => `<tr><td>${esc(m.name)}${m.self ? " (this node)" : ""}</td><td>${esc(m.nodeid || "-")}</td>` +
      `<td>${esc(m.address || "-")}</td><td>${esc(m.eid || "-")}</td>` +
      `<td class="${m.member ? "up" : "down"}">${m.member ? "up" : "down"}</td></tr>`).join("");
  if (quorate !== undefined) $("quorum").innerHTML = quorate ? '<span class="up">quorate</span>' : '<span class="down">NOT quorate</span>';
  if (view !== undefined) $("view").textContent = view;
}
function renderMwi() {
  $("mwi").innerHTML = [...mailboxes.entries()].sort().map(([id, m]) =>
    `<span class="mwi ${m.new > 0 ? "waiting" : ""}" title="last written by ${esc(m.origin)}"><span class="dot"></span>` +
    `${esc(id)}: <b>${m.new}</b> new, ${m.old} old${m.new > 0 ? " (waiting)" : ""}</span>`).join("") ||
    '<span class="muted">no mailbox yet</span>';
}
let pending = false;
function schedule() { if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; refilter(); showDetail(); }); } }
async function load() {
  const [status, full, chans, devs, boxes] = await Promise.all(
    ["/status", "/members?full=1", "/channels", "/devices", "/mwi"].map((p) => fetch(api(p)).then((r) => r.json())));
  $("node").textContent = `${status.name} (${status.eid}) over ${status.transport}`;
  $("link").innerHTML = status.link_up ? '<span class="up">link up</span>' : '<span class="down">link DOWN</span>';
  renderMembers(full.members, full.quorate, full.view);
  $("channels").querySelector("tbody").innerHTML = "<tr><th>channel</th><th>publish</th><th>subscribe</th></tr>" +
    chans.map((c) => `<tr><td>${esc(c.name)}</td><td>${esc(c.publish.join(", "))}</td><td>${esc(c.subscribe.join(", "))}</td></tr>`).join("");
  devices.clear();
  for (const d of devs) devices.set(d.device, {state: d.state, origins: d.origins});
  mailboxes.clear();
  for (const m of boxes) mailboxes.set(m.mailbox, m);
  renderMwi();
  refilter();
}
function follow() {
  const es = new EventSource(api("/events"));
  es.addEventListener("device", (e) => {
    const d = JSON.parse(e.data); hits++;
    if (d.removed) devices.delete(d.device); else devices.set(d.device, {state: d.state, origins: d.origins});
    schedule();
  });
  es.addEventListener("mwi", (e) => { const m = JSON.parse(e.data); hits++; mailboxes.set(m.mailbox, m); renderMwi(); });
  es.addEventListener("members", (e) => { const m = JSON.parse(e.data); renderMembers(m.members, m.quorate, m.view); });
  es.onopen = () => { $("live").textContent = "live"; load(); };
  es.onerror = () => { $("live").textContent = "reconnecting…"; };
}
const samples = [];
setInterval(() => {
  samples.push(hits); hits = 0; if (samples.length > 10) samples.shift();
  $("rate").textContent = (samples.reduce((a, b) => a + b, 0) / samples.length).toFixed(1);
}, 1000);
$("grid").addEventListener("scroll", render);
window.addEventListener("resize", render);
$("filter").addEventListener("input", refilter);
$("grid").addEventListener("click", (e) => {
  const lamp = e.target.closest(".lamp"); if (!lamp) return;
  selected = lamp.dataset.name; showDetail();
});
follow();
</script>
</body>
</html>
"""


def lamp_page() -> str:
    """The page's HTML."""
    return PAGE
