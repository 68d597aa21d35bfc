"""`animate`: a reference image and a driving video in, an MP4 of the character out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cli.options import (
    add_fast_path_options,
    add_model_options,
    fast_paths,
    load_components,
    model_config,
    positive_float,
)


def add_animate(commands: argparse._SubParsersAction) -> None:
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
    animate.add_argument("--fps", type=positive_float, default=None, help="output fps (default: the driving video's)")
    add_model_options(animate)
    add_fast_path_options(animate)
    animate.set_defaults(run=cmd_animate)


def cmd_animate(args: argparse.Namespace) -> int:
    """Animate a reference image with a driving video into an MP4."""
    from rain_core.driving import DrivingPipeline, DrivingSettings
    from rain_core.media.animate import animate
    from rain_core.media.video import VideoReader, load_image
    from rain_core.stream.engine import StreamEngine
    from rain_core.stream.preparation import prepare_model

    # Check the inputs before the (slow) model load.
    load_image(args.reference)
    VideoReader(args.driving).close()
    paths = fast_paths(args, model_config(args).torch_device)
    components = load_components(args)
    model = prepare_model(components, paths)
    config = components.config
    pipeline = None
    if args.driving_kind == "person":
        pipeline = DrivingPipeline(DrivingSettings(mode=config.driving_mode), width=config.width, height=config.height)
    try:
        result = animate(
            StreamEngine(model, seed=args.seed),
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
