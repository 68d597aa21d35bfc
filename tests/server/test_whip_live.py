"""WHIP end to end: an aiortc publisher (sendonly, as OBS and other WHIP encoders publish) drives
an avatar that a WHEP viewer receives, with H.264 and with VP8; DELETE on the Location ends it.

The shared live server listens on loopback without RAIN_WHIP_TOKEN, so WHIP is open there (the
token's checks are in tests/server/api/test_whip.py)."""

from __future__ import annotations

import re

import httpx
import pytest
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack

from tests.avatar_client import Viewer, eventually
from tests.webcam import ClipTrack

SIZE = 64  # the tiny profile's output
FIRST_FRAME_TIMEOUT = 120  # seconds; generous for a loaded 2-core machine, never a speed assertion


def _link(response: httpx.Response, title: str) -> str:
    match = re.search(rf'<([^>]+)>; rel="related"; title="{title}"', response.headers["link"])
    assert match, response.headers["link"]
    return match.group(1)


@pytest.mark.parametrize("codec", ["H264", "VP8"])
async def test_a_whip_publisher_drives_an_avatar_a_whep_viewer_watches(live_server, codec: str) -> None:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as http:
        publisher = RTCPeerConnection()
        viewer = Viewer(http)
        try:
            video = publisher.addTransceiver(ClipTrack(), direction="sendonly")
            video.setCodecPreferences(
                [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == f"video/{codec}"]
            )
            publisher.addTransceiver(AudioStreamTrack(), direction="sendonly")
            await publisher.setLocalDescription(await publisher.createOffer())
            response = await http.post(
                "/whip", content=publisher.localDescription.sdp, headers={"Content-Type": "application/sdp"}
            )
            assert response.status_code == 201, response.text
            answer = response.text
            video_section = answer.split("m=video")[1].split("m=audio")[0]
            assert f" {codec}/90000" in video_section and "a=recvonly" in video_section
            await publisher.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            location, session = response.headers["location"], _link(response, "session")

            async def engine_frames() -> int:
                return (await http.get(f"{session}/stats")).json()["frames"]["engine_out"]

            await eventually(lambda: _above(engine_frames, 0), timeout=FIRST_FRAME_TIMEOUT, what="engine frames")
            stats = (await http.get(f"{session}/stats")).json()
            assert stats["state"] == "connected" and stats["frames"]["camera"] > 0
            assert stats["voice"] is not None  # the published audio is the session's voice
            # Listed among the WHIP sessions (open here, as publishing is), driving.
            listed = {s["session_id"]: s for s in (await http.get("/api/whip/sessions")).json()["sessions"]}
            mine = listed[location.removeprefix("/whip/")]
            assert mine["state"] == "connected" and mine["frames"]["camera"] > 0 and mine["frames"]["engine_out"] > 0
            assert mine["links"]["session"] == session

            # A WHEP viewer, by the view link WHIP gave: the avatar, driven by the published camera.
            whep = _link(response, "whep")
            view_id, token = re.fullmatch(r"/whep/([^?]+)\?token=(.+)", whep).groups()
            opened = await viewer.open(view_id, token)
            assert opened.status_code == 201, opened.text
            await eventually(lambda: viewer.video.count >= 10, timeout=60, what="avatar frames at the viewer")
            assert viewer.video.last.shape == (SIZE, SIZE, 3)
            before = await engine_frames()
            await eventually(lambda: _above(engine_frames, before), timeout=60, what="more engine frames")

            assert (await http.delete(location)).status_code == 204
            assert (await http.get(f"{session}/stats")).status_code == 404
            await eventually(lambda: publisher.connectionState in ("closed", "failed") or _ended(http),
                             timeout=30, what="the session's end")
        finally:
            await viewer.close()
            await publisher.close()
        health = (await http.get("/api/health")).json()
        assert health["viewers"] == 0


async def _above(count, value: int) -> bool:
    return await count() > value


async def _ended(http: httpx.AsyncClient) -> bool:
    return (await http.get("/api/health")).json()["sessions"] == 0
