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
