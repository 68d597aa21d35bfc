"""The recorder on its own: real PyAV files from paced synthetic tracks, with and without voice."""

from __future__ import annotations

import asyncio
import fractions

import av
import numpy as np
import pytest
from aiortc import VideoStreamTrack
from aiortc.mediastreams import AUDIO_PTIME, MediaStreamTrack

from server.media.recorder import Recorder, RecordingFailed

SIZE = 64


class ColourTrack(VideoStreamTrack):
    """30 fps frames whose colour counts up (aiortc's pacing)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        image = np.full((SIZE, SIZE, 3), self.count % 256, np.uint8)
        self.count += 1
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = pts, time_base
        return frame


class SineTrack(MediaStreamTrack):
    """A 440 Hz tone, 20 ms frames of 48 kHz stereo s16, paced in real time (what aiortc's Opus
    decoder yields for a microphone)."""

    kind = "audio"
    RATE = 48_000

    def __init__(self) -> None:
        super().__init__()
        self.samples = 0
        self.start: float | None = None

    async def recv(self) -> av.AudioFrame:
        loop = asyncio.get_running_loop()
        if self.start is None:
            self.start = loop.time()
        count = int(AUDIO_PTIME * self.RATE)
        await asyncio.sleep(max(0.0, self.start + self.samples / self.RATE - loop.time()))
        t = (self.samples + np.arange(count)) / self.RATE
        tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.repeat(tone, 2)[None, :], format="s16", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = self.RATE, self.samples, fractions.Fraction(1, self.RATE)
        self.samples += count
        return frame


def recorder(path, *, audio=None, max_seconds=60.0, max_bytes=10**9, fps=15) -> Recorder:
    return Recorder(ColourTrack(), path, fps=fps, width=SIZE, height=SIZE, audio=audio,
                    max_seconds=max_seconds, max_bytes=max_bytes)


def probe(path) -> dict:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video))
        container.seek(0)
        audio = [s for s in container.streams if s.type == "audio"]
        return {"frames": frames, "rate": video.average_rate, "codec": video.codec_context.name,
                "seconds": float(video.duration * video.time_base),
                "audio": audio[0].codec_context.name if audio else None,
                "audio_seconds": float(audio[0].duration * audio[0].time_base) if audio else 0.0}


async def test_records_video_and_voice_at_the_frame_rate(tmp_path) -> None:
    out = tmp_path / "voice.mp4"
    rec = recorder(out, audio=SineTrack())
    task = asyncio.ensure_future(rec.run())
    await asyncio.sleep(1.2)
    rec.stop("stopped")
    await task
    assert rec.stop_reason == "stopped" and sorted(p.name for p in tmp_path.iterdir()) == ["voice.mp4"]
    found = probe(out)
    assert found["codec"] == "h264" and found["rate"] == 15 and found["audio"] == "aac"
    assert found["frames"] == rec.progress.frames and found["frames"] == round(rec.duration * 15)
    # Both tracks ran in real time side by side: the voice covers the picture's time, in step
    # (a bound of a few frames: where the tracks start and stop depends on when they are read).
    assert rec.progress.audio_samples > 0 and abs(found["audio_seconds"] - found["seconds"]) < 0.2, found


@pytest.mark.parametrize(
    ("limits", "reason"),
    [({"max_seconds": 0.5}, "reached the longest recording, 0.5 s"),
     ({"max_bytes": 100}, "reached the disk space for recordings")],
)
async def test_a_limit_ends_the_recording_with_a_playable_file(tmp_path, limits, reason) -> None:
    out = tmp_path / "short.mp4"
    rec = recorder(out, fps=10, **limits)
    await asyncio.wait_for(rec.run(), 30)  # stops by itself
    assert rec.stop_reason == reason
    found = probe(out)
    assert found["frames"] == rec.progress.frames > 0 and found["audio"] is None
    if "max_seconds" in limits:
        assert found["frames"] == 5


async def test_a_failed_recording_leaves_no_file(tmp_path) -> None:
    out = tmp_path / "none.mp4"
    rec = recorder(out)
    rec.stop("stopped at once")
    with pytest.raises(RecordingFailed, match="no avatar frame"):
        await rec.run()
    assert list(tmp_path.iterdir()) == []


async def test_a_failing_encoder_falls_back_to_libx264_and_says_so(tmp_path) -> None:
    """As NVENC may: an encoder that opens at a probe's settings fails at the recording's. FFmpeg's
    MJPEG encoder refuses the recording's limited-range yuv420p when it opens (at the first frame): the
    recording goes on with libx264 and is complete, and its progress names the failed encoder."""
    out = tmp_path / "fallback.mp4"
    rec = Recorder(ColourTrack(), out, fps=15, width=SIZE, height=SIZE, audio=SineTrack(), max_seconds=60.0,
                   max_bytes=10**9, codecs=("mjpeg", "libx264"))
    task = asyncio.ensure_future(rec.run())
    await asyncio.sleep(1.5)
    rec.stop("done")
    await task
    info = probe(out)
    assert info["codec"] == "h264" and rec.progress.codec == "libx264"
    assert info["frames"] == rec.progress.frames > 0 and info["audio"] == "aac"
    assert rec.progress.codec_fallback.startswith("mjpeg failed") and "libx264" in rec.progress.codec_fallback


async def test_the_last_encoder_failing_fails_the_recording_and_leaves_no_file(tmp_path) -> None:
    out = tmp_path / "broken.mp4"
    rec = Recorder(ColourTrack(), out, fps=15, width=SIZE, height=SIZE, max_seconds=60.0, max_bytes=10**9,
                   codecs=("mjpeg",))
    task = asyncio.ensure_future(rec.run())
    with pytest.raises(RecordingFailed):
        await asyncio.wait_for(task, 30)
    assert not out.exists() and not list(tmp_path.iterdir())
