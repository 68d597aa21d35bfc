"""`rain-avatar evaluate`: how well a model animates held-out characters.

For each validation clip the model animates the character's reference image with the clip's
driving images, through the streaming engine exactly as live use does, and the frames are
compared with the true frames (PSNR, SSIM). Two baselines are measured in the same run: the
reference image repeated (a model that ignores the driving signal at best), and the same model
with the driving images blanked (what the model gets from the reference alone). Temporal
stability: the mean absolute frame-to-frame change of the output against the true frames'.

The codec bounds what any UNet can reach: the true frames encoded as the reference image is and
decoded as the stream is give the codec's own PSNR and SSIM (whole frame, and PSNR where the
character moved), measured in the same run.

Most of a frame is background that never moves, where the reference repeated is exact and a
model only loses; so PSNR is also measured where the character moved (pixels where the true
frame differs from the reference image), which is where following the driving images shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from rain_core.stream.components import RainComponents
from rain_core.stream.engine import QueueModel, StreamEngine, frames_to_uint8, stream_frames
from rain_core.train.objective import MOVED_LEVELS


def animate_clip(components: RainComponents | QueueModel, driving: np.ndarray, reference: np.ndarray, *,
                 seed: int = 0) -> np.ndarray:
    """Stream a whole clip through a fresh engine; one output frame per driving frame (uint8)."""
    engine = StreamEngine(components, seed=seed)
    engine.set_reference(reference)
    return np.stack(list(stream_frames(engine, driving)))


@torch.inference_mode()
def codec_reconstruction(model: QueueModel, frames: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Frames uint8 [T, H, W, 3] -> the same frames through the model's encoder and its streaming
    decoder, P frames a call with the decoder memory carried, as a stream decodes them (with the
    clip's reference image [H, W, 3] for a decoder that uses it)."""
    latents = model.encode_frames(torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255))
    memory = model.components.decoder.initial_memory(
        1, *latents.shape[-2:], device=model.device, dtype=model.decoder_dtype
    )
    decoder_reference = model.decoder_reference(model.encode_reference(reference))
    decoded = []
    for start in range(0, len(latents), model.per_group):
        # [P, C, h, w] -> [1, C, P, h, w], the layout of the queue's finished group.
        chunk, memory = model.decode(
            latents[start : start + model.per_group].transpose(0, 1)[None], memory, decoder_reference
        )
        decoded.append(frames_to_uint8(chunk[0]))
    return np.concatenate(decoded)


def psnr(output: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([peak_signal_noise_ratio(t, o, data_range=255) for o, t in zip(output, truth, strict=True)]))


def ssim(output: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean(
            [structural_similarity(t, o, channel_axis=-1, data_range=255) for o, t in zip(output, truth, strict=True)]
        )
    )


def moved_mask(truth: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """[T, H, W] True where the true frame differs visibly from the reference image."""
    return np.abs(truth.astype(np.int16) - reference.astype(np.int16)).max(axis=-1) > MOVED_LEVELS


def masked_squared_error(output: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> tuple[float, int]:
    """(sum of squared errors over the masked pixels' channels, number of values summed)."""
    diff = output[mask].astype(np.float64) - truth[mask].astype(np.float64)
    return float((diff**2).sum()), diff.size


def psnr_from_error(squared_error: float, count: int) -> float:
    mse = squared_error / max(count, 1)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def flicker(frames: np.ndarray) -> float:
    """Mean absolute change between consecutive frames, in 0-255 levels."""
    return float(np.abs(np.diff(frames.astype(np.float32), axis=0)).mean())


@dataclass
class EvaluationResult:
    clips: int
    frames: int
    psnr: float
    ssim: float
    baseline_static_psnr: float
    baseline_static_ssim: float
    baseline_blank_driving_psnr: float
    baseline_blank_driving_ssim: float
    flicker: float
    true_flicker: float
    # PSNR over the pixels where the character moved (see `moved_mask`), pooled over all clips.
    moved_psnr: float = float("nan")
    baseline_static_moved_psnr: float = float("nan")
    baseline_blank_driving_moved_psnr: float = float("nan")
    moved_fraction: float = float("nan")
    # Held-out clips on which the model's PSNR is above each baseline's.
    clips_above_static: int = 0
    clips_above_blank_driving: int = 0
    # The true frames through the codec alone (see `codec_reconstruction`): a ceiling for the model.
    codec_psnr: float = float("nan")
    codec_ssim: float = float("nan")
    codec_moved_psnr: float = float("nan")


@torch.inference_mode()
def evaluate(components: RainComponents, dataset, *, clips: int = 8, seed: int = 0) -> EvaluationResult:
    model = QueueModel(components)
    scores: dict[str, list[float]] = {k: [] for k in ("psnr", "ssim", "sp", "ss", "bp", "bs", "fl", "tf", "cp", "cs")}
    moved = {k: [0.0, 0] for k in ("model", "static", "blank", "codec")}
    moved_pixels = pixels = frames_total = 0
    for index in range(clips):
        truth, driving, reference = dataset.clip(index)
        output = animate_clip(model, driving, reference, seed=seed)
        blank = animate_clip(model, np.zeros_like(driving), reference, seed=seed)
        static = np.repeat(reference[None], len(truth), 0)
        codec = codec_reconstruction(model, truth, reference)
        scores["psnr"].append(psnr(output, truth))
        scores["ssim"].append(ssim(output, truth))
        scores["sp"].append(psnr(static, truth))
        scores["ss"].append(ssim(static, truth))
        scores["bp"].append(psnr(blank, truth))
        scores["bs"].append(ssim(blank, truth))
        scores["cp"].append(psnr(codec, truth))
        scores["cs"].append(ssim(codec, truth))
        scores["fl"].append(flicker(output))
        scores["tf"].append(flicker(truth))
        mask = moved_mask(truth, reference)
        for name, frames in (("model", output), ("static", static), ("blank", blank), ("codec", codec)):
            error, count = masked_squared_error(frames, truth, mask)
            moved[name][0] += error
            moved[name][1] += count
        moved_pixels += int(mask.sum())
        pixels += mask.size
        frames_total += len(truth)
    mean = {k: float(np.mean(v)) for k, v in scores.items()}
    return EvaluationResult(
        clips=clips,
        frames=frames_total,
        psnr=mean["psnr"],
        ssim=mean["ssim"],
        baseline_static_psnr=mean["sp"],
        baseline_static_ssim=mean["ss"],
        baseline_blank_driving_psnr=mean["bp"],
        baseline_blank_driving_ssim=mean["bs"],
        flicker=mean["fl"],
        true_flicker=mean["tf"],
        moved_psnr=psnr_from_error(*moved["model"]),
        baseline_static_moved_psnr=psnr_from_error(*moved["static"]),
        baseline_blank_driving_moved_psnr=psnr_from_error(*moved["blank"]),
        moved_fraction=moved_pixels / pixels,
        clips_above_static=sum(m > b for m, b in zip(scores["psnr"], scores["sp"], strict=True)),
        clips_above_blank_driving=sum(m > b for m, b in zip(scores["psnr"], scores["bp"], strict=True)),
        codec_psnr=mean["cp"],
        codec_ssim=mean["cs"],
        codec_moved_psnr=psnr_from_error(*moved["codec"]),
    )


@torch.inference_mode()
def frame_strip(
    components: RainComponents, dataset, indices: list[int], *, columns: int = 8, seed: int = 0
) -> np.ndarray:
    """A picture of the model at work: per clip, rows of driving images, output and true frames,
    `columns` frames evenly spaced over the clip, after the reference image (uint8 [H, W, 3])."""
    model = QueueModel(components)
    blocks = []
    for index in indices:
        truth, driving, reference = dataset.clip(index)
        output = animate_clip(model, driving, reference, seed=seed)
        picks = np.linspace(0, len(truth) - 1, columns).round().astype(int)
        blank = np.zeros_like(reference)
        rows = [
            [blank, *driving[picks]],
            [reference, *output[picks]],
            [blank, *truth[picks]],
        ]
        blocks.append(np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0))
    gap = np.full((4, blocks[0].shape[1], 3), 255, np.uint8)
    return np.concatenate([part for block in blocks for part in (block, gap)][:-1], axis=0)
