"""`rain-avatar animate` end to end on a small generated clip (tiny profile, random weights)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from cli import main
from tests.cli.helpers import MEDIAPIPE_NOISE, run_cli
from tests.helpers import MEDIA_DIR


def _write_clip(path: Path, frames: int, size=(48, 40), fps=12, codec="libx264") -> None:
    container = av.open(str(path), mode="w")
    stream = container.add_stream(codec, rate=fps)
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    container.start_encoding()
    for i in range(frames):
        image = np.zeros((size[1], size[0], 3), np.uint8)
        image[:, (i * 3) % size[0] : (i * 3) % size[0] + 8] = (255, 128, 0)  # a moving bar
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()


def _read(path: Path) -> tuple[int, tuple[int, int], float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f for f in container.decode(stream)]
        return len(frames), (frames[0].width, frames[0].height), float(stream.average_rate)


@pytest.fixture
def reference_png(tmp_path) -> Path:
    path = tmp_path / "reference.png"
    Image.open(MEDIA_DIR / "astronaut.png").convert("RGB").resize((96, 96)).save(path)
    return path


def _animate(reference, driving, out, *extra) -> int:
    return main(["animate", "--profile", "tiny", "--random-weights", "--device", "cpu", "--driving-kind", "pose",
                 "--reference", str(reference), "--driving", str(driving), "--out", str(out), *extra])


def test_animate_writes_one_frame_per_driving_frame(tmp_path, reference_png, capsys):
    driving = tmp_path / "driving.mp4"
    _write_clip(driving, frames=10)
    out = tmp_path / "out.mp4"
    assert _animate(reference_png, driving, out) == 0
    count, size, fps = _read(out)
    assert count == 10  # flushed: the queue's last frames come out too
    assert size == (64, 64)
    assert fps == pytest.approx(12)
    assert "wrote 10 frames" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["driving.mp4", "out.mp4", "reference.png"]


def test_animate_from_a_video_of_a_person(tmp_path, reference_png):
    """The default: a webcam-style recording, turned into driving images by the driving pipeline.
    Run as a user runs it, in a process of its own: the terminal shows the progress and none of
    mediapipe's native log lines."""
    from rain_core.driving.synthetic_clip import synthetic_clip

    photo = np.asarray(Image.open(MEDIA_DIR / "astronaut.png").convert("RGB"))
    frames, _ = synthetic_clip(photo, 9, (320, 240))
    driving = tmp_path / "person.mp4"
    container = av.open(str(driving), mode="w")
    stream = container.add_stream("libx264", rate=16)
    stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
    for frame in frames:
        for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    out = tmp_path / "out.mp4"
    result = run_cli("animate", "--profile", "tiny", "--random-weights", "--device", "cpu", "--reference",
                     str(reference_png), "--driving", str(driving), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert _read(out)[:2] == (9, (64, 64))
    assert "wrote 9 frames" in result.stdout and "animate: 100%" in result.stderr
    assert not [noise for noise in MEDIAPIPE_NOISE if noise in result.stderr], result.stderr


def test_animate_fps_option(tmp_path, reference_png):
    driving = tmp_path / "driving.mp4"
    _write_clip(driving, frames=5)
    out = tmp_path / "out.mp4"
    assert _animate(reference_png, driving, out, "--fps", "8") == 0
    assert _read(out)[2] == pytest.approx(8)


def _error(capsys, code_of) -> str:
    with pytest.raises(SystemExit) as info:
        code_of()
    assert info.value.code == 2
    return capsys.readouterr().err


def test_bad_inputs_fail_clearly_and_leave_no_output(tmp_path, reference_png, capsys):
    driving = tmp_path / "driving.mp4"
    _write_clip(driving, frames=3)
    out = tmp_path / "out.mp4"
    text = tmp_path / "notes.txt"
    text.write_text("not media")
    empty = tmp_path / "empty.avi"  # AVI keeps a video stream with no frames (MP4 drops it)
    _write_clip(empty, frames=0, codec="mpeg4")

    assert "no such image file" in _error(capsys, lambda: _animate(tmp_path / "absent.png", driving, out))
    assert "not an image" in _error(capsys, lambda: _animate(text, driving, out))
    assert "no such video file" in _error(capsys, lambda: _animate(reference_png, tmp_path / "absent.mp4", out))
    assert "not a readable video" in _error(capsys, lambda: _animate(reference_png, text, out))
    assert "has no frames" in _error(capsys, lambda: _animate(reference_png, empty, out))
    assert "output folder" in _error(capsys, lambda: _animate(reference_png, driving, tmp_path / "no" / "out.mp4"))
    assert "must be positive" in _error(capsys, lambda: _animate(reference_png, driving, out, "--fps", "0"))
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_a_model_is_required(tmp_path, reference_png, capsys):
    driving = tmp_path / "driving.mp4"
    _write_clip(driving, frames=3)
    err = _error(capsys, lambda: main(["animate", "--profile", "tiny", "--reference", str(reference_png),
                                        "--driving", str(driving), "--out", str(tmp_path / "o.mp4")]))
    assert "needs a weights directory" in err
