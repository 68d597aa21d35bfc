"""How to run a model, declared once: which one, where, in what precision, with which fast paths.

`ModelOptions` is what the server's settings nest (`Settings.MODEL`, each field read from its flat
`RAIN_<NAME>` variable) and what the commands' flags are made from (`cli.options` derives a flag from
each field: its name, type, choices and help). Loading a model from it runs one way: resolve the
profile -> its config, with the device's dtype decided there -> build -> load weights
(`rain_core.weights.profiles.load_model`).

Nothing here imports torch: the commands build their parsers before torch's thread settings are made.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rain_core.choices import DTYPE_NAMES, PROFILE_NAMES

if TYPE_CHECKING:
    import torch

    from rain_core.stream.fast_paths import FastPaths

# How a setting or option asks for a fast path: the device's default, or forced on or off.
Switch = Literal["auto", "on", "off"]

MODEL = "model"
FAST_PATHS = "fast paths"


def _cli(group: str, *, flag: str | None = None, choices: tuple[str, ...] | None = None) -> dict:
    """What a command-line flag of the field needs beyond its type: its group, and a name or choices."""
    extra: dict = {"group": group}
    if flag is not None:
        extra["flag"] = flag
    if choices is not None:
        extra["choices"] = list(choices)
    return extra


class ModelOptions(BaseModel):
    """Which model runs, where and how; every field left at None takes the profile's or the device's default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    profile: str | None = Field(
        None, description="model profile (default: official when the weights hold it complete, else the bundled "
                          "demo model)", json_schema_extra=_cli(MODEL, choices=tuple(sorted(PROFILE_NAMES))))
    weights: Path | None = Field(None, description="weights directory of the profile",
                                 json_schema_extra=_cli(MODEL))
    random_weights: bool = Field(False, description="random weights (speed measurements and tests only)",
                                 json_schema_extra=_cli(MODEL))
    device: str | None = Field(None, description="torch device (default: cuda if available, else cpu)",
                               json_schema_extra=_cli(MODEL))
    dtype: Literal["float32", "float16", "bfloat16"] | None = Field(
        None, description="default: float16 on CUDA; on a CPU float32, but bfloat16 for the official widths "
                          "where the CPU has bfloat16 instructions", json_schema_extra=_cli(MODEL))
    groups: int | None = Field(None, ge=1, description="G: noise groups (= LCM steps)", json_schema_extra=_cli(MODEL))
    per_group: int | None = Field(None, ge=1, description="P: frames per group", json_schema_extra=_cli(MODEL))
    seed: int | None = Field(None, description="noise seed of the stream", json_schema_extra=_cli(MODEL))

    compile: Switch = Field("auto", description="torch.compile the UNet, pose guider and decoder (cached on disk; "
                                                "the server compiles in the background while it serves)",
                            json_schema_extra=_cli(FAST_PATHS))
    cuda_graphs: Switch = Field("auto", description="replay each steady call as a CUDA graph (CUDA devices only)",
                                json_schema_extra=_cli(FAST_PATHS))
    channels_last: Switch = Field("auto", description="run the codec in channels-last (NHWC) memory",
                                  json_schema_extra=_cli(FAST_PATHS))
    decode_thread: Switch = Field("auto", description="decode frames on a thread of their own while the next "
                                                      "call runs (CPU)", json_schema_extra=_cli(FAST_PATHS))
    bfloat16_decoder: Switch = Field("auto", description="run the codec's decoder in bfloat16 (CPU; on by default "
                                                         "with bfloat16 instructions)",
                                     json_schema_extra=_cli(FAST_PATHS))
    reference_attention: Literal["merged", "concat"] = Field(
        "merged", description="reference attention: one shared reference K/V merged by log-sum-exp, or the "
                              "reference's tokens concatenated to every frame's",
        json_schema_extra=_cli(FAST_PATHS, flag="--attention"))
    compile_cache_dir: Path | None = Field(
        None, description="where compiled kernels are kept across restarts (inductor's, and triton's under "
                          "triton/; default ~/.cache/rain-avatar/inductor)", json_schema_extra=_cli(FAST_PATHS))

    @field_validator("dtype", mode="before")
    @classmethod
    def _known_dtype(cls, value: object) -> object:
        if isinstance(value, str) and value not in DTYPE_NAMES:
            raise ValueError(f"dtype must be one of {', '.join(sorted(DTYPE_NAMES))}, got {value[:32]!r}")
        return value

    @classmethod
    def fields_of(cls, group: str) -> list[str]:
        """The fields of one group (`MODEL` or `FAST_PATHS`), in declaration order."""
        fields = cls.model_fields.items()
        return [name for name, field in fields if (field.json_schema_extra or {}).get("group") == group]

    def fast_paths(self, device: torch.device, *, serving: bool = False) -> FastPaths:
        """The fast paths these options ask for on `device` (`rain_core.stream.fast_paths.choose_fast_paths`)."""
        from rain_core.stream.fast_paths import choose_fast_paths

        return choose_fast_paths(
            device, compile=self.compile, cuda_graphs=self.cuda_graphs, channels_last=self.channels_last,
            decode_thread=self.decode_thread, bfloat16_decoder=self.bfloat16_decoder,
            merged_reference_attention=self.reference_attention == "merged", serving=serving,
        )

    def runtime(self) -> dict:
        """The overrides of the profile's config these options make (for `runtime_config`/`load_model`)."""
        return dict(device=self.device, dtype=self.dtype, groups=self.groups, per_group=self.per_group, seed=self.seed)
