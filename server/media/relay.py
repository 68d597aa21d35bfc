"""The avatar and the delayed voice fanned out to every consumer: the session's own page and its
WHEP viewers (and a recording)."""

from __future__ import annotations

import time
from collections import deque

from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack
from av import AudioFrame, VideoFrame


def _copy_video(shared: VideoFrame) -> VideoFrame:
    return VideoFrame.from_ndarray(shared.to_ndarray(), format=shared.format.name)


def _copy_audio(shared: AudioFrame) -> AudioFrame:
    frame = AudioFrame.from_ndarray(shared.to_ndarray(), format=shared.format.name, layout=shared.layout.name)
    frame.sample_rate = shared.sample_rate
    return frame


_COPIES = {"video": _copy_video, "audio": _copy_audio}


class SubscriberTrack(MediaStreamTrack):
    """One consumer's copy of a relayed track.

    `MediaRelay` hands every consumer the same frame, and aiortc encodes on executor threads with
    PyAV, which rebases a frame's pts in place (and reformats or resamples it through a per-frame
    context): two encoders sharing frames race, and one of the streams stalls. So each consumer
    reads its own copy (a few kB at the model's resolution; 20 ms of voice).
    """

    def __init__(self, source: MediaStreamTrack, kind: str):
        super().__init__()
        self.kind = kind
        self._source = source
        self._copy = _COPIES[kind]
        self._handed_at: float | None = None
        # How long the consumer took with each frame before asking for the next one: for the
        # page's RTCRtpSender, which encodes, packetizes and sends a frame between two calls,
        # the encoder's part of the latency.
        self.handling: deque[float] = deque(maxlen=32)

    async def recv(self) -> VideoFrame | AudioFrame:
        if self._handed_at is not None:
            self.handling.append(time.monotonic() - self._handed_at)
            self._handed_at = None
        shared = await self._source.recv()
        frame = self._copy(shared)
        frame.pts = shared.pts
        frame.time_base = shared.time_base
        self._handed_at = time.monotonic()
        return frame

    def stop(self) -> None:
        super().stop()
        self._source.stop()


class TrackRelay:
    """One track (the avatar, or the delayed voice) read once, at its own pace, and handed to any
    number of consumers."""

    def __init__(self, track: MediaStreamTrack):
        self._track = track
        self._relay = MediaRelay()

    def subscribe(self) -> SubscriberTrack:
        """A new consumer, in its own frames: newest frame only (never a queue), as a late frame
        is better dropped."""
        return SubscriberTrack(self._relay.subscribe(self._track, buffered=False), self._track.kind)
