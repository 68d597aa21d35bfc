"""The webcam client of the relay-only test (tests/server/test_turn_relay.py), run in its own
network namespace: `python -m tests.server.relay_client --uds PATH --frames N --timeout S`.

It reaches the server's HTTP only through a Unix socket the test forwards (signalling), and the
server's media only through the TURN server that /api/config names. It writes one JSON line to
stdout: the avatar frames it received and their size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import httpx
from aiortc import RTCConfiguration, RTCIceServer

from tests.avatar_client import WebcamClient, eventually


async def run(uds: str, frames: int, timeout: float) -> dict:
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
            return {"frames": client.avatar.count, "width": width, "height": height,
                    "config_size": [config["width"], config["height"]],
                    "turn_usernames": [s.get("username") for s in config["ice_servers"]]}
        finally:
            await client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uds", required=True)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    sys.stdout.write(json.dumps(asyncio.run(run(args.uds, args.frames, args.timeout))) + "\n")


if __name__ == "__main__":
    main()
