// Review face groups: plain JS, no build step. Talks to /v1/galleries/{name}/groups.
"use strict";

const $ = (id) => document.getElementById(id);
const keyInput = $("api-key");
keyInput.value = localStorage.getItem("npcface-key") || "";
keyInput.addEventListener("change", () => localStorage.setItem("npcface-key", keyInput.value));
$("gallery").value = new URLSearchParams(location.search).get("gallery") || "";

function headers(json) {
  const key = keyInput.value.trim();
  const h = key ? { Authorization: "Bearer " + key } : {};
  if (json) h["Content-Type"] = "application/json";
  return h;
}

function base() {
  return "/v1/galleries/" + encodeURIComponent($("gallery").value.trim()) + "/groups";
}

async function api(method, path, body) {
  const r = await fetch(base() + path, {
    method, headers: headers(body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await r.json().catch(() => ({ message: "HTTP " + r.status }));
  if (!r.ok) throw new Error(data.message || data.error || "HTTP " + r.status);
  return data;
}

function say(text, error) {
  const s = $("status");
  s.textContent = text;
  s.className = "result" + (error ? " error" : "");
}

// A face's thumbnail, fetched with the key (an <img src> cannot send one).
function faceImage(face) {
  const img = document.createElement("img");
  img.className = "face";
  img.dataset.face = face.id;
  img.dataset.source = face.source || "";
  img.title = "face " + face.id + (face.source ? ": " + face.source : "");
  img.alt = "face " + face.id;
  fetch(base() + "/faces/" + face.id + "/thumbnail", { headers: headers(false) })
    .then((r) => (r.ok ? r.blob() : null))
    .then((b) => { if (b) img.src = URL.createObjectURL(b); });
  img.addEventListener("click", () => img.classList.toggle("selected"));
  return img;
}

function groupRow(info, faces) {
  const row = document.createElement("div");
  row.className = "group";
  row.dataset.id = info.id;
  row.dataset.size = info.size;
  const head = document.createElement("div");
  head.className = "group-head";
  const tick = document.createElement("input");
  tick.type = "checkbox";
  tick.className = "pick";
  const title = document.createElement("strong");
  title.className = "title";
  title.textContent = (info.name || "group " + info.id) + " · " + info.size + " faces" +
    (info.confirmed ? " · confirmed" : "");
  const name = document.createElement("input");
  name.className = "name";
  name.placeholder = "name";
  name.value = info.name || "";
  const save = document.createElement("button");
  save.className = "save-name";
  save.textContent = "Name";
  save.addEventListener("click", () => act(async () => {
    const r = await api("POST", "/" + info.id + "/name", { name: name.value });
    return "named group " + info.id + " " + JSON.stringify(r.name) + " (" +
      r.templates.length + " templates in the gallery)";
  }));
  head.append(tick, title, name, save);
  const strip = document.createElement("div");
  strip.className = "faces";
  faces.forEach((f) => strip.appendChild(faceImage(f)));
  row.append(head, strip);
  return row;
}

async function load() {
  document.body.removeAttribute("data-loaded");
  const data = await api("GET", "");
  const rows = await Promise.all(data.groups.map(async (g) => {
    const full = await api("GET", "/" + g.id);
    return groupRow(full, full.faces);
  }));
  const box = $("groups");
  box.replaceChildren(...rows);
  order();
  $("ungrouped").replaceChildren(...data.ungrouped.map(faceImage));
  document.body.dataset.loaded = String(data.groups.length);
}

function order() {
  const dir = $("order").value === "asc" ? 1 : -1;
  const box = $("groups");
  const rows = Array.from(box.children);
  rows.sort((a, b) => dir * (a.dataset.size - b.dataset.size) || a.dataset.id - b.dataset.id);
  rows.forEach((r) => box.appendChild(r));
}

async function act(fn) {
  try {
    const text = await fn();
    await load();
    say(text, false);
  } catch (e) {
    say(e.message, true);
  }
}

$("merge").addEventListener("click", () => act(async () => {
  const ids = Array.from(document.querySelectorAll(".group .pick:checked"))
    .map((t) => Number(t.closest(".group").dataset.id));
  if (ids.length < 2) throw new Error("tick two or more groups to merge");
  for (const other of ids.slice(1)) await api("POST", "/" + ids[0] + "/merge", { other });
  return "merged groups " + ids.join(", ") + " into " + ids[0];
}));

$("split").addEventListener("click", () => act(async () => {
  const picked = Array.from(document.querySelectorAll("#groups img.face.selected"));
  const groups = new Set(picked.map((i) => i.closest(".group").dataset.id));
  if (picked.length === 0 || groups.size !== 1) throw new Error("select faces of one group");
  const gid = [...groups][0];
  const r = await api("POST", "/" + gid + "/split", { faces: picked.map((i) => Number(i.dataset.face)) });
  return "split " + picked.length + " faces off group " + gid + " into group " + r.new.id;
}));

$("recluster").addEventListener("click", () => act(async () => {
  const r = await api("POST", "/recluster");
  return "reclustered: " + r.summary.groups + " groups";
}));
$("order").addEventListener("change", order);
$("reload").addEventListener("click", () => act(async () => "shown"));
if ($("gallery").value) act(async () => "");
