"""A synthetic microphone for the server tests: silence with numbered tone bursts, and finding
those bursts again in received audio.

`MarkedMicrophone` behaves like a real one: it hands out 20 ms frames of 48 kHz mono s16, each
once its last sample has been "captured" (a real microphone delivers a frame after recording
it), and notes when each burst began (`time.monotonic()`). Burst n is a 60 ms tone at
`burst_frequency(n)`, one every `BURST_PERIOD` seconds; the frequencies cycle through
`BURST_IDS` values, so a burst heard up to `BURST_IDS * BURST_PERIOD` seconds later is known.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from dataclasses import dataclass

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

RATE = 48_000
FRAME = RATE // 50
BURST_PERIOD = 0.5
BURST_SAMPLES = RATE * 60 // 1000
BURST_IDS = 12  # cycle: 6 s, longer than any latency the tests see
AMPLITUDE = 12_000


def burst_frequency(n: int) -> float:
    return 600.0 + 200.0 * (n % BURST_IDS)


class MarkedMicrophone(MediaStreamTrack):
    """Silence with a numbered tone burst every `BURST_PERIOD`; `onsets[n]` is when burst n began."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()  # don't forget this!
        self._start: float | None = None
        self._sample = 0
        self.onsets: dict[int, float] = {}

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        # Frame [sample, sample + FRAME) is complete when its last sample has been recorded.
        wait = self._start + (self._sample + FRAME) / RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        indices = np.arange(self._sample, self._sample + FRAME)
        burst, offset = np.divmod(indices, round(BURST_PERIOD * RATE))
        tone = offset < BURST_SAMPLES
        frequencies = 600.0 + 200.0 * (burst % BURST_IDS)  # burst_frequency, for every sample
        samples = np.where(tone, AMPLITUDE * np.sin(2 * np.pi * frequencies * offset / RATE), 0.0)
        for n in burst[offset == 0]:
            self.onsets[int(n)] = self._start + int(n) * BURST_PERIOD
        frame = AudioFrame.from_ndarray(samples.astype(np.int16).reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._sample
        frame.time_base = fractions.Fraction(1, RATE)
        self._sample += FRAME
        return frame


@dataclass(frozen=True)
class HeardBurst:
    n: int  # which burst (its number, from the frequency and the time it was heard)
    heard: float  # when its first sample reached the receiver (time.monotonic())


def find_bursts(frames: list[tuple[float, np.ndarray]], onsets: dict[int, float]) -> list[HeardBurst]:
    """Bursts in received audio: `frames` are (when the frame's first sample reached the receiver,
    mono samples at 48 kHz), in order and contiguous. Each onset is found to 1 ms; its frequency,
    and the capture times in `onsets`, tell which burst it is."""
    if not frames:
        return []
    audio = np.concatenate([samples for _, samples in frames]).astype(np.float32)
    starts = np.cumsum([0] + [len(samples) for _, samples in frames[:-1]])
    step = RATE // 1000
    energy = np.sqrt(np.mean(audio[: len(audio) // step * step].reshape(-1, step) ** 2, axis=1))
    loud = energy > AMPLITUDE / 8
    heard: list[HeardBurst] = []
    ms = 0
    while ms < len(loud):
        if not loud[ms] or (ms > 0 and loud[ms - 1]):
            ms += 1
            continue
        onset = ms * step
        window = audio[onset:onset + BURST_SAMPLES * 2 // 3]
        if len(window) < BURST_SAMPLES // 2:
            break
        spectrum = np.abs(np.fft.rfft(window * np.hanning(len(window))))
        frequency = np.fft.rfftfreq(len(window), 1 / RATE)[int(np.argmax(spectrum))]
        burst_id = round((frequency - 600.0) / 200.0) % BURST_IDS
        frame = int(np.searchsorted(starts, onset, side="right")) - 1
        at = frames[frame][0] + (onset - starts[frame]) / RATE
        # The burst of that id captured most recently before it was heard.
        candidates = [n for n, captured in onsets.items() if n % BURST_IDS == burst_id and captured < at]
        if candidates:
            heard.append(HeardBurst(n=max(candidates), heard=at))
        ms += BURST_SAMPLES // step  # past this burst
    return heard
