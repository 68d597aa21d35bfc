"""The avatar and the delayed voice fanned out to every consumer: the session's own page and its
WHEP viewers."""

from __future__ import annotations

from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack
from av import AudioFrame, VideoFrame


class SubscriberTrack(MediaStreamTrack):
    """One consumer's copy of a relayed video track.

    `MediaRelay` hands every consumer the same `VideoFrame`, and aiortc encodes on executor
    threads with PyAV, which rebases a frame's pts in place (and reformats through a per-frame
    context): two encoders sharing frames race, and one of the streams stalls. So each consumer
    reads its own copy (a few kB at the model's resolution).
    """

    kind = "video"

    def __init__(self, source: MediaStreamTrack):
        super().__init__()
        self._source = source

    async def recv(self) -> VideoFrame:
        shared = await self._source.recv()
        frame = VideoFrame.from_ndarray(shared.to_ndarray(), format=shared.format.name)
        frame.pts = shared.pts
        frame.time_base = shared.time_base
        return frame

    def stop(self) -> None:
        super().stop()
        self._source.stop()


class AvatarRelay:
    """One track read once and handed to any number of consumers."""

    def __init__(self, track: MediaStreamTrack):
        self._track = track
        self._relay = MediaRelay()

    def subscribe(self) -> SubscriberTrack:
        """A new consumer: newest frame only (never a queue), in its own frames."""
        return SubscriberTrack(self._relay.subscribe(self._track, buffered=False))


class VoiceSubscriberTrack(MediaStreamTrack):
    """One consumer's copy of the relayed voice (as `SubscriberTrack`: aiortc's Opus encoder
    resamples a frame on an executor thread, so consumers do not share frames)."""

    kind = "audio"

    def __init__(self, source: MediaStreamTrack):
        super().__init__()
        self._source = source

    async def recv(self) -> AudioFrame:
        shared = await self._source.recv()
        frame = AudioFrame.from_ndarray(shared.to_ndarray(), format=shared.format.name, layout=shared.layout.name)
        frame.sample_rate = shared.sample_rate
        frame.pts = shared.pts
        frame.time_base = shared.time_base
        return frame

    def stop(self) -> None:
        super().stop()
        self._source.stop()


class VoiceRelay:
    """The delayed voice read once (its pace is its own) and handed to any number of consumers."""

    def __init__(self, track: MediaStreamTrack):
        self._track = track
        self._relay = MediaRelay()

    def subscribe(self) -> VoiceSubscriberTrack:
        """A new consumer, in its own frames; unbuffered, as a late frame is better dropped."""
        return VoiceSubscriberTrack(self._relay.subscribe(self._track, buffered=False))
