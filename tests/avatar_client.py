"""aiortc clients of the live server for the tests: the webcam side and a WHEP viewer.

Every wait is bounded (`eventually`), so that a broken server fails a test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable

import httpx
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from server.media.voice import RECEIVER_HOLDBACK_FRAMES
from tests.webcam import ClipTrack


async def eventually(check: Callable[[], Awaitable[bool] | bool], *, timeout: float, what: str, interval: float = 0.2):
    """Poll `check` until it is true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)


class FrameSink:
    """Reads a received video track: how many frames, the latest one, when, their pts."""

    def __init__(self) -> None:
        self.count = 0
        self.last: np.ndarray | None = None
        self.times: list[float] = []
        self.pts: list[int] = []
        self.task: asyncio.Task | None = None

    def start(self, track: MediaStreamTrack) -> None:
        self.task = asyncio.ensure_future(self._run(track))

    async def _run(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                self.last = frame.to_ndarray(format="rgb24")
                self.count += 1
                self.times.append(time.monotonic())
                self.pts.append(frame.pts)
        except MediaStreamError:
            pass

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


class AudioSink(FrameSink):
    """Reads a received audio track: `frames` holds (when the frame's packet arrived, its mono
    samples at 48 kHz), bounded to the last `max_seconds`.

    aiortc's audio receiver releases a frame once 4 more have arrived (its jitter buffer's
    prefetch, the server's `RECEIVER_HOLDBACK_FRAMES`): that many frame durations are taken
    off the time `recv()` returns, for when the packet arrived.
    """

    def __init__(self, max_seconds: float = 60.0) -> None:
        super().__init__()
        self.frames: deque[tuple[float, np.ndarray]] = deque(maxlen=int(max_seconds * 50))

    async def _run(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                now = time.monotonic()
                samples = frame.to_ndarray().reshape(frame.samples, -1)[:, 0]
                self.frames.append((now - RECEIVER_HOLDBACK_FRAMES * frame.samples / frame.sample_rate, samples))
                self.count += 1
        except MediaStreamError:
            pass


def _configuration() -> RTCConfiguration:
    return RTCConfiguration(iceServers=[])  # no STUN: loopback only


class WebcamClient:
    """The webcam page's part, in Python: the clip out; the avatar and the driving image in; control channel."""

    def __init__(self, http: httpx.AsyncClient, configuration: RTCConfiguration | None = None):
        """`configuration`: the ICE servers to use, as the page takes them from /api/config (default none)."""
        self.http = http
        self.pc = RTCPeerConnection(configuration or _configuration())
        self.avatar = FrameSink()
        self.preview = FrameSink()
        self.voice = AudioSink()  # the delayed microphone, when one is sent
        self.replies: asyncio.Queue[str] = asyncio.Queue()
        self.last_reply_bytes = 0
        self.session_id: str | None = None
        self.view_id: str | None = None
        self.view_token: str | None = None
        self.channel = None

    async def open(
        self,
        *,
        reference_id: str | None = None,
        params: dict | None = None,
        camera: MediaStreamTrack | None = None,
        microphone: MediaStreamTrack | None = None,
    ) -> httpx.Response:
        """Offer the camera (default: the astronaut clip), the preview section and, when given,
        the microphone (sent and received: the server sends it back delayed)."""
        pc = self.pc
        pc.addTrack(camera or ClipTrack())
        pc.addTransceiver("video", direction="recvonly")
        if microphone is not None:
            pc.addTrack(microphone)
        self.channel = pc.createDataChannel("control")
        self.channel.on("message", self.replies.put_nowait)
        sinks = iter([self.avatar, self.preview])

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            (self.voice if track.kind == "audio" else next(sinks)).start(track)

        await pc.setLocalDescription(await pc.createOffer())
        body = {"sdp": pc.localDescription.sdp, "type": "offer", "reference_id": reference_id, "params": params}
        response = await self.http.post("/api/offer", json=body)
        if response.status_code == 200:
            answer = response.json()
            self.session_id, self.view_id = answer["session_id"], answer["view_id"]
            self.view_token = answer["view_token"]
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        return response

    async def control(self, message: dict | str | bytes, timeout: float = 30.0) -> dict:
        """Send one control message (a dict as JSON, text or bytes as they are) and return the
        server's reply to it; the reply's size in bytes is kept in `last_reply_bytes`."""
        await eventually(lambda: self.channel.readyState == "open", timeout=timeout, what="the control channel")
        self.channel.send(json.dumps(message) if isinstance(message, dict) else message)
        raw = await asyncio.wait_for(self.replies.get(), timeout)
        self.last_reply_bytes = len(raw.encode())
        return json.loads(raw)

    async def stats(self) -> dict:
        response = await self.http.get(f"/api/sessions/{self.session_id}/stats")
        response.raise_for_status()
        return response.json()

    async def engine_out_above(self, value: int) -> bool:
        """Whether the engine has made more than `value` frames for this session."""
        return (await self.stats())["frames"]["engine_out"] > value

    async def close(self) -> None:
        await self.pc.close()
        await self.avatar.stop()
        await self.preview.stop()
        await self.voice.stop()


class Viewer:
    """A WHEP viewer of one session."""

    def __init__(self, http: httpx.AsyncClient):
        self.http = http
        self.pc = RTCPeerConnection(_configuration())
        self.video = FrameSink()
        self.voice = AudioSink()
        self.location: str | None = None

    async def open(self, view_id: str, token: str | None, *, audio: bool = False) -> httpx.Response:
        """Offer to receive the avatar, and the session's voice when `audio` (as the OBS view does)."""
        pc = self.pc
        pc.addTransceiver("video", direction="recvonly")
        if audio:
            pc.addTransceiver("audio", direction="recvonly")

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            (self.voice if track.kind == "audio" else self.video).start(track)

        await pc.setLocalDescription(await pc.createOffer())
        params = {"token": token} if token is not None else {}
        response = await self.http.post(
            f"/whep/{view_id}", params=params, content=pc.localDescription.sdp,
            headers={"Content-Type": "application/sdp"},
        )
        if response.status_code == 201:
            self.location = response.headers["location"]
            await pc.setRemoteDescription(RTCSessionDescription(sdp=response.text, type="answer"))
        return response

    async def close(self) -> None:
        await self.pc.close()
        await self.video.stop()
        await self.voice.stop()


async def make_offer(*, video: str | None = "sendrecv", audio: bool | str = False) -> str:
    """A real SDP offer from aiortc (for the REST tests), with a video section of the given
    direction, and an audio section (`audio`: its direction, or True for sendrecv)."""
    pc = RTCPeerConnection(_configuration())
    try:
        if video is not None:
            pc.addTransceiver("video", direction=video)
        if audio:
            pc.addTransceiver("audio", direction="sendrecv" if audio is True else audio)
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()
