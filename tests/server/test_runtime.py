"""The runtime on its own, with no HTTP around it: every operation a serving replica offers."""

from __future__ import annotations

import ast
import asyncio
import json
from pathlib import Path

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from server.references import UnknownReference
from server.rtc.sdp import OfferError
from server.runtime import Runtime
from server.sessions.control import ParamsError
from server.sessions.errors import BadViewToken, CapacityError, NoViewToken, UnknownSession, UnknownViewer
from tests.avatar_client import eventually, make_offer
from tests.server.api.requests import png
from tests.server.settings import tiny_settings
from tests.webcam import ClipTrack

SERVER = Path(__file__).resolve().parents[2] / "server"
# Seconds of the drain test's deadline: long enough to see a session served through it.
DRAIN_DEADLINE_S = 4.0


async def test_runtime_operations() -> None:
    runtime = Runtime(tiny_settings(MAX_SESSIONS=1, ICE_SERVERS=[]))
    await runtime.start()
    try:
        webcam, viewer_offer = await make_offer(video="sendrecv"), await make_offer(video="recvonly")
        with pytest.raises(OfferError, match="sends no video"):
            await runtime.open_session(viewer_offer, "offer")
        with pytest.raises(UnknownReference):
            await runtime.open_session(webcam, "offer", reference_id="nope")
        with pytest.raises(ParamsError, match="fps"):
            await runtime.open_session(webcam, "offer", params={"fps": 1000})
        opened = await runtime.open_session(webcam, "offer", params={"fps": 10})
        assert opened.answer.startswith("v=0") and opened.session_id != opened.view_token
        with pytest.raises(CapacityError):
            await runtime.open_session(webcam, "offer")

        reply = await runtime.control(opened.session_id, json.dumps({"id": 1, "type": "pause"}))
        assert reply["ok"] and reply["paused"] and reply["params"]["fps"] == 10
        stats = await runtime.stats(opened.session_id)
        assert stats["paused"] and stats["fps"]["target"] == 10

        reference = await runtime.upload_reference(png(64, 64))
        assert (reference.width, reference.height) == (64, 64)
        assert await runtime.swap_reference(opened.session_id, reference.reference_id) == reference.reference_id
        assert (await runtime.stats(opened.session_id))["reference_id"] == reference.reference_id

        # Viewers are named by the session's view id; its session id names no view.
        with pytest.raises(UnknownSession):
            await runtime.authorize_viewer(opened.session_id, opened.view_token)
        with pytest.raises(NoViewToken):
            await runtime.authorize_viewer(opened.view_id, None)
        with pytest.raises(BadViewToken):
            await runtime.authorize_viewer(opened.view_id, "wrong")
        viewer = await runtime.add_viewer(opened.view_id, opened.view_token, viewer_offer)
        assert (await runtime.health())["viewers"] == 1
        await runtime.remove_viewer(opened.view_id, viewer.viewer_id)
        with pytest.raises(UnknownViewer):
            await runtime.remove_viewer(opened.view_id, viewer.viewer_id)

        await runtime.close_session(opened.session_id)
        with pytest.raises(UnknownSession):
            await runtime.stats(opened.session_id)
        health = await runtime.health()
        assert (health["sessions"], health["engines"], health["viewers"]) == (0, 0, 0)
    finally:
        await runtime.stop()


def test_the_runtime_knows_nothing_of_http() -> None:
    """Only the app (`server/main.py`, `server/api/`) speaks HTTP; the runtime and all below it do not."""
    offenders = []
    for path in SERVER.rglob("*.py"):
        relative = path.relative_to(SERVER)
        if relative.parts[0] == "api" or relative == Path("main.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            offenders += [f"{relative}: {n}" for n in names if n.split(".")[0] in ("fastapi", "starlette", "uvicorn")]
    assert offenders == []


async def _connected_page(runtime: Runtime) -> tuple[RTCPeerConnection, str, asyncio.Queue]:
    """A webcam page's peer connection to the runtime: the clip out, the control channel open
    -> (connection, session id, the messages the server sends on the channel)."""
    pc = RTCPeerConnection()
    pc.addTrack(ClipTrack())
    pc.addTransceiver("video", direction="recvonly")
    channel = pc.createDataChannel("control")
    messages: asyncio.Queue = asyncio.Queue()
    channel.on("message", messages.put_nowait)
    await pc.setLocalDescription(await pc.createOffer())
    opened = await runtime.open_session(pc.localDescription.sdp, "offer", params={"fps": 8})
    await pc.setRemoteDescription(RTCSessionDescription(sdp=opened.answer, type="answer"))
    await eventually(lambda: channel.readyState == "open", timeout=30, what="the control channel")
    return pc, opened.session_id, messages


async def test_a_drain_tells_the_pages_and_serves_them_until_they_end() -> None:
    """A replica taken out of service (`Runtime.drain`): every page is told at once, its session
    streams on, and the drain ends when the sessions do, or closes them at its deadline."""
    runtime = Runtime(tiny_settings(MAX_SESSIONS=2, ICE_SERVERS=[], ICE_LOOPBACK=True))
    await runtime.start()
    connections = []
    try:
        (first, first_id, first_messages), (second, second_id, _) = [
            await _connected_page(runtime) for _ in range(2)
        ]
        connections += [first, second]
        # The client ends one session during the drain, the other outlives the deadline.
        drain = asyncio.ensure_future(runtime.drain(DRAIN_DEADLINE_S))
        notice = json.loads(await asyncio.wait_for(first_messages.get(), 10))
        assert notice["type"] == "draining" and notice["id"] is None and notice["seconds"] == DRAIN_DEADLINE_S
        assert "another server" in notice["message"]
        assert not drain.done()
        assert (await runtime.stats(first_id))["state"] in ("connecting", "connected")
        await runtime.close_session(first_id)
        await asyncio.wait_for(drain, DRAIN_DEADLINE_S + 30)
        with pytest.raises(UnknownSession):
            await runtime.stats(second_id)
        assert (await runtime.health())["sessions"] == 0

        # With no session left, a drain ends at once, whatever its deadline.
        await asyncio.wait_for(runtime.drain(3600), 10)
    finally:
        for pc in connections:
            await pc.close()
        await runtime.stop()
