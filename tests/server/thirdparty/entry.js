// The third-party WHIP client and WHEP player, bundled by esbuild into one script for the test pages
// (both packages import node-style modules such as "events", which a browser cannot load as they are).
export { WHIPClient } from "@eyevinn/whip-web-client";
export { WebRTCPlayer } from "@eyevinn/webrtc-player";
