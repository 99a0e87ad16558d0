// npcface demo page: stream monitors (uses $, api and headers from app.js). The preview
// (the monitor's MJPEG) and the events (its Server-Sent Events) are read with fetch and a
// ReadableStream, so they carry the API key in the Authorization header like every other
// request: an <img src> or an EventSource could only send it in the URL, where it would
// end up in logs and history.
"use strict";

let monitor = null;
let stopper = null; // AbortController of the preview and events readers
let lastEvent = 0;
let frameUrl = null;

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
  if (e.event === "started")
    return `track ${e.track} ${e.resumed ? "is back" : "started"} at ${when(e.time)}`;
  if (e.event === "identified")
    return `track ${e.track} is ${e.identity} (similarity ${e.similarity.toFixed(3)})`;
  return `track ${e.track} ended: ${e.identity || "unknown"}, ${when(e.start)}-${when(e.end)}`;
}

function showLine(text, cls, kind) {
  const li = document.createElement("li");
  li.className = cls;
  if (kind) li.dataset.event = kind;
  li.textContent = text;
  const list = $("stream-events");
  list.prepend(li);
  while (list.children.length > 50) list.lastChild.remove();
}

function showEvent(e) {
  showLine(say(e), "event " + e.event, e.event);
}

// Bytes of a fetch response as they arrive; ends when the response or `signal` does.
async function* chunks(path, signal, extra = {}) {
  const r = await fetch(path, { headers: { ...headers(), ...extra }, signal });
  if (!r.ok) {
    const data = await r.json().catch(() => ({}));
    const err = new Error(data.message || data.error || "HTTP " + r.status);
    err.status = r.status;
    throw err;
  }
  const reader = r.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      yield value;
    }
  } finally {
    reader.releaseLock();
  }
}

function concat(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

const HEAD_END = new Uint8Array([13, 10, 13, 10]); // \r\n\r\n

function indexOf(bytes, pattern, from = 0) {
  outer: for (let i = from; i <= bytes.length - pattern.length; i++) {
    for (let j = 0; j < pattern.length; j++) if (bytes[i + j] !== pattern[j]) continue outer;
    return i;
  }
  return -1;
}

// The MJPEG parts (multipart/x-mixed-replace, each with a Content-Length) into the <img>.
async function readPreview(id, signal) {
  const img = $("stream-preview");
  let buf = new Uint8Array(0);
  for await (const chunk of chunks(`/v1/streams/${id}/preview.mjpg`, signal)) {
    buf = concat(buf, chunk);
    for (;;) {
      const end = indexOf(buf, HEAD_END);
      if (end < 0) break;
      const head = new TextDecoder().decode(buf.subarray(0, end));
      const m = /content-length:\s*(\d+)/i.exec(head);
      if (!m) throw new Error("MJPEG part without Content-Length");
      const size = Number(m[1]);
      if (buf.length < end + 4 + size) break;
      const jpeg = buf.slice(end + 4, end + 4 + size);
      buf = buf.slice(end + 4 + size);
      if (frameUrl) URL.revokeObjectURL(frameUrl);
      frameUrl = URL.createObjectURL(new Blob([jpeg], { type: "image/jpeg" }));
      img.src = frameUrl;
    }
  }
}

// Server-Sent Events by their definition (id, event, data lines; a blank line ends one).
async function readEvents(id, signal) {
  const decoder = new TextDecoder();
  let text = "";
  let ev = {};
  const extra = lastEvent ? { "Last-Event-ID": String(lastEvent) } : {};
  for await (const chunk of chunks(`/v1/streams/${id}/events`, signal, extra)) {
    text += decoder.decode(chunk, { stream: true });
    let nl;
    while ((nl = text.search(/\r?\n/)) >= 0) {
      const line = text.slice(0, nl);
      text = text.slice(nl + (text[nl] === "\r" ? 2 : 1));
      if (line === "") {
        if (ev.data !== undefined && ev.event) showEvent(JSON.parse(ev.data));
        if (ev.id) lastEvent = Number(ev.id);
        ev = {};
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        ev[field] = field === "data" && ev.data !== undefined ? ev.data + "\n" + value : value;
      }
    }
  }
}

// Run `read` until stopped, again after 2 s when the connection drops (as EventSource does).
async function keepReading(read, id, signal) {
  while (!signal.aborted) {
    try {
      await read(id, signal);
    } catch (err) {
      if (signal.aborted) return;
      showLine(err.message, "error");
      if (err.status === 404) return; // the monitor is gone
    }
    await new Promise((done) => setTimeout(done, 2000));
  }
}

async function startStream() {
  const body = { source: $("stream-source").value.trim() };
  const gallery = $("stream-gallery").value;
  if (gallery) body.gallery = gallery;
  $("stream-events").innerHTML = "";
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
    showLine(err.message, "error");
    return;
  }
  lastEvent = 0;
  stopper = new AbortController();
  $("stream-preview").hidden = false;
  keepReading(readPreview, monitor, stopper.signal);
  keepReading(readEvents, monitor, stopper.signal);
  $("stream-start").disabled = true;
  $("stream-stop").disabled = false;
}

async function stopStream() {
  if (stopper) stopper.abort();
  stopper = null;
  if (monitor) await api("DELETE", `/v1/streams/${monitor}`).catch(() => {});
  monitor = null;
  const img = $("stream-preview");
  img.hidden = true;
  img.removeAttribute("src");
  if (frameUrl) URL.revokeObjectURL(frameUrl);
  frameUrl = null;
  $("stream-start").disabled = false;
  $("stream-stop").disabled = true;
}

keyInput.addEventListener("change", loadStreamGalleries); // a key may open the list
$("stream-start").addEventListener("click", startStream);
$("stream-stop").addEventListener("click", stopStream);
loadStreamGalleries();
