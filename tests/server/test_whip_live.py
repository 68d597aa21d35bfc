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


def _without_candidates(sdp: str) -> str:
    return "".join(
        line for line in sdp.splitlines(keepends=True) if not line.startswith(("a=candidate:", "a=end-of-candidates"))
    )


def _trickle_fragment(sdp: str, *, ufrag: str | None = None) -> str:
    """The fragment a trickling publisher PATCHes: its first section's credentials and candidates."""
    section = sdp.split("\nm=")[1]
    lines = [line.strip() for line in section.splitlines()]
    wanted = ("a=mid:", "a=ice-ufrag:", "a=ice-pwd:", "a=candidate:")
    kept = [line for line in lines if line.startswith(wanted)]
    if ufrag is not None:
        kept = [f"a=ice-ufrag:{ufrag}" if line.startswith("a=ice-ufrag:") else line for line in kept]
    return "\r\n".join(["m=video 9 UDP/TLS/RTP/SAVPF 0", *kept, "a=end-of-candidates", ""])


async def test_a_publisher_that_trickles_its_candidates_connects_through_them(live_server) -> None:
    """The offer goes without candidates and the server's are kept from the publisher, so the two
    meet only if the server takes the publisher's candidates from the PATCH (RFC 9725 trickle ICE)."""
    async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as http:
        publisher = RTCPeerConnection()
        try:
            publisher.addTransceiver(ClipTrack(), direction="sendonly")
            await publisher.setLocalDescription(await publisher.createOffer())
            gathered = publisher.localDescription.sdp
            assert "a=candidate:" in gathered
            response = await http.post(
                "/whip", content=_without_candidates(gathered), headers={"Content-Type": "application/sdp"}
            )
            assert response.status_code == 201, response.text
            assert response.headers["accept-patch"] == "application/trickle-ice-sdpfrag"
            location, etag, session = response.headers["location"], response.headers["etag"], _link(response, "session")
            await publisher.setRemoteDescription(
                RTCSessionDescription(sdp=_without_candidates(response.text), type="answer")
            )
            trickle = {"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": etag}
            fragment = _trickle_fragment(gathered)

            # Refusals first, each naming its problem; none of them adds a candidate.
            refusals = [
                ({**trickle, "Content-Type": "application/sdp"}, fragment, 415, "application/trickle-ice-sdpfrag"),
                ({**trickle, "If-Match": '"another-ice-session"'}, fragment, 412, "If-Match"),
                (trickle, _trickle_fragment(gathered, ufrag="restart"), 422, "ICE restarts are not supported"),
                (trickle, "a=candidate:nonsense\r\n", 400, "not an ICE candidate"),
            ]
            for headers, body, status, named in refusals:
                refused = await http.patch(location, content=body, headers=headers)
                assert refused.status_code == status and named in refused.json()["detail"], refused.text
            assert (await http.patch("/whip/nope", content=fragment, headers=trickle)).status_code == 404
            # Neither side has a candidate of the other yet: nothing can connect.
            assert (await http.get(f"{session}/stats")).json()["state"] != "connected"

            trickled = await http.patch(location, content=fragment, headers=trickle)
            assert trickled.status_code == 204, trickled.text

            async def engine_frames() -> int:
                stats = await http.get(f"{session}/stats")
                assert stats.status_code == 200, f"the session ended: {stats.text}"  # e.g. its ICE failed
                return stats.json()["frames"]["engine_out"]

            await eventually(lambda: _above(engine_frames, 0), timeout=FIRST_FRAME_TIMEOUT, what="engine frames")
            stats = (await http.get(f"{session}/stats")).json()
            assert stats["state"] == "connected" and stats["trickled_candidates"] == fragment.count("a=candidate:")
            # After its end-of-candidates, a later fragment changes nothing and is still answered.
            assert (await http.patch(location, content=fragment, headers=trickle)).status_code == 204
            assert (await http.delete(location)).status_code == 204
        finally:
            await publisher.close()
