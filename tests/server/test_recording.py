"""Recording a live session through its control channel, as the page's Record button does, then
downloading the file with the session's id and reading it back with PyAV (the live server runs
with an ICE port range: its answer's candidates are checked to lie in it)."""

from __future__ import annotations

import asyncio
import io

import av
import httpx
import pytest
from aioice import Candidate

from tests.avatar_client import WebcamClient, eventually
from tests.conftest import LIVE_ICE_PORTS
from tests.microphone import MarkedMicrophone

FPS = 12
RECORD_SECONDS = 3
FIRST_FRAME_TIMEOUT = 120  # seconds; generous for a loaded 2-core machine, never a speed assertion


@pytest.mark.parametrize("microphone", [False, True], ids=["camera", "camera-and-microphone"])
async def test_record_three_seconds_through_the_control_channel(live_server, microphone: bool) -> None:
    """With a microphone, the file carries the session's delayed voice beside the avatar."""
    async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as http:
        client = WebcamClient(http)
        try:
            response = await client.open(params={"fps": FPS}, microphone=MarkedMicrophone() if microphone else None)
            assert response.status_code == 200, response.text
            ports = [Candidate.from_sdp(line[2:]).port for line in response.json()["sdp"].splitlines()
                     if line.startswith("a=candidate:")]
            assert ports and all(LIVE_ICE_PORTS[0] <= port <= LIVE_ICE_PORTS[1] for port in ports), ports
            await eventually(lambda: client.engine_out_above(0), timeout=FIRST_FRAME_TIMEOUT, what="the avatar")

            reply = await client.control({"id": "rec", "type": "start_recording"})
            assert reply["ok"] and reply["recording"]["state"] == "recording", reply
            await asyncio.sleep(RECORD_SECONDS)
            reply = await client.control({"id": "stop", "type": "stop_recording"})
            assert reply["ok"], reply
            recording = reply["recording"]
            assert recording["state"] == "finished" and recording["stop_reason"] == "stopped"
            again = await client.control({"id": "again", "type": "stop_recording"})
            assert not again["ok"] and again["error"] == "this session is not recording"

            listed = (await http.get(f"/api/sessions/{client.session_id}/recordings")).json()["recordings"]
            assert [r["recording_id"] for r in listed] == [recording["recording_id"]]
            download = await http.get(recording["url"])
            assert download.status_code == 200 and download.headers["content-type"] == "video/mp4"
            with av.open(io.BytesIO(download.content)) as container:
                stream = container.streams.video[0]
                assert stream.average_rate == FPS and stream.codec_context.name == "h264"
                if microphone:
                    assert recording["audio"] and [a.codec_context.name for a in container.streams.audio] == ["aac"]
                    voice_s = float(container.streams.audio[0].duration * container.streams.audio[0].time_base)
                    assert voice_s >= RECORD_SECONDS / 2, voice_s  # a floor, as for the picture below
                else:
                    assert not container.streams.audio  # no voice was sent
                frames = sum(1 for _ in container.decode(stream))

            # The file holds one frame per 1/FPS of the stream time it covers: `span_s` is that
            # time as the server measured it, from the first recorded frame's timestamp to the
            # last's (the pacer stamps frames by the server's clock, so a loaded machine that
            # delivered late or skipped frames makes the span, not the count, what it was).
            assert frames == recording["frames"]
            assert abs(frames - FPS * recording["span_s"]) <= 1, (frames, recording)
            # A floor only, far under the 3 s slept between start and stop, never a timing check.
            assert recording["span_s"] >= RECORD_SECONDS / 2, recording
        finally:
            await client.close()


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
