"""The microphone, delayed by the session's video latency so that voice and avatar stay in sync.

The webcam page may send its microphone beside the camera. The avatar leaves the server one
glass-to-glass latency after its webcam frame arrived (`AvatarTrack.latency`), so the voice is
held back by that same latency: `VoiceDelay` reads the incoming audio into a bounded buffer and
`DelayedVoiceTrack` plays it out, paced in 20 ms frames, always from the sample that arrived
one latency ago.

The latency moves (an fps change, a reset, load). The delay follows it during silence: while
the voice is silent the read position skips silent input (less delay) or the track plays
inserted silence (more delay), 20 ms at a time, which no listener can hear. Speech has pauses
every few hundred milliseconds, so this catches up within a second or two. Resampling (playing
slightly faster or slower) would follow during speech too, but shifts the pitch and for a jump
of a second (16 -> 8 fps doubles the latency) would take many seconds at an inaudible rate.
Only when the delay is more than `JUMP_ERROR_S` off and no silence comes for
`MAX_WAIT_FOR_SILENCE` (music, a noisy room) does the track jump at once, with a short
crossfade so that the cut does not click.

Audio arrival times are jittery (packets come in bursts), so the buffer maps its samples to time
through the earliest-arriving recent frame (`_Timeline`): jitter only ever makes a frame late.

The buffer, and so the longest delay, is bounded by `RAIN_VOICE_MAX_DELAY`. This is a small
sample ring written by hand: PyAV resamples and converts (`av.AudioResampler`), but has no
delay line whose read position follows a target.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import math
import time
from collections import deque
from collections.abc import Callable

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, AudioResampler

logger = logging.getLogger(__name__)

SAMPLE_RATE = 48_000  # Opus's rate: what aiortc decodes to and encodes from
CHANNELS = 2
FRAME_SAMPLES = SAMPLE_RATE // 50  # 20 ms, WebRTC's usual packet
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
# aiortc's audio receiver releases a frame only once 4 more have arrived (its jitter buffer's
# prefetch, `JitterBuffer(capacity=16, prefetch=4)` in `RTCRtpReceiver`): a frame reaches us
# that many frame durations after it reached the server. (Its video receiver holds a frame
# until the next one starts; the session adds that to the latency this track follows.)
RECEIVER_HOLDBACK_FRAMES = 4
# The delay is left alone while it is this close to its target (the median video latency itself
# moves by about this much from frame to frame).
TOLERANCE_S = 0.015
# How long a wrong delay waits for silence before it is corrected by a crossfaded jump, and how
# wrong it must be for that (about where viewers start to notice lips and voice apart; smaller
# errors wait for silence however long it takes, so a jittery target never cuts a word).
MAX_WAIT_FOR_SILENCE = 2.0
JUMP_ERROR_S = 0.045
CROSSFADE_SAMPLES = SAMPLE_RATE // 200  # 5 ms
# Blocks whose every sample is quieter than this (-36 dBFS) count as silence: below a voice, above
# a quiet room with the browser's noise suppression. A peak, not an average: a block where a word
# starts in its last millisecond is not silent.
SILENCE_PEAK = 32768 * 10 ** (-36 / 20)
SILENCE_BLOCK = SAMPLE_RATE // 100  # 10 ms
# A frame later than this after the previous one means the input stopped (a muted or lost
# microphone): silence fills the gap so that the timeline stays true.
GAP_S = 0.25
# Arrivals over this window make the timeline (long enough to span a jitter burst).
TIMELINE_WINDOW_S = 2.0


class _Timeline:
    """Sample index -> arrival time (`time.monotonic()`): `origin + index / SAMPLE_RATE`.

    Each frame says when its last sample arrived; the origin is the earliest such estimate over
    the last `TIMELINE_WINDOW_S`, since jitter can only delay a frame.
    """

    def __init__(self) -> None:
        self._estimates: deque[tuple[float, float]] = deque()  # (arrived, origin estimate)
        self.origin: float | None = None

    def add(self, arrived: float, end_index: int) -> None:
        self._estimates.append((arrived, arrived - end_index / SAMPLE_RATE))
        while self._estimates[0][0] < arrived - TIMELINE_WINDOW_S:
            self._estimates.popleft()
        self.origin = min(estimate for _, estimate in self._estimates)

    def lateness(self, arrived: float, end_index: int) -> float:
        """How much later than the timeline expects a frame ending at `end_index` arrived."""
        return 0.0 if self.origin is None else arrived - (self.origin + end_index / SAMPLE_RATE)


class VoiceDelay:
    """The incoming microphone in a bounded ring of samples, each mapped to its arrival time.

    A reader task reads `microphone` as it comes (aiortc queues unread frames without bound),
    converts each frame to 48 kHz stereo s16 and appends it; while `paused()` it appends silence,
    so that what was said during a pause is never played.
    """

    def __init__(self, microphone: MediaStreamTrack, *, max_delay: float, paused: Callable[[], bool]):
        # Room for the longest delay, a frame being read and the timeline's slack.
        self.capacity = math.ceil((max_delay + 1.0) * SAMPLE_RATE)
        self.max_delay = max_delay
        self._ring = np.zeros((self.capacity, CHANNELS), np.int16)
        self.written = 0  # samples appended since the start
        self.timeline = _Timeline()
        self._microphone = microphone
        self._paused = paused
        self._resampler = AudioResampler(format="s16", layout="stereo", rate=SAMPLE_RATE)
        self.frames_received = 0
        self.gaps_filled = 0
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            while True:
                frame = await self._microphone.recv()
                arrived = time.monotonic() - RECEIVER_HOLDBACK_FRAMES * frame.samples / frame.sample_rate
                self.frames_received += 1
                for converted in self._resampler.resample(frame):
                    self.append(converted.to_ndarray().reshape(-1, CHANNELS), arrived)
        except MediaStreamError:
            pass

    def append(self, samples: np.ndarray, arrived: float) -> None:
        """Samples [n, 2] s16 whose last one reached the server at `arrived`."""
        if self._paused():
            samples = np.zeros_like(samples)
        gap = self.timeline.lateness(arrived, self.written + len(samples))
        if gap > GAP_S:
            self.gaps_filled += 1
            self._write(np.zeros((min(round(gap * SAMPLE_RATE), self.capacity), CHANNELS), np.int16))
        self._write(samples)
        self.timeline.add(arrived, self.written)

    def _write(self, samples: np.ndarray) -> None:
        start = self.written % self.capacity
        first = min(len(samples), self.capacity - start)
        self._ring[start:start + first] = samples[:first]
        self._ring[: len(samples) - first] = samples[first:]
        self.written += len(samples)

    def read(self, start: int, count: int) -> np.ndarray:
        """Samples [start, start + count); silence where the ring holds none (not yet arrived, or
        overwritten)."""
        out = np.zeros((count, CHANNELS), np.int16)
        # Called every 10 ms of silence sought, so by slices (at most two: the ring wraps once)
        # rather than by an index array.
        first, last = max(start, self.written - self.capacity, 0), min(start + count, self.written)
        while first < last:
            offset = first % self.capacity
            piece = min(last - first, self.capacity - offset)
            out[first - start:first - start + piece] = self._ring[offset:offset + piece]
            first += piece
        return out

    def silent(self, start: int, count: int) -> bool:
        return int(np.abs(self.read(start, count).astype(np.int32)).max()) < SILENCE_PEAK

    def silent_run(self, start: int, limit: int) -> int:
        """How many samples from `start` (at most `limit`, in whole 10 ms blocks) are silent."""
        run = 0
        while run + SILENCE_BLOCK <= limit and self.silent(start + run, SILENCE_BLOCK):
            run += SILENCE_BLOCK
        return run

    async def stop(self) -> None:
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


class DelayedVoiceTrack(MediaStreamTrack):
    """The microphone `target()` seconds late: 20 ms frames of 48 kHz stereo s16, pts in samples.

    `target()` is the session's current video latency (None before the first avatar frame: then,
    and while `paused()`, the track plays silence). Frame n is due at `started_at + pts / 48000`
    (`time.monotonic()`), pts = n * 960; a stalled event loop carries on from now rather than
    burst, its pts skipping the frames it missed (as the avatar's pts do), so that pts stay
    wall-clock time for whoever muxes the two.
    """

    kind = "audio"

    def __init__(self, voice: VoiceDelay, *, target: Callable[[], float | None], paused: Callable[[], bool]):
        super().__init__()  # don't forget this!
        self._voice = voice
        self._target = target
        self._paused = paused
        self.started_at: float | None = None  # when the frame of pts 0 was due
        self._pts = 0
        self._position: int | None = None  # the next input sample to play
        self._wrong_since: float | None = None  # since when the delay has been off its target
        self.adjustments = 0  # silence inserted or skipped
        self.jumps = 0  # crossfaded corrections without silence
        self.delay: float | None = None  # the delay of the last frame played
        self.target_delay: float | None = None

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self.started_at is None:
            self.started_at = now
        else:
            self._pts += FRAME_SAMPLES
            due = self.started_at + self._pts / SAMPLE_RATE
            if due < now - 0.1:  # stalled: skip the frames missed, no burst of catch-up frames
                self._pts += int((now - due) * SAMPLE_RATE) // FRAME_SAMPLES * FRAME_SAMPLES
            elif due > now:
                await asyncio.sleep(due - now)
        if self.readyState != "live":
            raise MediaStreamError
        due = self.started_at + self._pts / SAMPLE_RATE
        frame = AudioFrame.from_ndarray(self.next_samples(due).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        frame.time_base = TIME_BASE
        return frame

    def next_samples(self, now: float) -> np.ndarray:
        """The frame to play at `now`: [FRAME_SAMPLES, 2] s16."""
        voice, origin = self._voice, self._voice.timeline.origin
        target = self._target()
        if target is not None:
            target = min(target, voice.max_delay)
        self.target_delay = target
        if target is None or origin is None or self._paused():
            self._position = None  # starts afresh at the right delay
            return np.zeros((FRAME_SAMPLES, CHANNELS), np.int16)
        wanted = round((now - target - origin) * SAMPLE_RATE)  # the sample that arrived `target` ago
        if self._position is None:
            self._position = wanted
        samples = self._follow(wanted, now)
        # The delay of the next sample to play, due when this frame ends.
        self.delay = now + FRAME_SAMPLES / SAMPLE_RATE - (origin + self._position / SAMPLE_RATE)
        return samples

    def _follow(self, wanted: int, now: float) -> np.ndarray:
        """The next frame, moving the read position towards `wanted` through silence."""
        voice, position = self._voice, self._position
        assert position is not None
        error = wanted - position  # > 0: too much delay, < 0: too little
        if abs(error) <= TOLERANCE_S * SAMPLE_RATE:
            self._wrong_since = None
            return self._play(FRAME_SAMPLES)
        if self._wrong_since is None:
            self._wrong_since = now
        if error > 0:
            # Through silence, keeping its last 10 ms: words never run into each other.
            skip = voice.silent_run(position, error + SILENCE_BLOCK) - SILENCE_BLOCK
            if skip > 0:
                self._position += skip
                self.adjustments += 1
                return self._play(FRAME_SAMPLES)
        elif voice.silent(position - SILENCE_BLOCK, 2 * SILENCE_BLOCK):
            inserted = min(-error, FRAME_SAMPLES)
            self.adjustments += 1
            return np.concatenate([np.zeros((inserted, CHANNELS), np.int16), self._play(FRAME_SAMPLES - inserted)])
        if now - self._wrong_since < MAX_WAIT_FOR_SILENCE or abs(error) < JUMP_ERROR_S * SAMPLE_RATE:
            return self._play(FRAME_SAMPLES)
        # No silence came: jump now, fading the old position out and the new one in.
        logger.debug("voice delay %.0f ms off with no silence for %.1f s: jumping", 1000 * error / SAMPLE_RATE,
                     MAX_WAIT_FOR_SILENCE)
        self.jumps += 1
        self._wrong_since = None
        old = voice.read(position, CROSSFADE_SAMPLES).astype(np.float32)
        self._position = wanted
        new = self._play(FRAME_SAMPLES)
        fade = np.linspace(0.0, 1.0, CROSSFADE_SAMPLES, dtype=np.float32)[:, None]
        head = new[:CROSSFADE_SAMPLES].astype(np.float32) * fade + old * (1.0 - fade)
        new[:CROSSFADE_SAMPLES] = np.clip(np.round(head), -32768, 32767).astype(np.int16)
        return new

    def _play(self, count: int) -> np.ndarray:
        assert self._position is not None
        samples = self._voice.read(self._position, count)
        self._position += count
        return samples
