"""`rain-avatar`: the command line of the project."""

from __future__ import annotations

import os
import sys

# Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning. The engine shares
# the CPU with mediapipe, the video codecs and the event loop; with spinning threads one busy
# core stalls every parallel region (measured here: a training step went from 1.7 s to 13 s
# on a loaded 2-core machine). `train` owns the CPU, and spinning threads make its steps
# about 1.5x faster (0.75 s against 1.17 s for a demo step on 2 cores), so it keeps the default.
# The command is the first argument that is not an option (the only global option, -v, takes no value).
if next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None) != "train":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
from dataclasses import asdict  # noqa: E402
from pathlib import Path  # noqa: E402

from rain_core.config import DTYPES, PROFILES, ConfigError, RainConfig, profile_config
from rain_core.media.video import MediaError
from rain_core.stream.components import RainComponents, check_weights_dir
from rain_core.validation import describe_validation_error
from rain_core.weights.checkpoints import WeightsError
from rain_core.weights.profiles import fetch_hint, load_model, resolve_profile, runtime_config

logger = logging.getLogger("rain_avatar")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _jitter(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= value <= 500:
        raise argparse.ArgumentTypeError(f"must be between 0 and 500, got {value}")
    return value


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def _add_model_options(parser: argparse.ArgumentParser, *, default_profile: str | None = None) -> None:
    parser.add_argument("--profile", default=default_profile, choices=sorted(PROFILES),
                        help="model profile (default: official when --weights holds it complete, "
                             "else the bundled demo model)" if default_profile is None else "model profile")
    parser.add_argument("--weights", type=Path, default=None, help="weights directory of the profile")
    parser.add_argument("--random-weights", action="store_true", help="random weights (speed measurements only)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", default=None, choices=sorted(DTYPES),
                        help="default: float16 on CUDA, float32 on the CPU")
    parser.add_argument("--groups", type=_positive_int, default=None, help="G: noise groups (= LCM steps)")
    parser.add_argument("--per-group", type=_positive_int, default=None, help="P: frames per group")
    parser.add_argument("--seed", type=int, default=None, help="noise seed of the stream")


def _runtime(args: argparse.Namespace) -> dict:
    return dict(device=args.device, dtype=args.dtype, groups=args.groups, per_group=args.per_group, seed=args.seed)


def model_config(args: argparse.Namespace) -> RainConfig:
    return runtime_config(args.profile, **_runtime(args))


def load_components(args: argparse.Namespace) -> RainComponents:
    return load_model(args.profile, args.weights, random_weights=args.random_weights, **_runtime(args))


def _print_result(result, as_json: bool) -> None:
    """A result dataclass as one JSON object, or one aligned `key value` line per figure."""
    figures = asdict(result)
    if as_json:
        sys.stdout.write(json.dumps(figures) + "\n")
        return
    width = max(len(key) for key in figures) + 2
    for key, value in figures.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        sys.stdout.write(f"{key:<{width}}{shown}\n")


def cmd_info(args: argparse.Namespace) -> int:
    """Describe a profile and, with --weights, check that directory part by part."""
    config = profile_config(args.profile)
    meta = RainComponents.build(config, device="meta")
    out = sys.stdout
    out.write(f"profile {config.name}: G={config.noise_groups} groups x P={config.frames_per_group} frames, "
              f"{config.num_inference_steps} LCM steps, {config.width}x{config.height}\n")
    out.write(
        f"  first frame after {config.queue_length} driving frames; {config.frames_per_group} frames per UNet call\n"
    )
    for name, network in meta.networks():
        params = sum(p.numel() for p in network.parameters())
        out.write(f"  {name:<16} {params / 1e6:9.2f} M parameters\n")
    if args.weights is None:
        return 0
    code = _check_weights(config, args.weights)
    if code and config.name == "official":
        out.write(f"  {fetch_hint(args.weights)}\n")
    return code


def _check_weights(config: RainConfig, weights: Path) -> int:
    """Write one line per part of a weights directory; 0 when all fit the profile."""
    statuses = check_weights_dir(config, weights)
    for status in statuses:
        label = "ok" if status.ok else "MISSING" if status.path is None else "BAD"
        sys.stdout.write(f"  [{label}] {status.name}: {status.path if status.ok else status.problem}\n")
    return 0 if all(s.ok for s in statuses) else 1


def cmd_fetch_weights(args: argparse.Namespace) -> int:
    """Download the official profile's weights into one directory, then check them like `info`."""
    from rain_core.weights.fetch import fetch_weights
    from rain_core.weights.lock import LOCK_NAME

    for result in fetch_weights(args.dir):
        sys.stdout.write(f"  [{result.action}] {args.dir / result.target}\n")
    sys.stdout.write(f"sizes and sha256 recorded in {args.dir / LOCK_NAME}\n")
    return _check_weights(profile_config("official"), args.dir)


def cmd_animate(args: argparse.Namespace) -> int:
    """Animate a reference image with a driving video into an MP4."""
    from rain_core.driving import DrivingPipeline, DrivingSettings
    from rain_core.media.animate import animate
    from rain_core.media.video import VideoReader, load_image
    from rain_core.stream.engine import StreamEngine

    # Check the inputs before the (slow) model load.
    load_image(args.reference)
    VideoReader(args.driving).close()
    components = load_components(args)
    config = components.config
    pipeline = None
    if args.driving_kind == "person":
        pipeline = DrivingPipeline(DrivingSettings(mode=config.driving_mode), width=config.width, height=config.height)
    try:
        result = animate(
            StreamEngine(components, seed=args.seed),
            args.reference,
            args.driving,
            args.out,
            fps=args.fps,
            driving_pipeline=pipeline,
        )
    finally:
        if pipeline is not None:
            pipeline.close()
    sys.stdout.write(f"wrote {result.frames} frames at {result.fps:g} fps to {result.path}\n")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Measure the streaming engine's steady-state speed."""
    from rain_core.bench.engine import run_bench

    components = load_components(args)
    _print_result(run_bench(components, seconds=args.seconds, progress=not args.json), args.json)
    return 0


def cmd_bench_driving(args: argparse.Namespace) -> int:
    """Measure camera frames per second through landmark extraction and drawing."""
    import numpy as np

    from rain_core.bench.driving import run_driving_bench
    from rain_core.media.video import load_image

    photo = np.asarray(load_image(args.image))
    result = run_driving_bench(
        photo, mode=args.mode, seconds=args.seconds, output_size=(args.output_size, args.output_size)
    )
    _print_result(result, args.json)
    return 0


# A small model from scratch learns fastest near 5e-4; fine-tuning trained weights needs far less.
SCRATCH_LEARNING_RATE = 5e-4
FINE_TUNE_LEARNING_RATE = 1e-5
# From scratch, half the clips have one shared noise level, so that the model learns to draw
# from the reference (a first run without them drifted into blotches within a second of
# streaming); fine-tuning keeps the published staggered-only objective.
SCRATCH_SHARED_LEVEL_PROB = 0.5


def cmd_train(args: argparse.Namespace) -> int:
    """Train (or fine-tune) a profile with RAIN's staggered-noise objective."""
    from rain_core.train.run import train_model
    from rain_core.train.trainer import TrainSettings

    config = model_config(args)
    if args.dtype is None:
        # Weights train in float32 (bf16 autocast on CUDA does the fast math).
        config = config.with_overrides(dtype="float32")
    settings = TrainSettings(
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate or (FINE_TUNE_LEARNING_RATE if args.weights else SCRATCH_LEARNING_RATE),
        max_minutes=args.max_minutes,
        seed=config.seed,
        freeze=tuple(args.freeze),
        timestep_jitter=args.timestep_jitter,
        gradient_checkpointing=config.name == "official",
        shared_level_prob=args.shared_level_prob
        if args.shared_level_prob is not None
        else (0.0 if args.weights else SCRATCH_SHARED_LEVEL_PROB),
    )
    result = train_model(
        config,
        args.data,
        args.out,
        settings,
        init_weights=args.weights,
        codec_steps=args.codec_steps,
        resume=args.resume,
    )
    sys.stdout.write(
        f"trained {result.steps} steps in {result.minutes:.1f} min, loss {result.final_loss:.4f}; "
        f"EMA weights in {result.output_dir / 'ema'}\n"
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """PSNR/SSIM on held-out synthetic characters, against two baselines."""
    from rain_core.train.data import SyntheticClips
    from rain_core.train.evaluate import evaluate

    components = load_components(args)
    dataset = SyntheticClips(components.config, frames=args.frames, split="val")
    result = evaluate(components, dataset, clips=args.clips, seed=components.config.seed)
    _print_result(result, args.json)
    if args.strip is not None:
        from PIL import Image

        from rain_core.train.evaluate import frame_strip

        strip = frame_strip(components, dataset, list(range(min(args.clips, 3))), seed=components.config.seed)
        Image.fromarray(strip).save(args.strip)
    if args.card is not None:
        from rain_core.train.export import add_evaluation

        add_evaluation(args.card, result)
    return 0


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


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the live WebRTC server (settings: these options over the RAIN_* environment)."""
    import uvicorn
    from pydantic import ValidationError

    from server.core.config import Settings
    from server.main import create_app

    options = {
        "HOST": args.host,
        "PORT": args.port,
        "MAX_SESSIONS": args.max_sessions,
        "PROFILE": args.profile,
        "WEIGHTS": args.weights,
        "RANDOM_WEIGHTS": args.random_weights or None,
        "DEVICE": args.device,
        "DTYPE": args.dtype,
        "GROUPS": args.groups,
        "PER_GROUP": args.per_group,
        "SEED": args.seed,
        "LOG_LEVEL": "DEBUG" if args.verbose else None,
    }
    try:
        settings = Settings(**{key: value for key, value in options.items() if value is not None})
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, show_input=False)) from None
    if not settings.RANDOM_WEIGHTS:
        # Which profile, with every missing part named, before uvicorn starts.
        profile, weights = resolve_profile(settings.PROFILE, settings.WEIGHTS)
        settings = settings.model_copy(update={"PROFILE": profile, "WEIGHTS": weights})
    logging.getLogger("server").setLevel(settings.LOG_LEVEL)
    # No access log: request paths carry session ids and view tokens.
    uvicorn.run(
        create_app(settings),
        host=settings.HOST,
        port=settings.PORT,
        log_level=settings.LOG_LEVEL.lower(),
        access_log=False,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rain-avatar", description="Live RAIN avatars over WebRTC.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    info = commands.add_parser("info", help="describe a model profile and check a weights directory")
    info.add_argument("--profile", default="official", choices=sorted(PROFILES), help="model profile")
    info.add_argument("--weights", type=Path, default=None, help="weights directory to check")
    info.set_defaults(run=cmd_info)

    animate = commands.add_parser("animate", help="animate a reference image with a driving video (offline)")
    animate.add_argument("--reference", type=Path, required=True, help="character image")
    animate.add_argument("--driving", type=Path, required=True, help="driving video")
    animate.add_argument(
        "--driving-kind",
        choices=["person", "pose"],
        default="person",
        help="'person': a video of a person (webcam-style), turned into driving images; "
        "'pose': its frames already are driving images",
    )
    animate.add_argument("--out", type=Path, required=True, help="output MP4")
    animate.add_argument("--fps", type=_positive_float, default=None, help="output fps (default: the driving video's)")
    _add_model_options(animate)
    animate.set_defaults(run=cmd_animate)

    fetch = commands.add_parser("fetch-weights", help="download the official weights into one directory")
    fetch.add_argument("--dir", type=Path, default=Path("weights"), help="weights directory (default: ./weights)")
    fetch.set_defaults(run=cmd_fetch_weights)

    bench = commands.add_parser("bench", help="measure the streaming engine's speed")
    _add_model_options(bench, default_profile="tiny")
    bench.add_argument("--seconds", type=_positive_float, default=5.0, help="seconds per fps measurement")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(run=cmd_bench)

    driving = commands.add_parser("bench-driving", help="measure webcam-frame -> driving-image speed (CPU)")
    driving.add_argument(
        "--image", type=Path, required=True, help="photo of a person; a moving 640x480 clip is made from it"
    )
    driving.add_argument("--mode", choices=["face", "body"], default="face")
    driving.add_argument("--output-size", type=_positive_int, default=512, help="driving image side in pixels")
    driving.add_argument("--seconds", type=_positive_float, default=5.0)
    driving.add_argument("--json", action="store_true", help="print one JSON object")
    driving.set_defaults(run=cmd_bench_driving)

    train = commands.add_parser("train", help="train or fine-tune a profile (staggered-noise objective)")
    _add_model_options(train, default_profile="demo")
    train.add_argument("--data", default="synthetic", help="'synthetic' or a folder of videos of people")
    train.add_argument("--out", type=Path, required=True, help="run directory (checkpoints, validation clips)")
    train.add_argument("--steps", type=_positive_int, default=100_000)
    train.add_argument("--batch-size", type=_positive_int, default=2)
    train.add_argument(
        "--learning-rate",
        type=_positive_float,
        default=None,
        help=f"default {SCRATCH_LEARNING_RATE:g} from scratch, {FINE_TUNE_LEARNING_RATE:g} with --weights",
    )
    train.add_argument("--max-minutes", type=_positive_float, default=None, help="stop after this long")
    train.add_argument(
        "--codec-steps", type=_positive_int, default=8000, help="steps of the profile's own codec, when it has one"
    )
    train.add_argument(
        "--freeze", nargs="*", default=[], choices=["reference_unet", "denoising_unet", "pose_guider", "context"]
    )
    train.add_argument(
        "--timestep-jitter",
        type=_jitter,
        default=0,
        help="move each group's noise level by up to this many timesteps (0-500)",
    )
    train.add_argument(
        "--shared-level-prob",
        type=_probability,
        default=None,
        help=f"share of clips noised to one level throughout (default {SCRATCH_SHARED_LEVEL_PROB:g} "
        "from scratch, 0 with --weights)",
    )
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.set_defaults(run=cmd_train)

    evaluate = commands.add_parser("evaluate", help="PSNR/SSIM on held-out synthetic characters")
    _add_model_options(evaluate, default_profile="demo")
    evaluate.add_argument("--clips", type=_positive_int, default=8)
    evaluate.add_argument("--frames", type=_positive_int, default=48)
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

    export = commands.add_parser("export", help="pack a training run as a float16 model directory with a card")
    export.add_argument("run_dir", metavar="RUN", type=Path, help="the --out directory of `rain-avatar train`")
    export.add_argument("--out", type=Path, required=True, help="model directory to write (replaced whole)")
    export.add_argument("--max-mib", type=_positive_float, default=25.0, help="refuse weights larger than this")
    export.set_defaults(run=cmd_export)

    serve = commands.add_parser("serve", help="run the live WebRTC server (webcam page, OBS view)")
    serve.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=_positive_int, default=None, help="port (default 8000)")
    serve.add_argument("--max-sessions", type=_positive_int, default=None, help="live sessions at most (default 4)")
    _add_model_options(serve, default_profile=None)
    serve.set_defaults(run=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.run(args)
    except (ConfigError, WeightsError, MediaError) as exc:
        parser.exit(2, f"rain-avatar {args.command}: error: {exc}\n")
    except KeyboardInterrupt:
        parser.exit(130, "rain-avatar: interrupted\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
