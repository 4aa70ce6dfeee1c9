// vaelab report: the live decoder. Plain JavaScript, nothing fetched: the decoder's
// weights are the JSON block above (float16 or float32, little-endian, base64), and
// decoding is two or more matrix-vector products here, drawn on a canvas.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("live-data").textContent);
  const $ = (id) => document.getElementById(id);
  const d = data.latent_dim;
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                   "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

  // ---------------------------------------------------------------- the weights
  function halfToFloat(h) {
    const sign = h & 0x8000 ? -1 : 1, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
    if (exp === 0) return sign * frac * 2 ** -24; // subnormal
    if (exp === 31) return frac ? NaN : sign * Infinity;
    return sign * (1 + frac / 1024) * 2 ** (exp - 15);
  }
  function unpack(b64) {
    const raw = atob(b64), bytes = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    const view = new DataView(bytes.buffer);
    const half = data.dtype === "float16", n = bytes.length / (half ? 2 : 4);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      out[i] = half ? halfToFloat(view.getUint16(2 * i, true)) : view.getFloat32(4 * i, true);
    }
    return out;
  }
  const layers = data.layers.map((l) => ({
    rows: l.rows, cols: l.cols, w: unpack(l.weight), b: unpack(l.bias),
  }));

  // ---------------------------------------------------------------- the decoder
  // The decoder's input: z, and for a conditional run (data.labels lists its K classes)
  // the chosen label's one-hot row appended, as the model's with_label does.
  function decoderInput(z, label) {
    if (!data.labels.length) return z;
    const oneHot = data.labels.map((_, k) => (k === label ? 1 : 0));
    return Array.from(z).concat(oneHot);
  }

  function linear(layer, x) { // (rows, cols) . x + b
    const out = new Float64Array(layer.rows);
    for (let r = 0; r < layer.rows; r++) {
      let s = layer.b[r];
      for (let c = 0, off = r * layer.cols; c < layer.cols; c++) s += layer.w[off + c] * x[c];
      out[r] = s;
    }
    return out;
  }
  function mean(logit) { // E[x|z] from a logit, as vaelab.losses.decoder_mean
    if (data.likelihood !== "continuous-bernoulli") return 1 / (1 + Math.exp(-logit));
    if (Math.abs(logit) < data.cb_band) {
      const l2 = logit * logit;
      return 0.5 + logit * (1 / 12 + l2 * (-1 / 720 + l2 / 30240));
    }
    return -1 / Math.expm1(-logit) - 1 / logit;
  }
  // erf to 1.5e-7 (Abramowitz & Stegun 7.1.26): JavaScript has no Math.erf.
  function erf(x) {
    const t = 1 / (1 + 0.3275911 * Math.abs(x));
    const poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 +
      t * (-1.453152027 + t * 1.061405429))));
    return Math.sign(x) * (1 - poly * Math.exp(-x * x));
  }
  // The hidden layers' activation, with torch's default settings (vaelab.viz.live).
  const ACTIVATIONS = {
    relu: (v) => (v > 0 ? v : 0),
    tanh: Math.tanh,
    softplus: (v) => (v > 20 ? v : Math.log1p(Math.exp(v))),
    elu: (v) => (v > 0 ? v : Math.expm1(v)),
    gelu: (v) => 0.5 * v * (1 + erf(v / Math.SQRT2)),
  };
  const activation = ACTIVATIONS[data.activation || "relu"];
  function decode(z, label) {
    let h = decoderInput(z, label);
    layers.forEach((layer, i) => {
      h = linear(layer, h);
      if (i < layers.length - 1) h = h.map(activation);
    });
    return Float32Array.from(h, mean);
  }

  // ---------------------------------------------------------------- drawing
  const state = { z: data.start.slice(), label: null, pixels: null, pending: false };
  const im = data.image;
  const imageCanvas = $("live-image");
  imageCanvas.width = im.width;
  imageCanvas.height = im.height;

  function drawImage(pixels) {
    const ctx = imageCanvas.getContext("2d"), out = ctx.createImageData(im.width, im.height);
    const n = im.width * im.height;
    for (let p = 0; p < n; p++) {
      for (let ch = 0; ch < 3; ch++) {
        const src = im.channels === 3 ? ch * im.plane + p : p;
        const v = src < im.size ? pixels[src] : 0;
        out.data[4 * p + ch] = Math.round(255 * Math.min(1, Math.max(0, v || 0)));
      }
      out.data[4 * p + 3] = 255;
    }
    ctx.putImageData(out, 0, 0);
  }

  function update() {
    state.pending = false;
    state.pixels = decode(state.z, state.label);
    drawImage(state.pixels);
    const moved = state.z.map((v, j) => [j, v]).filter(([j, v]) => v !== data.start[j]);
    $("live-z").textContent = d <= 4 || moved.length > 4
      ? `z = (${state.z.map((v) => v.toFixed(2)).join(", ")})`
      : moved.length === 0 ? `z = the ${data.centre}`
      : moved.map(([j, v]) => `z${j + 1} = ${v.toFixed(2)}`).join(", ") + `; the rest at the ${data.centre}`;
    for (const input of sliders) {
      const j = Number(input.dataset.dim);
      input.value = state.z[j];
      input.nextElementSibling.textContent = state.z[j].toFixed(2);
    }
    drawMap();
  }
  function schedule() { // one decode per animation frame, however fast the slider moves
    if (!state.pending) { state.pending = true; requestAnimationFrame(update); }
  }
  function setZ(z) { state.z = z.slice(); schedule(); }

  // ---------------------------------------------------------------- sliders, buttons
  const sliders = [];
  for (const j of data.order) {
    const row = document.createElement("label");
    const use = data.use ? data.use[j] : null;
    const off = use !== null && use < data.inactive;
    row.className = off ? "off" : "";
    const name = document.createElement("span");
    const shown = use === null ? "" : ` ${data.use_name} ${use.toFixed(use < 0.1 ? 3 : 2)}`;
    name.textContent = `z${j + 1}${shown}${off ? " (inactive)" : ""}`;
    name.title = off ? "inactive: its posterior is (almost) the prior" : "";
    const input = document.createElement("input");
    const reach = data.range * data.scale[j];
    Object.assign(input, { type: "range", step: reach / 300, min: data.start[j] - reach,
      max: data.start[j] + reach, value: data.start[j] });
    input.dataset.dim = j;
    input.setAttribute("aria-label", `latent dimension ${j + 1}`);
    input.addEventListener("input", () => { state.z[j] = Number(input.value); schedule(); });
    const value = document.createElement("output");
    row.append(name, input, value);
    $("live-sliders").append(row);
    sliders.push(input);
  }
  function gaussian() {
    let u = 0;
    while (u === 0) u = Math.random();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * Math.random());
  }
  $("live-reset").textContent = data.centre;
  $("live-reset").addEventListener("click", () => setZ(data.start));
  $("live-random").addEventListener("click", () => setZ(data.prior_samples
    ? data.prior_samples[Math.floor(Math.random() * data.prior_samples.length)] // a learned p(z)
    : data.start.map((m, j) => m + data.scale[j] * gaussian())));
  if (data.labels.length) { // the label picker of a conditional run
    $("live-label-box").hidden = false;
    data.labels.forEach((name, k) => $("live-label").append(new Option(name, k)));
    state.label = 0;
    $("live-label").addEventListener("change", (e) => { state.label = Number(e.target.value); schedule(); });
  }

  // ---------------------------------------------------------------- the d = 2 map
  const map = data.map, mapCanvas = $("live-map");
  let view = null;
  if (map) {
    $("live-map-box").hidden = false;
    const reach = Math.max(data.range, ...map.x.map((v, i) => Math.max(
      Math.abs(v - data.start[0]), Math.abs(map.y[i] - data.start[1])))) * 1.05;
    const size = mapCanvas.width;
    view = {
      toScreen: (x, y) => [size / 2 + (x - data.start[0]) / reach * size / 2,
                           size / 2 - (y - data.start[1]) / reach * size / 2],
      toData: (px, py) => [data.start[0] + (px - size / 2) / (size / 2) * reach,
                           data.start[1] - (py - size / 2) / (size / 2) * reach],
    };
    const present = [...new Set(map.labels)].filter((k) => k >= 0).sort((a, b) => a - b);
    for (const k of present) {
      const item = document.createElement("span");
      item.style.color = PALETTE[k % PALETTE.length];
      item.textContent = map.classes[k] !== undefined && map.classes[k] !== String(k)
        ? `${k} ${map.classes[k]}` : String(k);
      $("live-map-legend").append(item);
    }
    mapCanvas.addEventListener("click", (e) => {
      const box = mapCanvas.getBoundingClientRect();
      const px = (e.clientX - box.left) * mapCanvas.width / box.width;
      const py = (e.clientY - box.top) * mapCanvas.height / box.height;
      setZ(view.toData(px, py));
    });
  }
  function drawMap() {
    if (!map) return;
    const ctx = mapCanvas.getContext("2d"), size = mapCanvas.width;
    ctx.clearRect(0, 0, size, size);
    ctx.strokeStyle = "#ddd";
    const [ox, oy] = view.toScreen(data.start[0], data.start[1]);
    ctx.beginPath(); ctx.moveTo(ox, 0); ctx.lineTo(ox, size); ctx.moveTo(0, oy); ctx.lineTo(size, oy);
    ctx.stroke();
    ctx.globalAlpha = 0.75;
    map.x.forEach((x, i) => {
      const [px, py] = view.toScreen(x, map.y[i]), label = map.labels[i];
      ctx.fillStyle = label < 0 ? "#999" : PALETTE[label % PALETTE.length];
      ctx.fillRect(px - 1.5, py - 1.5, 3, 3);
    });
    ctx.globalAlpha = 1;
    const [zx, zy] = view.toScreen(state.z[0], state.z[1]);
    ctx.strokeStyle = "#000";
    ctx.lineWidth = 2;
    ctx.beginPath(); ctx.arc(zx, zy, 6, 0, 2 * Math.PI); ctx.stroke();
    ctx.lineWidth = 1;
  }

  // For tests and the curious: window.vaelabLive.decode(z), the last decoded pixels, and
  // `drawn`: false while a change waits for its animation frame, true once it is on screen.
  window.vaelabLive = {
    decode, setZ, get z() { return state.z.slice(); }, get pixels() { return state.pixels; },
    get drawn() { return !state.pending; },
    activate: (name, values) => values.map(ACTIVATIONS[name]),
  };
  update();
  document.getElementById("live-panel").dataset.ready = "true";
})();
