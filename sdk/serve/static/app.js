// npcface demo page: plain JS, no build step. Talks to the /v1 API of the server that serves it.
"use strict";

const $ = (id) => document.getElementById(id);
const keyInput = $("api-key");
keyInput.value = localStorage.getItem("npcface-key") || "";
keyInput.addEventListener("change", () => {
  localStorage.setItem("npcface-key", keyInput.value);
  loadGalleries();
});

function headers() {
  const key = keyInput.value.trim();
  return key ? { Authorization: "Bearer " + key } : {};
}

async function api(method, path, body) {
  const r = await fetch(path, { method, headers: headers(), body });
  const data = await r.json().catch(() => ({ error: "bad_response", message: "HTTP " + r.status }));
  if (!r.ok) throw new Error(data.message || data.error || "HTTP " + r.status);
  return data;
}

// Draw an image file on a canvas with face boxes (box: x1, y1, x2, y2 in image pixels).
// False when the browser cannot show the file (not an image, or a format it does not decode:
// the server may still read it, and its answer says so); the canvas is cleared then.
async function draw(canvas, file, faces, labels) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch (err) {
    canvas.width = 0;
    canvas.height = 0;
    canvas.parentElement.classList.remove("has-image");
    return false;
  }
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  const lw = Math.max(2, Math.round(bitmap.width / 200));
  ctx.lineWidth = lw;
  (faces || []).forEach((f, i) => {
    const [x1, y1, x2, y2] = f.box;
    const color = labels && labels[i] ? "#19c37d" : "#ffcc00";
    ctx.strokeStyle = color;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    ctx.fillStyle = color;
    for (const [x, y] of f.landmarks) ctx.fillRect(x - lw, y - lw, 2 * lw, 2 * lw);
    if (labels && labels[i]) {
      const size = Math.max(14, lw * 7);
      ctx.font = `${size}px system-ui, sans-serif`;
      const y = Math.max(y1 - size - 6, 0);
      ctx.fillStyle = "rgba(0, 0, 0, 0.7)";
      ctx.fillRect(x1 - lw / 2, y, ctx.measureText(labels[i]).width + 8, size + 6);
      ctx.fillStyle = "#fff";
      ctx.fillText(labels[i], x1 + 4, y + size);
    }
  });
  canvas.parentElement.classList.add("has-image");
  return true;
}

function showError(el, message) {
  el.className = "result error";
  el.removeAttribute("data-verified");
  el.textContent = message;
}

function dropZone(zone, onFile) {
  const input = zone.querySelector("input");
  input.addEventListener("change", () => input.files[0] && onFile(input.files[0]));
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const file = e.dataTransfer.files[0];
    if (file) onFile(file);
  });
}

// ---- verify
const pair = { 1: null, 2: null };
let verifying = 0; // answers to older requests are dropped
for (const slot of [1, 2]) {
  dropZone($("drop" + slot), async (file) => {
    const out = $("verify-result");
    verifying += 1; // any verdict on screen belongs to the previous photos: clear it now
    out.className = "result";
    out.removeAttribute("data-verified");
    out.textContent = "";
    pair[slot] = file;
    const shown = await draw($("canvas" + slot), file, []);
    if (pair[1] && pair[2]) verify();
    else if (!shown) out.textContent = `${file.name}: no preview; the server will check it`;
  });
}

async function verify() {
  const out = $("verify-result");
  const mine = ++verifying;
  out.className = "result";
  out.removeAttribute("data-verified");
  out.textContent = "Comparing…";
  const form = new FormData();
  form.append("image1", pair[1], pair[1].name);
  form.append("image2", pair[2], pair[2].name);
  try {
    const r = await api("POST", "/v1/verify", form);
    if (mine !== verifying) return;
    await draw($("canvas1"), pair[1], [r.face1]);
    await draw($("canvas2"), pair[2], [r.face2]);
    out.className = "result " + (r.verified ? "same" : "different");
    out.dataset.verified = String(r.verified);
    const far = r.far ? `, calibrated at FAR ${r.far}` : "";
    out.textContent = `${r.verified ? "Same person" : "Different people"}: similarity ` +
      `${r.similarity.toFixed(3)} (threshold ${r.threshold.toFixed(3)}${far}, model ${r.model})`;
  } catch (err) {
    if (mine === verifying) showError(out, err.message || String(err));
  }
}

// ---- identify
async function loadGalleries() {
  const select = $("gallery");
  try {
    const { galleries } = await api("GET", "/v1/galleries");
    select.innerHTML = "";
    for (const name of galleries) select.add(new Option(name, name));
    if (!galleries.length) select.add(new Option("(no galleries yet)", ""));
  } catch (err) {
    select.innerHTML = "";
    select.add(new Option(err.message, ""));
  }
}

function identifyError(out, message) {
  out.innerHTML = "";
  const li = document.createElement("li");
  li.className = "error";
  li.textContent = message;
  out.appendChild(li);
}

dropZone($("drop3"), async (file) => {
  const out = $("identify-result");
  out.innerHTML = "<li>Searching…</li>";
  await draw($("canvas3"), file, []);
  const gallery = $("gallery").value;
  if (!gallery) { identifyError(out, "Choose a gallery first."); return; }
  const form = new FormData();
  form.append("image", file, file.name);
  form.append("k", "3");
  form.append("all_faces", "true");
  if ($("far").value) form.append("far", $("far").value);
  try {
    const r = await api("POST", `/v1/galleries/${encodeURIComponent(gallery)}/identify`, form);
    const labels = r.faces.map((f) => (f.matches[0] ? f.matches[0].identity : ""));
    await draw($("canvas3"), file, r.faces.map((f) => f.face), labels);
    out.innerHTML = "";
    r.faces.forEach((f, i) => {
      const li = document.createElement("li");
      li.textContent = f.matches.length
        ? `Face ${i + 1}: ` + f.matches.map((m) => `${m.identity} (${m.similarity.toFixed(3)})`).join(", ")
        : `Face ${i + 1}: nobody enrolled` + (r.threshold ? ` above ${r.threshold.toFixed(3)}` : "");
      out.appendChild(li);
    });
  } catch (err) {
    identifyError(out, err.message || String(err));
  }
});

api("GET", "/v1/model")
  .then((m) => { $("model").textContent = `model ${m.name}, ${m.embedding_size}-d`; })
  .catch(() => {});
loadGalleries();
