"""The settings of one training run, with the defaults of `rain-avatar train`.

Kept free of torch: the command line shows these defaults in its help before torch is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

# The parts a run trains, each of which `freeze` can keep as loaded.
TRAINABLE = ("reference_unet", "denoising_unet", "pose_guider", "context")
# A small model from scratch learns fastest near 5e-4; fine-tuning trained weights needs far less.
SCRATCH_LEARNING_RATE = 5e-4
FINE_TUNE_LEARNING_RATE = 1e-5
# From scratch, half the clips have one shared noise level, so that the model learns to draw
# from the reference (a first run without them drifted into blotches within a second of
# streaming); fine-tuning keeps the published staggered-only objective.
SCRATCH_SHARED_LEVEL_PROB = 0.5
FINE_TUNE_SHARED_LEVEL_PROB = 0.0


class TrainSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Trained weights to fine-tune; None trains from scratch. Which one sets the defaults of
    # `learning_rate` and `shared_level_prob` (the SCRATCH_ and FINE_TUNE_ values above).
    init_weights: Path | None = None
    steps: int = Field(100_000, ge=1)
    batch_size: int = Field(2, ge=1)
    learning_rate: float = Field(SCRATCH_LEARNING_RATE, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    warmup_steps: int = Field(50, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    ema_decay: float = Field(0.995, ge=0, lt=1)
    timestep_jitter: int = Field(0, ge=0, le=500)
    # Share of clips with every group at one noise level (see `staggered_timesteps`).
    shared_level_prob: float = Field(SCRATCH_SHARED_LEVEL_PROB, ge=0, le=1)
    # Extra weight of the loss where the character moved (see `moved_latent_weights`): 0 weighs
    # every latent alike, as the published objective does.
    moved_loss_weight: float = Field(0.0, ge=0, le=100)
    # Parts that stay as loaded (fine-tuning the official model freezes most of it).
    freeze: tuple[str, ...] = ()
    gradient_checkpointing: bool = False
    # bf16 autocast on CUDA; ignored on the CPU.
    mixed_precision: bool = True
    seed: int = 0
    max_minutes: float | None = Field(None, gt=0)
    checkpoint_every: int = Field(250, ge=1)
    validate_every: int = Field(500, ge=1)
    # Steps of the profile's own codec, trained first when the profile has one and starts from scratch.
    codec_steps: int = Field(8000, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _fine_tuning_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("init_weights") is not None:
            return {"learning_rate": FINE_TUNE_LEARNING_RATE, "shared_level_prob": FINE_TUNE_SHARED_LEVEL_PROB, **data}
        return data
