// The third-party WHIP clients and WHEP player, bundled by esbuild into one script for the test pages
// (both packages import node-style modules such as "events", which a browser cannot load as they are).
export { WHIPClient } from "@eyevinn/whip-web-client";
export { WebRTCPlayer } from "@eyevinn/webrtc-player";
// Medooze's WHIP client (by an author of RFC 9725): it posts its offer at once and trickles every
// candidate by PATCH.
export { WHIPClient as TricklingWHIPClient } from "whip-whep/whip.js";
