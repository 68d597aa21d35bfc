"""Moving a stream's images between the host and the model's device without waiting on it.

Driving images go up as uint8 (a quarter of the bytes of floats) through a pinned staging buffer
with a non-blocking copy, and become floats on the device. Frames come down the same way: made
uint8 on the device, then one non-blocking copy into pinned host memory, whose completion is an
event a caller waits on only when it needs the pixels, so that the copy of one call overlaps the
next. On the CPU both are plain conversions.
"""

from __future__ import annotations

import numpy as np
import torch


def _pinned(device: torch.device) -> bool:
    """Pinned host memory and non-blocking copies are what make transfers asynchronous on CUDA."""
    return device.type == "cuda"


class DrivingUpload:
    """One stream's driving images [P, H, W, 3] uint8 (or [P, 3, H, W] float in [0, 1]) -> floats in
    [0, 1] on the model's device, as [1, 3, P, H, W], in buffers the stream keeps.

    The result is a view of a frame-major buffer ([1, P, 3, H, W] in memory): the pose guider folds
    frames into the batch, which is free in that layout. A later upload overwrites it, so a caller
    uses the result before uploading the stream's next images.
    """

    def __init__(self, frames: int, height: int, width: int, *, device: torch.device, dtype: torch.dtype):
        self.shape = (frames, height, width)
        self.device = device
        pinned = _pinned(device)
        # Pixels become floats in float32 first, as they always have, and only then the model's dtype:
        # dividing by 255 in float64 would give other numbers than streams gave before.
        self._float32 = torch.empty(1, frames, 3, height, width, device=device, dtype=torch.float32)
        self._pixels = (
            self._float32 if dtype == torch.float32 else torch.empty_like(self._float32, dtype=dtype)
        )
        self._staging = torch.empty(frames, height, width, 3, dtype=torch.uint8, pin_memory=pinned) if pinned else None
        self._on_device = torch.empty(frames, height, width, 3, dtype=torch.uint8, device=device) if pinned else None
        # Recorded after each upload from the staging buffer: the next upload may refill it only
        # once the device has read it.
        self._staged = torch.cuda.Event() if pinned else None

    def __call__(self, driving) -> torch.Tensor:
        """Check and upload P driving images; returns [1, 3, P, H, W] on the device."""
        frames, height, width = self.shape
        pixels = self._pixels[0].transpose(0, 1)  # [3, P, H, W] view, written through [P, 3, H, W]
        if isinstance(driving, np.ndarray):
            if driving.dtype != np.uint8 or driving.ndim != 4 or driving.shape[-1] != 3:
                raise ValueError(
                    f"driving images must be uint8 [P, H, W, 3], got {driving.dtype} {tuple(driving.shape)}"
                )
            _check_shape(tuple(driving.shape[:1]) + (3,) + tuple(driving.shape[1:3]), frames, height, width)
            source = self._upload_uint8(torch.from_numpy(driving))
            self._float32[0].copy_(source.permute(0, 3, 1, 2)).div_(255)
            if self._pixels is not self._float32:
                self._pixels.copy_(self._float32)
        elif isinstance(driving, torch.Tensor) and driving.dim() == 4:
            _check_shape(tuple(driving.shape), frames, height, width)
            self._pixels[0].copy_(driving, non_blocking=_pinned(self.device))
        else:
            raise ValueError("driving images must be a [P, 3, H, W] tensor or a [P, H, W, 3] uint8 array")
        return pixels.unsqueeze(0)

    def _upload_uint8(self, images: torch.Tensor) -> torch.Tensor:
        if self._staging is None:
            return images.to(self.device)
        self._staged.synchronize()
        self._staging.copy_(images)
        self._on_device.copy_(self._staging, non_blocking=True)
        self._staged.record(torch.cuda.current_stream(self.device))
        return self._on_device


def _check_shape(shape: tuple[int, ...], frames: int, height: int, width: int) -> None:
    if shape != (frames, 3, height, width):
        raise ValueError(f"expected {frames} driving images of 3x{height}x{width}, got {shape}")


class HostFrames:
    """Frames [P, H, W, 3] uint8 on their way to the host; `numpy()` waits for them."""

    def __init__(self, pixels: torch.Tensor, copied: torch.cuda.Event | None = None):
        self._pixels = pixels
        self._copied = copied

    @property
    def ready(self) -> bool:
        """Whether `numpy()` returns without waiting."""
        return self._copied is None or self._copied.query()

    def numpy(self) -> np.ndarray:
        if self._copied is not None:
            self._copied.synchronize()
        # The array keeps the (pinned) tensor alive; nothing writes into it again.
        return self._pixels.numpy()


def frames_to_host(frames: torch.Tensor) -> HostFrames:
    """[P, 3, H, W] floats in [0, 1] -> their uint8 pixels [P, H, W, 3], copied to the host.

    Rounded to uint8 on the device (a quarter of the bytes to copy); on CUDA the copy into pinned
    memory is queued behind the work that computes the frames and nothing waits for it here.
    """
    pixels = frames.mul(255).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    if pixels.device.type == "cpu":
        return HostFrames(pixels)
    if not _pinned(pixels.device):
        return HostFrames(pixels.cpu())
    host = torch.empty(pixels.shape, dtype=torch.uint8, pin_memory=True)
    host.copy_(pixels, non_blocking=True)
    copied = torch.cuda.Event()
    copied.record(torch.cuda.current_stream(pixels.device))
    return HostFrames(host, copied)


def frames_to_uint8(frames: torch.Tensor) -> np.ndarray:
    """[P, 3, H, W] floats in [0, 1] -> [P, H, W, 3] uint8 on the CPU, waiting for them."""
    return frames_to_host(frames).numpy()
