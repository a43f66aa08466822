// The operator page: no framework, no build step. Live state arrives on one Server-Sent Events stream
// (/api/events, at most 10 ticks a second, counters exact in every tick); the live view is fetched at the
// configured preview rate; thumbnails are fetched by URL at most once a second, never while earlier ones
// are still loading (images are dropped before counters). All text goes in through textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const MAX_ROWS = 20;
const THUMB_MIN_MS = 1000;
let csrf = null;
let previewFps = 2;
const pending = { tick: null, rows: [], skipped: 0 };
let renderQueued = false;

async function getJSON(url) {
  const r = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText}`);
  return body;
}

function text(el, value) { el.textContent = value == null ? "–" : String(value); }
function cell(tr, value, cls) { const td = tr.insertCell(); text(td, value); if (cls) td.className = cls; return td; }
function fmtMs(v) { return v == null ? "–" : `${Number(v).toFixed(1)} ms`; }
function fmtTime(t, withDate) {
  if (t == null) return "–";
  const d = new Date(t * 1000);
  const hms = d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
  return withDate ? `${d.toLocaleDateString()} ${hms}` : hms;
}
function fmtBytes(n) { return n == null ? "?" : `${(n / 1048576).toFixed(1)} MiB`; }
function imageUrl(seq, roi, kind) {
  return `/api/image/${seq}/${encodeURIComponent(roi)}/${encodeURIComponent(kind)}`;
}

// --- counters, health ---------------------------------------------------------------------------
function renderCounters(c) {
  text($("parts"), c.parts); text($("passed"), c.passed); text($("failed"), c.failed); text($("errors"), c.errors);
  text($("reject-rate"), c.reject_rate == null ? null : `${(c.reject_rate * 100).toFixed(2)} %`);
}

function setBadge(el, label, cls) { text(el, label); el.className = `badge ${cls}`; }

function renderStatus(s) {
  const stateCls = { running: "ok", camera_lost: "bad", engine_error: "bad", stopped: "warn" }[s.state] || "unknown";
  setBadge($("state"), s.state.replace("_", " "), stateCls);
  text($("p50"), fmtMs(s.latency && s.latency.p50_ms));
  text($("p99"), fmtMs(s.latency && s.latency.p99_ms));
  const dropped = Object.entries(s.frames_dropped || {});
  text($("frames-dropped"), dropped.reduce((a, [, n]) => a + Number(n || 0), 0));
  $("frames-dropped").title = dropped.map(([k, n]) => `${k}: ${n}`).join(", ");
  const cam = s.camera || {};
  health("h-camera", cam.state ? `${cam.state}${cam.error ? ` (${cam.error})` : ""}` : null, s.camera_up ? "ok" : "bad");
  const eng = s.engine || {};
  health("h-engine", `${eng.state}${eng.error ? ` (${eng.error})` : ""}`, eng.state === "ok" ? "ok" : eng.state === "error" ? "bad" : "");
  const im = s.image_store;
  health("h-images", im ? `${im.state}, ${fmtBytes(im.bytes)} of ${fmtBytes(im.quota_bytes)}${im.error ? ` (${im.error})` : ""}` : null,
    im && im.state === "ok" ? "ok" : im && im.state === "fault" ? "bad" : "");
  const j = s.journal;
  health("h-journal", j ? `${j.state}${j.pending ? `, ${j.pending} held in memory` : ""}${j.error ? ` (${j.error})` : ""}` : null,
    j && j.state === "ok" ? "ok" : j && j.state === "fault" ? "bad" : "");
  health("h-link", s.connected ? `connected (run ${s.run_id || "?"})` : "no data from the station", s.connected ? "ok" : "bad");
  health("h-model", s.model_id ? `${s.model_id}${s.backend ? ` on ${s.backend}` : ""}` : null, "");
  health("h-fps", s.fps == null ? null : `${s.fps} frames/s, ${s.frames_captured ?? "?"} read`, "");
  renderDrift(s.drift);
}

function renderDrift(d) {  // the station's drift watch: a banner while it warns, a health row always
  const warn = !!d && d.state === "warning";
  $("drift-banner").hidden = !warn;
  text($("drift-reason"), warn ? d.reason : "");
  const shift = d && d.median_shift != null ? `, median shift ${Number(d.median_shift).toFixed(2)} normal spreads` : "";
  health("h-drift", d ? `${d.state}${shift}` : null, warn ? "bad" : d && d.state === "ok" ? "ok" : "");
  $("h-drift").title = d ? d.reason : "";
}

function health(id, value, cls) { const el = $(id); text(el, value); el.className = cls || ""; }

function renderGateway(t) {
  health("h-gateway", `last sequence ${t.last_sequence}, ${t.dropped} events dropped`, t.dropped ? "warn" : "");
}

// --- result rows --------------------------------------------------------------------------------
function scoresCell(td, rois) {
  rois.forEach((r, i) => {
    if (i) td.append(document.createTextNode(", "));
    const span = document.createElement("span");
    const score = r.score == null ? "–" : Number(r.score).toPrecision(4);
    const thr = r.threshold == null ? "–" : Number(r.threshold).toPrecision(4);
    span.textContent = `${r.name} ${score} / ${thr}`;
    if (r.verdict !== "pass") span.className = "over";
    td.append(span);
  });
}

function resultRow(tbody, r, withDate, atTop) {
  const tr = atTop ? tbody.insertRow(0) : tbody.insertRow();
  tr.dataset.seq = r.sequence;
  const a = document.createElement("a");
  a.href = `#result/${r.sequence}`; a.textContent = r.sequence;
  tr.insertCell().append(a);
  cell(tr, fmtTime(r.captured_at, withDate));
  cell(tr, r.part_id);
  cell(tr, r.verdict, `verdict ${r.verdict}`);
  scoresCell(cell(tr, "", "scores"), r.rois || []);
  cell(tr, fmtMs(r.latency_ms));
  labelCell(tr, r.sequence);
  if (r.error) tr.title = r.error;
  return tr;
}

// --- labels: a logged-in operator's judgement into the station's journal (POST /api/label) ------------
let labelInfo = { enabled: false, reason: null, defects: [] };
let loggedIn = false;

function showLabels() {  // the buttons only for a logged-in user on a gateway that can write labels
  document.body.classList.toggle("can-label", labelInfo.enabled && loggedIn);
}

function labelCell(tr, seq) {
  const td = tr.insertCell();
  td.className = "label-col";
  for (const label of ["good", ...labelInfo.defects]) {
    const b = document.createElement("button");
    b.type = "button"; b.dataset.label = label;
    b.textContent = label === "good" ? "good" : label === "defect" ? "defect" : `defect: ${label}`;
    b.addEventListener("click", () => labelPart(seq, label, td));
    td.append(b);
  }
}

async function labelPart(seq, label, td) {
  try {
    const r = await post("/api/label", { sequence: String(seq), label });
    const span = document.createElement("span");
    span.className = "labelled"; span.textContent = `✓ ${r.label}`;
    td.replaceChildren(span);
    td.title = `labelled ${r.label} by ${r.by}`;
  } catch (e) { text($("auth-msg"), `label #${seq}: ${e.message}`); }
}

function renderRows(rows) {
  const tbody = $("results");
  for (const r of rows.slice(0, MAX_ROWS).reverse()) resultRow(tbody, r, false, true);
  while (tbody.rows.length > MAX_ROWS) tbody.deleteRow(-1);
}

// --- thumbnails (dropped first under load) -------------------------------------------------------
const thumbState = {
  reject: { box: "reject-thumbs", title: "reject-title", busy: false, seq: 0, at: 0, want: null, timer: null },
  part: { box: "part-thumbs", title: "part-title", busy: false, seq: 0, at: 0, want: null, timer: null },
};

function offerThumbs(rows) {
  for (const r of rows) {  // newest first: keep the newest of each kind
    if (!r.images || !r.images.length) continue;
    const st = [thumbState.part];
    if (r.verdict !== "pass") st.push(thumbState.reject);
    for (const s of st) if (!s.want || r.sequence > s.want.sequence) s.want = r;
  }
  showThumbs(thumbState.reject);
  showThumbs(thumbState.part);
}

// At most one set of thumbnails a second per panel, never while the last set is still loading (or 5 s):
// under load the newest part replaces the one waiting, and the older ones are never fetched.
function showThumbs(st) {
  const r = st.want;
  if (!r || r.sequence === st.seq) return;
  const wait = Math.max(st.busy && performance.now() - st.at < 5000 ? 200 : 0, st.at + THUMB_MIN_MS - performance.now());
  if (wait > 0) {
    if (!st.timer) st.timer = setTimeout(() => { st.timer = null; showThumbs(st); }, wait);
    return;
  }
  st.want = null; st.busy = true; st.seq = r.sequence; st.at = performance.now();
  text($(st.title), `#${r.sequence} ${r.part_id} ${r.verdict}`);
  let left = r.images.length;
  $(st.box).replaceChildren(...imageRows(r.sequence, r.images, () => { if (--left <= 0) st.busy = false; }));
}

function imageRows(seq, images, done) {  // one row per ROI: input, reconstruction, heat map
  const rows = new Map();
  for (const im of images) {
    if (!rows.has(im.roi)) { const div = document.createElement("div"); div.className = "roi-row"; rows.set(im.roi, div); }
    rows.get(im.roi).append(figure(seq, im.roi, im.kind, done));
  }
  return [...rows.values()];
}

function figure(seq, roi, kind, done) {
  const fig = document.createElement("figure");
  const img = document.createElement("img");
  img.alt = `${roi} ${kind}`;
  img.addEventListener("load", done, { once: true });
  img.addEventListener("error", () => { img.alt = `${roi} ${kind}: gone`; done(); }, { once: true });
  img.src = imageUrl(seq, roi, kind);
  const cap = document.createElement("figcaption");
  cap.textContent = `${roi} · ${kind}`;
  fig.append(img, cap);
  return fig;
}

// --- the event stream ---------------------------------------------------------------------------
function onTick(t) {
  pending.tick = t;
  if (t.rows) { pending.rows = t.rows.concat(pending.rows).slice(0, MAX_ROWS); pending.skipped += t.skipped_rows || 0; }
  if (t.status) pending.status = t.status;
  if (!renderQueued) { renderQueued = true; requestAnimationFrame(render); setTimeout(render, 250); }
}

function render() {
  if (!renderQueued) return;
  renderQueued = false;
  const t = pending.tick;
  if (!t) return;
  renderCounters(t.counters);
  renderGateway(t);
  if (pending.status) { renderStatus(pending.status); pending.status = null; }
  if (pending.rows.length) {
    renderRows(pending.rows);
    offerThumbs(pending.rows);
    pending.rows = [];
  } else {
    offerThumbs([]);
  }
  if (pending.skipped) text($("skipped"), `(${pending.skipped} rows skipped to keep up)`);
}

function connectEvents(after) {
  const es = new EventSource(`/api/events?after=${after}`);
  es.addEventListener("open", () => setBadge($("link"), "live", "ok"));
  es.addEventListener("error", () => setBadge($("link"), "reconnecting", "warn"));
  es.addEventListener("tick", (ev) => onTick(JSON.parse(ev.data)));
}

// --- live view ----------------------------------------------------------------------------------
let shownFrame = null;
let previewUrl = null;

async function previewLoop() {
  const period = 1000 / Math.max(0.1, previewFps);
  const started = performance.now();
  if (!document.hidden) {
    try {
      const r = await fetch("/api/preview.jpg", { cache: "no-store" });
      if (r.ok && r.headers.get("x-preview-frame") !== shownFrame) {
        shownFrame = r.headers.get("x-preview-frame");
        const rois = JSON.parse(r.headers.get("x-preview-rois") || "[]");
        const url = URL.createObjectURL(await r.blob());
        const img = $("live");
        img.onload = () => { drawRois(img, rois); if (previewUrl) URL.revokeObjectURL(previewUrl); previewUrl = url; };
        img.src = url;
        $("live-none").hidden = true;
        text($("live-info"), `frame ${shownFrame}`);
      } else if (r.status === 404) {
        $("live-none").hidden = false;
      }
    } catch (e) { /* the gateway restarting: try again next period */ }
  }
  setTimeout(previewLoop, Math.max(50, period - (performance.now() - started)));
}

function drawRois(img, rois) {
  const canvas = $("rois");
  canvas.width = img.clientWidth; canvas.height = img.clientHeight;
  const sx = img.clientWidth / (img.naturalWidth || 1), sy = img.clientHeight / (img.naturalHeight || 1);
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.strokeStyle = "#22d3ee"; ctx.lineWidth = 2; ctx.fillStyle = "#22d3ee"; ctx.font = "12px system-ui";
  for (const r of rois) {
    ctx.strokeRect(r.x * sx, r.y * sy, r.width * sx, r.height * sy);
    ctx.fillText(r.name, r.x * sx + 3, r.y * sy + 13);
  }
}

// --- history and the result view ----------------------------------------------------------------
let historyQuery = null;

async function searchHistory(before) {
  const f = $("history-form");
  const q = new URLSearchParams();
  if (f.verdict.value) q.set("verdict", f.verdict.value);
  for (const name of ["since", "until"]) {
    if (f[name].value) q.set(name, String(new Date(f[name].value).getTime() / 1000));
  }
  if (f.part_id.value) q.set("part_id", f.part_id.value);
  if (before) q.set("before", before); else historyQuery = q.toString();
  const tbody = $("history-results");
  try {
    const body = await getJSON(`/api/history?${before ? `${historyQuery}&before=${before}` : q}`);
    if (!before) tbody.replaceChildren();
    for (const r of body.results) resultRow(tbody, r, true, false);
    text($("history-msg"), `${tbody.rows.length} result(s)${body.source === "memory" ? " (recent, in memory)" : ""}`);
    const older = $("history-older");
    older.hidden = body.next_before == null;
    older.dataset.before = body.next_before ?? "";
  } catch (e) {
    text($("history-msg"), `search failed: ${e.message}`);
  }
}

async function showResult(seq) {
  const dlg = $("result-view");
  text($("rv-seq"), `#${seq}`); text($("rv-msg"), "loading…");
  $("rv-fields").replaceChildren(); $("rv-images").replaceChildren();
  if (!dlg.open) dlg.showModal();
  try {
    const r = await getJSON(`/api/result/${seq}`);
    const v = $("rv-verdict"); text(v, r.verdict); v.className = `verdict ${r.verdict}`;
    const rows = [["Part", r.part_id], ["Captured", fmtTime(r.captured_at, true)], ["Latency", fmtMs(r.latency_ms)],
      ["Frame", r.frame], ["Run", r.run_id], ["Model", r.model_id], ["Error", r.error]];
    for (const [k, val] of rows) {
      if (val == null) continue;
      const tr = $("rv-fields").insertRow(); const th = document.createElement("th"); th.textContent = k; tr.append(th); cell(tr, val);
    }
    const tr = $("rv-fields").insertRow(); const th = document.createElement("th"); th.textContent = "Scores"; tr.append(th);
    scoresCell(tr.insertCell(), r.rois);
    $("rv-images").replaceChildren(...imageRows(r.sequence, r.images, () => {}));
    text($("rv-msg"), r.images.length ? "" : "no images kept for this result");
  } catch (e) {
    text($("rv-msg"), `not available: ${e.message}`);
  }
}

function route() {
  const m = /^#result\/(\d+)$/.exec(location.hash);
  if (m) showResult(m[1]);
}

// --- login --------------------------------------------------------------------------------------
function renderSession(s) {
  csrf = s.csrf;
  $("login-csrf").value = csrf;
  $("login-form").hidden = !s.login_enabled || !!s.user;
  $("logged-in").hidden = !s.user;
  text($("user-name"), s.user || "");
  loggedIn = !!s.user; showLabels();
}

async function post(url, form) {
  const body = new URLSearchParams(form || {});
  body.set("csrf", csrf);
  const r = await fetch(url, { method: "POST", body, headers: { Accept: "application/json", "X-CSRF-Token": csrf } });
  const out = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(out.error || `${r.status}`);
  return out;
}

function setupAuth() {
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await post("/login", { user: $("login-user").value, password: $("login-password").value });
      $("login-password").value = "";
      text($("auth-msg"), "");
    } catch (e) { text($("auth-msg"), e.message); }
    renderSession(await getJSON("/api/session"));
  });
  $("logout-button").addEventListener("click", async () => {
    try { await post("/logout"); } catch (e) { text($("auth-msg"), e.message); }
    renderSession(await getJSON("/api/session"));
  });
  $("ping-button").addEventListener("click", async () => {
    try { const r = await post("/api/ping-authenticated"); text($("auth-msg"), `write access ok (${r.user})`); }
    catch (e) { text($("auth-msg"), e.message); }
  });
  if (new URLSearchParams(location.search).get("login") === "failed") text($("auth-msg"), "wrong user or password");
}

// --- start --------------------------------------------------------------------------------------
async function main() {
  setupAuth();
  $("history-form").addEventListener("submit", (ev) => { ev.preventDefault(); searchHistory(null); });
  $("history-older").addEventListener("click", () => searchHistory($("history-older").dataset.before));
  $("result-view").addEventListener("close", () => { if (location.hash) history.replaceState(null, "", location.pathname + location.search); });
  window.addEventListener("hashchange", route);
  try { renderSession(await getJSON("/api/session")); } catch (e) { text($("auth-msg"), e.message); }
  let after = 0;
  try {
    const s = await getJSON("/api/state");
    text($("station-id"), s.station_id);
    document.title = `Station ${s.station_id}`;
    previewFps = s.preview_fps || previewFps;
    renderCounters(s.counters); renderStatus(s.status); renderGateway(s);
  } catch (e) { text($("auth-msg"), e.message); }
  try { labelInfo = await getJSON("/api/label"); } catch (e) { /* an older gateway: no labels */ }
  showLabels();
  connectEvents(after);
  previewLoop();
  route();
}

main();
