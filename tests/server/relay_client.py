"""The webcam client of the relay-only test (tests/server/test_turn_relay.py), run in its own
network namespace: `python -m tests.server.relay_client --uds PATH --frames N --timeout S`, and
`--hold S` to keep the session S seconds more (scripts/turn_expiry_check.py).

It reaches the server's HTTP only through a Unix socket the test forwards (signalling), and the
server's media only through the TURN server that /api/config names. It writes one JSON line to
stdout: the avatar frames it received and their size; held, the longest time without a new frame
and the frames of the last 30 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import httpx
from aiortc import RTCConfiguration, RTCIceServer

from tests.avatar_client import WebcamClient, eventually


async def run(uds: str, frames: int, timeout: float, hold: float = 0.0) -> dict:
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=uds), base_url="http://rain",
                                 timeout=30) as http:
        config = (await http.get("/api/config")).raise_for_status().json()
        # As the page does: the ICE servers (with their minted credentials) from this page load.
        ice = RTCConfiguration(iceServers=[RTCIceServer(**server) for server in config["ice_servers"]])
        client = WebcamClient(http, ice)
        try:
            (await client.open()).raise_for_status()
            await eventually(lambda: client.avatar.count >= frames, timeout=timeout, what=f"{frames} avatar frames")
            height, width, _ = client.avatar.last.shape
            held = await _hold(client, hold) if hold > 0 else {}
            return {"frames": client.avatar.count, "width": width, "height": height,
                    "config_size": [config["width"], config["height"]],
                    "turn_usernames": [s.get("username") for s in config["ice_servers"]], **held}
        finally:
            await client.close()


async def _hold(client: WebcamClient, seconds: float) -> dict:
    """Keep receiving for `seconds`, looking at the frame count each second."""
    loop = asyncio.get_running_loop()
    start = last_new = loop.time()
    counts: list[tuple[float, int]] = []
    longest_stall = 0.0
    while (now := loop.time()) - start < seconds:
        count = client.avatar.count
        if counts and count > counts[-1][1]:
            last_new = now
        longest_stall = max(longest_stall, now - last_new)
        counts.append((now, count))
        await asyncio.sleep(1.0)
    recent = [count for at, count in counts if at >= counts[-1][0] - 30]
    return {"held_s": round(counts[-1][0] - start, 1), "longest_stall_s": round(longest_stall, 1),
            "frames_last_30s": recent[-1] - recent[0], "state": client.pc.connectionState}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uds", required=True)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--hold", type=float, default=0.0, help="seconds to keep the session after the frames")
    args = parser.parse_args()
    sys.stdout.write(json.dumps(asyncio.run(run(args.uds, args.frames, args.timeout, args.hold))) + "\n")


if __name__ == "__main__":
    main()
