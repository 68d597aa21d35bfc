"""What the commands share: checked argument types, the model options, printing figures.

Nothing here imports torch: the parser is built before the process's thread settings are made
(see `cli.main`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rain_core.choices import DTYPE_NAMES, PROFILE_NAMES

if TYPE_CHECKING:
    import torch

    from rain_core.config import RainConfig
    from rain_core.stream.components import RainComponents
    from rain_core.stream.fast_paths import FastPaths


def _number(kind: type[int] | type[float], text: str) -> int | float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None


def positive_int(text: str) -> int:
    value = _number(int, text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = _number(float, text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def between(kind: type[int] | type[float], low: float, high: float) -> Callable[[str], int | float]:
    """The argument type of a `kind` number from `low` to `high`."""

    def parse(text: str) -> int | float:
        value = _number(kind, text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def add_model_options(parser: argparse.ArgumentParser, *, default_profile: str | None = None) -> None:
    parser.add_argument("--profile", default=default_profile, choices=sorted(PROFILE_NAMES),
                        help="model profile (default: official when --weights holds it complete, "
                             "else the bundled demo model)" if default_profile is None else "model profile")
    parser.add_argument("--weights", type=Path, default=None, help="weights directory of the profile")
    parser.add_argument("--random-weights", action="store_true", help="random weights (speed measurements only)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", default=None, choices=sorted(DTYPE_NAMES),
                        help="default: float16 on CUDA, float32 on the CPU")
    parser.add_argument("--groups", type=positive_int, default=None, help="G: noise groups (= LCM steps)")
    parser.add_argument("--per-group", type=positive_int, default=None, help="P: frames per group")
    parser.add_argument("--seed", type=int, default=None, help="noise seed of the stream")


def add_fast_path_options(parser: argparse.ArgumentParser) -> None:
    """The fast paths of `rain_core.stream.fast_paths`; each one left out takes the device's default."""
    paths = parser.add_argument_group("fast paths (default: those measured faster on the device)")
    paths.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="torch.compile the UNet, pose guider and decoder (cached on disk)")
    paths.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=None,
                       help="replay each call as a CUDA graph (CUDA devices only)")
    paths.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                       help="run the codec in channels-last (NHWC) memory")
    paths.add_argument("--decode-thread", action=argparse.BooleanOptionalAction, default=None,
                       help="decode frames on a thread of their own while the next call runs (CPU)")
    paths.add_argument("--bfloat16-decoder", action=argparse.BooleanOptionalAction, default=None,
                       help="run the codec's decoder in bfloat16 (CPU; on by default with bfloat16 instructions)")
    paths.add_argument("--attention", choices=["merged", "concat"], default=None,
                       help="reference attention: one shared reference K/V merged by log-sum-exp, "
                            "or the reference's tokens concatenated to every frame's")


def switch(flag: bool | None) -> str | None:
    """--x / --no-x / neither -> a fast-path switch's "on" / "off" / None (the setting's own value)."""
    return None if flag is None else ("on" if flag else "off")


def fast_paths(args: argparse.Namespace, device: torch.device) -> FastPaths:
    """The fast paths the options ask for on `device`, the device's defaults where they ask nothing."""
    from rain_core.config import ConfigError
    from rain_core.stream.fast_paths import choose_fast_paths

    if args.cuda_graphs and device.type != "cuda":
        raise ConfigError(f"--cuda-graphs needs a CUDA device, not {device}")
    return choose_fast_paths(
        device, compile=switch(args.compile) or "auto", cuda_graphs=switch(args.cuda_graphs) or "auto",
        channels_last=switch(args.channels_last) or "auto", decode_thread=switch(args.decode_thread) or "auto",
        bfloat16_decoder=switch(args.bfloat16_decoder) or "auto",
        merged_reference_attention=args.attention != "concat",
    )


def _runtime(args: argparse.Namespace) -> dict:
    runtime = dict(device=args.device, dtype=args.dtype, groups=args.groups, per_group=args.per_group, seed=args.seed)
    # Only the benchmarks take another frame size: a trained model runs at its own.
    if getattr(args, "size", None) is not None:
        runtime["size"] = args.size
    return runtime


def model_config(args: argparse.Namespace) -> RainConfig:
    from rain_core.weights.profiles import runtime_config

    return runtime_config(args.profile, **_runtime(args))


def load_components(args: argparse.Namespace) -> RainComponents:
    from rain_core.weights.profiles import load_model

    return load_model(args.profile, args.weights, random_weights=args.random_weights, **_runtime(args))


def print_result(result, as_json: bool) -> None:
    """A result dataclass as one JSON object, or one aligned `key value` line per figure."""
    figures = dataclasses.asdict(result)
    if as_json:
        sys.stdout.write(json.dumps(figures) + "\n")
        return
    width = max(len(key) for key in figures) + 2
    for key, value in figures.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        sys.stdout.write(f"{key:<{width}}{shown}\n")
