// WebRTC helpers shared by the webcam page (app.js) and the OBS view (obs.js).
"use strict";

// The server answers one complete offer (no trickle ICE): wait until every candidate is in it,
// or send what there is after 5 s.
function waitForIceGathering(connection) {
  if (connection.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (connection.iceGatheringState === "complete") {
        connection.removeEventListener("icegatheringstatechange", done);
        resolve();
      }
    };
    connection.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 5000);
  });
}

// The ICE servers for a new connection, asked of the server each time: the TURN credentials it
// mints expire (RAIN_TURN_TTL), and a page or an OBS source stays open for hours or days. If the
// server cannot be asked, `fallback`.
function fetchIceServers(fallback) {
  return fetch("/api/config")
    .then((response) => (response.ok ? response.json() : Promise.reject(new Error(`${response.status}`))))
    .then((config) => config.ice_servers || [])
    .catch(() => fallback);
}

// --- WHEP: watching a session by its view link ---------------------------------------
// The OBS view plays a session this way, and the webcam page a WHIP session it controls.

// A receive-only connection: the avatar, and (`audio`) the session's delayed voice, if any;
// `onTrack(track)` gets each track received.
function createWhepConnection(iceServers, onTrack, { audio = true } = {}) {
  const connection = new RTCPeerConnection({ iceServers });
  connection.addTransceiver("video", { direction: "recvonly" });
  if (audio) connection.addTransceiver("audio", { direction: "recvonly" });
  connection.addEventListener("track", (event) => onTrack(event.track));
  return connection;
}

// One SDP exchange with POST `url` (/whep/{view_id}?token=...) -> the viewer's resource (its
// Location), which `leaveWhep` DELETEs; a refusal is an Error "status detail".
function negotiateWhep(connection, url) {
  return connection.createOffer()
    .then((offer) => connection.setLocalDescription(offer))
    .then(() => waitForIceGathering(connection))
    .then(() => fetch(url, {
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
      const resource = response.headers.get("Location");
      return connection.setRemoteDescription({ type: "answer", sdp: text }).then(
        () => resource,
        (error) => { leaveWhep(resource); throw error; },
      );
    }));
}

// Leave: the server frees the viewer at once (also while the page unloads).
function leaveWhep(resource) {
  if (resource) fetch(resource, { method: "DELETE", keepalive: true }).catch(() => null);
}
