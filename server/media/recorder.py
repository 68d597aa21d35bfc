"""Recording: a video track, and optionally an audio track, written to an MP4 file.

H.264 through PyAV (NVENC when asked for and the machine has it, else libx264) at a constant
frame rate, AAC audio (FFmpeg's native encoder, in every PyAV wheel). If NVENC fails, where it
opens at the recording's size or later, the recording goes on with libx264 (what was encoded so far
is re-encoded with it) and says so (`codec_fallback`). The tracks are read on
the event loop into one bounded queue, and a thread of the recording's own encodes and muxes:
a slow encoder drops frames (counted) and never holds the loop or the live stream back.

The file is written under a temporary name beside the final one and renamed into place only
once it is complete, so a recording that fails leaves nothing half-written behind. It stops,
finished and playable, at its longest duration or when it would grow past its byte budget, and
says why (`stop_reason`).
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from pathlib import Path

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

logger = logging.getLogger(__name__)

# The audio of every file: AAC, 48 kHz stereo (what WebRTC's Opus decodes to), in frames of the
# encoder's size (1024 samples).
AUDIO_RATE = 48_000
AUDIO_LAYOUT = "stereo"
AAC_FRAME_SAMPLES = 1024
# Frames waiting for the encoder: about 2 s of video at 16 fps plus the audio beside it.
QUEUE_FRAMES = 96
# Most frames written to fill one gap in the video's timestamps (a stalled loop); a longer gap is
# filled only that far, so one huge jump cannot make the encoder write minutes of copies.
MAX_FILL_FRAMES = 64
# The H.264 encoders' settings (another encoder, as a test may name, takes FFmpeg's defaults).
ENCODER_OPTIONS = {"h264_nvenc": {"preset": "p4"}, "libx264": {"preset": "veryfast", "crf": "20"}}
# How often the encoder, with nothing to encode, looks whether it was asked to stop.
STOP_POLL_SECONDS = 0.1


class RecordingFailed(RuntimeError):
    """The encoder or the file failed; nothing was kept."""


@dataclass
class RecordingProgress:
    """What a recording has written so far (read from the loop while the encoder thread writes)."""

    frames: int = 0  # video frames in the file, repeats included
    frames_repeated: int = 0  # written again to fill a gap in the video's timestamps
    frames_dropped: int = 0  # video frames the encoder could not keep up with
    audio_frames_dropped: int = 0
    audio_samples: int = 0
    span_seconds: float = 0.0  # from the first video frame's timestamp to the last's, plus one frame
    bytes: int = 0
    codec: str | None = None
    # Why the recording left its first encoder for the next one (None: it did not).
    codec_fallback: str | None = None


@cache
def nvenc_works() -> bool:
    """Whether this PyAV can open the NVENC H.264 encoder (a wheel may carry it on a machine
    without an NVIDIA GPU or driver, where opening it fails)."""
    if "h264_nvenc" not in av.codecs_available:
        return False
    context = av.CodecContext.create("h264_nvenc", "w")
    context.width, context.height, context.pix_fmt, context.time_base = 64, 64, "yuv420p", Fraction(1, 30)
    try:
        context.open()
    except av.FFmpegError:
        return False
    return True


def video_codecs(prefer_nvenc: bool) -> tuple[str, ...]:
    """The H.264 encoders a recording tries, in order: NVENC where asked for and this PyAV opens it
    (at a probe's size: it may still fail at the recording's), libx264, which every wheel has, last."""
    return ("h264_nvenc", "libx264") if prefer_nvenc and nvenc_works() else ("libx264",)


class EncoderFailed(Exception):
    """The video encoder failed (at its first frame, where it opens, or later)."""


class Recorder:
    """Writes `video` (and `audio`, a track of `av.AudioFrame`s, when given) to `path` as MP4.

    `run()` records until `stop()` is called, the video track ends, or a limit is reached; it
    returns only once the file is complete and in place (or raises `RecordingFailed`, leaving
    no file). The frame rate is fixed when the recording starts: each video frame goes to the
    slot its timestamp falls in, gaps are filled with the frame before, so the file plays at
    `fps` in step with the audio whatever the live stream's pace.
    """

    def __init__(
        self,
        video: MediaStreamTrack,
        path: Path,
        *,
        fps: float,
        width: int,
        height: int,
        audio: MediaStreamTrack | None = None,
        max_seconds: float,
        max_bytes: int,
        prefer_nvenc: bool = False,
        codecs: tuple[str, ...] | None = None,
    ):
        self.video: MediaStreamTrack | None = video
        self.audio: MediaStreamTrack | None = audio
        self.with_audio = audio is not None
        self.path = path
        self.fps = Fraction(fps).limit_denominator(1001)
        self.width, self.height = width, height
        self.max_seconds, self.max_bytes = max_seconds, max_bytes
        # The encoders to try in turn (default: `video_codecs(prefer_nvenc)`).
        self.codecs = codecs or video_codecs(prefer_nvenc)
        self.progress = RecordingProgress()
        self.stop_reason: str | None = None
        self._queue: queue.Queue[tuple[str, av.VideoFrame | av.AudioFrame, float]] = queue.Queue(QUEUE_FRAMES)
        self._stop = threading.Event()  # no more frames are read
        self._full = False  # a limit was reached: nothing more is written

    @property
    def duration(self) -> float:
        """Seconds of video in the file so far."""
        return float(self.progress.frames / self.fps)

    def stop(self, reason: str) -> None:
        """Ask the recording to finish (the first reason given is kept); `run()` then returns,
        once the frames read until now are written."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        # A thread of its own: the default executor also runs aiortc's encoders, which a
        # recording held for minutes must not starve.
        executor = ThreadPoolExecutor(1, thread_name_prefix="rain-recorder")
        assert self.video is not None, "a recorder runs once"
        readers = [asyncio.ensure_future(self._read(self.video, "video"))]
        if self.audio is not None:
            readers.append(asyncio.ensure_future(self._read(self.audio, "audio")))
        try:
            await loop.run_in_executor(executor, self._write)
        finally:
            self._stop.set()
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            for track in (self.video, self.audio):
                if track is not None:
                    track.stop()
            # A finished recording is kept for a while: it must not keep the session's tracks.
            self.video = self.audio = None
            executor.shutdown(wait=False)

    async def _read(self, track: MediaStreamTrack, kind: str) -> None:
        while not self._stop.is_set():
            try:
                frame = await track.recv()
            except MediaStreamError:
                if kind == "video":
                    self.stop("the avatar stream ended")
                return
            try:
                self._queue.put_nowait((kind, frame, time.monotonic()))
            except queue.Full:
                if kind == "video":
                    self.progress.frames_dropped += 1
                else:
                    self.progress.audio_frames_dropped += 1

    # The encoder thread ------------------------------------------------------------------
    def _write(self) -> None:
        partial = self.path.with_name(f".{self.path.name}.part")
        try:
            # Readable too: an encoder that fails has what it wrote re-encoded by the next one.
            with open(partial, "w+b") as file:
                self._encode(file)
                file.flush()
                os.fsync(file.fileno())
                # The container's index is written when it closes, after the last frame's count.
                self.progress.bytes = file.tell()
            os.replace(partial, self.path)
        except Exception as exc:
            partial.unlink(missing_ok=True)
            self.stop_reason = f"failed: {exc}"
            raise RecordingFailed(str(exc)) from exc

    def _encode(self, file) -> None:
        codecs = list(self.codecs)
        writer = self._open(file, codecs.pop(0))
        try:
            while not self._full:
                try:
                    kind, frame, arrived = self._queue.get(timeout=STOP_POLL_SECONDS)
                except queue.Empty:
                    if self._stop.is_set():
                        break
                    continue
                write = _Timeline.video_frame if kind == "video" else _Timeline.audio_frame
                writer = self._write_falling_back(writer, file, codecs, write, frame, arrived)
            if self.progress.frames == 0:
                raise RecordingFailed("no avatar frame was recorded")
            writer = self._write_falling_back(writer, file, codecs, _Timeline.flush)
        finally:
            writer.container.close()

    def _write_falling_back(self, writer: _Timeline, file, codecs: list[str], write, *args) -> _Timeline:
        """`write(writer, *args)`, handing over to the next encoder of `codecs` (taken from it) each time
        the current one fails; the writer that wrote it."""
        while True:
            try:
                write(writer, *args)
                return writer
            except EncoderFailed as failure:
                if not codecs:
                    raise
                writer = self._fall_back(writer, file, codecs.pop(0), failure)

    def _open(self, file, codec: str) -> _Timeline:
        container = av.open(file, "w", format="mp4")
        video = self._add_video_stream(container, codec)
        audio = container.add_stream("aac", rate=AUDIO_RATE, layout=AUDIO_LAYOUT) if self.with_audio else None
        resampler = av.AudioResampler(format="fltp", layout=AUDIO_LAYOUT, rate=AUDIO_RATE, frame_size=AAC_FRAME_SAMPLES)
        return _Timeline(self, container, video, audio, resampler, file)

    def _fall_back(self, writer: _Timeline, file, codec: str, failure: EncoderFailed) -> _Timeline:
        """Go on with `codec`: finish the file as the failed encoder left it (its packets, without
        flushing it), re-encode that with `codec` from the start of `file`, and return the new writer."""
        failed = writer.video.codec_context.name
        reason = f"{failed} failed ({failure}); recorded with {codec} instead"
        logger.warning("recording %s: %s", self.path.name, reason)
        self.progress.codec_fallback = reason
        try:
            writer.container.close()
        except (av.FFmpegError, ValueError):
            pass  # nothing was muxed (the encoder failed at its first frame): nothing to keep
        file.seek(0)
        written = file.read()
        file.seek(0)
        file.truncate()
        new = self._open(file, codec)
        new.continue_from(writer)
        if written:
            new.reencode(written)
        return new

    def _add_video_stream(self, container, codec: str) -> av.VideoStream:
        stream = container.add_stream(codec, rate=self.fps, options=ENCODER_OPTIONS.get(codec, {}))
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
        stream.codec_context.time_base = 1 / self.fps
        if codec == "libx264":
            # One thread: x264 would start threads per core for frames of a few kB.
            stream.codec_context.thread_count = 1
        self.progress.codec = codec
        return stream


class _Timeline:
    """The encoder thread's placing of frames in time: video in constant-rate slots, audio by
    its samples, both counted from the first video frame."""

    def __init__(self, recorder: Recorder, container, video, audio, resampler, file):
        self.recorder, self.container, self.video, self.audio = recorder, container, video, audio
        self.resampler, self.file = resampler, file
        self.max_frames = max(1, int(recorder.max_seconds * recorder.fps))
        self.first_pts: tuple[int, Fraction] | None = None  # the first video frame's pts, time base
        self.first_arrival: float | None = None
        self.last: av.VideoFrame | None = None
        self.slot = -1  # the last video slot written
        self.audio_pts: int | None = None

    def video_frame(self, frame: av.VideoFrame, arrived: float) -> None:
        recorder = self.recorder
        if self.first_pts is None:
            self.first_pts, self.first_arrival = (frame.pts, frame.time_base), arrived
        pts, time_base = self.first_pts
        seconds = (frame.pts - pts) * frame.time_base if frame.time_base == time_base else arrived - self.first_arrival
        slot = round(seconds * recorder.fps)
        if slot <= self.slot:
            return  # the live rate is above the recording's: this slot has its frame
        if self.last is not None:
            for _ in range(min(slot - self.slot - 1, MAX_FILL_FRAMES)):
                self._encode(self.last, self.slot + 1)
                recorder.progress.frames_repeated += 1
                if recorder._full:
                    return
        self.slot = max(self.slot, slot - 1)
        self._encode(frame, self.slot + 1)
        self.last = frame
        recorder.progress.span_seconds = float(seconds) + 1 / recorder.fps

    def continue_from(self, other: _Timeline) -> None:
        """Take over where `other` (a failed encoder's writer) stopped."""
        self.first_pts, self.first_arrival, self.last = other.first_pts, other.first_arrival, other.last
        self.slot, self.audio_pts = other.slot, other.audio_pts

    def reencode(self, mp4: bytes) -> None:
        """Encode again every frame of `mp4` (what a failed encoder wrote), video and audio, in place in time."""
        with av.open(io.BytesIO(mp4), "r") as source:
            for packet in source.demux():
                for frame in packet.decode():
                    if isinstance(frame, av.VideoFrame):
                        slot = round(frame.time * self.recorder.fps)
                        frame.pts, frame.time_base = slot, self.video.codec_context.time_base
                        self._mux_video(frame)
                    elif self.audio is not None:
                        frame.pts = round(frame.time * AUDIO_RATE)
                        frame.time_base = Fraction(1, AUDIO_RATE)
                        self.container.mux(self.audio.encode(frame))

    def _mux_video(self, frame: av.VideoFrame | None) -> None:
        try:
            packets = self.video.encode(frame)
        except av.FFmpegError as exc:
            raise EncoderFailed(str(exc)) from exc
        self.container.mux(packets)

    def _encode(self, frame: av.VideoFrame, slot: int) -> None:
        recorder = self.recorder
        if recorder._full:
            return
        timing = frame.pts, frame.time_base
        frame.pts, frame.time_base = slot, self.video.codec_context.time_base
        try:
            self._mux_video(frame)
        except EncoderFailed:
            frame.pts, frame.time_base = timing  # the next encoder places it again
            raise
        self.slot = slot
        recorder.progress.frames = slot + 1
        recorder.progress.bytes = self.file.tell()
        if recorder.progress.frames >= self.max_frames:
            recorder.stop(f"reached the longest recording, {recorder.max_seconds:g} s")
            recorder._full = True
        elif recorder.progress.bytes >= recorder.max_bytes:
            recorder.stop("reached the disk space for recordings")
            recorder._full = True

    def audio_frame(self, frame: av.AudioFrame, arrived: float) -> None:
        if self.audio is None or self.first_arrival is None:
            return  # before the first video frame: the file starts with the picture
        if self.audio_pts is None:
            # The voice and the picture line up as they reached the recorder.
            self.audio_pts = max(0, round((arrived - self.first_arrival) * AUDIO_RATE))
        frame.pts = None
        for out in self.resampler.resample(frame):
            self._encode_audio(out)

    def _encode_audio(self, frame: av.AudioFrame | None) -> None:
        if frame is not None:
            frame.pts, frame.time_base = self.audio_pts, Fraction(1, AUDIO_RATE)
            self.audio_pts += frame.samples
            self.recorder.progress.audio_samples += frame.samples
        self.container.mux(self.audio.encode(frame))

    def flush(self) -> None:
        self._mux_video(None)
        if self.audio is not None:
            if self.audio_pts is not None:
                for out in self.resampler.resample(None):
                    self._encode_audio(out)
            self.container.mux(self.audio.encode(None))
