"""The voice delay line, stepped in simulated time: it plays the microphone exactly its target
late, follows a new target only through silence (never cutting a word), jumps with a crossfade
when no silence comes, stays silent while paused, and never holds more than its maximum.

The input is bursts of "speech" whose every sample says when it was captured (1000 + the
millisecond it was captured at), so each sample played says how late it is.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamTrack

from server.media.voice import (
    FRAME_SAMPLES,
    MAX_WAIT_FOR_SILENCE,
    SAMPLE_RATE,
    DelayedVoiceTrack,
    VoiceDelay,
)

FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
T0 = 1000.0  # the simulated monotonic clock's start


class QuietMicrophone(MediaStreamTrack):
    """A microphone track that never delivers: the test appends what it "hears" itself."""

    kind = "audio"

    async def recv(self):
        await asyncio.Event().wait()


def speech(start: int, count: int, *, burst_ms: int = 40, period_ms: int = 300) -> np.ndarray:
    """Samples [start, start + count): bursts of `burst_ms` every `period_ms`, silence between."""
    index = np.arange(start, start + count)
    ms = index * 1000 // SAMPLE_RATE
    values = np.where(ms % period_ms < burst_ms, 1000 + ms, 0).astype(np.int16)
    return np.repeat(values[:, None], 2, axis=1)


class Simulation:
    def __init__(self, *, max_delay: float = 3.0, signal=speech):
        self.target: float | None = 0.5
        self.paused = False
        self.voice = VoiceDelay(QuietMicrophone(), max_delay=max_delay, paused=lambda: self.paused)
        self.track = DelayedVoiceTrack(self.voice, target=lambda: self.target, paused=lambda: self.paused)
        self.signal = signal
        self.frame = 0
        self.played: list[tuple[float, np.ndarray]] = []  # (when the frame starts playing, samples)

    def run(self, seconds: float) -> None:
        """Each 20 ms: one microphone frame arrives (its last sample captured just now), one plays."""
        for _ in range(round(seconds / FRAME_S)):
            now = T0 + (self.frame + 1) * FRAME_S
            self.voice.append(self.signal(self.frame * FRAME_SAMPLES, FRAME_SAMPLES), now)
            self.played.append((now, self.track.next_samples(now)))
            self.frame += 1

    def delays(self, since: float = 0.0) -> list[float]:
        """How late each loud sample played since `since` seconds into the run (to 1 ms)."""
        out = []
        for start, samples in self.played:
            if start < T0 + since:
                continue
            for offset in np.flatnonzero(samples[:, 0]):
                captured_ms = int(samples[offset, 0]) - 1000
                out.append(start + offset / SAMPLE_RATE - (T0 + captured_ms / 1000))
        return out

    def output(self) -> np.ndarray:
        return np.concatenate([samples[:, 0] for _, samples in self.played]).astype(np.int64)

    async def close(self) -> None:
        await self.voice.stop()


def bursts(output: np.ndarray) -> list[np.ndarray]:
    """The loud runs of `output`, also split where the captured time jumps."""
    loud = np.flatnonzero(output)
    cuts = (np.diff(loud) > 1) | (np.abs(np.diff(output[loud])) > 1)
    return [run for run in np.split(output[loud], np.flatnonzero(cuts) + 1) if len(run)]


async def test_plays_the_microphone_its_target_late() -> None:
    sim = Simulation()
    sim.run(3.0)
    delays = sim.delays(since=1.0)
    assert delays and max(abs(d - 0.5) for d in delays) < 0.0015
    await sim.close()


@pytest.mark.parametrize("new_target", [0.9, 0.2])
async def test_follows_a_new_target_through_silence_without_cutting_a_burst(new_target: float) -> None:
    sim = Simulation()
    sim.run(2.0)
    sim.target = new_target
    sim.run(4.0)
    # Within a second or two (through the pauses between bursts) the delay is the new target...
    assert max(abs(d - new_target) for d in sim.delays(since=4.0)) < 0.0015
    # ...and every burst played is whole: 40 ms, one value per millisecond in order (nothing cut
    # or repeated inside it); the bursts themselves come in order, none lost.
    played = bursts(sim.output())
    assert all(len(b) == 40 * SAMPLE_RATE // 1000 for b in played[1:-1])
    assert all(np.all(np.diff(b) >= 0) and b[-1] - b[0] == 39 for b in played[1:-1])
    starts = [int(b[0]) for b in played]
    assert np.all(np.diff(starts) == 300)
    assert sim.track.jumps == 0 and sim.track.adjustments > 0
    await sim.close()


async def test_jumps_with_a_crossfade_when_no_silence_comes() -> None:
    def tone(start: int, count: int) -> np.ndarray:
        t = np.arange(start, start + count) / SAMPLE_RATE
        values = (8000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)
        return np.repeat(values[:, None], 2, axis=1)

    sim = Simulation(signal=tone)
    sim.run(2.0)
    sim.target = 0.8
    sim.run(MAX_WAIT_FOR_SILENCE + 0.5)
    assert sim.track.jumps == 1
    assert abs(sim.track.delay - 0.8) < 0.002
    # No click: the output never steps more than the tone itself does between two samples.
    steepest = 8000 * 2 * np.pi * 220 / SAMPLE_RATE
    assert np.abs(np.diff(sim.output())).max() <= 2 * steepest
    await sim.close()


async def test_pause_silences_the_voice_at_once_and_forever() -> None:
    sim = Simulation()
    sim.run(2.0)
    sim.paused = True
    sim.run(1.0)
    paused_frames = sim.played[-50:]
    sim.paused = False
    sim.run(2.0)
    assert all(not samples.any() for _, samples in paused_frames)
    # What was captured during the pause (2 s to 3 s) is never played, before or after.
    captured_s = [(T0 + (int(v) - 1000) / 1000) for v in sim.output() if v]
    assert not [t for t in captured_s if T0 + 2.0 < t < T0 + 3.0 - FRAME_S]
    assert sim.delays(since=4.0)  # and the voice comes back
    await sim.close()


async def test_the_delay_and_its_buffer_are_bounded() -> None:
    sim = Simulation(max_delay=1.0)
    sim.target = 4.0  # a video latency beyond the setting
    sim.run(3.0)
    assert max(abs(d - 1.0) for d in sim.delays(since=2.5)) < 0.0015
    assert sim.voice.capacity == 2 * SAMPLE_RATE  # the longest delay and a second's slack
    await sim.close()


async def test_frames_are_paced_and_their_pts_keep_wall_clock_time_across_a_stall() -> None:
    """20 ms frames of 48 kHz stereo s16; after the event loop stalls, the next frame comes at
    once (no burst of catch-up frames) and its pts skip the time missed, as the avatar's do."""
    sim = Simulation()
    frames = [await sim.track.recv() for _ in range(3)]
    assert [f.pts for f in frames] == [0, FRAME_SAMPLES, 2 * FRAME_SAMPLES]
    assert (frames[0].sample_rate, frames[0].samples, frames[0].layout.name, frames[0].format.name) == (
        SAMPLE_RATE, FRAME_SAMPLES, "stereo", "s16"
    )
    time.sleep(0.3)  # the loop stalls
    late = await sim.track.recv()
    # The pts skipped at least the stall (a slower machine only stalls longer).
    assert late.pts % FRAME_SAMPLES == 0 and late.pts - frames[-1].pts >= 0.3 * SAMPLE_RATE
    sim.track.stop()
    await sim.close()
