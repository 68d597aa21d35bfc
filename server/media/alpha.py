"""A transparent avatar: the key colour of a character's background, the server's matte, packed alpha.

The OBS view makes the avatar's background transparent in one of two ways:

- `key`: the page keys out one colour (by default the reference's `key_colour`, the colour its
  border is mostly made of) in a WebGL shader;
- `matte`: the server computes the matte (`colour_matte`) and sends it with the picture as
  *packed alpha*: one video frame twice as wide, the colour on the left and the matte as grey
  on the right (`pack_matte`), because WebRTC video carries no alpha channel.

Why a colour matte and not mediapipe's selfie segmentation: on the bundled demo model's output
(cartoon characters on flat backgrounds, 8 held-out clips, 160 frames), selfie segmentation's
mask overlapped the true character with a mean IoU of 0.47 (0.0 on some characters: it looks for
people), the colour distance to the reference's border colour with 0.85; see docs/alpha.md.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

RGB = tuple[int, int, int]

# Share of the shorter side read as the border band (at least one pixel).
BORDER_SHARE = 0.02
# The matte ramps from transparent to opaque over this band of RGB distance to the key colour
# (Euclidean, channels in 0..1; the page's key mode uses the same defaults). Measured on the demo
# model's output: its background stays within 0.09 of the key on 95% of pixels, and a hard cut at
# 0.14-0.16 overlaps the true character best.
MATTE_LOW = 0.10
MATTE_HIGH = 0.20


def key_colour(image: Image.Image) -> RGB:
    """The colour of `image`'s background, read from its border: the per-channel median of a band
    a few pixels wide along the four edges. The median ignores whatever of the character touches
    the edge (the demo's characters leave through the bottom) as long as it covers under half."""
    rgb = np.asarray(image.convert("RGB"))
    height, width = rgb.shape[:2]
    band = max(1, round(BORDER_SHARE * min(height, width)))
    border = np.concatenate([
        rgb[:band].reshape(-1, 3), rgb[-band:].reshape(-1, 3),
        rgb[band:-band, :band].reshape(-1, 3), rgb[band:-band, -band:].reshape(-1, 3),
    ])
    median = np.median(border, axis=0)
    return (int(median[0]), int(median[1]), int(median[2]))


def colour_matte(rgb: np.ndarray, key: RGB) -> np.ndarray:
    """The matte of an RGB frame [H, W, 3] uint8: 0 where it is the key colour, 255 where it is
    far from it, a ramp between; a 3x3 median filter then drops single specks of noise, which a
    per-pixel key in the page cannot. Returns [H, W] uint8."""
    distance = np.linalg.norm(rgb.astype(np.float32) - np.asarray(key, np.float32), axis=-1) / 255.0
    alpha = np.clip((distance - MATTE_LOW) / (MATTE_HIGH - MATTE_LOW), 0.0, 1.0)
    return cv2.medianBlur((alpha * 255.0 + 0.5).astype(np.uint8), 3)


def remove_background(rgb: np.ndarray, matte: np.ndarray, key: RGB) -> np.ndarray:
    """The colours of partly transparent pixels with the background taken out: a pixel observed as
    c = a F + (1 - a) B over the known background B has the colour F = B + (c - B) / a, taking the
    matte for a. Without this the character's edges keep a rim of the old background's colour over
    the new scene (the page's key mode has its spill suppression instead). [H, W, 3] uint8."""
    alpha = matte.astype(np.float32)[..., None] / 255.0
    background = np.asarray(key, np.float32)
    # Below half opaque the correction stops growing: larger ones would amplify noise, and the
    # frame's halved chroma would spread it into the opaque pixels beside.
    foreground = background + (rgb.astype(np.float32) - background) / np.maximum(alpha, 0.5)
    partial = (matte > 0) & (matte < 255)
    out = rgb.copy()
    out[partial] = np.clip(foreground[partial] + 0.5, 0, 255).astype(np.uint8)
    return out


def pack_matte(rgb: np.ndarray, matte: np.ndarray) -> np.ndarray:
    """Colour [H, W, 3] and matte [H, W] -> one frame [H, 2W, 3]: colour left, matte as grey right."""
    if rgb.shape[:2] != matte.shape:
        raise ValueError(f"colour {rgb.shape[:2]} and matte {matte.shape} differ in size")
    return np.concatenate([rgb, np.repeat(matte[..., None], 3, axis=-1)], axis=1)

