"""The model worker: batching queued steps of several streams, and isolating a bad one."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from rain_core.weights.checkpoints import WeightsError
from server.metrics import Metrics
from server.model_worker import ModelWorker
from tests.server.settings import tiny_settings


@pytest.fixture
async def worker():
    metrics = Metrics()
    model_worker = ModelWorker(tiny_settings(MAX_BATCH=4), metrics)
    await model_worker.start()
    yield model_worker
    await model_worker.stop()


async def _engine(worker: ModelWorker):
    engine = await worker.open_engine()
    image = np.full((64, 64, 3), 128, np.uint8)
    encoding = await worker.run(worker.model.encode_reference, image)
    await worker.run(engine.set_reference_encoding, encoding)
    return engine


def _driving(p: int = 4) -> np.ndarray:
    return np.zeros((p, 64, 64, 3), np.uint8)


async def _stepped_directly(worker: ModelWorker, drivings: list[np.ndarray]) -> list[np.ndarray | None]:
    """What a new stream like `_engine`'s gives for `drivings`, stepped one call at a time on the
    model's thread (`StreamEngine.step`, none of the worker's own stepping) -> uint8 frames or None."""
    from rain_core.stream.engine import frames_to_uint8

    direct = await _engine(worker)
    expected = []
    for driving in drivings:
        frames = await worker.run(direct.step, driving)
        expected.append(None if frames is None else frames_to_uint8(frames))
    return expected


async def test_worker_batches_queued_steps_of_different_streams(worker: ModelWorker) -> None:
    engines = [await _engine(worker) for _ in range(3)]
    gate = threading.Event()
    blocked = asyncio.ensure_future(worker.run(gate.wait, 30))  # hold the thread while steps queue up
    steps = [worker.step(engine, _driving()) for engine in engines]
    steps.append(worker.step(engines[0], _driving()))  # a second step of stream 0: the next batch
    gate.set()
    await blocked
    outputs = await asyncio.gather(*steps)
    assert all(out is None for out in outputs)  # still filling
    registry = worker.metrics.registry
    assert registry.get_sample_value("rain_step_batch_size_count") == 2
    assert registry.get_sample_value("rain_step_batch_size_sum") == 4  # one batch of 3, then 1
    assert [e.frames_in for e in engines] == [8, 4, 4]
    for engine in engines:
        await worker.close_engine(engine)
    assert not worker.engines


async def test_worker_isolates_a_bad_stream_in_a_batch(worker: ModelWorker) -> None:
    good, bad = await _engine(worker), await _engine(worker)
    gate = threading.Event()
    blocked = asyncio.ensure_future(worker.run(gate.wait, 30))
    good_step = worker.step(good, _driving())
    bad_step = worker.step(bad, _driving(p=3))  # wrong number of driving images
    gate.set()
    await blocked
    assert await good_step is None
    with pytest.raises(ValueError, match="expected 4 driving images"):
        await bad_step
    assert good.frames_in == 4 and bad.frames_in == 0
    # The good stream carries on to its first frames.
    for _ in range(3):
        out = await worker.step(good, _driving())
    assert out.shape == (4, 64, 64, 3) and out.dtype == np.uint8


async def test_worker_hands_over_the_frames_of_the_stream_and_keeps_them(worker: ModelWorker) -> None:
    """The frames a step resolves to are the stream's own (as stepping it directly gives them),
    and stay as they were while later steps run (no buffer of the worker is reused under them)."""
    served = await _engine(worker)
    rng = np.random.default_rng(0)
    drivings = [rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8) for _ in range(worker.config.noise_groups + 2)]
    handed = [await worker.step(served, driving) for driving in drivings]
    expected = await _stepped_directly(worker, drivings)
    kept = [None if out is None else out.copy() for out in handed]
    await worker.step(served, drivings[0])
    for out, copy, want in zip(handed, kept, expected, strict=True):
        if want is None:
            assert out is None
        else:
            assert out.dtype == np.uint8 and np.array_equal(out, want)
            assert np.array_equal(out, copy), "a later step changed frames already handed over"


@pytest.mark.parametrize("decode_thread", ["on", "off"])
async def test_worker_gives_a_stream_stepped_back_to_back_its_frames(decode_thread: str) -> None:
    """Steps queued at once, as a session's pump queues them: with the decode thread the worker runs
    each next call while the last one's frames decode; every step still resolves to its own frames."""
    worker = ModelWorker(tiny_settings({"decode_thread": decode_thread}), Metrics())
    await worker.start()
    try:
        assert worker.model.fast_paths.decode_thread == (decode_thread == "on")
        served = await _engine(worker)
        rng = np.random.default_rng(1)
        drivings = [rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8) for _ in range(worker.config.noise_groups + 4)]
        handed = await asyncio.gather(*[worker.step(served, driving) for driving in drivings])
        expected = await _stepped_directly(worker, drivings)
        assert [out is None for out in handed] == [want is None for want in expected]
        for out, want in zip(handed, expected, strict=True):
            assert out is None or np.array_equal(out, want)
    finally:
        model = worker.model
        await worker.stop()
    if decode_thread == "on":  # the worker's decode thread ends with it
        with pytest.raises(RuntimeError):
            model.decode_thread.submit(lambda: None)


async def test_worker_reports_a_load_failure(tmp_path) -> None:
    worker = ModelWorker(tiny_settings({"random_weights": False, "weights": tmp_path / "missing"}), Metrics())
    try:
        with pytest.raises(WeightsError, match="does not exist"):
            await worker.start()
    finally:
        await worker.stop()
