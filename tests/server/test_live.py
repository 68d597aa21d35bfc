"""The real server end to end, from an aiortc client on loopback (tiny profile, random weights).

One session's whole life: upload a character, offer, stream the astronaut clip, receive the
avatar, change parameters over the control channel, swap the character, watch through WHEP,
delete, and find the server back at zero sessions, engines and viewers.
"""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image, ImageOps

from server.media.avatar import warming_up_card
from tests.avatar_client import Viewer, WebcamClient, eventually
from tests.webcam import ASTRONAUT

FPS = 16
SIZE = 64  # the tiny profile's output
FIRST_FRAME_TIMEOUT = 120  # seconds; generous for a loaded 2-core machine, never a speed assertion


async def upload(http: httpx.AsyncClient, image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    response = await http.post("/api/references", files={"file": ("character.png", buffer.getvalue(), "image/png")})
    assert response.status_code == 201, response.text
    return response.json()["reference_id"]


async def health(http: httpx.AsyncClient) -> dict:
    response = await http.get("/api/health")
    response.raise_for_status()
    return response.json()


def is_warming_card(frame: np.ndarray) -> bool:
    card = warming_up_card(SIZE, SIZE, 0.0).astype(np.int16)
    return bool(np.abs(frame.astype(np.int16) - card).mean() < 12)  # VP8 blurs it a little


def check_latency_parts(stats: dict) -> None:
    """The server's latency split into its parts: all there, none negative, adding up to the total."""
    parts = stats["latency_parts_ms"]
    assert parts is not None and parts["frames"] >= 1
    names = ("camera", "queue", "call", "decode", "pacing")
    assert all(parts[name] >= 0 for name in names) and parts["encoder"] is not None and parts["encoder"] >= 0
    assert abs(sum(parts[name] for name in names) - parts["server"]) <= 0.3  # each rounded to 0.1 ms
    assert parts["queue_frames"] >= 1
    # The engine holds G*P frames: each frame waits for the frames after it to be driven.
    assert parts["queue"] > 0


async def test_session_end_to_end(live_server) -> None:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as http:
        astronaut = Image.open(ASTRONAUT).convert("RGB")
        reference_id = await upload(http, astronaut)
        client = WebcamClient(http)
        try:
            response = await client.open(reference_id=reference_id, params={"fps": FPS})
            assert response.status_code == 200, response.text
            assert len(client.session_id) >= 22 and len(client.view_token) >= 22  # 128 bits from secrets
            assert client.session_id != client.view_token

            # 1. The avatar: at least two seconds of frames after the first engine frame.
            await eventually(lambda: _sent(client), timeout=FIRST_FRAME_TIMEOUT, what="the first avatar frame")
            first = client.avatar.count
            await eventually(lambda: client.avatar.count >= first + 2 * FPS, timeout=60, what="2 s of avatar frames")
            frame = client.avatar.last
            assert frame is not None and frame.shape == (SIZE, SIZE, 3)
            assert not is_warming_card(frame), "still the warming-up card after the first engine frame"
            assert client.preview.count > 0 and client.preview.last.shape == (SIZE, SIZE, 3)
            # The engine's own count, not a rate: a loaded machine may take longer to get there.
            await eventually(lambda: client.engine_out_above(2 * FPS - 1), timeout=60, what="2 s of engine frames")
            stats = await client.stats()
            assert stats["state"] == "connected"
            assert stats["first_frame_s"] is not None and stats["latency_ms"] is not None
            assert stats["params"]["fps"] == FPS
            check_latency_parts(stats)
            camera = stats["camera"]
            assert camera["gap_max_ms"] >= 0 and camera["repair"] is not None  # the repair is on by default
            assert all(count >= 0 for count in camera["repair"].values())

            # 2. The control channel: each message answered with an ack or a clear error.
            reply = await client.control(
                {"id": 1, "type": "params", "params": {"calibration": {"eye_height_ratio": 2.5}, "fps": 12}}
            )
            assert reply["ok"] and reply["id"] == 1
            assert reply["params"]["calibration"]["eye_height_ratio"] == 2.5 and reply["params"]["fps"] == 12
            reply = await client.control({"id": 2, "type": "params", "params": {"crop_ratio": 7}})
            assert not reply["ok"] and reply["id"] == 2 and "crop_ratio" in reply["error"]
            reply = await client.control({"id": 3, "type": "params", "params": {"fps": 1000}})
            assert not reply["ok"] and "fps" in reply["error"]
            assert (await client.stats())["params"]["fps"] == 12  # the refused change left nothing behind
            reply = await client.control("{not json")
            assert not reply["ok"] and "not valid JSON" in reply["error"]
            reply = await client.control({"id": 4, "type": "dance"})
            assert not reply["ok"] and "unknown message type" in reply["error"]

            reply = await client.control({"id": 5, "type": "pause"})
            assert reply["ok"] and reply["paused"]
            await eventually(lambda: _idle(client), timeout=30, what="the engine to drain after pause")
            paused_out = (await client.stats())["frames"]["engine_out"]
            sent = client.avatar.count
            await eventually(lambda: client.avatar.count >= sent + 8, timeout=30, what="frames while paused")
            assert (await client.stats())["frames"]["engine_out"] == paused_out  # repeats, no new engine frames
            reply = await client.control({"id": 6, "type": "resume"})
            assert reply["ok"] and not reply["paused"]
            await eventually(lambda: client.engine_out_above(paused_out), timeout=60, what="frames after resume")

            reply = await client.control({"id": 7, "type": "reset"})
            assert reply["ok"]
            reset_out = (await client.stats())["frames"]["engine_out"]
            await eventually(lambda: client.engine_out_above(reset_out), timeout=60, what="frames after reset")

            # 3. Another character, mid-stream.
            other_id = await upload(http, ImageOps.mirror(ImageOps.grayscale(astronaut).convert("RGB")))
            response = await http.put(f"/api/sessions/{client.session_id}/reference", json={"reference_id": other_id})
            assert response.status_code == 200 and response.json() == {"reference_id": other_id}
            swapped_out = (await client.stats())["frames"]["engine_out"]
            await eventually(lambda: client.engine_out_above(swapped_out), timeout=60, what="frames after the swap")
            assert (await client.stats())["reference_id"] == other_id

            # 4. A WHEP viewer of the same session.
            viewer = Viewer(http)
            try:
                response = await viewer.open(client.view_id, client.view_token)
                assert response.status_code == 201, response.text
                assert response.headers["content-type"].startswith("application/sdp")
                assert viewer.location.startswith(f"/whep/{client.view_id}/")
                await eventually(lambda: viewer.video.count >= 10, timeout=60, what="frames at the viewer")
                assert viewer.video.last.shape == (SIZE, SIZE, 3)
                assert (await client.stats())["viewers"] == 1
                assert (await http.delete(viewer.location)).status_code == 204
                assert (await client.stats())["viewers"] == 0
                assert (await http.delete(viewer.location)).status_code == 404
            finally:
                await viewer.close()

            # 5. The end: everything the session held is freed.
            assert (await http.delete(f"/api/sessions/{client.session_id}")).status_code == 204
            assert (await http.get(f"/api/sessions/{client.session_id}/stats")).status_code == 404
            await eventually(lambda: _back_to_zero(http), timeout=30, what="zero sessions, engines and viewers")
        finally:
            await client.close()


async def test_sessions_stream_side_by_side(live_server) -> None:
    """Two sessions at once (their steps share the model worker) both get their avatar."""
    async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as http:
        clients = [WebcamClient(http), WebcamClient(http)]
        try:
            for client in clients:
                assert (await client.open(params={"fps": 10})).status_code == 200
            assert (await health(http))["sessions"] == 2
            for client in clients:
                await eventually(lambda c=client: _sent(c), timeout=FIRST_FRAME_TIMEOUT, what="both avatars")
        finally:
            for client in clients:
                await client.close()
        # Closing the peer connections alone (no DELETE) ends the sessions too.
        await eventually(lambda: _back_to_zero(http), timeout=60, what="the closed sessions to be reaped")


async def _sent(client: WebcamClient) -> bool:
    return (await client.stats())["frames"]["sent"] > 0


async def _idle(client: WebcamClient) -> bool:
    return (await client.stats())["queue"]["engine_pending"] == 0


async def _back_to_zero(http: httpx.AsyncClient) -> bool:
    state = await health(http)
    return state["sessions"] == 0 and state["engines"] == 0 and state["viewers"] == 0


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
