"""The server on a real local Ray Serve cluster (CPU, tiny profile, two avatar replicas of two
sessions each), driven over HTTP through Serve's proxy and over WebRTC from aiortc clients.

One cluster and two streaming sessions for the module (the cluster started by the code's own
`connect` and `deploy`), on one event loop: sessions on two replicas, each reached at its own;
the cluster full; a replica killed.
"""

from __future__ import annotations

import asyncio
import io
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import av
import httpx
import pytest
import pytest_asyncio
import ray
from PIL import Image, ImageOps
from ray import serve

from server.cluster.app import connect, deploy
from tests.avatar_client import Viewer, WebcamClient, eventually, make_offer
from tests.server.settings import tiny_settings
from tests.server.test_live import upload
from tests.webcam import ASTRONAUT

# The sessions' aiortc clients live across the tests: one event loop for the module.
pytestmark = pytest.mark.asyncio(loop_scope="module")

SESSIONS_PER_REPLICA = 2
FIRST_FRAME_TIMEOUT = 180  # seconds; generous for a loaded 2-core machine, never a speed assertion
RESTART_TIMEOUT = 240


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def local_cluster(**changes) -> Iterator[str]:
    """The application on a local Ray cluster started by the code's own `connect` and `deploy`,
    with the tiny settings and `changes` -> its URL; shut down after."""
    port = _free_port()
    settings = tiny_settings(
        HOST="127.0.0.1", PORT=port, RAY_CPUS_PER_REPLICA=1, ICE_SERVERS=[], ICE_LOOPBACK=True, LOG_LEVEL="WARNING",
        **changes,
    )
    # Logical CPUs overcommitted (the replicas mostly wait); a small object store; no dashboard.
    connect(settings, num_cpus=6, object_store_memory=100 * 1024 * 1024, log_to_driver=False)
    try:
        deploy(settings)
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    with local_cluster(MAX_SESSIONS=SESSIONS_PER_REPLICA, RAY_REPLICAS=2, SILENCE_TIMEOUT=15) as url:
        yield url


async def _health(http: httpx.AsyncClient) -> dict:
    response = await http.get("/api/health")
    assert response.status_code == 200, response.text
    return response.json()


async def _frames_flow(client: WebcamClient, what: str) -> None:
    """The engine made frames for this session and the client received avatar frames after them."""
    await eventually(lambda: client.engine_out_above(0), timeout=FIRST_FRAME_TIMEOUT, what=f"{what}: engine frames")
    received = client.avatar.count
    await eventually(lambda: client.avatar.count >= received + 8, timeout=60, what=f"{what}: avatar frames")


def _replica(client: WebcamClient) -> str:
    return client.session_id.split(".")[0]


@dataclass
class Streams:
    """An HTTP client of the cluster and the sessions opened through it (closed at the end)."""

    http: httpx.AsyncClient
    clients: list[WebcamClient] = field(default_factory=list)

    async def open(self, **kwargs) -> WebcamClient:
        client = WebcamClient(self.http)
        self.clients.append(client)
        response = await client.open(**kwargs)
        assert response.status_code == 200, response.text
        return client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def streams(cluster_url: str) -> AsyncIterator[Streams]:
    """Two sessions streaming, the first with an uploaded character (fps 8 keeps the CPU load low)."""
    async with httpx.AsyncClient(base_url=cluster_url, timeout=90) as http:
        shared = Streams(http)
        try:
            astronaut_id = await upload(http, Image.open(ASTRONAUT).convert("RGB"))
            await shared.open(reference_id=astronaut_id, params={"fps": 8})
            await shared.open(params={"fps": 8})
            yield shared
        finally:
            await asyncio.gather(*(client.close() for client in shared.clients))


async def test_sessions_reach_their_own_replica(streams: Streams) -> None:
    http, (first, second) = streams.http, streams.clients[:2]
    health = await _health(http)
    assert len(health["replicas"]) == 2 and health["max_sessions"] == 2 * SESSIONS_PER_REPLICA
    assert {r["device"] for r in health["replicas"]} == {"cpu"} and health["profile"] == "tiny"
    # The second offer went to the replica with more room: the other one.
    assert _replica(first) != _replica(second)
    assert {_replica(first), _replica(second)} == {r["replica"] for r in health["replicas"]}
    assert [r["sessions"] for r in health["replicas"]] == [1, 1]

    other_id = await upload(http, ImageOps.mirror(ImageOps.grayscale(Image.open(ASTRONAUT)).convert("RGB")))
    for client in (first, second):
        await _frames_flow(client, "a session")
        stats = await client.stats()
        assert stats["replica"] == _replica(client) and stats["params"]["fps"] == 8

        # A parameter change over the control channel (peer to peer with the replica), seen in its stats.
        reply = await client.control({"id": 1, "type": "params", "params": {"fps": 10, "mirror": True}})
        assert reply["ok"], reply
        assert (await client.stats())["params"]["fps"] == 10

        # A reference swap through the ingress, the image fetched from the library by the owning replica.
        response = await http.put(f"/api/sessions/{client.session_id}/reference", json={"reference_id": other_id})
        assert response.status_code == 200, response.text
        assert (await client.stats())["reference_id"] == other_id

        # A WHEP viewer, answered by the owning replica, receives frames; its DELETE reaches it too.
        viewer = Viewer(http)
        try:
            response = await viewer.open(client.view_id, client.view_token)
            assert response.status_code == 201, response.text
            await eventually(lambda v=viewer: v.video.count >= 5, timeout=90, what="frames at the viewer")
            assert (await client.stats())["viewers"] == 1
            assert (await http.delete(viewer.location)).status_code == 204
            assert (await client.stats())["viewers"] == 0
        finally:
            await viewer.close()

    # The OBS view's key colour, and a recording made on the replica, listed and downloaded
    # through the ingress (the file is on the replica's node; its bytes come through Ray).
    response = await http.get(f"/api/views/{first.view_id}", params={"token": first.view_token})
    assert response.status_code == 200 and len(response.json()["key_colour"]) == 6, response.text
    response = await http.post(f"/api/sessions/{first.session_id}/recordings")
    assert response.status_code == 201, response.text
    recorded = first.avatar.count
    await eventually(lambda: first.avatar.count >= recorded + 8, timeout=60, what="frames while recording")
    response = await http.post(f"/api/sessions/{first.session_id}/recordings/stop")
    assert response.status_code == 200, response.text
    listing = (await http.get(f"/api/sessions/{first.session_id}/recordings")).json()["recordings"]
    assert [r["state"] for r in listing] == ["finished"]
    assert listing[0]["url"].startswith(f"/api/sessions/{first.session_id}/recordings/")
    download = await http.get(listing[0]["url"])
    assert download.status_code == 200 and download.headers["content-type"] == "video/mp4"
    assert len(download.content) == listing[0]["bytes"]
    with av.open(io.BytesIO(download.content)) as container:
        assert sum(1 for _ in container.decode(video=0)) == listing[0]["frames"] > 0

    # A recording made over the control channel (peer to peer with the replica): its link, in
    # the reply, is the cluster's, and downloads through the ingress.
    assert (await first.control({"id": "rec", "type": "start_recording"}))["ok"]
    recorded = first.avatar.count
    await eventually(lambda: first.avatar.count >= recorded + 8, timeout=60, what="frames while recording")
    reply = await first.control({"id": "stop", "type": "stop_recording"})
    assert reply["ok"] and reply["recording"]["url"].startswith(f"/api/sessions/{first.session_id}/recordings/")
    download = await http.get(reply["recording"]["url"])
    assert download.status_code == 200 and len(download.content) == reply["recording"]["bytes"]

    # Per-replica figures in the metrics, labelled by replica.
    metrics = (await http.get("/metrics")).text
    for client in (first, second):
        assert f'rain_sessions{{replica="{_replica(client)}"}} 1.0' in metrics

    # Uploads are checked as on a box (by the library), and an unknown character is a 404 from the replica.
    response = await http.post("/api/references", files={"file": ("x.png", b"not an image", "image/png")})
    assert response.status_code == 415 and "not an image" in response.json()["detail"]
    response = await http.post("/api/offer", json={"sdp": await make_offer(), "type": "offer", "reference_id": "nope"})
    assert response.status_code == 404 and "reference" in response.json()["detail"]

    # A session id whose replica does not exist, or that is malformed: 404, not a 500.
    for bad in ("nobody.abc", "no-replica-part", f"{_replica(first)}.unknown"):
        assert (await http.get(f"/api/sessions/{bad}/stats")).status_code == 404

    # The WHIP sessions, asked of every replica (loopback, no token: open as publishing is): the
    # webcam sessions are not among them, a WHIP publisher's is, named by its replica.
    assert (await http.get("/api/whip/sessions")).json() == {"sessions": []}
    response = await http.post(
        "/whip", content=await make_offer(video="sendonly"), headers={"Content-Type": "application/sdp"}
    )
    assert response.status_code == 201, response.text
    published = response.headers["location"].removeprefix("/whip/")
    try:
        listed = (await http.get("/api/whip/sessions")).json()["sessions"]
        assert [(s["session_id"], s["replica"]) for s in listed] == [(published, published.split(".")[0])]
        # Trickle ICE reaches the owner, and its refusals come back as their statuses.
        trickle = {"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": response.headers["etag"]}
        restart = await http.patch(f"/whip/{published}", content="a=ice-ufrag:new\r\n", headers=trickle)
        assert restart.status_code == 422 and "ICE restart" in restart.json()["detail"], restart.text
        ended = await http.patch(f"/whip/{published}", content="a=end-of-candidates\r\n", headers=trickle)
        assert ended.status_code == 204, ended.text
    finally:
        assert (await http.delete(f"/whip/{published}")).status_code == 204
    assert (await http.get("/api/whip/sessions")).json() == {"sessions": []}


async def test_the_full_cluster_answers_503(streams: Streams) -> None:
    http = streams.http
    offer = await make_offer(video="sendrecv")
    extra = []
    try:
        for _ in range(2):  # one more on each replica: every replica full
            response = await http.post("/api/offer", json={"sdp": offer, "type": "offer"})
            assert response.status_code == 200, response.text
            extra.append(response.json()["session_id"])
        assert len({session.split(".")[0] for session in extra}) == 2
        response = await http.post("/api/offer", json={"sdp": offer, "type": "offer"})
        assert response.status_code == 503 and int(response.headers["retry-after"]) > 0
        assert "full" in response.json()["detail"]
    finally:
        for session in extra:
            assert (await http.delete(f"/api/sessions/{session}")).status_code == 204
    assert (await _health(http))["sessions"] == 2


def _replica_actor(replica: str):
    (actor,) = [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].endswith(f"#{replica}")]
    return ray.get_actor(actor["name"], namespace=actor["namespace"])


async def test_a_dead_replica_ends_its_sessions_only(streams: Streams) -> None:
    http, (first, second) = streams.http, streams.clients[:2]
    dead = _replica(first)
    ray.kill(_replica_actor(dead))

    async def first_gone() -> bool:
        return (await http.get(f"/api/sessions/{first.session_id}/stats")).status_code == 404

    await eventually(first_gone, timeout=60, what="the dead replica's session to be unknown")
    # The other session streams on.
    received = second.avatar.count
    await eventually(lambda: second.avatar.count >= received + 8, timeout=60, what="the other session's frames")
    assert (await second.stats())["state"] == "connected"

    # A new session is served meanwhile (by the live replica, or by the restarted one).
    third = await streams.open(params={"fps": 8})
    await _frames_flow(third, "a session after the kill")
    assert (await http.delete(f"/api/sessions/{third.session_id}")).status_code == 204

    # Serve restarts the replica under a new id, and it takes sessions again.
    async def restarted() -> bool:
        replicas = {r["replica"] for r in (await _health(http))["replicas"]}
        return len(replicas) == 2 and dead not in replicas

    await eventually(restarted, timeout=RESTART_TIMEOUT, what="the replica's restart")
    # The live replica holds one session, the restarted one none: the offer goes to the new one.
    fourth = await streams.open(params={"fps": 8})
    assert _replica(fourth) not in (dead, _replica(second))
    await _frames_flow(fourth, "a session on the restarted replica")
