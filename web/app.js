// The webcam page: camera in, avatar out, over one peer connection with the server.
// Signaling is one JSON exchange (POST /api/offer); parameters go over the "control" data channel.
// Or a session from OBS (WHIP), listed with the WHIP token: watched over WHEP, controlled over REST.
"use strict";

const $ = (id) => document.getElementById(id);

let config = null;        // GET /api/config
let pc = null;            // RTCPeerConnection
let control = null;       // the "control" data channel
let camera = null;        // MediaStream from getUserMedia
let session = null;       // {session_id, view_id, view_token, whip}: the page's own, or a WHIP session it watches
let viewer = null;        // a WHIP session's WHEP connection (the page watches the avatar there)
let viewerResource = null;
let referenceId = null;   // from POST /api/references
let paused = false;
let recording = false;     // a recording of this session is under way
const listedRecordings = new Set();
let statsTimer = null;
let controlId = 0;
const pendingControl = new Map();  // id -> {resolve, reject}
const params = {};                 // the parameter values the user changed
const MICROPHONE_KEY = "rain-avatar.microphone";  // localStorage: send the microphone (off unless chosen)
const WHIP_TOKEN_KEY = "rain-avatar.whip-token";  // sessionStorage: a secret, kept for this tab only
const WHIP_REFRESH_MS = 5000;

// --- messages ---------------------------------------------------------------------

function log(message) {
  const line = `${new Date().toLocaleTimeString()} ${message}\n`;
  $("log").textContent = line + $("log").textContent.slice(0, 4000);
}

function showError(error) {
  const message = error && error.message ? error.message : String(error);
  $("error").textContent = message;
  $("error").hidden = false;
  log(`error: ${message}`);
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function setState(text) {
  $("state").textContent = text;
  document.body.dataset.state = text;
}

// fetch + the server's {"detail": "..."} as the Error message
function api(method, path, body, headers) {
  const options = { method, headers: { ...headers } };
  if (body instanceof FormData) {
    options.body = body;
  } else if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  return fetch(path, options).then((response) => {
    if (response.status === 204) return null;
    return response.json().catch(() => ({})).then((data) => {
      if (!response.ok) {
        const retry = response.headers.get("Retry-After");
        const detail = typeof data.detail === "string" ? data.detail : response.statusText;
        const error = new Error(`${detail}${retry ? ` (retry in ${retry} s)` : ""}`);
        error.status = response.status;
        throw error;
      }
      return data;
    });
  });
}

// --- set-up -----------------------------------------------------------------------

function checkSecureContext() {
  if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    $("notice").textContent =
      "The camera needs a secure context: open this page over https:// or at http://localhost " +
      "(for a remote server, an SSH tunnel to localhost works).";
    $("notice").hidden = false;
    $("start").disabled = true;
    return false;
  }
  return true;
}

function listCameras() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return Promise.resolve();
  return navigator.mediaDevices.enumerateDevices().then((devices) => {
    const select = $("camera");
    const chosen = select.value;
    select.innerHTML = '<option value="">default camera</option>';
    devices.filter((d) => d.kind === "videoinput").forEach((device, index) => {
      const option = document.createElement("option");
      option.value = device.deviceId;
      option.textContent = device.label || `camera ${index + 1}`;
      select.appendChild(option);
    });
    select.value = chosen;
  });
}

function cameraError(error) {
  const what = $("microphone").checked ? "Camera or microphone" : "Camera";
  switch (error && error.name) {
    case "NotAllowedError":
    case "SecurityError":
      return new Error(`${what} access was denied. Allow it for this site in the browser (or untick Microphone), then press Start again.`);
    case "NotFoundError":
    case "OverconstrainedError":
      return new Error("No usable camera was found. Plug one in or pick another in the list.");
    case "NotReadableError":
      return new Error("The camera is busy in another application or tab.");
    default:
      return error;
  }
}

// --- parameters -------------------------------------------------------------------

function resolveRef(schema, node) {
  if (node && node.$ref) return schema.$defs[node.$ref.split("/").pop()];
  return node;
}

function setParam(path, value) {
  // The page's own choices are kept for its next offer; a WHIP session's values are its own.
  if (!watchingWhip()) {
    let target = params;
    path.slice(0, -1).forEach((key) => { target = target[key] = target[key] || {}; });
    target[path[path.length - 1]] = value;
  }
  const change = {};
  let node = change;
  path.slice(0, -1).forEach((key) => { node = node[key] = {}; });
  node[path[path.length - 1]] = value;
  return change;
}

let sendTimer = null;
let queuedChange = {};

function mergeChange(into, change) {
  Object.entries(change).forEach(([key, value]) => {
    if (value && typeof value === "object") mergeChange(into[key] = into[key] || {}, value);
    else into[key] = value;
  });
}

function queueParams(change) {
  if (!canControl()) return;  // sent with the next offer instead
  mergeChange(queuedChange, change);
  clearTimeout(sendTimer);
  sendTimer = setTimeout(() => {
    const change = queuedChange;
    queuedChange = {};
    sendControl("params", change)
      .then(() => log(`applied ${JSON.stringify(change)}`))
      .catch(showError);
  }, 150);
}

function addField(form, schema, path, node, value) {
  const name = path[path.length - 1];
  const row = document.createElement("label");
  row.className = "field";
  const label = document.createElement("span");
  label.textContent = name.replace(/_/g, " ");
  row.appendChild(label);
  let input;
  if (node.enum) {
    input = document.createElement("select");
    node.enum.forEach((option) => {
      const element = document.createElement("option");
      element.value = element.textContent = option;
      input.appendChild(element);
    });
    input.value = value;
  } else if (node.type === "boolean") {
    input = document.createElement("input");
    input.type = "checkbox";
    input.checked = Boolean(value);
  } else {
    input = document.createElement("input");
    input.type = "range";
    const min = node.minimum !== undefined ? node.minimum : node.exclusiveMinimum;
    const max = node.maximum !== undefined ? node.maximum : node.exclusiveMaximum;
    input.min = min;
    input.max = max;
    input.step = node.type === "integer" ? 1 : (max - min) / 200;
    input.value = value;
  }
  input.name = path.join(".");
  const shown = document.createElement("output");
  shown.textContent = input.type === "range" ? Number(value).toFixed(2) : "";
  input.addEventListener("input", () => {
    const v = input.type === "checkbox" ? input.checked : input.type === "range" ? Number(input.value) : input.value;
    if (input.type === "range") shown.textContent = v.toFixed(2);
    queueParams(setParam(path, v));
  });
  row.appendChild(input);
  row.appendChild(shown);
  form.appendChild(row);
}

function addFields(form, schema, node, values, path) {
  Object.entries(node.properties).forEach(([name, property]) => {
    const resolved = resolveRef(schema, property);
    if (resolved.properties) {
      const fieldset = document.createElement("fieldset");
      const legend = document.createElement("legend");
      legend.textContent = name;
      fieldset.appendChild(legend);
      addFields(fieldset, schema, resolved, values[name], path.concat(name));
      form.appendChild(fieldset);
    } else {
      addField(form, schema, path.concat(name), resolved, values[name]);
    }
  });
}

function buildParamsForm() {
  const form = $("params");
  form.innerHTML = "";
  addField(form, null, ["fps"], { type: "number", minimum: config.min_fps, maximum: config.max_fps }, config.params.fps);
  addFields(form, config.params_schema, config.params_schema, config.params, []);
}

// The form shows `values` (nested as the parameters are; what they leave out stays as it is).
function showParams(values) {
  $("params").querySelectorAll("input, select").forEach((input) => {
    const value = input.name.split(".").reduce((node, key) => (node == null ? undefined : node[key]), values);
    if (value === undefined || value === null) return;
    if (input.type === "checkbox") input.checked = Boolean(value);
    else input.value = value;
    if (input.type === "range") input.nextElementSibling.textContent = Number(value).toFixed(2);
  });
}

// --- control ----------------------------------------------------------------------
// Every control of the session goes through sendControl: over the page's control channel, or,
// for a WHIP session (it has no channel), the same message over REST (`POST .../control`). It
// resolves to the channel's reply: {params, paused, recording} (what the type gives).

function watchingWhip() {
  return Boolean(session && session.whip);
}

function canControl() {
  return watchingWhip() || Boolean(control && control.readyState === "open");
}

function sendControl(type, change) {
  if (!watchingWhip()) return sendOverChannel(type, change);
  const path = `/api/sessions/${encodeURIComponent(session.session_id)}/control`;
  return api("POST", path, change === undefined ? { type } : { type, params: change });
}

function sendOverChannel(type, change) {
  return new Promise((resolve, reject) => {
    if (!control || control.readyState !== "open") {
      reject(new Error("not connected"));
      return;
    }
    const id = ++controlId;
    pendingControl.set(id, { resolve, reject });
    control.send(JSON.stringify({ id, type, params: change }));
    setTimeout(() => {
      if (pendingControl.delete(id)) reject(new Error(`no answer to "${type}" from the server`));
    }, 5000);
  });
}

function onControlMessage(event) {
  let reply;
  try {
    reply = JSON.parse(event.data);
  } catch (error) {
    showError(new Error(`unreadable control reply: ${event.data}`));
    return;
  }
  // A notice of the server's own (no id): its replica is being taken out of service; the
  // stream goes on until `reply.seconds` have passed or Stop is pressed.
  if (reply.id === null && reply.type === "draining") {
    showError(new Error(reply.message));
    return;
  }
  const waiter = pendingControl.get(reply.id);
  if (!waiter) {
    if (!reply.ok) showError(new Error(reply.error));
    return;
  }
  pendingControl.delete(reply.id);
  if (reply.ok) waiter.resolve(reply);
  else waiter.reject(new Error(reply.error));
}

// --- reference --------------------------------------------------------------------

function uploadReference(file) {
  const preview = $("reference-preview");
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  const form = new FormData();
  form.append("file", file);
  return api("POST", "/api/references", form).then((created) => {
    referenceId = created.reference_id;
    log(`character uploaded (${created.width}x${created.height})`);
    if (session) {
      return api("PUT", `/api/sessions/${session.session_id}/reference`, { reference_id: referenceId })
        .then(() => log("character swapped"));
    }
    return null;
  });
}

// --- WebRTC -----------------------------------------------------------------------

function createPeerConnection(iceServers) {
  const connection = new RTCPeerConnection({ iceServers });
  connection.addEventListener("connectionstatechange", () => {
    setState(connection.connectionState);
    log(`connection ${connection.connectionState}`);
    if (connection.connectionState === "failed") {
      showError(new Error("The connection to the server failed (a firewall? a TURN server may be needed)."));
      stop();
    }
  });
  connection.addEventListener("track", (event) => {
    // The voice comes back delayed to match the avatar; not played here (you would hear yourself).
    if (event.track.kind === "audio") return;
    // First video section: the avatar; second: the driving image.
    const index = connection.getTransceivers().indexOf(event.transceiver);
    const video = index === 0 ? $("output") : $("driving");
    video.srcObject = new MediaStream([event.track]);
  });
  return connection;
}

function negotiate() {
  return pc.createOffer()
    .then((offer) => pc.setLocalDescription(offer))
    .then(() => waitForIceGathering(pc))
    .then(() => api("POST", "/api/offer", {
      sdp: pc.localDescription.sdp,
      type: pc.localDescription.type,
      reference_id: referenceId,
      params,
    }))
    .then((answer) => {
      session = { session_id: answer.session_id, view_id: answer.view_id, view_token: answer.view_token };
      return pc.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
    });
}

function start() {
  clearError();
  if (!checkSecureContext()) return Promise.resolve();
  $("start").disabled = true;
  setState("starting");
  const deviceId = $("camera").value;
  const video = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } };
  if (deviceId) video.deviceId = { exact: deviceId };
  // The browser's own echo cancellation and noise suppression suit a voice over a stream.
  const audio = $("microphone").checked;
  return navigator.mediaDevices.getUserMedia({ video, audio })
    .catch((error) => { throw cameraError(error); })
    .then((stream) => {
      camera = stream;
      $("webcam").srcObject = stream;
      listCameras().catch(showError);
      return fetchIceServers(config.ice_servers).then((iceServers) => [stream, iceServers]);
    })
    .then(([stream, iceServers]) => {
      if (camera !== stream) throw new Error("stopped while starting");
      pc = createPeerConnection(iceServers);
      pc.addTransceiver(stream.getVideoTracks()[0], { direction: "sendrecv", streams: [stream] });
      pc.addTransceiver("video", { direction: "recvonly" });
      // After the video sections: the server answers the first video section with the avatar.
      stream.getAudioTracks().forEach((track) => pc.addTransceiver(track, { direction: "sendrecv", streams: [stream] }));
      control = pc.createDataChannel("control");
      control.addEventListener("message", onControlMessage);
      control.addEventListener("open", () => log("control channel open"));
      return negotiate();
    })
    .then(() => {
      ["stop", "pause", "reset", "record", "copy-obs"].forEach((id) => { $(id).disabled = false; });
      $("microphone").disabled = true;
      $("obs-link").hidden = false;
      updateObsLink();
      statsTimer = setInterval(pollStats, 1000);
      showWhipSessions(whipListed);  // none to pick while this one runs
      log("session started");
    })
    .catch((error) => {
      showError(error);
      stop();
    });
}

function stop() {
  clearInterval(statsTimer);
  statsTimer = null;
  const ending = session;
  const wasRecording = recording;
  session = null;
  if (control) control.close();
  control = null;
  if (pc) pc.close();
  pc = null;
  if (viewer) viewer.close();
  viewer = null;
  leaveWhep(viewerResource);
  viewerResource = null;
  if (camera) camera.getTracks().forEach((track) => track.stop());
  camera = null;
  pendingControl.forEach((waiter) => waiter.reject(new Error("session stopped")));
  pendingControl.clear();
  ["output", "webcam", "driving"].forEach((id) => { $(id).srcObject = null; });
  $("overlay").textContent = "";
  ["stop", "pause", "reset", "record", "copy-obs"].forEach((id) => { $(id).disabled = true; });
  showRecordingButton(false);
  $("start").disabled = !window.isSecureContext;
  $("microphone").disabled = false;
  $("obs-link").hidden = true;
  updateObsLink();
  paused = false;
  $("pause").textContent = "Pause";
  setState("idle");
  showWhipSessions(whipListed);
  if (ending && ending.whip) {
    // Only this page leaves: the session goes on for OBS, which ends it. The form shows the page's own values.
    $("stop").textContent = "Stop";
    showParams(config.params);
    showParams(params);
    log("left the session from OBS");
    return Promise.resolve();
  }
  if (ending) {
    return api("DELETE", `/api/sessions/${ending.session_id}`)
      .catch(() => null)  // may already be gone
      // Ending the session finished its recording: list the file (kept a while after the session).
      .then(() => (wasRecording ? listRecordings(ending.session_id) : null));
  }
  return Promise.resolve();
}

// --- recording --------------------------------------------------------------------

function showRecordingButton(on) {
  recording = on;
  $("record").textContent = on ? "Stop recording" : "Record";
  $("record").classList.toggle("recording", on);
}

function toggleRecording() {
  return sendControl(recording ? "stop_recording" : "start_recording").then((reply) => showRecording(reply.recording));
}

function showRecording(rec) {
  showRecordingButton(rec.state === "recording");
  if (rec.state === "recording") log("recording");
  else addRecordingLink(rec, session.session_id);
}

function listRecordings(sessionId) {
  return api("GET", `/api/sessions/${sessionId}/recordings`)
    .then((listing) => listing.recordings.forEach((rec) => addRecordingLink(rec, sessionId)))
    .catch(showError);
}

// A download link per finished recording; the link carries the session id, its only key. It is
// made from the id this page knows (a control-channel reply comes from the replica that owns the
// session, which on a Ray cluster knows it by a shorter id).
function addRecordingLink(rec, sessionId) {
  if (rec.state === "recording" || listedRecordings.has(rec.recording_id)) return;
  listedRecordings.add(rec.recording_id);
  const item = document.createElement("li");
  if (rec.url) {
    const link = document.createElement("a");
    link.href = `/api/sessions/${encodeURIComponent(sessionId)}/recordings/${encodeURIComponent(rec.recording_id)}`;
    link.download = "";
    link.textContent = `${rec.started.replace("T", " ")}, ${rec.duration_s.toFixed(1)} s`;
    item.append(link);
  } else {
    item.textContent = "failed";
  }
  if (rec.stop_reason && rec.stop_reason !== "stopped") item.append(` (${rec.stop_reason})`);
  $("recordings").append(item);
  $("recordings-box").hidden = false;
  log(`recording ${rec.state}: ${rec.stop_reason}`);
}

// --- stats, OBS link --------------------------------------------------------------

function pollStats() {
  if (!session) return;
  api("GET", `/api/sessions/${session.session_id}/stats`)
    .then((stats) => {
      const latency = stats.latency_ms === null ? "-" : `${Math.round(stats.latency_ms)} ms`;
      const warming = stats.frames.sent === 0 ? `  warming up ${Math.round(stats.queue.warmup * 100)}%` : "";
      $("overlay").textContent =
        `${stats.fps.output.toFixed(1)} / ${stats.fps.target} fps  latency ${latency}\n` +
        `queue ${stats.queue.engine_pending} steps, ${stats.queue.output_backlog} frames  ` +
        `dropped ${stats.frames.dropped}${warming}${stats.paused ? "  PAUSED" : ""}` +
        (recording && stats.recording ? `  REC ${stats.recording.duration_s.toFixed(0)} s` : "") +
        latencyPartsText(stats.latency_parts_ms);
      updateBrowserParts();
      // A limit ends a recording on the server: show why, and its file.
      if (recording && stats.recording && stats.recording.state !== "recording") showRecording(stats.recording);
    })
    .catch((error) => {
      // 404: the server ended the session (its replica stopped, or it was reaped; OBS stopped streaming).
      const ended = watchingWhip() ? "The session from OBS ended." : "The stream ended on the server; press Start to begin again.";
      showError(error.status === 404 ? new Error(ended) : error);
      stop();
    });
}

// Where the time goes. The server's parts (its stats), and this browser's (its own WebRTC stats):
// the webcam's encoder, the network each way (half the round trip), the avatar's jitter buffer and
// decoder. Camera capture and display are not counted: no browser reports them.
let browserParts = null;

function latencyPartsText(parts) {
  if (!parts) return "";
  const ms = (value) => (value === null || value === undefined ? "-" : Math.round(value));
  let text = `\nlatency parts: camera ${ms(parts.camera)} · queue ${ms(parts.queue)} (${parts.queue_frames} frames) · ` +
    `call ${ms(parts.call)} · decode ${ms(parts.decode)} · pacing ${ms(parts.pacing)} · encoder ${ms(parts.encoder)} ms`;
  if (browserParts) {
    const b = browserParts;
    const total = b.encode + 2 * b.network + parts.server + (parts.encoder || 0) + b.buffer + b.decode;
    text += `\nglass to glass ~${ms(total)} ms: webcam encode ${ms(b.encode)} · network 2 x ${ms(b.network)} · ` +
      `server ${ms(parts.server + (parts.encoder || 0))} · jitter buffer ${ms(b.buffer)} · decode ${ms(b.decode)}`;
  }
  return text;
}

function updateBrowserParts() {
  if (!pc) return;
  const avatarMid = pc.getTransceivers()[0] && pc.getTransceivers()[0].mid;
  pc.getStats().then((report) => {
    const parts = { encode: 0, network: 0, buffer: 0, decode: 0 };
    report.forEach((s) => {
      if (s.type === "outbound-rtp" && s.kind === "video" && s.framesEncoded > 0) {
        parts.encode = (1000 * s.totalEncodeTime) / s.framesEncoded;
      } else if (s.type === "inbound-rtp" && s.kind === "video" && s.mid === avatarMid) {
        if (s.jitterBufferEmittedCount > 0) parts.buffer = (1000 * s.jitterBufferDelay) / s.jitterBufferEmittedCount;
        if (s.framesDecoded > 0) parts.decode = (1000 * s.totalDecodeTime) / s.framesDecoded;
      } else if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime !== undefined) {
        parts.network = (1000 * s.currentRoundTripTime) / 2;
      }
    });
    browserParts = parts;
  }).catch(() => { browserParts = null; });
}

// The link with the builder's transparency choice (the parameters obs.js reads).
function obsLink() {
  const query = new URLSearchParams({ token: session.view_token });
  const alpha = $("obs-alpha").value;
  if (alpha !== "none") query.set("alpha", alpha);
  if (alpha === "key") {
    if (!$("obs-key-auto").checked) query.set("key", $("obs-key").value.slice(1));
    query.set("tolerance", $("obs-tolerance").value);
    query.set("spill", $("obs-spill").value);
  }
  return `${location.origin}/obs/${encodeURIComponent(session.view_id)}?${query}`;
}

// The builder changed (or the session started or stopped): the link, and the preview over a
// checkerboard (reloaded a moment after the last change: each load is a new WHEP viewer).
let previewTimer = null;

function updateObsLink() {
  const alpha = $("obs-alpha").value;
  $("obs-key-options").hidden = alpha !== "key";
  $("obs-key").disabled = $("obs-key-auto").checked;
  clearTimeout(previewTimer);
  const frame = $("obs-preview-frame");
  if (!session || alpha === "none") {
    $("obs-preview").hidden = true;
    if (frame.src) frame.removeAttribute("src");
    if (session) $("obs-link").value = obsLink();
    return;
  }
  const link = obsLink();
  $("obs-link").value = link;
  $("obs-preview").hidden = false;
  previewTimer = setTimeout(() => { frame.src = link; }, 400);
}

function copyObsLink() {
  const link = obsLink();
  $("obs-link").value = link;
  if (!navigator.clipboard) {
    $("obs-link").select();
    return Promise.resolve(log("select the link and copy it"));
  }
  return navigator.clipboard.writeText(link).then(() => log("OBS link copied"));
}

// --- sessions from OBS (WHIP) -----------------------------------------------------
// OBS publishing over WHIP has no page of its own: the server lists the WHIP sessions, with the
// session ids that control them, to whoever holds the WHIP token (kept for this tab only). Picking
// one watches its avatar over WHEP, as the OBS view does, and points this page's controls at it.
// The server's log names a new session's link to this page: /#whip={view_id} picks it once listed.

let whipListed = null;  // the last list the server gave (null: none yet)
let whipWanted = null;  // the view id of /#whip=...

function whipHeaders() {
  const token = $("whip-token").value.trim();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

// `quiet`: refusals are not shown (the page's first look, before a token is entered).
function listWhipSessions(quiet) {
  return api("GET", "/api/whip/sessions", undefined, whipHeaders())
    .then((listing) => showWhipSessions(listing.sessions))
    .catch((error) => {
      if (!quiet) $("whip-message").textContent = error.message;
    });
}

function describeWhipSession(listed) {
  const viewers = `${listed.viewers} viewer${listed.viewers === 1 ? "" : "s"}`;
  return `from ${new Date(listed.started).toLocaleTimeString()}: ${listed.state}, camera ` +
    `${listed.fps.camera.toFixed(1)} fps, avatar ${listed.fps.output.toFixed(1)} / ${listed.fps.target} fps, ` +
    `${viewers}${listed.recording ? ", recording" : ""}${listed.paused ? ", paused" : ""}`;
}

function showWhipSessions(sessions) {
  if (!sessions) return;
  whipListed = sessions;
  $("whip-count").textContent = sessions.length ? `(${sessions.length})` : "";
  $("whip-message").textContent = sessions.length ? "" : "No session from OBS right now.";
  if (sessions.length) $("whip-box").open = true;
  const list = $("whip-sessions");
  list.textContent = "";
  sessions.forEach((listed) => {
    const watching = watchingWhip() && session.session_id === listed.session_id;
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.textContent = watching ? "Watching" : "Watch and control";
    button.disabled = watching || Boolean(pc);
    button.title = pc ? "Stop this page's own session first" : "";
    button.addEventListener("click", () => { watchWhipSession(listed); });
    item.append(button, ` ${describeWhipSession(listed)}`);
    list.append(item);
  });
  const wanted = whipWanted && sessions.find((listed) => listed.view_id === whipWanted);
  if (wanted && !session) {
    whipWanted = null;
    watchWhipSession(wanted);
  }
}

// Watch a listed WHIP session (WHEP, no audio: the voice is the streamer's own) and control it.
function watchWhipSession(listed) {
  clearError();
  if (pc) return Promise.resolve(showError(new Error("Stop this page's own session first.")));
  if (session) stop();
  const watched = { session_id: listed.session_id, view_id: listed.view_id, view_token: listed.view_token, whip: true };
  session = watched;
  setState("connecting");
  return fetchIceServers(config.ice_servers).then((iceServers) => {
    if (session !== watched) return null;  // left, or another picked, meanwhile
    return connectToWhipSession(listed, iceServers);
  });
}

function connectToWhipSession(listed, iceServers) {
  const connection = createWhepConnection(iceServers, (track) => {
    $("output").srcObject = new MediaStream([track]);
  }, { audio: false });
  viewer = connection;
  connection.addEventListener("connectionstatechange", () => {
    if (connection !== viewer) return;
    setState(connection.connectionState);
    log(`connection ${connection.connectionState}`);
    if (connection.connectionState === "failed") {
      showError(new Error("The connection to the server failed (a firewall? a TURN server may be needed)."));
      stop();
    }
  });
  const path = `/api/sessions/${encodeURIComponent(listed.session_id)}`;
  return negotiateWhep(connection, listed.links.whep)
    .then((resource) => {
      if (connection !== viewer) {  // left meanwhile
        leaveWhep(resource);
        return null;
      }
      viewerResource = resource;
      return api("GET", `${path}/stats`).then((stats) => {
        showParams(stats.params);
        showRecordingButton(Boolean(stats.recording && stats.recording.state === "recording"));
        ["stop", "pause", "reset", "record", "copy-obs"].forEach((id) => { $(id).disabled = false; });
        ["start", "microphone"].forEach((id) => { $(id).disabled = true; });
        paused = Boolean(stats.paused);
        $("pause").textContent = paused ? "Resume" : "Pause";
        $("stop").textContent = "Leave";
        $("obs-link").hidden = false;
        updateObsLink();
        statsTimer = setInterval(pollStats, 1000);
        listWhipSessions(true);  // now with this page among the viewers
        log("watching a session from OBS: its controls here go to it");
      });
    })
    .catch((error) => {
      showError(error);
      if (connection === viewer) stop();
    });
}

// -> whether the page's address named a session (then listed already).
function pickWhipFromLink() {
  const match = /^#whip=(.+)$/.exec(location.hash);
  if (!match) return false;
  whipWanted = decodeURIComponent(match[1]);
  history.replaceState(null, "", location.pathname + location.search);
  $("whip-box").open = true;
  if ($("whip-token").value) {
    listWhipSessions(false);
  } else {
    $("whip-message").textContent = "Enter the WHIP token to watch and control the session from OBS.";
    $("whip-token").focus();
    listWhipSessions(true);  // a loopback server without a token lists without one
  }
  return true;
}

// --- wiring -----------------------------------------------------------------------

$("start").addEventListener("click", () => { start(); });
$("stop").addEventListener("click", () => { stop(); });
$("pause").addEventListener("click", () => {
  sendControl(paused ? "resume" : "pause")
    .then((reply) => {
      paused = reply.paused;
      $("pause").textContent = paused ? "Resume" : "Pause";
    })
    .catch(showError);
});
$("reset").addEventListener("click", () => {
  sendControl("reset").then(() => log("engine reset")).catch(showError);
});
$("record").addEventListener("click", () => { toggleRecording().catch(showError); });
$("copy-obs").addEventListener("click", () => { copyObsLink().catch(showError); });
$("microphone").checked = localStorage.getItem(MICROPHONE_KEY) === "on";
$("microphone").addEventListener("change", () => {
  localStorage.setItem(MICROPHONE_KEY, $("microphone").checked ? "on" : "off");
});
["obs-alpha", "obs-key-auto", "obs-key", "obs-tolerance", "obs-spill"].forEach((id) => {
  $(id).addEventListener("input", updateObsLink);
});
$("reference-file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) uploadReference(file).catch(showError);
});
$("whip-token").value = sessionStorage.getItem(WHIP_TOKEN_KEY) || "";
$("whip-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("whip-token").value.trim();
  if (token) sessionStorage.setItem(WHIP_TOKEN_KEY, token);
  else sessionStorage.removeItem(WHIP_TOKEN_KEY);
  listWhipSessions(false);
});
$("whip-box").addEventListener("toggle", () => {
  if ($("whip-box").open && config) listWhipSessions(true);
});
window.addEventListener("hashchange", () => { if (config) pickWhipFromLink(); });
setInterval(() => {
  if ($("whip-box").open && config) listWhipSessions(true);
}, WHIP_REFRESH_MS);
window.addEventListener("pagehide", () => {
  // A WHIP session is OBS's to end: leaving it only leaves its viewer.
  leaveWhep(viewerResource);
  if (session && !session.whip) {
    fetch(`/api/sessions/${session.session_id}`, { method: "DELETE", keepalive: true }).catch(() => null);
  }
});

checkSecureContext();
api("GET", "/api/config")
  .then((loaded) => {
    config = loaded;
    buildParamsForm();
    log(`server: profile ${config.profile}, ${config.width}x${config.height}, first frame after ` +
        `${config.first_frame_latency_frames} frames`);
    if (!pickWhipFromLink()) listWhipSessions(true);
    return listCameras();
  })
  .catch(showError);
