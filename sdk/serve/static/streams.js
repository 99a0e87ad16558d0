// npcface demo page: stream monitors (uses $ and api from app.js). The preview is the
// monitor's MJPEG and the events its Server-Sent Events; both are plain browser requests,
// which carry no API key: on a server with keys they need a read key-free setup, or poll
// /v1/streams/ID/recent and preview.jpg with the key instead.
"use strict";

let monitor = null;
let feed = null;

async function loadStreamGalleries() {
  const select = $("stream-gallery");
  select.innerHTML = "";
  select.add(new Option("(no gallery: tracks only)", ""));
  try {
    const { galleries } = await api("GET", "/v1/galleries");
    for (const name of galleries) select.add(new Option(name, name));
  } catch (err) { /* the identify section says what is wrong */ }
}

function say(e) {
  const when = (t) => (t ?? 0).toFixed(1) + " s";
  if (e.event === "started") return `track ${e.track} started at ${when(e.time)}`;
  if (e.event === "identified")
    return `track ${e.track} is ${e.identity} (similarity ${e.similarity.toFixed(3)})`;
  return `track ${e.track} ended: ${e.identity || "unknown"}, ${when(e.start)}-${when(e.end)}`;
}

function showEvent(e) {
  const li = document.createElement("li");
  li.className = "event " + e.event;
  li.dataset.event = e.event;
  li.textContent = say(e);
  const list = $("stream-events");
  list.prepend(li);
  while (list.children.length > 50) list.lastChild.remove();
}

async function startStream() {
  const body = { source: $("stream-source").value.trim() };
  const gallery = $("stream-gallery").value;
  if (gallery) body.gallery = gallery;
  const list = $("stream-events");
  list.innerHTML = "";
  try {
    const r = await fetch("/v1/streams", {
      method: "POST",
      headers: { ...headers(), "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const data = await r.json();
    if (!r.ok) throw new Error(data.message || data.error);
    monitor = data.id;
  } catch (err) {
    const li = document.createElement("li");
    li.className = "error";
    li.textContent = err.message;
    list.append(li);
    return;
  }
  const img = $("stream-preview");
  img.src = `/v1/streams/${monitor}/preview.mjpg`;
  img.hidden = false;
  feed = new EventSource(`/v1/streams/${monitor}/events`);
  for (const kind of ["started", "identified", "ended"])
    feed.addEventListener(kind, (m) => showEvent(JSON.parse(m.data)));
  $("stream-start").disabled = true;
  $("stream-stop").disabled = false;
}

async function stopStream() {
  if (feed) feed.close();
  if (monitor) await api("DELETE", `/v1/streams/${monitor}`).catch(() => {});
  monitor = null;
  $("stream-preview").hidden = true;
  $("stream-preview").removeAttribute("src");
  $("stream-start").disabled = false;
  $("stream-stop").disabled = true;
}

$("stream-start").addEventListener("click", startStream);
$("stream-stop").addEventListener("click", stopStream);
loadStreamGalleries();
