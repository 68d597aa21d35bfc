"""Autoscaling on sessions, and a scale-down that drains: on a real local Ray Serve cluster
(CPU, tiny profile), the avatar deployment autoscaled between one and two replicas of three
sessions each, driven over HTTP through Serve's proxy and over WebRTC from aiortc clients.

Three sessions fill the first replica and the autoscaler adds a second; a fourth session goes
there. Two sessions end, one on each replica is left, and the autoscaler wants one replica
again: whichever replica Serve takes away holds a session, which must stream on (its page told
at once) until its client ends it, while new offers go to the replica that stays.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest

from tests.avatar_client import WebcamClient, eventually
from tests.server.cluster.test_ray_cluster import Streams, _frames_flow, _health, _replica, local_cluster

pytestmark = pytest.mark.asyncio(loop_scope="module")

SESSIONS_PER_REPLICA = 3
# Generous for a loaded 2-core machine (a replica starts in 20-60 s there); never a speed assertion.
SCALING_TIMEOUT = 300
# Far longer than the test: the drain must end because its session did, not at its deadline.
DRAIN_TIMEOUT = 900
PARAMS = {"fps": 2}  # four sessions on two cores: as little engine work as will do


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    with local_cluster(
        MAX_SESSIONS=SESSIONS_PER_REPLICA, RAY_MIN_REPLICAS=1, RAY_MAX_REPLICAS=2, RAY_UPSCALE_DELAY=0,
        RAY_DOWNSCALE_DELAY=0, RAY_DRAIN_TIMEOUT=DRAIN_TIMEOUT, SILENCE_TIMEOUT=60,
    ) as url:
        yield url


def _notices(client: WebcamClient) -> list[dict]:
    """The messages the server sent unasked on the client's control channel."""
    messages = []
    while not client.replies.empty():
        message = json.loads(client.replies.get_nowait())
        if message.get("id") is None:
            messages.append(message)
    return messages


async def test_the_replica_taken_away_serves_its_session_until_it_ends(cluster_url: str) -> None:
    async with httpx.AsyncClient(base_url=cluster_url, timeout=90) as http:
        streams = Streams(http)
        try:
            filling = [await streams.open(params=PARAMS) for _ in range(SESSIONS_PER_REPLICA)]
            first_replica = _replica(filling[0])
            assert {_replica(client) for client in filling} == {first_replica}

            # The first replica is full: the autoscaler adds one, and the next offer goes there.
            async def two_replicas() -> bool:
                return len((await _health(http))["replicas"]) == 2

            await eventually(
                two_replicas, timeout=SCALING_TIMEOUT, what="a second replica for the sessions", interval=1
            )
            later = await streams.open(params=PARAMS)
            assert _replica(later) != first_replica
            await _frames_flow(later, "the session on the added replica")

            # One session left on each replica: one replica is enough, and Serve takes one away.
            for client in filling[1:]:
                assert (await http.delete(f"/api/sessions/{client.session_id}")).status_code == 204
            left = {_replica(client): client for client in (filling[0], later)}

            async def draining() -> list[dict]:
                return [r for r in (await _health(http))["replicas"] if r["draining"]]

            await eventually(draining, timeout=SCALING_TIMEOUT, what="a replica taken out of service", interval=1)
            (leaving,) = await draining()
            assert leaving["sessions"] == 1
            drained = left.pop(leaving["replica"])
            (staying,) = left.values()

            # Its page is told, and its session streams on, reached through the API as before.
            await eventually(lambda: drained.replies.qsize() > 0, timeout=30, what="the draining notice")
            (notice,) = _notices(drained)
            assert notice["type"] == "draining" and notice["seconds"] == DRAIN_TIMEOUT
            for client in (drained, staying):
                await _frames_flow(client, "a session while a replica drains")
                assert (await client.stats())["state"] == "connected"
            assert (await drained.control({"id": 1, "type": "params", "params": {"fps": 3}}))["ok"]

            # New offers go to the replica that stays.
            newest = await streams.open(params=PARAMS)
            assert _replica(newest) == _replica(staying)
            health = await _health(http)
            assert health["max_sessions"] == SESSIONS_PER_REPLICA
            assert health["sessions"] == 3

            # The drained session ends: its replica stops then, long before the drain's deadline.
            assert (await http.delete(f"/api/sessions/{drained.session_id}")).status_code == 204

            async def stopped() -> bool:
                replicas = (await _health(http))["replicas"]
                return [r["replica"] for r in replicas] == [_replica(staying)]

            await eventually(stopped, timeout=120, what="the drained replica to stop", interval=1)
            assert (await http.get(f"/api/sessions/{drained.session_id}/stats")).status_code == 404
            assert (await staying.stats())["state"] == "connected"
        finally:
            await asyncio.gather(*(client.close() for client in streams.clients))
