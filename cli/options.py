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
from types import UnionType
from typing import TYPE_CHECKING, Literal, Union, get_args, get_origin

if TYPE_CHECKING:
    import torch

    from rain_core.config import RainConfig
    from rain_core.options import ModelOptions
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


def _flags(parser, names: list[str], *, default_profile: str | None = None) -> None:
    """One flag per `ModelOptions` field: its name (or the field's own flag), type, choices and help."""
    from rain_core.options import ModelOptions, Switch

    for name in names:
        field = ModelOptions.model_fields[name]
        extra = field.json_schema_extra or {}
        # `X | None` -> [X]; a Literal's own arguments are its choices, not kinds.
        union = get_origin(field.annotation) in (Union, UnionType)
        kinds = [kind for kind in get_args(field.annotation) if kind is not type(None)] if union else [field.annotation]
        kwargs: dict = dict(dest=name, default=None, help=field.description)
        if field.annotation is Switch:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif kinds == [bool]:
            kwargs.update(action="store_true", default=False)
        elif get_origin(kinds[0]) is Literal:
            kwargs["choices"] = list(get_args(kinds[0]))
        elif kinds[0] is int:
            kwargs["type"] = positive_int if any(getattr(m, "ge", None) == 1 for m in field.metadata) else int
        elif kinds[0] is Path:
            kwargs["type"] = Path
        if "choices" in extra:
            kwargs["choices"] = extra["choices"]
        if name == "profile" and default_profile is not None:
            kwargs.update(default=default_profile, help="model profile")
        parser.add_argument(extra.get("flag", "--" + name.replace("_", "-")), **kwargs)


def add_model_options(parser: argparse.ArgumentParser, *, default_profile: str | None = None) -> None:
    """Which model, where, in what precision: the model fields of `rain_core.options.ModelOptions`."""
    from rain_core.options import MODEL, ModelOptions

    _flags(parser, ModelOptions.fields_of(MODEL), default_profile=default_profile)


def add_fast_path_options(parser: argparse.ArgumentParser) -> None:
    """The fast paths of `rain_core.options.ModelOptions`; each one left out takes the device's default."""
    from rain_core.options import FAST_PATHS, ModelOptions

    group = parser.add_argument_group("fast paths (default: those measured or expected faster on the device, "
                                      "checked against eager at warm-up)")
    _flags(group, ModelOptions.fields_of(FAST_PATHS))


def switch(flag: bool | None) -> str | None:
    """--x / --no-x / neither -> a fast-path switch's "on" / "off" / None (the setting's own value)."""
    return None if flag is None else ("on" if flag else "off")


def given_model_options(args: argparse.Namespace) -> dict:
    """The `ModelOptions` fields the command line gave (flags left out are not there)."""
    from rain_core.options import ModelOptions, Switch

    given = {}
    for name, field in ModelOptions.model_fields.items():
        value = getattr(args, name, None)
        if field.annotation is Switch:
            value = switch(value)
        if value is not None and value is not False:
            given[name] = value
    return given


def model_options(args: argparse.Namespace) -> ModelOptions:
    """The command line's `ModelOptions` (defaults where it names nothing); a bad one is a `ConfigError`."""
    from pydantic import ValidationError

    from rain_core.config import ConfigError
    from rain_core.options import ModelOptions
    from rain_core.validation import describe_validation_error

    try:
        return ModelOptions(**given_model_options(args))
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, show_input=False)) from None


def fast_paths(args: argparse.Namespace, device: torch.device) -> FastPaths:
    """The fast paths the options ask for on `device`, the device's defaults where they ask nothing."""
    from rain_core.config import ConfigError

    if args.cuda_graphs and device.type != "cuda":
        raise ConfigError(f"--cuda-graphs needs a CUDA device, not {device}")
    return model_options(args).fast_paths(device)


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
