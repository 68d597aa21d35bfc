// What tests/server/thirdparty does with the third-party libraries (window.thirdparty): publish the
// fake camera with the WHIP client, play a WHEP link with the player, and count the frames the
// player's <video> presents. The test calls these functions through page.evaluate.
"use strict";

let client = null; // the WHIP client publishing this page's camera
let player = null; // the WebRTCPlayer playing into <video id="video">
// Every frame the player presents: its size, and its mean absolute difference (0-255) from the
// frame before, sampled at 32x32.
const presented = { count: 0, width: 0, height: 0, differences: [] };

// Publish camera and microphone to `endpoint` with the bearer `token`, as the library's README
// does; resolves with the resource URL it keeps and the Link header values of the 201 answer.
async function publish(endpoint, token) {
  const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
  document.getElementById("camera").srcObject = stream;
  // No ICE servers: the library's default is a public STUN server, which a test must not call.
  client = new thirdparty.WHIPClient({ endpoint, opts: { authkey: token, iceServers: [] } });
  await client.ingest(stream);
  return { resource: await client.getResourceUrl(), links: await client.getResourceExtensions() };
}

// Publish with Medooze's client (`whip-whep`): the offer goes before any candidate is gathered, and
// each candidate follows by PATCH (trickle ICE); resolves with the resource URL.
async function publishTrickling(endpoint, token) {
  const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
  const pc = new RTCPeerConnection({ iceServers: [] });
  for (const track of stream.getTracks()) {
    pc.addTransceiver(track, { direction: "sendonly" });
  }
  client = new thirdparty.TricklingWHIPClient();
  await client.publish(pc, endpoint, token);
  return client.resourceURL.href;
}

// Medooze's client's end: its peer connection closed, then DELETE on its resource.
async function unpublishTrickling() {
  await client.stop();
}

// The library's own end of a publication: DELETE on its resource, then its peer connection closed.
async function unpublish() {
  await client.destroy();
}

// Play the WHEP endpoint `url` (the view link, its token in the query), and count what is presented.
function play(url) {
  const video = document.getElementById("video");
  player = new thirdparty.WebRTCPlayer({ video, type: "whep", iceServers: [] });
  player.load(new URL(url));
  countFrames(video);
}

function countFrames(video) {
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = 32;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  let previous = null;
  const sample = () => {
    context.drawImage(video, 0, 0, 32, 32);
    const pixels = context.getImageData(0, 0, 32, 32).data;
    if (previous !== null) {
      let difference = 0;
      for (let i = 0; i < pixels.length; i += 4) {
        difference += Math.abs(pixels[i] - previous[i]) + Math.abs(pixels[i + 1] - previous[i + 1])
          + Math.abs(pixels[i + 2] - previous[i + 2]);
      }
      presented.differences.push(difference / (32 * 32 * 3));
    }
    previous = pixels;
    presented.count += 1;
    presented.width = video.videoWidth;
    presented.height = video.videoHeight;
    video.requestVideoFrameCallback(sample);
  };
  video.requestVideoFrameCallback(sample);
}
