"""`train`, `evaluate` and `export`: a model trained here, measured, and packed to ship.

The defaults of `train` are `TrainSettings`' (an option left out is left to them); the help
texts show them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cli.options import (
    add_model_options,
    between,
    load_components,
    model_config,
    positive_float,
    positive_int,
    print_result,
)
from rain_core.train.settings import (
    FINE_TUNE_LEARNING_RATE,
    FINE_TUNE_SHARED_LEVEL_PROB,
    SCRATCH_LEARNING_RATE,
    SCRATCH_SHARED_LEVEL_PROB,
    TRAINABLE,
    TrainSettings,
)


def _default(field: str) -> object:
    return TrainSettings.model_fields[field].default


def add_train(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="train or fine-tune a profile (staggered-noise objective)")
    add_model_options(train, default_profile="demo")
    train.add_argument("--data", default="synthetic", help="'synthetic' or a folder of videos of people")
    train.add_argument("--out", type=Path, required=True, help="run directory (checkpoints, validation clips)")
    train.add_argument("--steps", type=positive_int, default=None, help=f"default {_default('steps')}")
    train.add_argument("--batch-size", type=positive_int, default=None, help=f"default {_default('batch_size')}")
    train.add_argument(
        "--learning-rate",
        type=positive_float,
        default=None,
        help=f"default {SCRATCH_LEARNING_RATE:g} from scratch, {FINE_TUNE_LEARNING_RATE:g} with --weights",
    )
    train.add_argument("--max-minutes", type=positive_float, default=None, help="stop after this long")
    train.add_argument(
        "--codec-steps",
        type=positive_int,
        default=None,
        help=f"steps of the profile's own codec, when it has one (default {_default('codec_steps')})",
    )
    train.add_argument("--freeze", nargs="*", default=None, choices=TRAINABLE)
    train.add_argument(
        "--timestep-jitter",
        type=between(int, 0, 500),
        default=None,
        help="move each group's noise level by up to this many timesteps (0-500, default "
        f"{_default('timestep_jitter')})",
    )
    train.add_argument(
        "--shared-level-prob",
        type=between(float, 0, 1),
        default=None,
        help=f"share of clips noised to one level throughout (default {SCRATCH_SHARED_LEVEL_PROB:g} "
        f"from scratch, {FINE_TUNE_SHARED_LEVEL_PROB:g} with --weights)",
    )
    train.add_argument(
        "--moved-loss-weight",
        type=between(float, 0, 100),
        default=None,
        help="extra loss weight on latents where the character moved away from the reference (0-100, "
        f"default {_default('moved_loss_weight'):g}: every latent alike)",
    )
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.set_defaults(run=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    """Train (or fine-tune) a profile with RAIN's staggered-noise objective."""
    from rain_core.train.run import train_model

    config = model_config(args)
    if args.dtype is None:
        # Weights train in float32 (bf16 autocast on CUDA does the fast math).
        config = config.with_overrides(dtype="float32")
    given = {
        "init_weights": args.weights,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "max_minutes": args.max_minutes,
        "codec_steps": args.codec_steps,
        "freeze": args.freeze,
        "timestep_jitter": args.timestep_jitter,
        "shared_level_prob": args.shared_level_prob,
        "moved_loss_weight": args.moved_loss_weight,
    }
    settings = TrainSettings(
        seed=config.seed,
        # The official model's activations do not fit in memory otherwise.
        gradient_checkpointing=config.name == "official",
        **{name: value for name, value in given.items() if value is not None},
    )
    result = train_model(config, args.data, args.out, settings, resume=args.resume)
    sys.stdout.write(
        f"trained {result.steps} steps in {result.minutes:.1f} min, loss {result.final_loss:.4f}; "
        f"EMA weights in {result.output_dir / 'ema'}\n"
    )
    return 0


def add_evaluate(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser("evaluate", help="PSNR/SSIM on held-out synthetic characters")
    add_model_options(evaluate, default_profile="demo")
    evaluate.add_argument("--clips", type=positive_int, default=8)
    evaluate.add_argument("--frames", type=positive_int, default=48)
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument(
        "--strip", type=Path, default=None, help="also write a PNG of driving images, output and true frames"
    )
    evaluate.add_argument(
        "--card",
        type=Path,
        default=None,
        help="also write the figures into the model card of this exported model directory",
    )
    evaluate.set_defaults(run=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """PSNR/SSIM on held-out synthetic characters, against two baselines."""
    from rain_core.train.data import SyntheticClips
    from rain_core.train.evaluate import evaluate

    components = load_components(args)
    dataset = SyntheticClips(components.config, frames=args.frames, split="val")
    result = evaluate(components, dataset, clips=args.clips, seed=components.config.seed)
    print_result(result, args.json)
    if args.strip is not None:
        from PIL import Image

        from rain_core.train.evaluate import frame_strip

        strip = frame_strip(components, dataset, list(range(min(args.clips, 3))), seed=components.config.seed)
        Image.fromarray(strip).save(args.strip)
    if args.card is not None:
        from rain_core.train.export import add_evaluation

        add_evaluation(args.card, result)
    return 0


def add_export(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser("export", help="pack a training run as a float16 model directory with a card")
    export.add_argument("run_dir", metavar="RUN", type=Path, help="the --out directory of `rain-avatar train`")
    export.add_argument("--out", type=Path, required=True, help="model directory to write (replaced whole)")
    export.add_argument("--max-mib", type=positive_float, default=25.0, help="refuse weights larger than this")
    export.set_defaults(run=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    """Pack a training run's EMA weights as a shippable float16 model directory with a card."""
    from rain_core.train.export import ExportError, export_model

    try:
        card = export_model(args.run_dir, args.out, max_bytes=int(args.max_mib * 2**20))
    except ExportError as exc:
        raise SystemExit(f"rain-avatar export: error: {exc}") from None
    sys.stdout.write(
        f"wrote {args.out} ({card.weight_bytes / 2**20:.1f} MiB); add figures with "
        f"`rain-avatar evaluate --weights {args.out} --card {args.out}`\n"
    )
    return 0
