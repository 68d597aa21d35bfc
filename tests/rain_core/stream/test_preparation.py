"""Fast paths that check themselves (issue 26): a path on by default that raises, mismatches or is
slower at warm-up is switched off, with one warning naming it and the reason, and the model serves
eager; a path asked for fails at once; compiling runs in the background while the model serves.

The failures are injected the way a real one would come: through torch.compile's backend (a
compiler that fails, one whose kernels compute something else, one whose kernels are slow) and an
unusable compiler cache directory. The "eager" backend only traces (seconds): what is prepared and
installed is the same as with inductor.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import pytest
import torch

from rain_core.stream.components import RainComponents
from rain_core.stream.engine import StreamEngine
from rain_core.stream.fast_paths import FastPaths
from rain_core.stream.preparation import PathFailure, prepare_model
from tests.helpers import random_driving
from tests.rain_core.stream.test_fast_paths import _compile_test_config


def failing_compiler(graph_module, example_inputs):
    raise RuntimeError("injected: this compiler cannot build kernels")


def skewed_compiler(graph_module, example_inputs):
    """Kernels that compute 2% more than the graph: a miscompilation."""

    def run(*args):
        outputs = graph_module(*args)
        return type(outputs)(o * 1.02 if isinstance(o, torch.Tensor) and o.is_floating_point() else o
                             for o in outputs)

    return run


def slow_compiler(graph_module, example_inputs):
    """Correct kernels that take a quarter of a second more each: a regression in speed."""

    def run(*args):
        time.sleep(0.25)
        return graph_module(*args)

    return run


CHECKED_COMPILE = FastPaths(compile=True, checked=("compile",))


def _serves(model, reference) -> None:
    """A stream of `model` gives finite frames once its queue is full."""
    engine = StreamEngine(model, seed=1)
    engine.set_reference(reference)
    frames = [engine.step(d) for d in random_driving(model.config, model.config.noise_groups + 1, seed=2)]
    assert frames[-1] is not None and torch.isfinite(frames[-1]).all()


@pytest.mark.parametrize(("compiler", "reason"), [
    (failing_compiler, "raised"), (skewed_compiler, "differ from eager"), (slow_compiler, "slower"),
], ids=["raises", "mismatches", "slower"])
def test_a_checked_path_that_fails_is_dropped_with_one_warning(reference_images, caplog, compiler, reason):
    caplog.set_level(logging.WARNING, logger="rain_core.stream.preparation")
    model = prepare_model(RainComponents.random(_compile_test_config(), seed=3), CHECKED_COMPILE,
                          compile_backend=compiler, progress=False)
    paths = model.fast_paths
    assert not paths.compile and paths.dropped == ("compile",)
    assert len(paths.notes) == 1 and paths.notes[0].startswith("compile: dropped at warm-up")
    assert reason in paths.notes[0]
    assert not model.fast_calls  # every call runs eager
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "compile" in warnings[0] and reason in warnings[0]
    _serves(model, reference_images[0])


def test_a_path_asked_for_fails_at_once_naming_it():
    asked = FastPaths(compile=True)  # "on": not checked
    with pytest.raises(PathFailure, match="compile"):
        prepare_model(RainComponents.random(_compile_test_config(), seed=3), asked,
                      compile_backend=failing_compiler, progress=False)
    # The same in the background: batch size 1 is prepared before prepare_model returns.
    with pytest.raises(PathFailure, match="compile"):
        prepare_model(RainComponents.random(_compile_test_config(), seed=3), asked, batch_sizes=(1, 2),
                      compile_backend=failing_compiler, progress=False, background=True)


def test_an_unusable_compiler_cache_drops_compile(reference_images, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(blocker / "inductor"))
    model = prepare_model(RainComponents.random(_compile_test_config(), seed=3), CHECKED_COMPILE,
                          compile_backend="eager", progress=False)
    assert model.fast_paths.dropped == ("compile",) and "a-file" in model.fast_paths.notes[0]
    _serves(model, reference_images[0])


def test_a_path_that_passes_is_installed_for_each_batch_size_in_the_background(reference_images):
    model = prepare_model(RainComponents.random(_compile_test_config(), seed=3), CHECKED_COMPILE,
                          batch_sizes=(1, 2), compile_backend="eager", progress=False, background=True)
    # It returns before compiling: the model serves eager meanwhile.
    _serves(model, reference_images[0])
    assert model.preparation.wait(600), model.preparation.status()
    status = model.preparation.status()
    assert status["done"] and status["failed"] is None and status["ready_batch_sizes"] == [1, 2]
    assert model.fast_paths.compile and not model.fast_paths.dropped
    assert sorted(model.fast_calls) == [1, 2]
    _serves(model, reference_images[0])


def test_cheap_paths_checked_at_once_leave_a_model_that_serves(reference_images):
    """channels-last and the bfloat16 decoder are checked before prepare_model returns; whether they
    stay depends on this CPU's speed, but the model serves either way and says which ran."""
    paths = FastPaths(channels_last=True, bfloat16_decoder=True, checked=("channels_last", "bfloat16_decoder"))
    model = prepare_model(RainComponents.random(_compile_test_config(), seed=3), paths, progress=False)
    ran = model.fast_paths
    for name in ("channels_last", "bfloat16_decoder"):
        assert getattr(ran, name) != (name in ran.dropped)
    # Either path computes what eager does, within its tolerance: only this CPU's speed may drop it.
    for note in ran.notes:
        assert "slower" in note, note
    assert (model.decoder_dtype == torch.bfloat16) == ran.bfloat16_decoder
    assert next(model.components.decoder.decoder.parameters()).is_contiguous(
        memory_format=torch.channels_last) == ran.channels_last
    _serves(model, reference_images[0])
    assert dataclasses.asdict(ran)["checked"] == ("channels_last", "bfloat16_decoder")
