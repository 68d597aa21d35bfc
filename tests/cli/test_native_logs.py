"""mediapipe's native INFO and WARNING lines stay off the terminal unless `-v` asks for them;
everything else written to standard error still gets through."""

from __future__ import annotations

import json
import os
import select
import threading

import pytest

from cli.native_logs import copy_without_native_lines
from tests.cli.helpers import MEDIAPIPE_NOISE, run_cli
from tests.helpers import MEDIA_DIR


def _filtered(data: bytes, tmp_path) -> bytes:
    source, target = tmp_path / "in", tmp_path / "out"
    source.write_bytes(data)
    with open(source, "rb") as reader, open(target, "wb") as writer:
        copy_without_native_lines(reader.fileno(), writer.fileno())
    return target.read_bytes()


def test_native_info_and_warning_lines_are_dropped_and_the_rest_kept(tmp_path):
    dropped = [
        b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n",
        b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
        b"W0000 00:00:1796082226.539653    1415 inference_feedback_manager.cc:114] Feedback manager requires a model\n",
        b"W0000 00:00:1796082226.563833    1415 landmark_projection_calculator.cc:186] Using NORM_RECT without\n",
        b"I0000 00:00:1752489631.572373  129295 gl_context_egl.cc:85] Successfully initialized EGL.\n",
    ]
    kept = [
        b"E0000 00:00:1796082226.539653    1415 calculator_graph.cc:12] a native error\n",
        b"INFO:     Uvicorn running on http://127.0.0.1:8000 (Press CTRL+C to quit)\n",
        b"WARNING rain_core.driving: a warning of ours\n",
        b"Traceback (most recent call last):\n",
        b"\ranimate:  50%|#####     | 5/10",
        b"\ranimate: 100%|##########| 10/10\n",
        b"Inference ends without a newline",
    ]
    data = b"".join(line for pair in zip(dropped + [b""] * 2, kept, strict=True) for line in pair)
    assert _filtered(data, tmp_path) == b"".join(kept)
    assert _filtered(b"W0000 00:00:1.5 7 a.cc:1] the last line, unfinished", tmp_path) == b""


def _read_within(fd: int, seconds: float = 5.0) -> bytes:
    ready, _, _ = select.select([fd], [], [], seconds)
    return os.read(fd, 1024) if ready else b""


def test_an_unfinished_line_passes_at_once_unless_it_may_be_native():
    source_read, source_write = os.pipe()
    target_read, target_write = os.pipe()
    copier = threading.Thread(target=copy_without_native_lines, args=(source_read, target_write))
    copier.start()
    try:
        os.write(source_write, b"\rtrain:   3%|3         | 3/100")
        assert _read_within(target_read) == b"\rtrain:   3%|3         | 3/100", "a progress bar shows at once"
        os.write(source_write, b"\nW0000 00:00:1796082226.5 14 a.cc:1] ")
        assert _read_within(target_read) == b"\n"
        os.write(source_write, b"half a native line\nnext")
        assert _read_within(target_read) == b"next"
    finally:
        os.close(source_write)
        copier.join(10)
        for fd in (source_read, target_read, target_write):
            os.close(fd)


@pytest.fixture(scope="module")
def bench_driving() -> dict:
    """`rain-avatar [-v] bench-driving` on the astronaut photo: mediapipe's face mesh runs."""
    command = ("bench-driving", "--image", str(MEDIA_DIR / "astronaut.png"), "--seconds", "0.3", "--json")
    return {verbose: run_cli(*(["-v"] if verbose else []), *command) for verbose in (False, True)}


def test_mediapipe_lines_stay_off_the_terminal(bench_driving):
    result = bench_driving[False]
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["found_fraction"] > 0, "mediapipe ran and found the face"
    assert not [noise for noise in MEDIAPIPE_NOISE if noise in result.stderr], result.stderr


def test_verbose_lets_mediapipe_lines_through(bench_driving):
    result = bench_driving[True]
    assert result.returncode == 0, result.stderr
    assert "inference_feedback_manager.cc" in result.stderr
    assert "DEBUG" in result.stderr, "and our own debug logging"
