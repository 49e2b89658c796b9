// trackpipe live page: camera streams, the per-stage table, counts and live events.
// Plain JS, no build step. A ?token= in the page's address is passed on to every request.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const withToken = (url) => token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url;
const headers = token ? { Authorization: "Bearer " + token } : {};
const $ = (sel) => document.querySelector(sel);
const fmt = (v, d = 1) => (v === null || v === undefined || v === "") ? "–" : (typeof v === "number" ? v.toFixed(d) : String(v));
const MAX_EVENTS = 50;
const pad = (n) => String(n).padStart(2, "0");

// a time as people read it: HH:MM:SS (local), with the date when not today; a file's media time
// (seconds from its start, under 10^9) as "video M:SS.s"
function fmtTime(t) {
  if (t === null || t === undefined || !isFinite(t)) return "";
  if (t < 1e9) return `video ${Math.floor(t / 60)}:${(t % 60).toFixed(1).padStart(4, "0")}`;
  const d = new Date(t * 1000), now = new Date();
  const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return d.toDateString() === now.toDateString() ? hms
    : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms}`;
}

// what the picture says of a camera's state (none while live)
function stateText(c) {
  const since = c.since ? " since " + fmtTime(c.since) : "";
  switch (c.state) {
    case "live": return "";
    case "starting": return "starting…";
    case "lost": return "lost" + since + " · reconnecting";
    case "restored": return "restored" + (c.since ? " at " + fmtTime(c.since) : "");
    case "waiting": return "waiting for the camera" + since;
    case "stale": return "no new frame" + since;
    case "ended": return "ended";
    default: return c.state + since;
  }
}
const MAX_STREAMS = 4;        // MJPEG connections per page
const SNAPSHOT_MS = 200;      // refresh interval of the other cameras

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

async function getJSON(path) {
  const r = await fetch(path, { headers, cache: "no-store" });
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}

const figures = new Map();   // camera name -> {fig, caption, view, poster, note, load}
let cameraNames = [];

function showCameras(cams) {
  cameraNames = cams.map((c) => c.name);
  for (const c of cams) {
    let f = figures.get(c.name);
    if (!f) {
      const base = "api/cameras/" + encodeURIComponent(c.name);
      const img = el("img", { class: "cam", alt: c.name, "data-camera": c.name });
      // a browser opens ~6 connections per server: the first MAX_STREAMS cameras stream MJPEG,
      // the others refresh latest.jpg, so that the API calls and the event stream always get one
      const streaming = figures.size < MAX_STREAMS;
      const load = () => { img.src = streaming ? withToken(base + "/stream.mjpeg?r=" + Date.now())
                                               : withToken(base + "/latest.jpg?r=" + Date.now()); };
      img.dataset.mode = streaming ? "mjpeg" : "snapshots";
      img.addEventListener("load", () => {            // the first part marks when the camera appeared
        if (!img.dataset.firstFrameMs) img.dataset.firstFrameMs = performance.now().toFixed(1);
        if (!streaming) setTimeout(load, SNAPSHOT_MS);
      });
      img.addEventListener("error", () => setTimeout(load, 2000));   // no frame yet, or the server restarted
      load();
      // while the camera is not live: its last frame (dimmed) under the state's text, or, before
      // any frame, a placeholder of the camera's shape; never an empty strip
      const poster = el("img", { class: "poster", alt: "" });
      poster.hidden = true;
      poster.addEventListener("error", () => { poster.hidden = true; });
      const note = el("div", { class: "state-note", "data-camera": c.name });
      const view = el("div", { class: "view" }, img, poster, note);
      const caption = el("figcaption");
      const fig = el("figure", { "data-camera": c.name }, view, caption);
      $("#cameras").append(fig);
      f = { fig, caption, view, img, poster, note, load, base, state: null };
      figures.set(c.name, f);
    }
    showState(f, c);
    f.caption.replaceChildren(el("b", {}, c.name), " ",
      el("span", { class: "state state-" + c.state }, c.state), ` · ${fmt(c.fps)} fps`,
      c.width ? ` · ${c.width}×${c.height}` : "");
  }
}

function showState(f, c) {
  const text = stateText(c);
  const noFrame = c.seq < 0;
  f.fig.dataset.state = c.state;
  f.note.textContent = text;
  f.note.hidden = !text;
  f.view.style.aspectRatio = c.width && c.height ? `${c.width} / ${c.height}` : "16 / 9";
  const still = c.state === "lost" || c.state === "waiting" || c.state === "stale" || c.state === "ended";
  if (still !== (f.state === "still")) {
    if (still && !noFrame) {                  // the last frame the server holds, once per outage
      f.poster.src = withToken(f.base + "/latest.jpg?r=" + Date.now());
      f.poster.hidden = false;
    } else if (!still) {
      f.poster.hidden = true;
      if (f.state === "still") f.load();      // the stream again, from the new frames
    }
    f.state = still ? "still" : "moving";
  }
  f.img.hidden = noFrame || (still && !f.poster.hidden);
}

function showStats(s) {
  // fps_now: over the last seconds (0 when nothing flows); fps: the run's average, before the first
  const rows = Object.entries(s.stages || {}).map(([name, r]) =>
    el("tr", { "data-stage": name }, el("td", {}, name),
       el("td", { title: `run average ${fmt(r.fps)}` }, fmt(r.fps_now ?? r.fps)), el("td", {}, fmt(r.ms_p50)),
       el("td", {}, fmt(r.ms_p95)), el("td", {}, fmt(r.wait_ms_p50)), el("td", {}, fmt(r.drops, 0)),
       el("td", {}, fmt(r.restarts, 0))));
  $("#stages tbody").replaceChildren(...rows);
  const lat = s.latency_ms || {};
  const parts = [];
  if (s.pipeline_fps !== undefined) parts.push(`pipeline ${fmt(s.pipeline_fps)} fps`);
  if (s.detector_only_fps !== undefined) parts.push(`detector only ${fmt(s.detector_only_fps)} fps`);
  if (lat.p50 !== undefined) parts.push(`latency p50 ${fmt(lat.p50)} ms, p95 ${fmt(lat.p95)} ms`);
  $("#summary").textContent = parts.join(" · ");
  showGating(s.cameras || {});
}

// per camera: the share of frames detected (motion gating), how much moved, what stands still
function showGating(cams) {
  for (const [name, c] of Object.entries(cams)) {
    const f = figures.get(name);
    if (!f || c.detect_fraction === undefined || c.detect_fraction === null) continue;
    let g = f.fig.querySelector(".gating");
    if (!g) { g = el("div", { class: "gating" }); f.fig.append(g); }
    const parts = [`detected ${fmt(100 * c.detect_fraction, 0)}%`];
    if (c.motion_fraction !== null && c.motion_fraction !== undefined) parts.push(`motion ${fmt(100 * c.motion_fraction, 0)}%`);
    const still = c.stationary || [];
    parts.push(still.length ? `still: ${still.join(", ")}` : "nothing still");
    g.textContent = parts.join(" · ");
  }
}

function showCounts(counts) {
  const rows = [];
  // every camera: its zones and lines, or a row that says it has none
  const names = [...cameraNames, ...Object.keys(counts).filter((n) => !cameraNames.includes(n))];
  for (const cam of names) {
    const c = counts[cam] || {};
    if (!Object.keys(c.zones || {}).length && !Object.keys(c.lines || {}).length) {
      rows.push(el("tr", { "data-camera": cam }, el("td", {}, cam), el("td", { colspan: "3" }, "no zones or lines")));
      continue;
    }
    for (const [kind, group] of [["zone", c.zones || {}], ["line", c.lines || {}]]) {
      for (const [name, perClass] of Object.entries(group)) {
        if (!Object.keys(perClass).length) {          // configured, nothing counted yet
          rows.push(el("tr", { "data-camera": cam }, el("td", {}, cam), el("td", {}, `${kind} ${name}`),
                       el("td", {}, "–"), el("td", {}, "0")));
        }
        for (const [cls, kv] of Object.entries(perClass)) {
          const text = Object.entries(kv).map(([key, n]) => `${key} ${n}`).join(" · ");
          rows.push(el("tr", { "data-camera": cam }, el("td", {}, cam), el("td", {}, `${kind} ${name}`), el("td", {}, cls),
                       el("td", {}, text)));
        }
      }
    }
  }
  $("#counts tbody").replaceChildren(...rows);
}

// one event as a row of the fields it has (no empty ones)
function eventText(e) {
  const has = (v) => v !== null && v !== undefined && v !== "";
  const parts = [e.camera, e.class, has(e.track_id) ? `#${e.track_id}` : "",
                 has(e.zone) ? `zone ${e.zone}` : "", has(e.line) ? `line ${e.line}` : "", e.direction,
                 has(e.dwell_s) ? `after ${fmt(e.dwell_s)} s` : "", has(e.reason) ? `(${e.reason})` : ""];
  return parts.filter(has).join(" ");
}

function addEvent(e) {
  const time = fmtTime(e.t ?? Date.now() / 1000);
  const li = el("li", { "data-event": e.event || "", "data-seq": e.event_seq }, el("time", {}, time), " ",
                el("span", { class: "kind" }, e.event || "event"), " " + eventText(e));
  const list = $("#events");
  list.prepend(li);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

async function poll() {
  try {
    const [stats, counts, cams] = await Promise.all([getJSON("api/stats"), getJSON("api/counts"), getJSON("api/cameras")]);
    showStats(stats); showCounts(counts); showCameras(cams.cameras);
    $("#status").textContent = "updated " + fmtTime(Date.now() / 1000);
  } catch (err) {
    $("#status").textContent = "offline: " + err.message;
  }
}

function listen() {
  // the last few events first, then live ones (EventSource reconnects on its own, with Last-Event-ID)
  getJSON("api/events?since=0").then((r) => {
    r.events.slice(-MAX_EVENTS).forEach(addEvent);
    const es = new EventSource(withToken("api/events/stream?since=" + r.last_event_seq));
    es.onopen = () => { document.body.dataset.events = "open"; };
    es.onmessage = (m) => addEvent(JSON.parse(m.data));
  }).catch((err) => { $("#status").textContent = "offline: " + err.message; setTimeout(listen, 2000); });
}

function reviewLink() {
  // shown when the run records (the review page answers)
  fetch("review", { headers, method: "HEAD" }).then((r) => {
    if (r.ok) { const a = $("#review-link"); a.href = withToken("review"); a.hidden = false; }
  }).catch(() => {});
}

poll();
setInterval(poll, 1000);
listen();
reviewLink();
