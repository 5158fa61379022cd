// The try-a-model page: plain JavaScript, talking only to this server's /v1 API.
"use strict";

const $ = (id) => document.getElementById(id);
const COLORS = ["#2f6fdf", "#e0702b", "#2b9e5a", "#b83fb0", "#c9a227", "#5a6b8c"];
const TIMELINE_CLASSES = 5; // lines drawn: the classes that reach the highest probability
const LONG_VIDEO_S = 6; // longer videos get a timeline
const TIMELINE_WINDOWS = 40; // about this many windows over the video

const video = $("video");
let timeline = null; // {duration, windows, segments, classes, shown}

async function init() {
  const answer = await fetch("/v1/models");
  const { models, limits } = await answer.json();
  const select = $("model");
  for (const m of models) select.add(new Option(m.name, m.name));
  $("model-label").hidden = models.length < 2;
  const describe = () => {
    const m = models.find((x) => x.name === select.value) || models[0];
    const clip = m.clip || {};
    $("model-info").textContent = `${m.name}: ${m.arch}, ${m.classes.length} classes, clips of ${clip.frames} frames`;
  };
  select.addEventListener("change", describe);
  describe();
  $("limits").textContent = `MP4, MKV/WebM, AVI or MPEG-TS up to ${Math.round(limits.max_upload_bytes / 1048576)} MiB ` +
    `and ${limits.max_duration_s} s.`;
}

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

// The duration the browser reads from the file, or null when it cannot play it.
function browserDuration() {
  return new Promise((resolve) => {
    const done = (value) => { clearTimeout(timer); resolve(value); };
    const timer = setTimeout(() => done(null), 3000);
    video.addEventListener("loadedmetadata", () => done(isFinite(video.duration) ? video.duration : null), { once: true });
    video.addEventListener("error", () => done(null), { once: true });
  });
}

async function predict(file) {
  $("result").hidden = false;
  $("bars").replaceChildren();
  $("timings").textContent = "";
  $("timeline-box").hidden = true;
  timeline = null;
  if (video.src) URL.revokeObjectURL(video.src);
  video.src = URL.createObjectURL(file);
  setStatus(`${file.name}: reading...`);
  const duration = await browserDuration();
  const params = new URLSearchParams({ top_k: "5", model: $("model").value });
  if (duration && duration > LONG_VIDEO_S) {
    const seconds = Math.max(1, Math.round((duration / TIMELINE_WINDOWS) * 2) / 2);
    params.set("window", String(seconds));
    params.set("stride", String(seconds / 2));
  }
  const form = new FormData();
  form.append("file", file, file.name);
  setStatus(`${file.name}: predicting...`);
  let body;
  try {
    const answer = await fetch(`/v1/predict?${params}`, { method: "POST", body: form });
    body = await answer.json();
    if (!answer.ok) {
      const why = body.message || (body.detail && JSON.stringify(body.detail)) || answer.statusText;
      setStatus(`${answer.status} ${body.error || ""}: ${why}`, true);
      return;
    }
  } catch (err) {
    setStatus(`the request failed: ${err}`, true);
    return;
  }
  showBars(body);
  const t = body.timings;
  $("timings").textContent = `decode ${t.decode_s.toFixed(2)} s, inference ${t.inference_s.toFixed(2)} s, ` +
    `total ${t.total_s.toFixed(2)} s (${body.model.name})`;
  setStatus(`${file.name}: ${body.video.width}x${body.video.height}, ${body.video.duration_s.toFixed(1)} s, ` +
    `${body.video.codec}`);
  if (body.timeline) showTimeline(body);
}

function showBars(body) {
  const items = body.top.map(({ class: name, probability }) => {
    const li = document.createElement("li");
    li.dataset.testid = "bar";
    const label = document.createElement("div");
    label.className = "name";
    const n = document.createElement("span");
    n.className = "class";
    n.textContent = name;
    const p = document.createElement("span");
    p.textContent = `${(probability * 100).toFixed(1)}%`;
    label.append(n, p);
    const track = document.createElement("div");
    track.className = "track";
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.width = `${(probability * 100).toFixed(2)}%`;
    track.append(fill);
    li.append(label, track);
    return li;
  });
  $("bars").replaceChildren(...items);
}

function showTimeline(body) {
  const { windows, segments } = body.timeline;
  const classes = body.classes;
  const peak = classes.map((_, c) => Math.max(...windows.map((w) => w.probabilities[c])));
  const shown = classes.map((_, c) => c).sort((a, b) => peak[b] - peak[a]).slice(0, TIMELINE_CLASSES);
  timeline = { duration: body.video.duration_s, windows, segments, classes, shown };
  $("legend").replaceChildren(...shown.map((c, k) => {
    const li = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.style.background = COLORS[k % COLORS.length];
    li.append(swatch, classes[c]);
    return li;
  }));
  $("timeline-box").hidden = false;
  drawTimeline();
}

function drawTimeline() {
  if (!timeline) return;
  const canvas = $("timeline");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, width, height);
  const band = 14, top = 6, plot = height - band - top - 4;
  const x = (s) => (s / timeline.duration) * width;
  const y = (p) => top + (1 - p) * plot;
  // Top-1 segments: a band at the bottom in the colour of their class (grey when not drawn).
  for (const s of timeline.segments) {
    const k = timeline.shown.indexOf(timeline.classes.indexOf(s.label));
    g.fillStyle = k >= 0 ? COLORS[k % COLORS.length] : "#98a2b3";
    g.globalAlpha = 0.8;
    g.fillRect(x(s.start_s), height - band, Math.max(1, x(s.end_s) - x(s.start_s)), band);
  }
  g.globalAlpha = 1;
  g.strokeStyle = "#eaecf0";
  g.lineWidth = 1;
  g.fillStyle = "#667085";
  g.font = "11px system-ui, sans-serif";
  for (const p of [0, 0.5, 1]) {
    g.beginPath(); g.moveTo(0, y(p)); g.lineTo(width, y(p)); g.stroke();
    g.fillText(`${p * 100}%`, 2, Math.max(11, y(p) - 2));
  }
  // One line per shown class, through the window centres.
  timeline.shown.forEach((c, k) => {
    g.strokeStyle = COLORS[k % COLORS.length];
    g.lineWidth = 2;
    g.beginPath();
    timeline.windows.forEach((w, i) => {
      const px = x((w.start_s + w.end_s) / 2), py = y(w.probabilities[c]);
      if (i === 0) g.moveTo(px, py); else g.lineTo(px, py);
    });
    g.stroke();
  });
  // The playback cursor.
  g.strokeStyle = "#101828";
  g.lineWidth = 2;
  g.beginPath();
  g.moveTo(x(video.currentTime || 0), 0);
  g.lineTo(x(video.currentTime || 0), height);
  g.stroke();
}

function follow() {
  drawTimeline();
  if (!video.paused) requestAnimationFrame(follow);
}

function seek(event) {
  if (!timeline) return;
  const box = $("timeline").getBoundingClientRect();
  const fraction = Math.min(1, Math.max(0, (event.clientX - box.left) / box.width));
  video.currentTime = fraction * timeline.duration;
  drawTimeline();
}

function setUpDrop() {
  const drop = $("drop");
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (e) => { if (e.dataTransfer.files.length) predict(e.dataTransfer.files[0]); });
  $("file").addEventListener("change", (e) => { if (e.target.files.length) predict(e.target.files[0]); });
}

video.addEventListener("play", follow);
video.addEventListener("seeked", drawTimeline);
video.addEventListener("timeupdate", drawTimeline);
$("timeline").addEventListener("click", seek);
window.addEventListener("resize", drawTimeline);
setUpDrop();
init().catch((err) => setStatus(`cannot reach the server: ${err}`, true));
