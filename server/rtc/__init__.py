"""WebRTC signaling around aiortc: SDP offers and answers (`sdp`), ICE configuration (`ice`)."""
