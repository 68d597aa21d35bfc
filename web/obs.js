// The OBS view: receive-only, over WHEP, no UI. It reconnects by itself whenever the stream
// drops, stalls or the page is reloaded. State goes to <body data-state> and the console only:
// anything drawn here would end up in the broadcast (except a bad link's message: the link
// must be fixed anyway).
//
// &alpha=key|matte makes the background transparent, composited with WebGL on a canvas:
// key: the page keys out a colour (&key=RRGGBB, default the character's background colour
// from GET /api/views/{id}) with &tolerance= and &spill= (0 to 1); matte: the server sends
// the matte beside the picture in one frame twice as wide (packed alpha).
"use strict";

const video = document.getElementById("video");
const voice = new Audio();
const canvas = document.getElementById("canvas");
const query = new URLSearchParams(location.search);
// The view id, not the session id: this link may be seen by others and must only watch.
const viewId = decodeURIComponent(location.pathname.split("/").filter(Boolean)[1] || "");
const token = query.get("token") || "";
const RETRY_MS = 2000;
const STALL_MS = 10000;
const KEY_REFRESH_MS = 5000;  // a new character brings a new background colour
// Key defaults; the server's matte ramps over the same colour distances (server/media/alpha.py).
const KEY_DEFAULTS = { tolerance: 0.1, spill: 0.5 };
const KEY_SOFTNESS = 0.1;

let iceServers = [];
let pc = null;
let resource = null;      // the WHEP viewer resource (Location), DELETEd when we leave
let retryTimer = null;
let lastFrames = 0;
let lastProgress = 0;
let whepQuery = "";

function status(state, detail) {
  document.body.dataset.state = state;
  document.body.dataset.detail = detail || "";
  if (detail) console.warn(`rain-avatar OBS view: ${state}: ${detail}`);
}

function sizeVideo() {
  const width = Number(query.get("w"));
  const height = Number(query.get("h"));
  if (width > 0 && height > 0) {
    [video, canvas].forEach((element) => {
      element.style.width = `${width}px`;
      element.style.height = `${height}px`;
    });
  }
}

// --- transparency -------------------------------------------------------------------

function quoted(value) {
  return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value);
}

function unitParameter(name) {
  const text = query.get(name);
  if (text === null) return KEY_DEFAULTS[name];
  const value = Number(text);
  if (text.trim() === "" || !Number.isFinite(value) || value < 0 || value > 1) {
    throw new Error(`${name} must be a number from 0 to 1, got ${quoted(text)}`);
  }
  return value;
}

// The link's transparency parameters, checked: {mode: "none"|"key"|"matte", key, tolerance, spill}.
function readAlphaOptions() {
  const mode = query.get("alpha") || "none";
  if (!["none", "key", "matte"].includes(mode)) {
    throw new Error(`alpha must be key or matte (or none), got ${quoted(mode)}`);
  }
  if (mode !== "key") {
    const stray = ["key", "tolerance", "spill"].filter((name) => query.has(name));
    if (stray.length) throw new Error(`${stray.join(", ")}: only with alpha=key`);
    return { mode };
  }
  let key = null;
  if (query.has("key")) {
    const text = query.get("key");
    if (!/^[0-9a-fA-F]{6}$/.test(text)) throw new Error(`key must be a colour as RRGGBB (hex), got ${quoted(text)}`);
    key = hexColour(text);
  }
  return { mode, key, tolerance: unitParameter("tolerance"), spill: unitParameter("spill") };
}

function hexColour(text) {
  return [0, 2, 4].map((start) => parseInt(text.slice(start, start + 2), 16) / 255);
}

function showMessage(text) {
  const message = document.getElementById("message");
  message.textContent = `rain-avatar OBS view: ${text}`;
  message.hidden = false;
  status("error", text);
}

const VERTEX_SHADER = `
attribute vec2 corner;
varying vec2 uv;
void main() {
  uv = vec2(corner.x, 1.0 - corner.y);
  gl_Position = vec4(corner * 2.0 - 1.0, 0.0, 1.0);
}`;

// packed: colour in the left half, the matte (grey) in the right half of the frame.
// key: alpha ramps up with the colour's distance from the key; spill pulls the key's tint out of
// the colours near it (along the key's chroma, keeping luma), which edges pick up from the background.
const FRAGMENT_SHADER = `
precision mediump float;
uniform sampler2D frame;
uniform bool packedAlpha;
uniform vec3 key;
uniform float tolerance;
uniform float softness;
uniform float spill;
uniform float halfTexel;
varying vec2 uv;
const vec3 LUMA = vec3(0.299, 0.587, 0.114);
void main() {
  if (packedAlpha) {
    float x = clamp(uv.x * 0.5, halfTexel, 0.5 - halfTexel);
    vec3 colour = texture2D(frame, vec2(x, uv.y)).rgb;
    float alpha = texture2D(frame, vec2(x + 0.5, uv.y)).g;
    gl_FragColor = vec4(colour, alpha);
    return;
  }
  vec3 colour = texture2D(frame, uv).rgb;
  float distanceToKey = distance(colour, key);
  float alpha = smoothstep(tolerance, tolerance + softness, distanceToKey);
  vec3 keyChroma = key - dot(key, LUMA);
  float chroma = length(keyChroma);
  if (chroma > 0.001) {
    vec3 direction = keyChroma / chroma;
    float tint = max(0.0, dot(colour - dot(colour, LUMA), direction));
    float near = 1.0 - smoothstep(tolerance, tolerance + 3.0 * softness, distanceToKey);
    colour -= direction * tint * spill * near;
  }
  gl_FragColor = vec4(clamp(colour, 0.0, 1.0), alpha);
}`;

function compileProgram(gl) {
  const program = gl.createProgram();
  [[gl.VERTEX_SHADER, VERTEX_SHADER], [gl.FRAGMENT_SHADER, FRAGMENT_SHADER]].forEach(([type, source]) => {
    const shader = gl.createShader(type);
    gl.shaderSource(shader, source);
    gl.compileShader(shader);
    if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(shader));
    gl.attachShader(program, shader);
  });
  gl.linkProgram(program);
  if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(program));
  return program;
}

// Draws the video onto the canvas with its background transparent, every animation frame.
// premultipliedAlpha: false, so the colours written are the colours shown over any scene.
function createCompositor(options) {
  const gl = canvas.getContext("webgl", { alpha: true, premultipliedAlpha: false, antialias: false });
  if (!gl) throw new Error("WebGL is not available in this browser (OBS: enable the browser source's hardware acceleration)");
  const program = compileProgram(gl);
  gl.useProgram(program);
  const corners = gl.createBuffer();
  gl.bindBuffer(gl.ARRAY_BUFFER, corners);
  gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([0, 0, 1, 0, 0, 1, 1, 1]), gl.STATIC_DRAW);
  const corner = gl.getAttribLocation(program, "corner");
  gl.enableVertexAttribArray(corner);
  gl.vertexAttribPointer(corner, 2, gl.FLOAT, false, 0, 0);
  const texture = gl.createTexture();
  gl.bindTexture(gl.TEXTURE_2D, texture);
  gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.LINEAR);
  gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.LINEAR);
  gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
  gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
  const uniform = (name) => gl.getUniformLocation(program, name);
  const packed = options.mode === "matte";
  gl.uniform1i(uniform("packedAlpha"), packed ? 1 : 0);
  gl.uniform1f(uniform("tolerance"), options.tolerance || 0);
  gl.uniform1f(uniform("softness"), KEY_SOFTNESS);
  gl.uniform1f(uniform("spill"), options.spill || 0);
  const compositor = { key: options.key };

  function draw() {
    requestAnimationFrame(draw);
    const ready = video.readyState >= video.HAVE_CURRENT_DATA && video.videoWidth > 0;
    const width = packed ? Math.floor(video.videoWidth / 2) : video.videoWidth;
    if (canvas.width !== width || canvas.height !== video.videoHeight) {
      canvas.width = width;
      canvas.height = video.videoHeight;
    }
    gl.viewport(0, 0, canvas.width, canvas.height);
    gl.clearColor(0, 0, 0, 0);
    gl.clear(gl.COLOR_BUFFER_BIT);
    if (!ready || (!packed && !compositor.key)) return;  // nothing, or no key yet: stay transparent
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGB, gl.RGB, gl.UNSIGNED_BYTE, video);
    gl.uniform1f(uniform("halfTexel"), 0.5 / video.videoWidth);
    if (!packed) gl.uniform3fv(uniform("key"), compositor.key);
    gl.drawArrays(gl.TRIANGLE_STRIP, 0, 4);
  }
  requestAnimationFrame(draw);
  return compositor;
}

// key mode without &key=: the colour of the character's background, kept up to date.
function followKeyColour(compositor) {
  const refresh = () => fetch(`/api/views/${encodeURIComponent(viewId)}?token=${encodeURIComponent(token)}`)
    .then((response) => (response.ok ? response.json() : null))
    .then((view) => { if (view) compositor.key = hexColour(view.key_colour); })
    .catch(() => null);  // the stream's own retries say what is wrong
  refresh();
  setInterval(refresh, KEY_REFRESH_MS);
}

function createPeerConnection() {
  const connection = createWhepConnection(iceServers, (track) => {
    if (track.kind === "audio") {
      playVoice(track);
      return;
    }
    video.srcObject = new MediaStream([track]);
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
  return negotiateWhep(pc, `/whep/${encodeURIComponent(viewId)}?${whepQuery}`).then((location) => {
    resource = location;
  });
}

function start() {
  retryTimer = null;
  status("connecting");
  // Fresh ICE servers for every connection: a source runs for days, TURN credentials expire.
  return fetchIceServers(iceServers)
    .then((servers) => {
      iceServers = servers;
      pc = createPeerConnection();
      lastFrames = 0;
      lastProgress = Date.now();
      return negotiate();
    })
    .catch((error) => reconnect(error.message));
}

function stop() {
  leaveWhep(resource);
  resource = null;
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

// Checks the link, sets up the compositor if asked, then connects (a bad link: its message only).
function main() {
  let options;
  try {
    options = readAlphaOptions();
    if (options.mode !== "none") {
      const compositor = createCompositor(options);
      video.hidden = true;
      canvas.hidden = false;
      if (options.mode === "key" && !options.key) followKeyColour(compositor);
    }
  } catch (error) {
    showMessage(error.message);
    return;
  }
  whepQuery = new URLSearchParams({ token, ...(options.mode === "matte" ? { alpha: "matte" } : {}) });
  sizeVideo();
  window.addEventListener("pagehide", stop);
  setInterval(watch, 2000);
  start();
}

main();
