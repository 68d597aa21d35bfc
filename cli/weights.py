"""`info` and `fetch-weights`: what a profile is, and whether a weights directory holds it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rain_core.choices import PROFILE_NAMES

if TYPE_CHECKING:
    from rain_core.config import RainConfig


def add_info(commands: argparse._SubParsersAction) -> None:
    info = commands.add_parser("info", help="describe a model profile and check a weights directory")
    info.add_argument("--profile", default="official", choices=sorted(PROFILE_NAMES), help="model profile")
    info.add_argument("--weights", type=Path, default=None, help="weights directory to check")
    info.set_defaults(run=cmd_info)


def cmd_info(args: argparse.Namespace) -> int:
    """Describe a profile and, with --weights, check that directory part by part."""
    from rain_core.config import profile_config
    from rain_core.stream.components import RainComponents
    from rain_core.weights.profiles import fetch_hint

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
    from rain_core.weights.loading import check_weights_dir

    statuses = check_weights_dir(config, weights)
    for status in statuses:
        label = "ok" if status.ok else "MISSING" if status.path is None else "BAD"
        sys.stdout.write(f"  [{label}] {status.name}: {status.path if status.ok else status.problem}\n")
    return 0 if all(s.ok for s in statuses) else 1


def add_fetch_weights(commands: argparse._SubParsersAction) -> None:
    fetch = commands.add_parser("fetch-weights", help="download the official weights into one directory")
    fetch.add_argument("--dir", type=Path, default=Path("weights"), help="weights directory (default: ./weights)")
    fetch.set_defaults(run=cmd_fetch_weights)


def cmd_fetch_weights(args: argparse.Namespace) -> int:
    """Download the official profile's weights into one directory, then check them like `info`."""
    from rain_core.config import profile_config
    from rain_core.weights.fetch import fetch_weights
    from rain_core.weights.lock import LOCK_NAME

    for result in fetch_weights(args.dir):
        sys.stdout.write(f"  [{result.action}] {args.dir / result.target}\n")
    sys.stdout.write(f"sizes and sha256 recorded in {args.dir / LOCK_NAME}\n")
    return _check_weights(profile_config("official"), args.dir)
