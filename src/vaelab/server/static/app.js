// vaelab explorer: plain JavaScript and canvas, talking only to the server it came from.
// The map shows the test set in 2-D; a click decodes, sliders edit z live, and the
// interpolation card compares the latent path with a pixel-space blend. A conditional run
// also has a label row: the decoder draws z with the chosen label.
"use strict";

const MAX_SLIDERS = 64;
const SLIDER_RANGE = 3;
const BUBBLE_LIMIT = 1000;
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                 "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

const $ = (id) => document.getElementById(id);
const state = {
  info: null, map: null, z: [], label: null, mode: "explore", pair: [], interp: null,
  selected: null, hover: null, view: null, size: { w: 0, h: 0, dpr: 1 },
};

// ------------------------------------------------------------------ the server
async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(describeError(data, response.status));
  return data;
}

function describeError(data, status) {
  const detail = data && data.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail) && detail.length) {
    const first = detail[0];
    const where = (first.loc || []).filter((p) => p !== "body").join(".");
    return (where ? where + ": " : "") + first.msg;
  }
  return "the server answered " + status;
}

let toastTimer = 0;
function toast(message) {
  const el = $("toast");
  el.textContent = message;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 5000);
}

// One decode request in flight at a time; while it runs only the newest z waits, so a
// fast slider or drag never queues a backlog and answers arrive in order.
const decoder = { busy: false, pending: null };
function requestDecode() {
  decoder.pending = state.z.slice();
  if (!decoder.busy) pumpDecoder();
}
async function pumpDecoder() {
  decoder.busy = true;
  while (decoder.pending) {
    const z = decoder.pending;
    decoder.pending = null;
    try {
      const body = { z: [z] };
      if (state.label !== null) body.label = state.label;  // a conditional run
      const out = await api("/api/decode", body);
      $("decoded").src = out.images[0];
    } catch (err) {
      toast(err.message);
    }
  }
  decoder.busy = false;
}

// ------------------------------------------------------------------ z and the sliders
function labelName(label) {
  const classes = state.info.classes;
  if (label < 0) return "no label";
  return classes.length > label && classes[label] !== String(label) ? `${label} ${classes[label]}` : String(label);
}

function colour(label) {
  if (label < 0) return "#999999";
  if (label < PALETTE.length) return PALETTE[label];
  return `hsl(${(label * 137.508) % 360}, 60%, 45%)`;
}

function fmt(v, digits = 2) { return (v >= 0 ? "\u2009" : "") + v.toFixed(digits); }

function buildSliders() {
  const d = state.info.latent_dim;
  const box = $("sliders");
  box.textContent = "";
  for (let i = 0; i < Math.min(d, MAX_SLIDERS); i++) {
    const row = document.createElement("label");
    row.className = "slider";
    const name = document.createElement("span");
    name.className = "dim";
    name.textContent = "z" + (i + 1);
    const input = document.createElement("input");
    input.type = "range";
    input.min = -SLIDER_RANGE;
    input.max = SLIDER_RANGE;
    input.step = 0.01;
    input.value = 0;
    input.dataset.dim = i;
    input.setAttribute("aria-label", "latent dimension " + (i + 1));
    const value = document.createElement("output");
    value.className = "val";
    input.addEventListener("input", () => {
      state.z[i] = Number(input.value);
      value.textContent = fmt(state.z[i]);
      value.classList.remove("out");
      state.selected = null;
      setCaption(d <= 2 ? "" : "edited with the sliders");
      $("source-fig").hidden = true;
      drawOverlay();
      requestDecode();
    });
    row.append(name, input, value);
    box.append(row);
  }
  $("sliders-note").textContent = d > MAX_SLIDERS
    ? `The first ${MAX_SLIDERS} of ${d} dimensions have sliders; the others keep their values.`
    : `Each slider spans \u00b1${SLIDER_RANGE}, the bulk of the N(0, 1) prior.`;
}

// Conditional runs: one button per class; the decoder draws z with the chosen label.
function buildLabels() {
  const k = state.info.n_classes || 0;
  $("label-row").hidden = k === 0;
  if (k === 0) return;
  const box = $("labels");
  box.textContent = "";
  for (let label = 0; label < k; label++) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = labelName(label);
    button.dataset.label = label;
    button.setAttribute("aria-pressed", "false");
    button.addEventListener("click", () => {
      setLabel(label);
      setCaption(state.selected !== null ? `the mean of test image #${state.selected}` : "");
      requestDecode();
    });
    box.append(button);
  }
  setLabel(0);
}

function setLabel(label) {
  state.label = label;
  for (const button of $("labels").children) {
    const on = Number(button.dataset.label) === label;
    button.classList.toggle("on", on);
    button.setAttribute("aria-pressed", String(on));
  }
}

function syncSliders() {
  for (const input of $("sliders").querySelectorAll("input")) {
    const i = Number(input.dataset.dim);
    const v = state.z[i];
    input.value = Math.max(-SLIDER_RANGE, Math.min(SLIDER_RANGE, v));
    const out = input.nextElementSibling;
    out.textContent = fmt(v);
    out.classList.toggle("out", Math.abs(v) > SLIDER_RANGE);
  }
}

function setCaption(text) {
  const z = state.z;
  const where = z.length <= 2 ? "z = (" + z.map((v) => v.toFixed(2)).join(", ") + ")" : "";
  const label = state.label !== null ? "label " + labelName(state.label) : "";
  $("decoded-caption").textContent = [where, label, text].filter(Boolean).join(" \u00b7 ");
}

function setZ(z, caption, decode = true) {
  state.z = z.slice();
  syncSliders();
  setCaption(caption);
  drawOverlay();
  if (decode) requestDecode();
}

function gaussian() {
  let u = 0;
  while (u === 0) u = Math.random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * Math.random());
}

async function selectPoint(index) {
  try {
    const e = await api("/api/encode/" + index);
    state.selected = index;
    if (state.label !== null) setLabel(e.label);  // its reconstruction uses its own label
    setZ(e.mu, `the mean of test image #${index}`, false);
    $("decoded").src = e.recon;
    $("source-img").src = e.image;
    $("source-caption").textContent = `test image #${index} \u00b7 label ${labelName(e.label)}`;
    $("source-fig").hidden = false;
  } catch (err) {
    toast(err.message);
  }
}

// ------------------------------------------------------------------ the map
function isDirect() { return state.map.source === "latent"; }

function computeView() {
  const m = state.map;
  const { w, h } = state.size;
  const pad = 28;
  const quantile = (arr, q) => {
    const s = Float64Array.from(arr).sort();
    return s[Math.min(s.length - 1, Math.max(0, Math.floor(q * (s.length - 1))))];
  };
  let x0 = quantile(m.x, 0.001), x1 = quantile(m.x, 0.999);
  let y0 = quantile(m.y, 0.001), y1 = quantile(m.y, 0.999);
  if (isDirect() && m.latent_dim === 2) {
    x0 = Math.min(x0, -SLIDER_RANGE); x1 = Math.max(x1, SLIDER_RANGE);
    y0 = Math.min(y0, -SLIDER_RANGE); y1 = Math.max(y1, SLIDER_RANGE);
  }
  const mx = (x1 - x0) * 0.04 || 1, my = (y1 - y0) * 0.04 || 1;
  x0 -= mx; x1 += mx; y0 -= my; y1 += my;
  let sx = (w - 2 * pad) / (x1 - x0), sy = (h - 2 * pad) / (y1 - y0);
  if (m.latent_dim !== 1) sx = sy = Math.min(sx, sy); // equal aspect: circles stay circles
  state.view = { cx: (x0 + x1) / 2, cy: (y0 + y1) / 2, sx, sy };
}

function toScreen(x, y) {
  const v = state.view, { w, h } = state.size;
  return [w / 2 + (x - v.cx) * v.sx, h / 2 - (y - v.cy) * v.sy];
}
function toData(px, py) {
  const v = state.view, { w, h } = state.size;
  return [v.cx + (px - w / 2) / v.sx, v.cy - (py - h / 2) / v.sy];
}

function resizeMap() {
  const wrap = $("map-wrap");
  const w = wrap.clientWidth, h = wrap.clientHeight;
  if (!w || !h) return;
  const dpr = window.devicePixelRatio || 1;
  for (const canvas of [$("map"), $("overlay")]) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  state.size = { w, h, dpr };
  computeView();
  drawMap();
  drawOverlay();
}

function context(id) {
  const ctx = $(id).getContext("2d");
  ctx.setTransform(state.size.dpr, 0, 0, state.size.dpr, 0, 0);
  ctx.clearRect(0, 0, state.size.w, state.size.h);
  return ctx;
}

function drawGrid(ctx) {
  const { w, h } = state.size, m = state.map;
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#8a929c";
  if (isDirect()) {
    const [xa, yb] = toData(0, h), [xb, ya] = toData(w, 0);
    const stepOf = (span) => (span > 24 ? 5 : span > 10 ? 2 : 1);
    const sx = stepOf(xb - xa), sy = stepOf(ya - yb);
    ctx.lineWidth = 1;
    for (let gx = Math.ceil(xa / sx) * sx; gx <= xb; gx += sx) {
      const [px] = toScreen(gx, 0);
      ctx.strokeStyle = gx === 0 ? "#b9c0c8" : "#eceef1";
      ctx.beginPath(); ctx.moveTo(px + 0.5, 0); ctx.lineTo(px + 0.5, h); ctx.stroke();
      if (px > 16 && px < w - 40) ctx.fillText(String(gx), px + 3, h - 5);
    }
    if (m.latent_dim === 2) {
      for (let gy = Math.ceil(yb / sy) * sy; gy <= ya; gy += sy) {
        const [, py] = toScreen(0, gy);
        ctx.strokeStyle = gy === 0 ? "#b9c0c8" : "#eceef1";
        ctx.beginPath(); ctx.moveTo(0, py + 0.5); ctx.lineTo(w, py + 0.5); ctx.stroke();
        if (gy !== 0 && py > 30 && py < h - 24) ctx.fillText(String(gy), 4, py - 3);
      }
    }
  }
  const names = { latent: ["z1", m.latent_dim === 2 ? "z2" : "label"], tsne: ["t-SNE 1", "t-SNE 2"] };
  const [ax, ay] = names[m.source] || ["PC 1", "PC 2"];
  ctx.fillStyle = "#5f6873";
  ctx.font = "600 12px system-ui, sans-serif";
  ctx.textAlign = "right";
  ctx.fillText(ax, w - 8, h - 20);
  ctx.textAlign = "left";
  ctx.fillText(ay, 8, 16);
}

function drawMap() {
  const ctx = context("map"), m = state.map, n = m.x.length;
  drawGrid(ctx);
  const bubbles = $("bubbles").checked && m.sigma_x ? Math.min(n, BUBBLE_LIMIT) : 0;
  // with bubbles on, the other points fade so the posteriors of the first ones stand out
  const r = n > 3000 ? 1.6 : 2.4;
  ctx.globalAlpha = bubbles ? 0.12 : n > 3000 ? 0.65 : 0.85;
  for (let i = bubbles; i < n; i++) dot(ctx, i, r);
  ctx.globalAlpha = 1;
  for (let i = 0; i < bubbles; i++) {
    const [px, py] = toScreen(m.x[i], m.y[i]);
    ctx.beginPath();
    ctx.ellipse(px, py, Math.max(0.5, m.sigma_x[i] * state.view.sx),
      Math.max(0.5, m.sigma_y[i] * state.view.sy), 0, 0, 2 * Math.PI);
    ctx.fillStyle = colour(m.labels[i]) + "1f";
    ctx.strokeStyle = colour(m.labels[i]) + "99";
    ctx.lineWidth = 1;
    ctx.fill();
    ctx.stroke();
  }
  for (let i = 0; i < bubbles; i++) dot(ctx, i, 1.6);
}

function dot(ctx, i, r) {
  const m = state.map;
  const [px, py] = toScreen(m.x[i], m.y[i]);
  ctx.fillStyle = colour(m.labels[i]);
  ctx.beginPath();
  ctx.arc(px, py, r, 0, 2 * Math.PI);
  ctx.fill();
}

function ring(ctx, px, py, r, stroke, width = 2) {
  ctx.beginPath();
  ctx.arc(px, py, r, 0, 2 * Math.PI);
  ctx.lineWidth = width + 2;
  ctx.strokeStyle = "#ffffff";
  ctx.stroke();
  ctx.lineWidth = width;
  ctx.strokeStyle = stroke;
  ctx.stroke();
}

function pointXY(index) {
  const k = state.map.position.get(index);
  return k === undefined ? null : toScreen(state.map.x[k], state.map.y[k]);
}

function drawOverlay() {
  if (!state.view) return;
  const ctx = context("overlay"), m = state.map;
  const it = state.interp;
  if (it) {
    const a = pointXY(it.a), b = pointXY(it.b);
    ctx.setLineDash([5, 4]);
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = "#1b2430";
    if (isDirect() && m.latent_dim === 2) {
      ctx.beginPath();
      it.z.forEach((z, k) => { const [px, py] = toScreen(z[0], z[1]); k ? ctx.lineTo(px, py) : ctx.moveTo(px, py); });
      ctx.stroke();
      ctx.setLineDash([]);
      it.z.forEach((z, k) => {
        const [px, py] = toScreen(z[0], z[1]);
        ctx.beginPath();
        ctx.arc(px, py, k === it.step ? 5 : 2.5, 0, 2 * Math.PI);
        ctx.fillStyle = k === it.step ? "#f5a623" : "#1b2430";
        ctx.fill();
      });
    } else if (a && b) {
      ctx.beginPath(); ctx.moveTo(a[0], a[1]); ctx.lineTo(b[0], b[1]); ctx.stroke();
    }
    ctx.setLineDash([]);
    ctx.font = "700 12px system-ui, sans-serif";
    for (const [p, name] of [[a, "A"], [b, "B"]]) {
      if (!p) continue;
      ring(ctx, p[0], p[1], 6, "#1b2430");
      ctx.fillStyle = "#1b2430";
      ctx.fillText(name, p[0] + 9, p[1] - 7);
    }
  }
  for (const index of state.pair) {
    const p = pointXY(index);
    if (p) ring(ctx, p[0], p[1], 7, "#f5a623", 2.5);
  }
  if (state.hover !== null) {
    const p = pointXY(state.hover);
    if (p) ring(ctx, p[0], p[1], 5, "#1b2430", 1.5);
  }
  if (state.selected !== null && !(isDirect() && m.latent_dim === 2)) {
    const p = pointXY(state.selected);
    if (p) ring(ctx, p[0], p[1], 8, "#e4002b", 2.5);
  }
  if (isDirect() && state.z.length) {  // the current z itself
    const [px, py] = toScreen(state.z[0], m.latent_dim === 2 ? state.z[1] : toData(0, state.size.h / 2)[1]);
    ctx.lineWidth = 2;
    ctx.strokeStyle = "#e4002b";
    ctx.beginPath();
    ctx.moveTo(px - 9, py); ctx.lineTo(px - 3, py); ctx.moveTo(px + 3, py); ctx.lineTo(px + 9, py);
    ctx.moveTo(px, py - 9); ctx.lineTo(px, py - 3); ctx.moveTo(px, py + 3); ctx.lineTo(px, py + 9);
    ctx.stroke();
  }
}

function nearest(px, py, radius) {
  const m = state.map;
  let best = -1, bestD = radius * radius;
  for (let k = 0; k < m.x.length; k++) {
    const [qx, qy] = toScreen(m.x[k], m.y[k]);
    const dd = (qx - px) ** 2 + (qy - py) ** 2;
    if (dd <= bestD) { bestD = dd; best = k; }
  }
  return best < 0 ? null : m.indices[best];
}

function eventXY(ev) {
  const rect = $("overlay").getBoundingClientRect();
  return [ev.clientX - rect.left, ev.clientY - rect.top];
}

let dragging = false;
function onPointerDown(ev) {
  const [px, py] = eventXY(ev);
  const direct = isDirect();
  const hit = nearest(px, py, direct ? 4 : 10);
  if (state.mode === "pair") {
    const pick = hit ?? nearest(px, py, 30);
    if (pick === null) return;
    state.pair = state.pair.length >= 2 ? [pick] : [...state.pair, pick];
    drawOverlay();
    updateHint();
    if (state.pair.length === 2) {
      $("idx-a").value = state.pair[0];
      $("idx-b").value = state.pair[1];
      interpolate().then(() => { state.pair = []; updateHint(); drawOverlay(); });
    }
    return;
  }
  if (hit !== null) { selectPoint(hit); return; }
  if (!direct) return;
  dragging = true;
  $("overlay").setPointerCapture(ev.pointerId);
  decodeAt(px, py);
}

function decodeAt(px, py) {
  const [x, y] = toData(px, py);
  state.selected = null;
  $("source-fig").hidden = true;
  setZ(state.map.latent_dim === 2 ? [x, y] : [x], "a point of the map");
}

function onPointerMove(ev) {
  const [px, py] = eventXY(ev);
  if (dragging) { decodeAt(px, py); return; }
  const hit = nearest(px, py, isDirect() && state.mode === "explore" ? 4 : 10);
  if (hit !== state.hover) {
    state.hover = hit;
    drawOverlay();
  }
  const tip = $("tooltip");
  if (hit === null) { tip.hidden = true; return; }
  const k = state.map.position.get(hit);
  tip.textContent = `#${hit} \u00b7 label ${labelName(state.map.labels[k])}`;
  tip.hidden = false;
  const left = Math.min(px + 12, state.size.w - tip.offsetWidth - 4);
  tip.style.left = left + "px";
  tip.style.top = Math.max(4, py - 30) + "px";
}

function onPointerUp() { dragging = false; }

function onPointerLeave() {
  state.hover = null;
  $("tooltip").hidden = true;
  drawOverlay();
}

function setMode(mode) {
  state.mode = mode;
  state.pair = [];
  for (const [id, m] of [["mode-explore", "explore"], ["mode-pair", "pair"]]) {
    $(id).classList.toggle("on", m === mode);
    $(id).setAttribute("aria-pressed", String(m === mode));
  }
  $("map-wrap").classList.toggle("picking", mode === "pair");
  updateHint();
  drawOverlay();
}

function updateHint() {
  const direct = isDirect();
  let text;
  if (state.mode === "pair") {
    text = state.pair.length === 0 ? "Click the first test image of the pair."
      : state.pair.length === 1 ? `First: #${state.pair[0]}. Now click the second.` : "Interpolating\u2026";
  } else if (direct) {
    text = "Click or drag anywhere to decode that point of latent space; click a dot to see its test image.";
  } else {
    text = "Click a test image to load its latent mean into the sliders.";
  }
  $("map-hint").textContent = text;
}

function buildLegend() {
  const box = $("legend");
  box.textContent = "";
  const present = [...new Set(state.map.labels)].sort((a, b) => a - b);
  for (const label of present) {
    const item = document.createElement("span");
    item.className = "key";
    const chip = document.createElement("i");
    chip.style.backgroundColor = colour(label);
    item.append(chip, document.createTextNode(labelName(label)));
    box.append(item);
  }
}

// ------------------------------------------------------------------ interpolation
async function interpolate() {
  const a = Number($("idx-a").value), b = Number($("idx-b").value);
  const steps = Number($("steps").value);
  const mode = $("interp-mode").value;
  try {
    const out = await api("/api/interpolate", { a, b, steps, mode });
    state.interp = { a, b, z: out.z, step: 0, latent: out.latent.images, pixel: out.pixel.images };
    $("interp-ends").textContent = `A = test image #${a} (label ${labelName(out.labels[0])})` +
      ` \u2192 B = #${b} (label ${labelName(out.labels[1])}), ${steps} steps, ${out.mode} path`;
    fillStrip("strip-latent", out.latent.images, out.t);
    fillStrip("strip-pixel", out.pixel.images, out.t);
    const slider = $("step");
    slider.max = steps - 1;
    slider.value = 0;
    $("interp-out").hidden = false;
    showStep(0);
  } catch (err) {
    toast(err.message);
  }
}

function fillStrip(id, images, t) {
  const strip = $(id);
  strip.textContent = "";
  images.forEach((src, k) => {
    const img = document.createElement("img");
    img.src = src;
    img.className = "px cell";
    img.alt = `t = ${t[k].toFixed(2)}`;
    img.title = img.alt;
    img.addEventListener("click", () => { $("step").value = k; showStep(k); });
    strip.append(img);
  });
}

function showStep(k) {
  const it = state.interp;
  it.step = k;
  $("big-latent").src = it.latent[k];
  $("big-pixel").src = it.pixel[k];
  const t = it.latent.length > 1 ? k / (it.latent.length - 1) : 0;
  $("step-label").textContent = `${k + 1} / ${it.latent.length} \u00b7 t = ${t.toFixed(2)}`;
  for (const id of ["strip-latent", "strip-pixel"]) {
    [...$(id).children].forEach((img, j) => img.classList.toggle("current", j === k));
  }
  drawOverlay();
}

// ------------------------------------------------------------------ the run card
function number(v) {
  if (!Number.isFinite(v)) return String(v);
  if (Number.isInteger(v)) return String(v);
  return Math.abs(v) >= 100 ? v.toFixed(1) : v.toPrecision(4);
}

function fillRun() {
  const info = state.info;
  const headline = [
    ["test loss", info.metrics.test_loss], ["test recon", info.metrics.test_recon],
    ["test KL", info.metrics.test_kl], ["train loss", info.metrics.train_loss],
  ];
  for (const [k, v] of Object.entries(info.evaluation)) headline.push([k, v]);
  const box = $("metrics");
  box.textContent = "";
  for (const [name, value] of headline) {
    if (value === undefined) continue;
    const cell = document.createElement("div");
    cell.className = "stat";
    const v = document.createElement("b");
    v.textContent = number(value);
    const k = document.createElement("span");
    k.textContent = name;
    cell.append(v, k);
    box.append(cell);
  }
  const table = $("settings");
  table.textContent = "";
  const rows = Object.entries(info.config).concat([["input shape", info.input_shape.join("\u00d7")],
    ["test images", info.n_test]]);
  for (const [key, value] of rows) {
    const tr = table.insertRow();
    tr.insertCell().textContent = key.replace(/_/g, " ");
    tr.insertCell().textContent = value === null ? "\u2014" : String(value);
  }
  const c = info.config;
  const conditional = info.n_classes ? " conditioned on the label" : "";
  $("run-title").textContent = `${info.run} \u00b7 ${c.model}${conditional} on ${c.dataset} \u00b7 d = ${info.latent_dim}` +
    ` \u00b7 \u03b2 = ${c.beta} \u00b7 epoch ${info.epoch}` +
    (info.metrics.test_loss !== undefined ? ` \u00b7 test loss ${number(info.metrics.test_loss)}` : "");
  document.title = `${info.run} \u00b7 vaelab explorer`;
  $("report-link").hidden = !info.has_report;
}

// ------------------------------------------------------------------ start
function firstWithLabel(label, fallback) {
  const i = state.map.labels.indexOf(label);
  return i >= 0 ? state.map.indices[i] : fallback;
}

async function start() {
  try {
    const [info, map] = await Promise.all([api("/api/info"), api("/api/map")]);
    state.info = info;
    map.position = new Map(map.indices.map((index, k) => [index, k]));
    state.map = map;
  } catch (err) {
    $("run-title").textContent = "could not load the run: " + err.message;
    return;
  }
  const d = state.info.latent_dim;
  fillRun();
  buildLabels();
  buildSliders();
  buildLegend();
  $("bubbles-wrap").hidden = !state.map.sigma_x;
  const n = state.map.x.length;
  $("map-note").textContent = state.map.note + ` \u00b7 ${n} test images` +
    (state.map.sigma_x && n > BUBBLE_LIMIT ? ` \u00b7 bubbles drawn for the first ${BUBBLE_LIMIT}` : "");
  for (const id of ["idx-a", "idx-b"]) $(id).max = state.info.n_test - 1;
  $("idx-a").value = firstWithLabel(5, state.map.indices[0]);
  $("idx-b").value = firstWithLabel(4, state.map.indices[Math.min(1, n - 1)]);

  new ResizeObserver(resizeMap).observe($("map-wrap"));
  const overlay = $("overlay");
  overlay.addEventListener("pointerdown", onPointerDown);
  overlay.addEventListener("pointermove", onPointerMove);
  overlay.addEventListener("pointerup", onPointerUp);
  overlay.addEventListener("pointercancel", onPointerUp);
  overlay.addEventListener("pointerleave", onPointerLeave);
  $("bubbles").addEventListener("change", drawMap);
  $("mode-explore").addEventListener("click", () => setMode("explore"));
  $("mode-pair").addEventListener("click", () => setMode("pair"));
  $("reset").addEventListener("click", () => {
    state.selected = null;
    $("source-fig").hidden = true;
    setZ(new Array(d).fill(0), "the origin");
  });
  $("sample").addEventListener("click", () => {
    state.selected = null;
    $("source-fig").hidden = true;
    const drawn = state.info.prior_samples; // a learned prior's draws; N(0, I) is sampled here
    if (drawn && drawn.length) {
      setZ(drawn[Math.floor(Math.random() * drawn.length)].slice(),
        `a sample from the run's learned prior (${state.info.prior})`);
    } else {
      setZ(Array.from({ length: d }, gaussian), "a sample from the prior N(0, I)");
    }
  });
  $("interp-form").addEventListener("submit", (ev) => { ev.preventDefault(); interpolate(); });
  $("interp-mode").addEventListener("change", () => { if ($("interp-form").reportValidity()) interpolate(); });
  $("step").addEventListener("input", () => showStep(Number($("step").value)));

  setMode("explore");
  setZ(new Array(d).fill(0), "the origin");
  resizeMap();
  await interpolate();
  document.body.dataset.ready = "true";
}

start();
