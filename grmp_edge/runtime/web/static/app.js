// grmp-edge live page: one tile per source, fed by Server-Sent Events from /api/stream.
// No framework and no chart library, so the page is served whole by the run and works offline.
"use strict";

const tiles = new Map(); // source id -> tile state
let config = { low: null, high: null, history_s: 300 };

function fmt(value, digits = 3) {
  return value === null || value === undefined ? "-" : value.toFixed(digits);
}

function clock(ts) {
  return new Date(ts * 1000).toLocaleTimeString();
}

function tileFor(source) {
  let tile = tiles.get(source.id);
  if (tile) return tile;
  const el = document.getElementById("tile").content.firstElementChild.cloneNode(true);
  el.dataset.source = source.name;
  el.querySelector(".name").textContent = source.name;
  document.getElementById("empty")?.remove();
  document.getElementById("tiles").appendChild(el);
  tile = {
    id: source.id, el, points: [], wanted: 0, shown: 0, loading: false,
    img: el.querySelector(".picture"), canvas: el.querySelector(".chart"),
  };
  tile.img.onload = () => { tile.loading = false; nextPicture(tile); };
  tile.img.onerror = () => { tile.loading = false; };
  tiles.set(source.id, tile);
  return tile;
}

// Ask for the next picture only when the last one has arrived: a slow viewer gets fewer pictures, no backlog.
function nextPicture(tile) {
  if (tile.loading || tile.shown >= tile.wanted) return;
  tile.loading = true;
  tile.shown = tile.wanted;
  tile.img.src = `/frame/${tile.id}.jpg?n=${tile.wanted}`;
}

function eventText(event) {
  const what = event.event === "back" ? `source back after ${fmt(event.gap_s, 1)} s` : event.event;
  return `${clock(event.ts)} ${what} (frame ${event.frame}, smoothed ${fmt(event.smoothed)})`;
}

function update(state) {
  config = state;
  document.getElementById("title").textContent = state.title;
  for (const source of state.sources) {
    const tile = tileFor(source);
    tile.points = state.full ? source.history : tile.points.concat(source.history);
    const start = source.ts - state.history_s;
    const keep = tile.points.findIndex((p) => p[0] >= start);
    if (keep > 0) tile.points = tile.points.slice(keep);
    tile.events = source.events;
    const el = tile.el;
    el.querySelector(".score").textContent = fmt(source.score);
    el.querySelector(".smoothed").textContent = fmt(source.smoothed);
    el.querySelector(".fps").textContent = `${fmt(source.fps, 1)} fps`;
    el.querySelector(".latency").textContent = `${fmt(source.latency_ms.total, 1)} ms`;
    const badge = el.querySelector(".badge");
    badge.textContent = source.degraded ? "degraded" : "ok";
    badge.className = `badge ${source.degraded ? "degraded" : "ok"}`;
    const latest = source.events[source.events.length - 1];
    const eventsKey = latest ? `${source.events.length} ${latest.ts} ${latest.event}` : "";
    if (eventsKey !== tile.eventsKey) { // rebuilt only when an event came, not on every update
      tile.eventsKey = eventsKey;
      el.querySelector(".events").replaceChildren(...source.events.slice().reverse().map((event) => {
        const item = document.createElement("li");
        item.className = event.event;
        item.textContent = eventText(event);
        return item;
      }));
    }
    tile.wanted = source.frames;
    nextPicture(tile);
    draw(tile);
  }
}

// The score chart: raw score (grey), smoothed score (blue), thresholds (dashed), events (vertical lines).
function draw(tile) {
  const canvas = tile.canvas;
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * ratio) || canvas.height !== Math.round(h * ratio)) {
    canvas.width = Math.round(w * ratio);
    canvas.height = Math.round(h * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const left = 34, right = 6, top = 6, bottom = 16;
  const points = tile.points;
  const end = points.length ? points[points.length - 1][0] : 0;
  // The time axis grows with the run up to history_s, so the first minute is not a sliver at the edge.
  const span = Math.min(config.history_s, Math.max(60, points.length ? end - points[0][0] : 0));
  // The score axis fits the scores and thresholds: a camera's scores often move within a narrow band.
  const values = points.flatMap((p) => [p[1], p[2]]).concat([config.low, config.high]).filter((v) => v !== null && v !== undefined);
  let lo = values.length ? Math.min(...values) : 0, hi = values.length ? Math.max(...values) : 1;
  const pad = Math.max(0.05, (hi - lo) * 0.15);
  lo = Math.max(0, lo - pad);
  hi = Math.min(1, hi + pad);
  const x = (ts) => left + (ts - (end - span)) / span * (w - left - right);
  const y = (v) => top + (hi - v) / (hi - lo) * (h - top - bottom);
  ctx.font = "10px system-ui, sans-serif";
  ctx.fillStyle = "#667085";
  ctx.strokeStyle = "#e4e7ec";
  ctx.lineWidth = 1;
  for (const v of [lo, (lo + hi) / 2, hi]) {
    ctx.beginPath(); ctx.moveTo(left, y(v)); ctx.lineTo(w - right, y(v)); ctx.stroke();
    ctx.fillText(v.toFixed(2), 4, y(v) + 3);
  }
  ctx.fillText(span >= 120 ? `-${Math.round(span / 60)} min` : `-${Math.round(span)} s`, left, h - 3);
  ctx.fillText("now", w - right - 20, h - 3);
  ctx.setLineDash([4, 3]);
  for (const [v, colour] of [[config.low, "#d64545"], [config.high, "#2e9d4f"]]) {
    if (v === null || v === undefined) continue;
    ctx.strokeStyle = colour;
    ctx.beginPath(); ctx.moveTo(left, y(v)); ctx.lineTo(w - right, y(v)); ctx.stroke();
  }
  ctx.setLineDash([]);
  for (const event of tile.events || []) {
    if (event.ts < end - span) continue;
    ctx.strokeStyle = event.event === "degraded" ? "#d64545" : "#2e9d4f";
    ctx.beginPath(); ctx.moveTo(x(event.ts), top); ctx.lineTo(x(event.ts), h - bottom); ctx.stroke();
  }
  line(ctx, tile.points, 1, x, y, "#9aa3ad", 1);
  line(ctx, tile.points, 2, x, y, "#3b82f6", 2);
}

function line(ctx, points, column, x, y, colour, width) {
  ctx.strokeStyle = colour;
  ctx.lineWidth = width;
  ctx.beginPath();
  let open = false;
  for (const p of points) {
    if (p[column] === null) { open = false; continue; } // a frame the engine could not score: a gap
    if (open) ctx.lineTo(x(p[0]), y(p[column])); else ctx.moveTo(x(p[0]), y(p[column]));
    open = true;
  }
  ctx.stroke();
}

const status = document.getElementById("status");
const stream = new EventSource("/api/stream");
stream.onopen = () => { status.textContent = "live"; status.className = "status live"; };
stream.onerror = () => { status.textContent = "disconnected (has the run ended?), retrying"; status.className = "status"; };
stream.onmessage = (message) => update(JSON.parse(message.data));
window.addEventListener("resize", () => tiles.forEach(draw));
