// trackpipe review page: the recorded events (filters, thumbnails), a player that draws the
// object's box and id over the clean clip from the stored track, and a timeline per camera.
// Plain JS, no build step. A ?token= in the page's address is passed on to every request.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const withToken = (url) => token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url;
const headers = token ? { Authorization: "Bearer " + token } : {};
const $ = (sel) => document.querySelector(sel);
const rel = (url) => url.replace(/^\//, "");          // the API's URLs, relative to this page
const TIMELINE_S = 6 * 3600;                          // the timeline shows the last six hours

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

async function getJSON(path) {
  const r = await fetch(path, { headers, cache: "no-store" });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) { const e = new Error(body.error || (path + ": " + r.status)); e.status = r.status; throw e; }
  return body;
}

const state = { event: null, box: null, t: null };   // box: the one drawn now (video pixels), for tests
window.review = state;

function timeText(t) { return new Date(t * 1000).toLocaleString(); }

function say(text, kind = "") {
  const m = $("#message");
  m.textContent = text;
  m.dataset.kind = kind;
}

async function loadEvents() {
  const q = new URLSearchParams();
  const v = (id) => $(id).value.trim();
  if (v("#f-camera")) q.set("camera", v("#f-camera"));
  if (v("#f-label")) q.set("label", v("#f-label"));
  if (v("#f-zone")) q.set("zone", v("#f-zone"));
  for (const [id, key] of [["#f-after", "after"], ["#f-before", "before"]]) {
    if (v(id)) q.set(key, String(new Date(v(id)).getTime() / 1000));
  }
  q.set("limit", "200");
  try {
    const events = await getJSON("api/events?" + q);
    const items = events.map((e) => {
      const img = e.snapshot ? el("img", { src: withToken(rel(e.snapshot)), alt: "", loading: "lazy" }) : el("span", { class: "noimg" });
      const li = el("li", { class: "event", "data-id": e.id, "data-camera": e.camera, tabindex: "0" }, img,
                    el("div", {}, el("b", {}, `${e.label} #${e.track_id}`), ` ${e.camera}`, el("br"),
                       `${timeText(e.start)} · ${(e.end - e.start).toFixed(1)} s · ${(e.score * 100).toFixed(0)} %`,
                       e.zones && e.zones.length ? ` · ${e.zones.join(", ")}` : "",
                       e.state === "expired" ? el("span", { class: "expired" }, " · footage deleted") : ""));
      li.addEventListener("click", () => openEvent(e.id));
      return li;
    });
    $("#event-list").replaceChildren(...items);
    $("#status").textContent = `${events.length} events`;
    document.body.dataset.events = String(events.length);
    const cams = [...new Set(events.map((e) => e.camera))];
    const sel = $("#f-camera");
    for (const c of cams) if (![...sel.options].some((o) => o.value === c)) sel.append(el("option", { value: c }, c));
    drawTimelines(cams, events);
  } catch (err) {
    $("#status").textContent = err.status === 404 ? "nothing recorded yet" : "offline: " + err.message;
  }
}

async function openEvent(id) {
  const video = $("#clip");
  state.event = null; state.box = null;
  $("#delete").disabled = true;
  for (const li of document.querySelectorAll("li.event")) li.classList.toggle("selected", li.dataset.id === id);
  try {
    const ev = await getJSON("api/events/" + encodeURIComponent(id));
    state.event = ev;
    $("#delete").disabled = false;
    if (!ev.clip) {
      video.removeAttribute("src"); video.load();
      say(ev.footage === "expired" ? "The footage of this event was deleted (retention)." :
          "This event has no footage (its camera was not recorded then).", "gone");
      return;
    }
    say("");
    $("#clip-info").textContent = `${ev.label} #${ev.track_id} on ${ev.camera}: ${timeText(ev.start)}, ` +
      `clip from ${(ev.start - ev.clip_start).toFixed(1)} s before`;
    video.src = withToken(rel(ev.clip));
    video.dataset.eventId = ev.id;
    video.play().catch(() => {});
  } catch (err) {
    video.removeAttribute("src"); video.load();
    say(err.status === 410 ? "This event was deleted." : "Cannot open the event: " + err.message, "gone");
  }
}

function boxAt(ev, t) {
  // the stored box nearest t (seconds on the events' clock), if one lies within 0.3 s
  const b = ev.boxes;
  if (!b || !b.length) return null;
  let lo = 0, hi = b.length - 1;
  while (lo < hi) { const mid = (lo + hi) >> 1; if (b[mid][0] < t) lo = mid + 1; else hi = mid; }
  let best = b[lo];
  if (lo > 0 && Math.abs(b[lo - 1][0] - t) < Math.abs(best[0] - t)) best = b[lo - 1];
  return Math.abs(best[0] - t) <= 0.3 ? best : null;
}

function draw() {
  const video = $("#clip"), canvas = $("#overlay"), ev = state.event;
  const w = video.clientWidth, h = video.clientHeight;
  if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, w, h);
  state.box = null;
  if (ev && ev.clip_start !== null && video.videoWidth && video.readyState >= 2) {
    const t = ev.clip_start + video.currentTime;
    state.t = t;
    const row = boxAt(ev, t);
    if (row) {
      state.box = row.slice(1, 5);
      if ($("#show-boxes").checked) {
        // boxes are in the pixels of the frames tracked (ev.width x ev.height; a detect stream may be smaller)
        const sx = w / (ev.width || video.videoWidth), sy = h / (ev.height || video.videoHeight);
        const [x1, y1, x2, y2] = state.box;
        ctx.strokeStyle = "#ffc800"; ctx.lineWidth = 2;
        ctx.strokeRect(x1 * sx, y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy);
        ctx.fillStyle = "#ffc800"; ctx.font = "14px system-ui";
        ctx.fillText(`${ev.label} #${ev.track_id}`, x1 * sx + 2, Math.max(14, y1 * sy - 4));
      }
    }
  }
  requestAnimationFrame(draw);
}

function drawTimelines(cams, events) {
  const now = Date.now() / 1000, from = now - TIMELINE_S;
  const root = $("#timelines");
  root.replaceChildren();
  for (const cam of cams) {
    const bar = el("div", { class: "timeline", "data-camera": cam, title: cam });
    root.append(el("div", {}, el("span", {}, cam)), bar);
    const pos = (t) => `${Math.max(0, Math.min(100, (t - from) / TIMELINE_S * 100))}%`;
    getJSON(`api/recordings/${encodeURIComponent(cam)}?after=${from}`).then((r) => {
      for (const s of r.segments) {
        const span = el("i", { class: "rec" });
        span.style.left = pos(s.start); span.style.width = `calc(${pos(s.end)} - ${pos(s.start)} + 1px)`;
        bar.append(span);
      }
      for (const e of events.filter((x) => x.camera === cam)) {
        const mark = el("b", { class: "ev", title: `${e.label} #${e.track_id}` });
        mark.style.left = pos(e.start);
        mark.addEventListener("click", () => openEvent(e.id));
        bar.append(mark);
      }
    }).catch(() => {});
  }
}

$("#filters").addEventListener("submit", (e) => { e.preventDefault(); loadEvents(); });
$("#delete").addEventListener("click", async () => {
  const ev = state.event;
  if (!ev || !confirm(`Delete event ${ev.label} #${ev.track_id}?`)) return;
  const r = await fetch("api/events/" + encodeURIComponent(ev.id), { method: "DELETE", headers });
  if (r.ok) { say("Event deleted.", "gone"); state.event = null; $("#clip").removeAttribute("src"); loadEvents(); }
});
$("#live-link").href = withToken(".");
loadEvents();
setInterval(loadEvents, 15000);
requestAnimationFrame(draw);
