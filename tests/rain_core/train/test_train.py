"""Training: the staggered-noise assignment, learning on a fixed batch, exact resume, the codec."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from rain_core.config import tiny_config
from rain_core.stream.components import RainComponents
from rain_core.train.codec import codec_loss, train_codec
from rain_core.train.data import SyntheticClips, collate
from rain_core.train.objective import noise_latents, prediction_target, staggered_timesteps
from rain_core.train.schedule import learning_rate_at
from rain_core.train.settings import TrainSettings
from rain_core.train.trainer import Trainer
from rain_core.weights.checkpoints import WeightsError
from rain_core.weights.loading import load_components


class FixedClips:
    """Random clips that depend only on the index (or always the same clip)."""

    def __init__(self, config, same: bool = False):
        self.config, self.same = config, same

    def clip(self, index: int):
        rng = np.random.default_rng(0 if self.same else index)
        t, h, w = self.config.queue_length, self.config.height, self.config.width
        frames = rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)
        return frames, 255 - frames, frames[0]


@pytest.fixture
def config():
    # A tiny model with its own codec (reference gate included) and context token, like the demo profile.
    return tiny_config(reference_encoder="taesdv", noise_groups=3, num_inference_steps=3, frames_per_group=2,
                       taesdv={"channels": 8, "reference_gate": True})


def _trainer(config, tmp_path, dataset=None, **settings) -> Trainer:
    torch.manual_seed(0)
    components = RainComponents.build(config).to(config.torch_device, config.torch_dtype)
    return Trainer(components, dataset or FixedClips(config), TrainSettings(**{"warmup_steps": 0, **settings}),
                   tmp_path)


def test_staggered_noise_levels(config):
    scheduler = RainComponents.build(config).scheduler
    timesteps = staggered_timesteps(scheduler, config, batch=2)
    levels = scheduler.streaming_timesteps(config.num_inference_steps).flip(0)
    assert timesteps.shape == (2, config.queue_length)
    assert torch.equal(timesteps[0], levels.repeat_interleave(config.frames_per_group))
    jittered = staggered_timesteps(scheduler, config, batch=64, jitter=40, generator=torch.Generator().manual_seed(0))
    groups = jittered[:, :: config.frames_per_group]
    assert torch.all(groups[:, 1:] >= groups[:, :-1]), "groups stay ordered oldest (least noisy) first"
    assert torch.all((groups - levels).abs() <= 40)
    assert torch.all(jittered.view(64, -1, config.frames_per_group).diff(dim=2) == 0), "one level per group"
    assert not torch.equal(groups, levels.expand_as(groups))


def test_shared_level_clips(config):
    scheduler = RainComponents.build(config).scheduler
    levels = scheduler.streaming_timesteps(config.num_inference_steps).flip(0)
    staggered = levels.repeat_interleave(config.frames_per_group)
    timesteps = staggered_timesteps(scheduler, config, batch=200, shared_level_prob=0.5,
                                    generator=torch.Generator().manual_seed(0))
    shared = [row for row in timesteps if not torch.equal(row, staggered)]
    for row in shared:
        assert row.unique().numel() == 1 and row[0] in levels, "one of the inference levels for the whole clip"
    assert 60 < len(shared) < 140, "about half the clips"
    assert {int(row[0]) for row in shared} == set(levels.tolist()), "every level drawn"
    never = staggered_timesteps(scheduler, config, batch=50, generator=torch.Generator().manual_seed(0))
    assert torch.equal(never, staggered.expand(50, -1))


@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample"])
def test_a_perfect_prediction_of_the_training_target_streams_the_clean_frames(config, prediction_type):
    """Training and the engine agree on what the UNet predicts: the training target for the
    staggered queue, put through the engine's LCM step, gives back the clean latents."""
    config = config.with_overrides(scheduler=config.scheduler.model_copy(update={"prediction_type": prediction_type}))
    scheduler = RainComponents.build(config, device="meta").scheduler
    generator = torch.Generator().manual_seed(0)
    clean = torch.randn(2, 4, config.queue_length, 3, 3, generator=generator)
    noise = torch.randn(clean.shape, generator=generator)
    timesteps = staggered_timesteps(scheduler, config, batch=2)
    noisy = noise_latents(scheduler, clean, noise, timesteps)
    target = prediction_target(scheduler, clean, noise, timesteps)
    step = scheduler.step_frames(target, timesteps, noisy, torch.zeros_like(noisy), config.num_inference_steps)
    assert torch.allclose(step.denoised, clean, atol=1e-3)
    oldest = slice(0, config.frames_per_group)
    assert torch.allclose(step.prev_sample[:, :, oldest], clean[:, :, oldest], atol=1e-3), "the oldest group is clean"


def test_fine_tuning_starts_from_its_own_defaults(tmp_path):
    scratch, fine_tune = TrainSettings(), TrainSettings(init_weights=tmp_path)
    assert (scratch.learning_rate, scratch.shared_level_prob) == (5e-4, 0.5)
    assert (fine_tune.learning_rate, fine_tune.shared_level_prob) == (1e-5, 0.0)
    given = TrainSettings(init_weights=tmp_path, learning_rate=3e-4, shared_level_prob=0.25)
    assert (given.learning_rate, given.shared_level_prob) == (3e-4, 0.25), "given values win"
    with pytest.raises(ValueError, match="learning_rate"):
        TrainSettings(init_weights=tmp_path, learning_rate=0)


def test_learning_rate_warms_up_then_decays_to_a_tenth(config, tmp_path):
    assert [learning_rate_at(1.0, 0.0, step=step, warmup_steps=4) for step in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert learning_rate_at(1.0, 0.0, step=4, warmup_steps=4) == 1.0
    assert learning_rate_at(1.0, 0.5) == pytest.approx(0.55)
    assert learning_rate_at(1.0, 1.0) == learning_rate_at(1.0, 7.0) == pytest.approx(0.1), "the end of the run holds"
    # The trainer follows it, by steps or by its time budget, whichever is further.
    trainer = _trainer(config, tmp_path, learning_rate=2e-3, warmup_steps=10)
    trainer.step, trainer.progress = 3, 0.0
    assert trainer.learning_rate() == pytest.approx(2e-3 * 4 / 10)
    trainer.step, trainer.progress = 20, 0.5
    assert trainer.learning_rate() == pytest.approx(2e-3 * 0.55)


def test_training_lowers_the_loss_on_a_fixed_batch(config, tmp_path):
    dataset = FixedClips(config, same=True)
    trainer = _trainer(config, tmp_path, dataset, learning_rate=1e-3)
    batch = collate(dataset, [0, 0])
    state = trainer.noise_generator.get_state()

    def fixed_loss() -> float:
        trainer.noise_generator.set_state(state)
        trainer.jitter_generator.manual_seed(0)
        with torch.no_grad():
            return float(trainer.loss(batch))

    before = fixed_loss()
    for _ in range(5):
        trainer.train_step()
    assert fixed_loss() < before


def test_resume_gives_the_same_next_step(config, tmp_path):
    first = _trainer(config, tmp_path / "a", steps=10)
    for _ in range(2):
        first.train_step()
    first.save()
    expected_loss = first.train_step()
    expected = {k: v.clone() for k, v in first.components.denoising_unet.state_dict().items()}

    second = _trainer(config, tmp_path / "b", steps=10)
    assert second.resume(tmp_path / "a")
    assert second.step == 2
    assert second.train_step() == pytest.approx(expected_loss, rel=1e-6)
    for key, value in second.components.denoising_unet.state_dict().items():
        assert torch.allclose(value, expected[key], atol=1e-7), key


def test_run_saves_a_loadable_model(config, tmp_path):
    trainer = _trainer(config, tmp_path, steps=2, checkpoint_every=1)
    result = trainer.run(progress=False)
    assert result.steps == 2
    loaded = load_components(config, tmp_path / "ema")
    assert loaded.context is not None


def test_codec_training_reduces_reconstruction_error(config):
    torch.manual_seed(0)
    codec = RainComponents.build(config).decoder
    batch = collate(FixedClips(config, same=True), [0])
    with torch.no_grad():
        before = codec_loss(codec, batch.frames, reference=batch.reference)[1]
    result = train_codec(codec, FixedClips(config, same=True), steps=15, batch_size=1, learning_rate=3e-3,
                         progress=False)
    assert result.steps == 15
    with torch.no_grad():
        after = codec_loss(codec, batch.frames, reference=batch.reference)[1]
    assert after < before


def test_export_packs_the_ema_weights_as_float16_with_a_card(config, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    from rain_core.train.evaluate import EvaluationResult
    from rain_core.train.export import add_evaluation, export_model, read_card

    run = tmp_path / "run"
    trainer = _trainer(config, run, steps=2, checkpoint_every=1)
    trainer.run(progress=False)
    out = tmp_path / "model"
    card = export_model(run, out)
    assert card.unet_steps == 2 and card.profile == config.name
    with safe_open(str(out / "denoising_unet.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    loaded = load_components(config, out)
    expected = load_file(str(run / "ema" / "pose_guider.safetensors"))
    for key, value in loaded.pose_guider.state_dict().items():
        assert torch.equal(value, expected[key].half().float()), key
    figures = EvaluationResult(clips=1, frames=6, psnr=30.0, ssim=0.9, baseline_static_psnr=20.0,
                               baseline_static_ssim=0.8, baseline_blank_driving_psnr=21.0,
                               baseline_blank_driving_ssim=0.81, flicker=1.0, true_flicker=1.1, moved_psnr=25.0,
                               codec_psnr=33.0, codec_ssim=0.95)
    add_evaluation(out, figures)
    assert read_card(out).evaluation["psnr"] == 30.0
    card_text = (out / "MODEL_CARD.md").read_text()
    assert "| this model | 30.00 | 0.900 | 25.00 |" in card_text
    assert "| the codec alone on the true frames (a ceiling) | 33.00 | 0.950 | - |" in card_text


def test_export_over_the_size_limit_leaves_the_old_model(config, tmp_path):
    from rain_core.train.export import ExportError, export_model

    run = tmp_path / "run"
    _trainer(config, run, steps=1).run(progress=False)
    out = tmp_path / "model"
    export_model(run, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ExportError, match="limit is"):
        export_model(run, out, max_bytes=1000)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "no staging directory left"
    with pytest.raises(ExportError, match="not a training run"):
        export_model(tmp_path / "nothing", out)


def test_moved_region_psnr_sees_what_the_whole_frame_hides():
    """A small moving arm on a still background: repeating the reference scores well on the
    whole frame and badly where the arm moved; drawing the arm scores well on both."""
    from rain_core.train.evaluate import masked_squared_error, moved_mask, psnr, psnr_from_error

    rng = np.random.default_rng(0)
    reference = rng.integers(60, 200, (32, 32, 3), dtype=np.uint8)
    truth = np.repeat(reference[None], 4, 0)
    truth[:, 10:14, 20:26] = 250  # the arm, 2% of the frame
    static = np.repeat(reference[None], 4, 0)
    drawn = np.clip(truth.astype(np.int16) + rng.integers(-3, 4, truth.shape), 0, 255).astype(np.uint8)
    mask = moved_mask(truth, reference)
    assert mask.sum() == 4 * 4 * 6
    static_moved = psnr_from_error(*masked_squared_error(static, truth, mask))
    drawn_moved = psnr_from_error(*masked_squared_error(drawn, truth, mask))
    assert psnr(static, truth) > 20 and static_moved < 12
    assert drawn_moved > 35 and drawn_moved - static_moved > 20


def test_the_moved_loss_weighs_the_latents_where_the_character_moved(config, tmp_path):
    """A moved patch of the frame weighs its latent cell (and only it) 1 + w; weights of 1 give
    the plain loss; a trainer with the weight trains on that loss."""
    from rain_core.train.objective import diffusion_loss, moved_latent_weights

    h, w = config.latent_height, config.latent_width
    cell_h, cell_w = config.height // h, config.width // w
    rng = np.random.default_rng(0)
    reference = torch.from_numpy(rng.random((1, 3, config.height, config.width), dtype=np.float32))
    frames = reference[:, :, None].repeat(1, 1, 2, 1, 1).clone()
    frames[0, :, 1, cell_h + 1, 2 * cell_w + 1] = 1 - reference[0, :, cell_h + 1, 2 * cell_w + 1]  # one pixel
    frames[0, 0, 1, 0, 0] = (reference[0, 0, 0, 0] + 0.05).clamp(max=1)  # below the threshold: not moved
    weights = moved_latent_weights(frames, reference, (h, w), extra=4.0)
    assert weights.shape == (1, 1, 2, h, w)
    expected = torch.ones_like(weights)
    expected[0, 0, 1, 1, 2] = 5.0
    assert torch.equal(weights, expected)

    output, target = torch.randn(1, 4, 2, h, w), torch.randn(1, 4, 2, h, w)
    assert torch.allclose(diffusion_loss(output, target, torch.ones_like(weights)), diffusion_loss(output, target))
    wrong_there = target.clone()
    wrong_there[0, :, 1, 1, 2] += 1.0
    wrong_elsewhere = target.clone()
    wrong_elsewhere[0, :, 0, 0, 0] += 1.0
    assert diffusion_loss(wrong_there, target, weights) > diffusion_loss(wrong_elsewhere, target, weights)

    dataset = FixedClips(config, same=True)
    batch = collate(dataset, [0, 0])
    losses = []
    for extra in (0.0, 4.0):
        trainer = _trainer(config, tmp_path / str(extra), dataset, moved_loss_weight=extra)
        trainer.noise_generator.manual_seed(0)
        trainer.jitter_generator.manual_seed(0)
        with torch.no_grad():
            losses.append(float(trainer.loss(batch)))
    assert losses[0] != losses[1]


def test_codec_ceiling_decodes_as_the_stream_does(config):
    """The codec's reconstruction, P frames a call with the decoder memory carried, is the
    whole clip decoded at once."""
    from rain_core.stream.engine import QueueModel, frames_to_uint8
    from rain_core.train.evaluate import codec_reconstruction

    components = RainComponents.random(config, seed=3)
    truth, _, reference = SyntheticClips(config, frames=3 * config.frames_per_group, split="val").clip(0)
    streamed = codec_reconstruction(QueueModel(components), truth, reference)
    assert streamed.shape == truth.shape and streamed.dtype == np.uint8
    with torch.inference_mode():
        pixels = torch.from_numpy(truth).permute(0, 3, 1, 2).float().div(255)
        latents = components.decoder.encode(pixels)
        memory = components.decoder.initial_memory(1, *latents.shape[-2:])
        image = torch.from_numpy(reference).permute(2, 0, 1)[None].float().div(255)
        decoder_reference = (image, components.decoder.encode(image))
        whole, _ = components.decoder.decode_stream(latents[None], memory, decoder_reference)
    expected = frames_to_uint8(whole[0].clamp(0, 1))
    assert np.abs(streamed.astype(int) - expected).max() <= 1


def test_fine_tuning_a_model_without_the_reference_gate_trains_its_decoder_and_keeps_the_encoder(config, tmp_path):
    """A model trained before the gate existed fine-tunes into one with it: the gate is learned
    by the decoder, and the encoder (the latents its UNet knows) stays exactly as it was."""
    from rain_core.train.export import export_model, render_card
    from rain_core.train.run import CODEC_FILE, train_model

    plain = config.with_overrides(taesdv=config.taesdv.model_copy(update={"reference_gate": False}))
    _trainer(plain, tmp_path / "plain", steps=1).run(progress=False)
    export_model(tmp_path / "plain", tmp_path / "plain-model")
    before = load_components(plain, tmp_path / "plain-model").decoder.state_dict()
    with pytest.raises(WeightsError, match="missing keys: gate"):
        load_components(config, tmp_path / "plain-model")
    settings = TrainSettings(init_weights=tmp_path / "plain-model", steps=2, codec_steps=3, warmup_steps=0)
    train_model(config, "synthetic", tmp_path / "gated", settings, progress=False)
    assert (tmp_path / "gated" / CODEC_FILE).is_file()
    after = load_components(config, tmp_path / "gated" / "ema").decoder.state_dict()
    # The card says what the weights were fine-tuned from, and counts that training too.
    card = export_model(tmp_path / "gated", tmp_path / "gated-model")
    earlier = card.fine_tuned_from
    assert earlier["unet_steps"] == 1
    assert card.training_minutes == pytest.approx(
        (card.codec_minutes or 0) + card.unet_minutes + (earlier["codec_minutes"] or 0) + earlier["unet_minutes"]
    )
    rendered = (tmp_path / "gated-model" / "MODEL_CARD.md").read_text()
    assert "| fine-tuned from | a model whose own run trained" in rendered
    # A further fine-tune keeps this codec and trains none: the card says so (not "None steps").
    again = render_card(dataclasses.replace(card, codec_steps=None, codec_minutes=None, codec_l1=None))
    assert "| codec training | none (the codec of the model it was fine-tuned from, unchanged) |" in again
    assert "None" not in again
    assert {k for k in after if k not in before} and all(k.startswith("gate") for k in after if k not in before)
    for key, value in before.items():
        if key.startswith(("encoder.", "patch_encoder.")):
            assert torch.equal(after[key], value), key
    assert any(not torch.equal(after[k], v) for k, v in before.items() if k.startswith("decoder."))


def test_a_broken_card_of_the_fine_tuned_weights_is_a_clear_export_error(config, tmp_path):
    """The earlier model's card.json is a file from outside the run: a bad one names itself."""
    from rain_core.train.export import CARD_JSON, ExportError, export_model

    run = tmp_path / "run"
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / CARD_JSON).write_text('{"profile": "demo"}')
    _trainer(config, run, steps=1, init_weights=earlier).run(progress=False)
    with pytest.raises(ExportError, match="card.json: not a model card"):
        export_model(run, tmp_path / "model")
