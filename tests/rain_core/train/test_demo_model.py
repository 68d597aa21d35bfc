"""The demo model bundled in `rain_core/assets/demo`: what a fresh install runs.

It must be complete and small, be what `serve` picks with no official weights, animate
held-out characters better than both baselines measured in the same run, and show its
character, moving, to a webcam client of a bare `rain-avatar serve`.
"""

from __future__ import annotations

import json
import shutil

import httpx
import numpy as np
import pytest

from rain_core.stream.components import RainComponents
from rain_core.train.data import SyntheticClips
from rain_core.train.evaluate import evaluate
from rain_core.train.export import CARD_JSON, DEFAULT_MAX_BYTES
from rain_core.weights.checkpoints import WeightsError
from rain_core.weights.loading import load_components
from rain_core.weights.profiles import DEMO_CHARACTER, DEMO_WEIGHTS_DIR, resolve_profile, runtime_config
from tests.avatar_client import WebcamClient, eventually
from tests.conftest import start_live_server, stop_live_server
from tests.helpers import BFLOAT16_DECODER_MAX, BFLOAT16_DECODER_MEAN, assert_animates_the_demo_character


def test_bundled_demo_model_is_complete_small_and_the_default():
    assert resolve_profile(None, None) == ("demo", DEMO_WEIGHTS_DIR)
    size = sum(p.stat().st_size for p in DEMO_WEIGHTS_DIR.glob("*.safetensors"))
    assert size <= DEFAULT_MAX_BYTES
    card = json.loads((DEMO_WEIGHTS_DIR / CARD_JSON).read_text())
    assert card["profile"] == "demo" and card["evaluation"]["frames"] > 0
    assert DEMO_CHARACTER.is_file()


def test_named_weights_win_over_the_bundled_demo(tmp_path):
    """`--weights` pointing at an exported run is what runs, with or without `--profile demo`."""
    exported = tmp_path / "exported"
    shutil.copytree(DEMO_WEIGHTS_DIR, exported)
    assert resolve_profile("demo", exported) == ("demo", exported)
    assert resolve_profile(None, exported) == ("demo", exported)
    # A directory without demo weights falls back to the bundled model only when no profile is named.
    assert resolve_profile(None, tmp_path) == ("demo", DEMO_WEIGHTS_DIR)
    with pytest.raises(WeightsError, match="profile 'demo': incomplete weights"):
        resolve_profile("demo", tmp_path)


@pytest.fixture(scope="module")
def demo_components() -> RainComponents:
    profile, directory = resolve_profile("demo", None)
    return load_components(runtime_config(profile, device="cpu", dtype="float32"), directory)


def test_bundled_demo_model_follows_the_driving_images(demo_components):
    """On held-out characters it beats the reference repeated and itself with blank driving."""
    clips = SyntheticClips(demo_components.config, frames=4 * demo_components.config.queue_length, split="val")
    result = evaluate(demo_components, clips, clips=3, seed=0)
    assert result.psnr > result.baseline_static_psnr
    assert result.psnr > result.baseline_blank_driving_psnr
    assert result.ssim > result.baseline_blank_driving_ssim
    # Where the character moved, drawing it from the driving images is what counts.
    assert result.moved_psnr > result.baseline_blank_driving_moved_psnr > result.baseline_static_moved_psnr
    assert result.clips_above_blank_driving == result.clips
    # The codec alone on the true frames bounds what the UNet can reach through it.
    assert result.codec_psnr > result.psnr and result.codec_ssim > result.ssim
    assert result.codec_moved_psnr > result.moved_psnr


def test_bundled_codec_keeps_a_held_out_clip_sharper_than_the_reference_repeated(demo_components):
    """The codec alone (true frames encoded, decoded as a stream with the reference image) is what
    bounds every frame the model draws: on a held-out clip it must clear the still picture by the
    margins the model itself is asked for, whole frame and where the character moved."""
    from rain_core.stream.engine import QueueModel
    from rain_core.train.evaluate import codec_reconstruction, masked_squared_error, moved_mask, psnr, psnr_from_error

    config = demo_components.config
    truth, _, reference = SyntheticClips(config, frames=2 * config.queue_length, split="val").clip(0)
    decoded = codec_reconstruction(QueueModel(demo_components), truth, reference)
    static = np.repeat(reference[None], len(truth), 0)
    assert psnr(decoded, truth) > psnr(static, truth) + 2
    mask = moved_mask(truth, reference)
    moved = [psnr_from_error(*masked_squared_error(frames, truth, mask)) for frames in (decoded, static)]
    assert moved[0] > moved[1] + 4


def test_bundled_model_with_the_bfloat16_decoder_draws_what_float32_draws():
    """Where the CPU has bfloat16 instructions, serve decodes the demo's frames in bfloat16 by default:
    on a held-out clip its frames stay within the path's stated tolerance of the float32 decoder's."""
    from rain_core.stream.fast_paths import FastPaths
    from rain_core.stream.preparation import prepare_model
    from rain_core.train.evaluate import animate_clip

    profile, directory = resolve_profile("demo", None)
    config = runtime_config(profile, device="cpu", dtype="float32")
    _, driving, reference = SyntheticClips(config, frames=2 * config.queue_length, split="val").clip(0)
    frames = []
    for paths in (FastPaths(channels_last=True), FastPaths(channels_last=True, bfloat16_decoder=True)):
        model = prepare_model(load_components(config, directory), paths)
        assert model.fast_paths.bfloat16_decoder == paths.bfloat16_decoder
        frames.append(animate_clip(model, driving, reference, seed=0).astype(np.float32) / 255)
    difference = np.abs(frames[1] - frames[0])
    assert difference.mean() < BFLOAT16_DECODER_MEAN and difference.max() < BFLOAT16_DECODER_MAX


async def test_bare_serve_animates_the_sample_character(tmp_path):
    """`rain-avatar serve` with no model options: the demo model, its character, in motion."""
    server = start_live_server(tmp_path, model_args=())
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            health = (await http.get("/api/health")).json()
            assert health["profile"] == "demo", health
            client = WebcamClient(http)
            try:
                assert (await client.open(params={"fps": 12})).status_code == 200
                await eventually(lambda: client.engine_out_above(11), timeout=180, what="the demo avatar")
                assert (await client.stats())["params"]["mode"] == "body", "the driving images the model knows"
                frames = []
                for _ in range(6):
                    count = client.avatar.count
                    await eventually(lambda count=count: client.avatar.count >= count + 6, timeout=60,
                                     what="more frames")
                    frames.append(client.avatar.last.astype(np.float32))
            finally:
                await client.close()
    finally:
        stop_live_server(server)
    assert_animates_the_demo_character(frames)
