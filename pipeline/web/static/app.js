// trackpipe live page: camera streams, the per-stage table, counts and live events.
// Plain JS, no build step. A ?token= in the page's address is passed on to every request.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const withToken = (url) => token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url;
const headers = token ? { Authorization: "Bearer " + token } : {};
const $ = (sel) => document.querySelector(sel);
const fmt = (v, d = 1) => (v === null || v === undefined || v === "") ? "–" : (typeof v === "number" ? v.toFixed(d) : String(v));
const MAX_EVENTS = 50;
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

const figures = new Map();   // camera name -> {fig, caption}

function showCameras(cams) {
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
      const caption = el("figcaption");
      const fig = el("figure", { "data-camera": c.name }, img, caption);
      $("#cameras").append(fig);
      f = { fig, caption };
      figures.set(c.name, f);
    }
    f.caption.replaceChildren(el("b", {}, c.name), " ",
      el("span", { class: "state-" + c.state }, c.state), ` · ${fmt(c.fps)} fps · ${c.width}×${c.height}`);
  }
}

function showStats(s) {
  const rows = Object.entries(s.stages || {}).map(([name, r]) =>
    el("tr", { "data-stage": name }, el("td", {}, name), el("td", {}, fmt(r.fps)), el("td", {}, fmt(r.ms_p50)),
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
  for (const [cam, c] of Object.entries(counts)) {
    for (const [kind, group] of [["zone", c.zones || {}], ["line", c.lines || {}]]) {
      for (const [name, perClass] of Object.entries(group)) {
        if (!Object.keys(perClass).length) {          // configured, nothing counted yet
          rows.push(el("tr", {}, el("td", {}, cam), el("td", {}, `${kind} ${name}`), el("td", {}, "–"), el("td", {}, "–")));
        }
        for (const [cls, kv] of Object.entries(perClass)) {
          const text = Object.entries(kv).map(([key, n]) => `${key} ${n}`).join(" · ");
          rows.push(el("tr", {}, el("td", {}, cam), el("td", {}, `${kind} ${name}`), el("td", {}, cls),
                       el("td", {}, text)));
        }
      }
    }
  }
  $("#counts tbody").replaceChildren(...rows);
}

function addEvent(e) {
  const what = e.zone ? `zone ${e.zone}` : e.line ? `line ${e.line} ${e.direction || ""}` : "";
  const time = new Date((e.t || Date.now() / 1000) * 1000).toLocaleTimeString();
  const li = el("li", { "data-event": e.event || "", "data-seq": e.event_seq }, `${time} `, el("span", { class: "kind" }, e.event || "event"),
                ` ${e.camera || ""} ${e.class || ""} #${e.track_id ?? ""} ${what}`);
  const list = $("#events");
  list.prepend(li);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

async function poll() {
  try {
    const [stats, counts, cams] = await Promise.all([getJSON("api/stats"), getJSON("api/counts"), getJSON("api/cameras")]);
    showStats(stats); showCounts(counts); showCameras(cams.cameras);
    $("#status").textContent = "updated " + new Date().toLocaleTimeString();
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
