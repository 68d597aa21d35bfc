"""The Ray Serve deployment against the single box: signaling time (offer -> answer through the
ingress hop) and aggregate distinct frames per second with one and two avatar replicas.

Usage: PYTHONPATH=<checkout> python scripts/ray_bench.py [OFFERS] [SECONDS]
Tiny profile, random weights, CPU, torch on 1 thread per replica. Each setup runs OFFERS
offers (each answered, then deleted; never connected) and then two aiortc clients streaming the
astronaut clip at 16 fps for SECONDS after both have their first avatar frame. Distinct frames
are the engine's own (`frames.engine_out` in the stats); the paced track repeats the last one
in between. Prints one JSON line per setup.
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.avatar_client import WebcamClient, eventually, make_offer
from tests.conftest import start_live_server, stop_live_server
from tests.server.settings import tiny_settings

SESSIONS = 2
FPS = 16


async def measure(url: str, offers: int, seconds: float) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        sdp = await make_offer(video="sendrecv")
        times = []
        for _ in range(offers):
            start = time.perf_counter()
            response = await http.post("/api/offer", json={"sdp": sdp, "type": "offer"})
            times.append(time.perf_counter() - start)
            response.raise_for_status()
            await http.delete(f"/api/sessions/{response.json()['session_id']}")
        clients = [WebcamClient(http) for _ in range(SESSIONS)]
        try:
            for client in clients:
                (await client.open(params={"fps": FPS})).raise_for_status()
            for client in clients:
                await eventually(lambda c=client: c.engine_out_above(0), timeout=300, what="first frames")
            replicas = {client.session_id.split(".")[0] for client in clients if "." in client.session_id}
            before = [(await c.stats())["frames"]["engine_out"] for c in clients]
            received = [c.avatar.count for c in clients]
            await asyncio.sleep(seconds)
            after = [(await c.stats())["frames"]["engine_out"] for c in clients]
            distinct = [(a - b) / seconds for a, b in zip(after, before, strict=True)]
            rates = [(c.avatar.count - r) / seconds for c, r in zip(clients, received, strict=True)]
        finally:
            for client in clients:
                await client.close()
    ms = sorted(t * 1000 for t in times)
    return {
        "offer_to_answer_ms": {"median": round(statistics.median(ms), 1), "min": round(ms[0], 1),
                               "p90": round(ms[int(0.9 * (len(ms) - 1))], 1)},
        "sessions_on_replicas": len(replicas) or 1,
        "distinct_fps_per_session": [round(d, 1) for d in distinct],
        "distinct_fps_total": round(sum(distinct), 1),
        "received_fps_per_session": [round(r, 1) for r in rates],
    }


def single_box(offers: int, seconds: float) -> dict:
    with tempfile.TemporaryDirectory() as directory:
        server = start_live_server(Path(directory), RAIN_MAX_SESSIONS=str(SESSIONS))
        try:
            return asyncio.run(measure(server.url, offers, seconds))
        finally:
            stop_live_server(server)


def on_ray(replicas: int, offers: int, seconds: float) -> dict:
    import ray
    from ray import serve

    from server.cluster.app import connect, deploy

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = tiny_settings(PORT=port, MAX_SESSIONS=SESSIONS, RAY_REPLICAS=replicas, ICE_SERVERS=[],
                             ICE_LOOPBACK=True, LOG_LEVEL="WARNING")
    connect(settings, num_cpus=4, object_store_memory=100 * 1024 * 1024, log_to_driver=False)
    try:
        deploy(settings)
        return asyncio.run(measure(f"http://127.0.0.1:{port}", offers, seconds))
    finally:
        serve.shutdown()
        ray.shutdown()


def main() -> None:
    offers = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 30.0
    for name, run in (("single box", lambda: single_box(offers, seconds)),
                      ("ray, 1 avatar replica", lambda: on_ray(1, offers, seconds)),
                      ("ray, 2 avatar replicas", lambda: on_ray(2, offers, seconds))):
        sys.stdout.write(json.dumps({"setup": name, **run()}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
