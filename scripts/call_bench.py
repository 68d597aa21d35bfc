"""Median and fastest steady streaming call, for comparing two versions of the engine.

Usage: PYTHONPATH=<checkout> python scripts/call_bench.py PROFILE SIZE CALLS [VARIANT]
(SIZE 0: the profile's own). Random weights, 2 torch threads (`BENCH_THREADS`), fixed seeds, the
CPU's default fast paths but the decode thread; VARIANT joins with `+` any of `compile`, `nchw`
(without the channels-last codec), `f32` (the decoder in float32 where the CPU would run it in
bfloat16), `bf16` (the whole model in bfloat16) and `thread` (with the decode thread, stepping with
`StreamEngine.submit` as the server does: a call then lasts until the next can start). Runs on
code from before the fast paths too, which then simply run eager.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import time

import numpy as np
import torch

from rain_core.config import profile_config
from rain_core.stream.components import RainComponents
from rain_core.stream.engine import QueueModel, StreamEngine


def main() -> None:
    profile, size, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    variant = sys.argv[4] if len(sys.argv) > 4 else ""
    words = set(variant.split("+")) - {""}
    if words - {"compile", "nchw", "f32", "bf16", "thread"}:
        raise SystemExit(f"unknown variant {variant!r}: join compile, nchw, f32, bf16 and thread with +")
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    sizes = {"height": size, "width": size} if size else {}
    config = profile_config(profile, **sizes, **({"dtype": "bfloat16"} if "bf16" in words else {}))
    components = RainComponents.random(config, seed=0)
    try:
        from rain_core.stream.fast_paths import default_fast_paths
        from rain_core.stream.preparation import prepare_model

        paths = dataclasses.replace(default_fast_paths(torch.device("cpu")), compile="compile" in words,
                                    decode_thread="thread" in words)
        if "nchw" in words:
            paths = dataclasses.replace(paths, channels_last=False)
        if "f32" in words:
            paths = dataclasses.replace(paths, bfloat16_decoder=False)
        model = prepare_model(components, paths, progress=False)
    except ImportError:  # the code before the fast paths
        model = QueueModel(components)
    engine = StreamEngine(model, seed=0)
    rng = np.random.default_rng(0)
    engine.set_reference(rng.integers(0, 256, (config.height, config.width, 3), dtype=np.uint8))
    shape = (config.frames_per_group, config.height, config.width, 3)
    drivings = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(4)]
    calls_made = 0
    while engine.frames_out == 0:
        engine.step(drivings[calls_made % 4])
        calls_made += 1
    step = engine.submit if "thread" in words else engine.step
    times = []
    for k in range(calls):
        start = time.perf_counter()
        step(drivings[k % 4])
        times.append(1000 * (time.perf_counter() - start))
    median = statistics.median(times)
    sys.stdout.write(
        f"{profile} {config.height}px {variant or 'default'}: median {median:.1f} ms, fastest {min(times):.1f} ms "
        f"over {calls} calls -> {config.frames_per_group * 1000 / median:.1f} fps\n"
    )


if __name__ == "__main__":
    main()
