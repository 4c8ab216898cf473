// The defocus page: uploads photos to /v1/predict, then re-thresholds and tints each returned map in the browser.
"use strict";

const DISPLAY_MAX_SIDE = 1024;      // overlays are drawn at most this large; fractions use the full map
const PARALLEL_UPLOADS = 2;
const MAX_RETRIES = 20;
const TINT = [20, 45, 110];         // the same tint and dimming as the overlays of `defocus predict`
const DIM = 0.45;
const BOUNDARY = [255, 214, 0];

const $ = (sel) => document.querySelector(sel);
const photos = [];                  // {card, file, name, hist, total, mapUrl, map, original, width, height, error}
const waiting = [];
let running = 0;
let defaultsShown = false;          // the server's defaults fill the controls once, not over the user's choice

function apiHeaders() {
  const key = $("#api-key").value;
  return key ? {"X-API-Key": key} : {};
}

async function loadModelInfo() {
  let res, body;
  try {
    res = await fetch("/v1/models", {headers: apiHeaders()});
    if (res.status === 401) {
      $("#key-box").hidden = false;
      $("#model-info").textContent = "This server needs an API key.";
      return;
    }
    try { body = await res.json(); } catch (e) { body = {error: `server answered ${res.status}`}; }
  } catch (e) {  // the server cannot be reached (yet)
    body = {error: "cannot reach the server; retrying ..."};
  }
  if (!res || !res.ok) {
    $("#model-info").textContent = body.error || `server answered ${res.status}`;
    setTimeout(loadModelInfo, 2000);
    return;
  }
  const m = body.models[0];
  $("#model-info").textContent = `model: ${m.name}${m.backbone ? " (" + m.backbone + ")" : ""}, ${m.source}`;
  if (!defaultsShown) {
    defaultsShown = true;
    $("#threshold").value = body.defaults.threshold;
    $("#refine").checked = Boolean(body.defaults.refine);
    rerenderAll();
  }
}

function showSliderValues() {
  $("#threshold-value").textContent = Number($("#threshold").value).toFixed(2);
  $("#opacity-value").textContent = Number($("#opacity").value).toFixed(2);
}

// The map is 8-bit (255 = in focus): a pixel is in focus when map / 255 >= threshold.
function cutoff() {
  return Math.ceil(Number($("#threshold").value) * 255 - 1e-9);
}

function fractionOf(photo) {
  const cut = cutoff();
  let n = 0;
  for (let v = cut; v < 256; v++) n += photo.hist[v];
  return n / photo.total;
}

function addFiles(files) {
  for (const file of files) {
    const card = $("#card-template").content.firstElementChild.cloneNode(true);
    const photo = {card, file, name: file.name || "photo"};
    card.querySelector(".name").textContent = photo.name;
    card.querySelector("canvas").addEventListener("click", () => card.classList.toggle("wide"));
    card.querySelector(".download-mask").addEventListener("click", (e) => { e.preventDefault(); downloadMask(photo); });
    $("#grid").appendChild(card);
    photos.push(photo);
    waiting.push(photo);
  }
  updateSummary();
  pump();
}

function pump() {
  while (running < PARALLEL_UPLOADS && waiting.length) {
    const photo = waiting.shift();
    running++;
    process(photo).finally(() => { running--; pump(); });
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function requestMap(photo) {
  for (let attempt = 0; ; attempt++) {
    const form = new FormData();
    form.append("file", photo.file, photo.name);
    const refine = $("#refine").checked;
    photo.card.dataset.refine = String(refine);
    const res = await fetch(`/v1/predict?include=prob&refine=${refine}`,
                            {method: "POST", body: form, headers: apiHeaders()});
    if (res.status === 503 && attempt < MAX_RETRIES) {
      const wait = Number(res.headers.get("Retry-After") || "1");
      setStatus(photo, `server busy, retrying in ${wait} s ...`);
      await sleep(wait * 1000);
      continue;
    }
    let body;
    try { body = await res.json(); } catch (e) { body = {error: `server answered ${res.status}`}; }
    if (!res.ok) throw new Error(body.error || `server answered ${res.status}`);
    return body;
  }
}

function setStatus(photo, text) {
  photo.card.querySelector(".status").textContent = text;
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the browser cannot decode this image"));
    img.src = url;
  });
}

function pixels(source, w, h) {
  const c = document.createElement("canvas");
  c.width = w; c.height = h;
  const ctx = c.getContext("2d", {willReadFrequently: true});
  ctx.drawImage(source, 0, 0, w, h);
  return ctx.getImageData(0, 0, w, h).data;
}

async function process(photo) {
  setStatus(photo, "predicting ...");
  try {
    const result = await requestMap(photo);
    photo.width = result.width; photo.height = result.height;
    photo.mapUrl = result.images.prob;
    const mapImg = await loadImage(photo.mapUrl);
    const full = pixels(mapImg, photo.width, photo.height);
    photo.hist = new Float64Array(256);
    for (let i = 0; i < full.length; i += 4) photo.hist[full[i]]++;
    photo.total = photo.width * photo.height;
    const scale = Math.min(1, DISPLAY_MAX_SIDE / Math.max(photo.width, photo.height));
    photo.dw = Math.max(1, Math.round(photo.width * scale));
    photo.dh = Math.max(1, Math.round(photo.height * scale));
    photo.map = pixels(mapImg, photo.dw, photo.dh);
    try {
      const bitmap = await createImageBitmap(photo.file, {imageOrientation: "from-image"});
      photo.original = pixels(bitmap, photo.dw, photo.dh);
    } catch (e) {
      photo.original = photo.map;   // a format the browser cannot show: the map stands in for the photo
    }
    const stem = photo.name.replace(/\.[^.]*$/, "");
    const mapLink = photo.card.querySelector(".download-map");
    mapLink.href = photo.mapUrl;
    mapLink.download = `${stem}_prob.png`;
    photo.card.querySelector(".downloads").hidden = false;
    setStatus(photo, `${photo.width}x${photo.height}`);
    photo.card.dataset.state = "done";
    render(photo);
    if (photo.card.dataset.refine !== String($("#refine").checked)) {   // the box changed while it ran
      photo.card.dataset.state = "pending";
      waiting.push(photo);
    }
  } catch (e) {
    photo.error = e.message;
    photo.card.dataset.state = "error";
    setStatus(photo, e.message);
  }
  sortGrid();
  updateSummary();
}

function render(photo) {
  const cut = cutoff(), alpha = Number($("#opacity").value);
  const {dw, dh, map, original} = photo;
  const canvas = photo.card.querySelector("canvas");
  canvas.width = dw; canvas.height = dh;
  const ctx = canvas.getContext("2d");
  const out = ctx.createImageData(dw, dh);
  const o = out.data;
  for (let i = 0; i < map.length; i += 4) {
    if (map[i] >= cut) {
      o[i] = original[i]; o[i + 1] = original[i + 1]; o[i + 2] = original[i + 2];
    } else {
      for (let c = 0; c < 3; c++) {
        const dimmed = original[i + c] * DIM + TINT[c] * (1 - DIM);
        o[i + c] = original[i + c] * (1 - alpha) + dimmed * alpha;
      }
    }
    o[i + 3] = 255;
  }
  drawBoundary(o, map, dw, dh, cut);
  ctx.putImageData(out, 0, 0);
  const f = fractionOf(photo);
  photo.fraction = f;
  photo.card.dataset.fraction = f.toFixed(6);
  photo.card.querySelector(".fraction").textContent = `${(100 * f).toFixed(1)} % in focus`;
}

function drawBoundary(o, map, w, h, cut) {
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = 4 * (y * w + x), inside = map[i] >= cut;
      const right = x + 1 < w && (map[i + 4] >= cut) !== inside;
      const below = y + 1 < h && (map[i + 4 * w] >= cut) !== inside;
      if (right || below) { o[i] = BOUNDARY[0]; o[i + 1] = BOUNDARY[1]; o[i + 2] = BOUNDARY[2]; }
    }
  }
}

async function downloadMask(photo) {
  if (!photo.mapUrl) return;
  const cut = cutoff();
  const mapImg = await loadImage(photo.mapUrl);
  const c = document.createElement("canvas");
  c.width = photo.width; c.height = photo.height;
  const ctx = c.getContext("2d");
  ctx.drawImage(mapImg, 0, 0);
  const img = ctx.getImageData(0, 0, c.width, c.height), d = img.data;
  for (let i = 0; i < d.length; i += 4) {
    const v = d[i] >= cut ? 255 : 0;
    d[i] = d[i + 1] = d[i + 2] = v; d[i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  c.toBlob((blob) => {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `${photo.name.replace(/\.[^.]*$/, "")}_mask.png`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }, "image/png");
}

// A culling aid: the sharpest photos first; waiting and failed ones at the end.
function sortGrid() {
  const rank = (p) => (p.card.dataset.state === "done" ? p.fraction : -1);
  const sorted = [...photos].sort((a, b) => rank(b) - rank(a));
  for (const p of sorted) $("#grid").appendChild(p.card);
}

function updateSummary() {
  const done = photos.filter((p) => p.card.dataset.state === "done").length;
  const failed = photos.filter((p) => p.card.dataset.state === "error").length;
  $("#summary").textContent = photos.length
    ? `${done} of ${photos.length} photo(s) done${failed ? `, ${failed} failed` : ""}; sorted by in-focus fraction`
    : "No photos yet.";
}

// Every photo predicted again (the Refine box changes the maps themselves), or only those that failed (a new
// API key).
function requestAgain(failedOnly = false) {
  for (const p of photos) {
    const state = p.card.dataset.state;
    if ((state === "done" && !failedOnly) || state === "error") {
      p.card.dataset.state = "pending";
      p.error = undefined;
      waiting.push(p);
    }
  }
  updateSummary();
  pump();
}

function rerenderAll() {
  showSliderValues();
  for (const p of photos) if (p.card.dataset.state === "done") render(p);
  sortGrid();
}

function setUp() {
  $("#file-input").addEventListener("change", (e) => { addFiles(e.target.files); e.target.value = ""; });
  const zone = $("#drop-zone");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); addFiles(e.dataTransfer.files); });
  $("#threshold").addEventListener("input", rerenderAll);
  $("#opacity").addEventListener("input", rerenderAll);
  $("#refine").addEventListener("change", () => requestAgain());
  $("#api-key").addEventListener("change", () => { loadModelInfo(); requestAgain(true); });
  showSliderValues();
  loadModelInfo();
}

setUp();
