"""Driving images up to the device and frames down to the host: the same numbers as plain conversions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rain_core.stream.transfer import DrivingUpload, frames_to_host, frames_to_uint8

P, H, W = 3, 12, 10


def _images(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (P, H, W, 3), dtype=np.uint8)


def _plain_pixels(images: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """[1, 3, P, H, W]: floats made in float32 on the host, then the model's dtype."""
    return torch.from_numpy(images).permute(3, 0, 1, 2).float().div(255).to(dtype).unsqueeze(0)


def _plain_uint8(frames: torch.Tensor) -> np.ndarray:
    return frames.cpu().mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_uploaded_driving_images_are_the_plain_conversion(dtype):
    upload = DrivingUpload(P, H, W, device=torch.device("cpu"), dtype=dtype)
    for seed in range(2):  # a second upload into the same buffers
        images = _images(seed)
        pixels = upload(images)
        assert pixels.shape == (1, 3, P, H, W) and pixels.dtype == dtype
        assert torch.equal(pixels, _plain_pixels(images, dtype))
    floats = torch.rand(P, 3, H, W)
    assert torch.equal(upload(floats), floats.to(dtype).transpose(0, 1).unsqueeze(0))


def test_bad_driving_images_are_refused():
    upload = DrivingUpload(P, H, W, device=torch.device("cpu"), dtype=torch.float32)
    with pytest.raises(ValueError, match=f"expected {P} driving images of 3x{H}x{W}"):
        upload(np.zeros((P + 1, H, W, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        upload(np.zeros((P, H, W, 3), np.float32))
    with pytest.raises(ValueError, match="tensor or a"):
        upload([1, 2, 3])


def test_frames_on_the_host_are_the_rounded_pixels():
    frames = torch.rand(P, 3, H, W)
    host = frames_to_host(frames)
    assert host.ready
    pixels = host.numpy()
    assert pixels.dtype == np.uint8 and pixels.shape == (P, H, W, 3)
    assert np.array_equal(pixels, _plain_uint8(frames))
    assert np.array_equal(frames_to_uint8(frames), pixels)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the pinned, non-blocking transfers need CUDA")
def test_cuda_transfers_give_the_cpu_numbers_without_mixing_calls():
    """Uploads through the pinned staging buffer and frames copied back without waiting give what
    the CPU gives, also when several are in flight at once."""
    device = torch.device("cuda")
    upload = DrivingUpload(P, H, W, device=device, dtype=torch.float16)
    landing, expected = [], []
    for seed in range(4):
        images = _images(seed)
        pixels = upload(images)
        assert pixels.device.type == "cuda"
        assert torch.equal(pixels.cpu(), _plain_pixels(images, torch.float16))
        # Frames computed on the device from this upload, on their way back while the next upload runs.
        frames = pixels[0].transpose(0, 1).float().flip(-1)
        landing.append(frames_to_host(frames))
        expected.append(_plain_uint8(frames))
    for host, want in zip(landing, expected, strict=True):
        assert np.array_equal(host.numpy(), want)
        assert host.ready
