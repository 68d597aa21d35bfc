// The OBS view: receive-only, over WHEP, no UI. It reconnects by itself whenever the stream
// drops, stalls or the page is reloaded. State goes to <body data-state> and the console only:
// anything drawn here would end up in the broadcast.
"use strict";

const video = document.getElementById("video");
const voice = new Audio();
const query = new URLSearchParams(location.search);
const sessionId = decodeURIComponent(location.pathname.split("/").filter(Boolean)[1] || "");
const token = query.get("token") || "";
const RETRY_MS = 2000;
const STALL_MS = 10000;

let iceServers = [];
let pc = null;
let resource = null;      // the WHEP viewer resource (Location), DELETEd when we leave
let retryTimer = null;
let lastFrames = 0;
let lastProgress = 0;

function status(state, detail) {
  document.body.dataset.state = state;
  document.body.dataset.detail = detail || "";
  if (detail) console.warn(`rain-avatar OBS view: ${state}: ${detail}`);
}

function sizeVideo() {
  const width = Number(query.get("w"));
  const height = Number(query.get("h"));
  if (width > 0 && height > 0) {
    video.style.width = `${width}px`;
    video.style.height = `${height}px`;
  }
}

function createPeerConnection() {
  const connection = new RTCPeerConnection({ iceServers });
  connection.addTransceiver("video", { direction: "recvonly" });
  connection.addTransceiver("audio", { direction: "recvonly" });  // the session's delayed voice, if any
  connection.addEventListener("track", (event) => {
    if (event.track.kind === "audio") {
      playVoice(event.track);
      return;
    }
    video.srcObject = new MediaStream([event.track]);
    video.play().catch(() => null);  // autoplay muted: allowed; a refusal changes nothing
  });
  connection.addEventListener("connectionstatechange", () => {
    if (connection !== pc) return;
    status(connection.connectionState);
    if (["failed", "closed", "disconnected"].includes(connection.connectionState)) {
      reconnect(`connection ${connection.connectionState}`);
    }
  });
  return connection;
}

// The voice plays from its own element: the video stays muted, so that it autoplays anywhere. The
// browser keeps the two in sync (the server sends them as one stream); OBS plays it once the
// browser source's "Control audio via OBS" is ticked (or lets it through to the desktop).
function playVoice(track) {
  voice.srcObject = new MediaStream([track]);
  voice.play().catch((error) => console.warn(`rain-avatar OBS view: the voice cannot autoplay: ${error.message}`));
}

function negotiate() {
  const connection = pc;
  return connection.createOffer()
    .then((offer) => connection.setLocalDescription(offer))
    .then(() => waitForIceGathering(connection))
    .then(() => fetch(`/whep/${encodeURIComponent(sessionId)}?token=${encodeURIComponent(token)}`, {
      method: "POST",
      headers: { "Content-Type": "application/sdp" },
      body: connection.localDescription.sdp,
    }))
    .then((response) => response.text().then((text) => {
      if (response.status !== 201) {
        let detail = text;
        try { detail = JSON.parse(text).detail; } catch (error) { /* plain text */ }
        throw new Error(`${response.status} ${detail}`);
      }
      resource = response.headers.get("Location");
      return connection.setRemoteDescription({ type: "answer", sdp: text });
    }));
}

function start() {
  retryTimer = null;
  status("connecting");
  pc = createPeerConnection();
  lastFrames = 0;
  lastProgress = Date.now();
  return negotiate().catch((error) => reconnect(error.message));
}

function stop() {
  if (resource) {
    fetch(resource, { method: "DELETE", keepalive: true }).catch(() => null);
    resource = null;
  }
  if (pc) {
    const old = pc;
    pc = null;
    old.close();
  }
}

function reconnect(reason) {
  if (retryTimer) return;
  status("reconnecting", reason);
  stop();
  retryTimer = setTimeout(start, RETRY_MS);
}

// A stream that stops delivering frames (session ended, network gone) is dropped and retried.
function watch() {
  if (!pc || retryTimer) return;
  pc.getStats()
    .then((report) => {
      report.forEach((entry) => {
        if (entry.type === "inbound-rtp" && entry.kind === "video" && entry.framesDecoded > lastFrames) {
          lastFrames = entry.framesDecoded;
          lastProgress = Date.now();
          if (document.body.dataset.state !== "playing") status("playing");
        }
      });
      if (Date.now() - lastProgress > STALL_MS) reconnect("no frames");
    })
    .catch((error) => reconnect(error.message));
}

sizeVideo();
window.addEventListener("pagehide", stop);
setInterval(watch, 2000);
fetch("/api/config")
  .then((response) => (response.ok ? response.json() : { ice_servers: [] }))
  .then((config) => { iceServers = config.ice_servers || []; })
  .catch(() => null)
  .then(start);
