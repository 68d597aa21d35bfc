"""Transparency: the key colour read from a reference's border, the server's matte, packed alpha."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack, VideoStreamTrack
from av import VideoFrame
from PIL import Image
from scipy import ndimage

from server.media.alpha import colour_matte, key_colour, pack_matte, remove_background
from server.media.matte import MatteSource, MatteTrack, packed_frame
from server.media.relay import TrackRelay

BACKGROUND = (30, 200, 90)
FIGURE = (120, 40, 160)


def _character(width: int = 64, height: int = 48) -> np.ndarray:
    """A figure on a flat background, its legs leaving through the bottom edge (as the demo's do)."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[:] = BACKGROUND
    rgb[height // 4:, width // 3: 2 * width // 3] = FIGURE
    return rgb


def _inside_and_outside(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The figure's pixels and the background's, three pixels away from the edge between them."""
    figure = np.all(rgb == FIGURE, axis=-1)
    return ndimage.binary_erosion(figure, iterations=3), ~ndimage.binary_dilation(figure, iterations=3)


def test_key_colour_is_the_border_colour_despite_a_figure_touching_it() -> None:
    rgb = _character()
    rgb[0, :5] = (255, 255, 255)  # a few odd pixels on the border too
    assert key_colour(Image.fromarray(rgb)) == BACKGROUND
    # The smallest reference the server takes (8 px), and a grey-level image.
    assert key_colour(Image.fromarray(_character(8, 8))) == BACKGROUND
    assert key_colour(Image.new("L", (16, 16), 77)) == (77, 77, 77)


def test_colour_matte_is_clear_on_the_background_and_solid_on_the_figure() -> None:
    rgb = _character()
    noise = np.random.default_rng(0).integers(-6, 7, rgb.shape)
    noisy = np.clip(rgb.astype(int) + noise, 0, 255).astype(np.uint8)
    noisy[5, 5] = FIGURE  # one speck of noise in the background
    matte = colour_matte(noisy, BACKGROUND)
    assert matte.shape == rgb.shape[:2] and matte.dtype == np.uint8
    inside, outside = _inside_and_outside(rgb)
    assert np.all(matte[outside] == 0)  # the speck included
    assert np.all(matte[inside] == 255)
    # Between the two: a ramp (half-way colour, half opaque or so).
    halfway = np.full((4, 4, 3), np.asarray(BACKGROUND) + 0.15 * 255 / np.sqrt(3), np.float32).astype(np.uint8)
    assert 64 < colour_matte(halfway, BACKGROUND)[2, 2] < 192


def test_edges_lose_the_old_background_colour() -> None:
    """A pixel half figure, half background, with a half matte, shows the figure's own colour."""
    mixed = ((np.asarray(FIGURE) + np.asarray(BACKGROUND)) / 2).astype(np.uint8)
    rgb = np.stack([np.asarray(BACKGROUND, np.uint8), mixed, np.asarray(FIGURE, np.uint8)])[None]
    matte = np.array([[0, 128, 255]], np.uint8)
    out = remove_background(rgb, matte, BACKGROUND)
    assert np.abs(out[0, 1].astype(int) - FIGURE).max() <= 2
    assert np.array_equal(out[0, [0, 2]], rgb[0, [0, 2]])  # clear and solid pixels as they were


def test_packed_alpha_layout_colour_left_matte_right() -> None:
    rgb = _character()
    matte = np.arange(rgb.shape[0] * rgb.shape[1], dtype=np.uint32).reshape(rgb.shape[:2]).astype(np.uint8)
    packed = pack_matte(rgb, matte)
    height, width = rgb.shape[:2]
    assert packed.shape == (height, 2 * width, 3)
    assert np.array_equal(packed[:, :width], rgb)
    for channel in range(3):
        assert np.array_equal(packed[:, width:, channel], matte)
    with pytest.raises(ValueError, match="differ in size"):
        pack_matte(rgb, matte[:-1])


def test_packed_frame_keeps_timing_and_carries_the_matte_through_yuv() -> None:
    rgb = _character()
    frame = VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    frame.pts, frame.time_base = 1234, Fraction(1, 90000)
    out = packed_frame(frame, BACKGROUND)
    assert (out.width, out.height, out.format.name) == (128, 48, "yuv420p")
    assert (out.pts, out.time_base) == (1234, Fraction(1, 90000))
    decoded = out.to_ndarray(format="rgb24").astype(int)
    inside, outside = _inside_and_outside(rgb)
    matte = decoded[:, 64:, 1]
    assert matte[outside].max() <= 8 and matte[inside].min() >= 247
    colour_error = np.abs(decoded[:, :64] - rgb).max(axis=-1)
    assert colour_error[inside | outside].max() <= 6  # as much as the YUV round trip changes


async def test_a_stopped_matte_track_ends_its_wait() -> None:
    """A viewer's matte track stopped while it waits for a frame: the wait ends (no hung relay)."""

    class Silent(MediaStreamTrack):
        kind = "video"

        async def recv(self):
            await asyncio.Event().wait()

    with ThreadPoolExecutor(1) as pool:
        track = MatteTrack(Silent(), lambda: BACKGROUND, pool)
        waiting = asyncio.ensure_future(track.recv())
        await asyncio.sleep(0.01)
        track.stop()
        with pytest.raises(MediaStreamError):
            await asyncio.wait_for(waiting, 5)


async def test_matte_source_runs_while_it_has_viewers() -> None:
    with ThreadPoolExecutor(1) as pool:
        avatar = VideoStreamTrack()
        source = MatteSource(TrackRelay(avatar), lambda: (0, 0, 0), pool)
        assert not source.running
        first, second = source.subscribe(), source.subscribe()
        assert source.running and source.users == 2
        frame = await asyncio.wait_for(first.recv(), 5)
        assert frame.width == 2 * 640  # VideoStreamTrack's green 640x480, packed
        source.release()
        assert source.running
        source.release()
        assert not source.running and source.users == 0
        for track in (first, second, avatar):
            track.stop()
