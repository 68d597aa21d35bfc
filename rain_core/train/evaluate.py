"""`rain-avatar evaluate`: how well a model animates held-out characters.

For each validation clip the model animates the character's reference image with the clip's
driving images, through the streaming engine exactly as live use does, and the frames are
compared with the true frames (PSNR, SSIM). Two baselines are measured in the same run: the
reference image repeated (a model that ignores the driving signal at best), and the same model
with the driving images blanked (what the model gets from the reference alone). Temporal
stability: the mean absolute frame-to-frame change of the output against the true frames'.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from rain_core.components import RainComponents
from rain_core.engine import QueueModel, StreamEngine, stream_frames


def animate_clip(components: RainComponents | QueueModel, driving: np.ndarray, reference: np.ndarray, *,
                 seed: int = 0) -> np.ndarray:
    """Stream a whole clip through a fresh engine; one output frame per driving frame (uint8)."""
    engine = StreamEngine(components, seed=seed)
    engine.set_reference(reference)
    return np.stack(list(stream_frames(engine, driving)))


def psnr(output: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([peak_signal_noise_ratio(t, o, data_range=255) for o, t in zip(output, truth)]))


def ssim(output: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([structural_similarity(t, o, channel_axis=-1, data_range=255) for o, t in zip(output, truth)]))


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


@torch.inference_mode()
def evaluate(components: RainComponents, dataset, *, clips: int = 8, seed: int = 0) -> EvaluationResult:
    model = QueueModel(components)
    scores: dict[str, list[float]] = {k: [] for k in ("psnr", "ssim", "sp", "ss", "bp", "bs", "fl", "tf")}
    frames_total = 0
    for index in range(clips):
        truth, driving, reference = dataset.clip(index)
        output = animate_clip(model, driving, reference, seed=seed)
        blank = animate_clip(model, np.zeros_like(driving), reference, seed=seed)
        static = np.repeat(reference[None], len(truth), 0)
        scores["psnr"].append(psnr(output, truth))
        scores["ssim"].append(ssim(output, truth))
        scores["sp"].append(psnr(static, truth))
        scores["ss"].append(ssim(static, truth))
        scores["bp"].append(psnr(blank, truth))
        scores["bs"].append(ssim(blank, truth))
        scores["fl"].append(flicker(output))
        scores["tf"].append(flicker(truth))
        frames_total += len(truth)
    mean = {k: float(np.mean(v)) for k, v in scores.items()}
    return EvaluationResult(
        clips=clips, frames=frames_total, psnr=mean["psnr"], ssim=mean["ssim"],
        baseline_static_psnr=mean["sp"], baseline_static_ssim=mean["ss"],
        baseline_blank_driving_psnr=mean["bp"], baseline_blank_driving_ssim=mean["bs"],
        flicker=mean["fl"], true_flicker=mean["tf"],
    )


def as_dict(result: EvaluationResult) -> dict:
    return asdict(result)


@torch.inference_mode()
def frame_strip(components: RainComponents, dataset, indices: list[int], *, columns: int = 8, seed: int = 0) -> np.ndarray:
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
