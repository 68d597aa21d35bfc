"""Packing a training run as a model directory to ship: the EMA weights as float16
safetensors, the configuration, and a model card with the run's facts and its evaluation.

`rain-avatar export RUN --out DIR` is how `rain_core/assets/demo` is made from a
`rain-avatar train` run.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from rain_core.config import RainConfig
from rain_core.train.evaluate import EvaluationResult
from rain_core.train.run import CODEC_FILE, RUN_FILE
from rain_core.train.trainer import STATE_FILE
from rain_core.weights.checkpoints import CHECKPOINTS
from rain_core.weights.loading import SAVED_CONFIG_FILE, load_components

CARD_JSON = "card.json"
CARD_MARKDOWN = "MODEL_CARD.md"
# A held-out character at rest, the server's default character for the model.
CHARACTER_FILE = "character.png"
# The bundled model lives in the git repository and the wheel: keep it small.
DEFAULT_MAX_BYTES = 25 * 2**20


class ExportError(ValueError):
    pass


@dataclass
class ModelCard:
    profile: str
    resolution: str
    parameters: dict[str, int]
    weight_bytes: int
    unet_steps: int
    unet_minutes: float
    batch_size: int
    learning_rate: float
    codec_steps: int | None
    codec_minutes: float | None
    codec_l1: float | None
    machine: str
    evaluation: dict | None = None
    notes: list[str] = field(default_factory=list)
    # The card of the model this one was fine-tuned from (`train --weights`), when it had one: the
    # training behind the weights goes on, and its figures stay beside the new ones.
    fine_tuned_from: dict | None = None

    @property
    def training_minutes(self) -> float:
        """Training time behind these weights, the runs they were fine-tuned from included."""
        own = (self.codec_minutes or 0.0) + self.unet_minutes
        return own + (ModelCard(**self.fine_tuned_from).training_minutes if self.fine_tuned_from else 0.0)


def run_config(run_dir: Path) -> RainConfig:
    path = run_dir / SAVED_CONFIG_FILE
    if not path.is_file():
        raise ExportError(f"{run_dir}: not a training run (no {SAVED_CONFIG_FILE})")
    return RainConfig.model_validate_json(path.read_text())


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _earlier_card(path: Path) -> dict | None:
    """The card of the weights a run was fine-tuned from, checked as a card; None when they had none."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        # Every field, and the cards it names in turn.
        if ModelCard(**data).training_minutes < 0:
            raise ValueError("negative training time")
    except (ValueError, TypeError) as exc:
        raise ExportError(f"{path}: not a model card ({str(exc)[:200]})") from None
    return data


def _half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.half().contiguous() if v.is_floating_point() else v.contiguous() for k, v in state.items()}


def export_model(run_dir: str | Path, out_dir: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> ModelCard:
    """Write `run_dir/ema` as float16 safetensors + config + card into `out_dir` (replaced whole).

    The directory is written beside `out_dir` and moved into place only once every file loads
    back into the profile's networks, so a failed export leaves the old model untouched.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    config = run_config(run_dir)
    ema = run_dir / "ema"
    state_path = run_dir / STATE_FILE
    if not state_path.is_file():
        raise ExportError(f"{run_dir}: no {STATE_FILE}; has the run saved a checkpoint?")
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        parameters = {}
        for name, checkpoint in CHECKPOINTS.items():
            source = ema / checkpoint.saved_file
            if not source.is_file():
                if name == "context" and config.reference_encoder != "taesdv":
                    continue
                raise ExportError(f"{source}: missing; the run's EMA weights are incomplete")
            tensors = load_file(str(source))
            parameters["codec" if name == "decoder" else name] = sum(t.numel() for t in tensors.values())
            save_file(_half(tensors), str(staging / checkpoint.saved_file), metadata={"format": "pt"})
        size = sum(p.stat().st_size for p in staging.glob("*.safetensors"))
        if size > max_bytes:
            raise ExportError(f"exported weights are {size / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.1f} MiB")
        (staging / SAVED_CONFIG_FILE).write_text(config.model_dump_json(indent=1))
        load_components(config, staging)  # every key and shape, or an error naming them
        codec = _read_json(run_dir / CODEC_FILE)
        run = _read_json(run_dir / RUN_FILE)
        settings = state["settings"]
        init_weights = settings.get("init_weights")
        fine_tuned_from = _earlier_card(Path(init_weights) / CARD_JSON) if init_weights else None
        card = ModelCard(
            profile=config.name,
            resolution=f"{config.width}x{config.height}",
            parameters=parameters,
            weight_bytes=size,
            unet_steps=int(state["step"]),
            unet_minutes=round(float(state["minutes_trained"]), 1),
            batch_size=int(settings["batch_size"]),
            learning_rate=float(settings["learning_rate"]),
            codec_steps=codec.get("steps"),
            codec_minutes=round(codec["minutes"], 1) if "minutes" in codec else None,
            codec_l1=round(codec["l1"], 4) if "l1" in codec else None,
            machine=run.get("machine", "not recorded"),
            fine_tuned_from=fine_tuned_from,
        )
        write_card(staging, card)
        write_sample_character(staging / CHARACTER_FILE, config)
        staging.chmod(0o755)
        for path in staging.iterdir():
            path.chmod(0o644)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return card


def write_sample_character(path: Path, config: RainConfig) -> None:
    from PIL import Image

    from rain_core.train.synthetic.clip import make_clip

    clip = make_clip(0, frames=1, width=config.width, height=config.height, split="val")
    Image.fromarray(clip.reference).save(path)


def write_card(directory: Path, card: ModelCard) -> None:
    (directory / CARD_JSON).write_text(json.dumps(asdict(card), indent=1) + "\n")
    (directory / CARD_MARKDOWN).write_text(render_card(card))


def read_card(directory: Path) -> ModelCard:
    return ModelCard(**json.loads((directory / CARD_JSON).read_text()))


def add_evaluation(directory: Path, evaluation: EvaluationResult, notes: list[str] | None = None) -> ModelCard:
    card = read_card(directory)
    card.evaluation = asdict(evaluation)
    card.notes = list(notes or card.notes)
    write_card(directory, card)
    return card


def _figure(evaluation: dict, key: str, digits: int = 2) -> str:
    """A figure from the evaluation, or a dash for cards written before it was measured."""
    value = evaluation.get(key)
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _codec_training(card: ModelCard) -> str:
    # A fine-tune of a model whose codec already fits trains no codec: it keeps the earlier one's.
    if card.codec_steps is None:
        return "none (the codec of the model it was fine-tuned from, unchanged)"
    return f"{card.codec_steps} steps, {card.codec_minutes} min, reconstruction L1 {card.codec_l1}"


def render_card(card: ModelCard) -> str:
    total = sum(card.parameters.values())
    per_network = ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in card.parameters.items())
    before = ModelCard(**card.fine_tuned_from) if card.fine_tuned_from else None
    origin = "from scratch" if before is None else "by fine-tuning an earlier one (below)"
    lines = [
        f"# rain-avatar `{card.profile}` model",
        "",
        f"A small RAIN model trained {origin} on this repository's synthetic cartoon characters",
        "(`rain_core/train/synthetic/`) with `rain-avatar train`, on a CPU. It animates cartoon",
        "characters like those from an OpenPose-style body driving image; photographs as",
        "characters are outside anything it has seen.",
        "",
        "| | |",
        "|---|---|",
        f"| resolution | {card.resolution} |",
        f"| parameters | {total / 1e6:.2f} M ({per_network}) |",
        f"| weights | {card.weight_bytes / 2**20:.1f} MiB, float16 safetensors |",
        f"| codec training | {_codec_training(card)} |",
        f"| UNet training | {card.unet_steps} steps of batch {card.batch_size}, {card.unet_minutes} min, "
        f"peak learning rate {card.learning_rate:g} |",
        f"| machine | {card.machine} |",
    ]
    if before is not None:
        lines += [
            f"| fine-tuned from | a model whose own run trained: codec {_codec_training(before)}; UNet "
            f"{before.unet_steps} steps ({before.unet_minutes} min), on {before.machine} |",
            f"| training time in all | {card.training_minutes:.1f} min |",
        ]
    lines += [
        "",
        "Data: endless generated clips of training-split characters (shapes, palettes, textures and",
        "motions disjoint from the validation split); each clip's driving images are drawn from the",
        "same landmarks as the character, so the pairing is exact.",
        "",
    ]
    if card.evaluation:
        e = card.evaluation
        lines += [
            f"## Evaluation (`rain-avatar evaluate`: {e['clips']} held-out clips, {e['frames']} frames)",
            "",
            "| | PSNR (dB) | SSIM | PSNR where the character moved (dB) |",
            "|---|---|---|---|",
            f"| this model | {e['psnr']:.2f} | {e['ssim']:.3f} | {_figure(e, 'moved_psnr')} |",
            f"| reference image repeated | {e['baseline_static_psnr']:.2f} | {e['baseline_static_ssim']:.3f} | "
            f"{_figure(e, 'baseline_static_moved_psnr')} |",
            f"| this model, driving blanked | {e['baseline_blank_driving_psnr']:.2f} | "
            f"{e['baseline_blank_driving_ssim']:.3f} | {_figure(e, 'baseline_blank_driving_moved_psnr')} |",
            f"| the codec alone on the true frames (a ceiling) | {_figure(e, 'codec_psnr')} | "
            f"{_figure(e, 'codec_ssim', 3)} | {_figure(e, 'codec_moved_psnr')} |",
        ]
        if before is not None and before.evaluation:
            b = before.evaluation
            lines.append(
                f"| the model it was fine-tuned from (its own evaluation) | {b['psnr']:.2f} | {b['ssim']:.3f} | "
                f"{_figure(b, 'moved_psnr')} |"
            )
        lines += [
            "",
            f"Frame-to-frame change: {e['flicker']:.2f} levels in the output, "
            f"{e['true_flicker']:.2f} in the true frames.",
            "",
        ]
    lines += [f"- {note}" for note in card.notes]
    return "\n".join(lines).rstrip() + "\n"
