"""`rain-avatar bench-driving`: camera frames per second through extraction and drawing."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from rain_core.driving.pipeline import DrivingPipeline
from rain_core.driving.settings import DrivingSettings
from rain_core.driving.synthetic_clip import synthetic_clip


@dataclass
class DrivingBenchResult:
    mode: str
    input: str
    output: str
    fps: float
    extract_ms: float
    draw_ms: float
    found_fraction: float


def run_driving_bench(photo: np.ndarray, *, mode: str = "face", frame_size=(640, 480), output_size=(512, 512),
                      seconds: float = 5.0, frames: int = 96) -> DrivingBenchResult:
    """Run a moving synthetic clip of `photo` through the pipeline for about `seconds`."""
    clip, _ = synthetic_clip(photo, frames, frame_size)
    pipeline = DrivingPipeline(DrivingSettings(mode=mode), width=output_size[0], height=output_size[1])
    try:
        pipeline(clip[0], 0.0)  # model start-up is not steady state
        extract = draw = 0.0
        count = found = 0
        start = time.perf_counter()
        while count < 2 or time.perf_counter() - start < seconds:
            frame = clip[count % len(clip)]
            t0 = time.perf_counter()
            landmarks = pipeline.landmarks(frame, (count + 1) / 30)
            t1 = time.perf_counter()
            pipeline.draw(landmarks)
            t2 = time.perf_counter()
            extract += t1 - t0
            draw += t2 - t1
            count += 1
            found += landmarks.source == "found"
        total = time.perf_counter() - start
    finally:
        pipeline.close()
    return DrivingBenchResult(
        mode=mode,
        input=f"{frame_size[0]}x{frame_size[1]}",
        output=f"{output_size[0]}x{output_size[1]}",
        fps=count / total,
        extract_ms=1000 * extract / count,
        draw_ms=1000 * draw / count,
        found_fraction=found / count,
    )
