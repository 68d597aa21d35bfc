"""One call of RAIN's staggered-noise queue: P driving frames in, P finished frames out.

The queue holds G groups of P latent frames, the oldest group one LCM step from clean and
the newest pure noise. A call runs the pose guider on the P new driving frames, the denoising
UNet once over all G*P frames (each at its group's timestep), one LCM step, decodes the oldest
group (now clean) with the streaming decoder, and shifts the queue by one group.

This module is stateless: `QueueState` goes in and a new one comes out. The streaming engine
owns the state, the noise and the frames around it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from rain_core.components import RainComponents
from rain_core.models.attention import BlockReference
from rain_core.models.embeddings import guidance_scale_embedding


@dataclass
class QueueState:
    """What a stream carries between calls (B streams stacked on the first axis).

    latents: [B, C, G*P, h, w], oldest group first.
    pose_features: [B, C0, (G-1)*P, h, w], pose-guider features of all but the newest group.
    decoder_memory: the streaming decoder's memory, one tensor per memory block.
    """

    latents: torch.Tensor
    pose_features: torch.Tensor
    decoder_memory: list[torch.Tensor]


@dataclass
class Conditioning:
    """What a reference image contributes: CLIP context [B, 1, D] and per-block banks or K/V."""

    clip_embeds: torch.Tensor
    reference: Mapping[str, BlockReference]


@dataclass
class StepOutput:
    frames: torch.Tensor  # [B, P, 3, H, W], decoder output, not clamped
    state: QueueState


class QueueStep:
    """Runs queue calls for one set of components; holds only what is fixed for the model."""

    def __init__(self, components: RainComponents):
        config = components.config
        self.components = components
        self.frames_per_group = config.frames_per_group
        self.num_inference_steps = config.num_inference_steps
        device = next(components.denoising_unet.parameters()).device
        dtype = components.denoising_unet.dtype
        self.timesteps = components.scheduler.frame_timesteps(config.num_inference_steps, config.frames_per_group).to(device)
        self.time_cond = guidance_scale_embedding(config.guidance_scale, config.denoising_unet.cond_proj_dim).to(
            device=device, dtype=dtype
        )

    @torch.inference_mode()
    def __call__(
        self,
        state: QueueState,
        conditioning: Conditioning,
        pose: torch.Tensor,
        step_noise: torch.Tensor,
        new_noise: torch.Tensor,
    ) -> StepOutput:
        """Advance the queue by one group.

        Args:
            pose: [B, 3, P, H, W] the next P driving images, in [0, 1].
            step_noise: [B, C, G*P, h, w] the noise the LCM step adds back.
            new_noise: [B, C, P, h, w] the latents of the group that enters at the top.
        """
        c = self.components
        p = self.frames_per_group
        features = torch.cat([state.pose_features, c.pose_guider(pose)], dim=2)
        model_output = c.denoising_unet(
            state.latents,
            self.timesteps,
            conditioning.clip_embeds,
            pose_features=features,
            time_cond=self.time_cond,
            reference=conditioning.reference,
        ).sample
        stepped = c.scheduler.step_frames(
            model_output, self.timesteps, state.latents, step_noise, self.num_inference_steps
        ).prev_sample
        frames, memory = c.decoder.decode_stream(stepped[:, :, :p].transpose(1, 2), state.decoder_memory)
        next_state = QueueState(
            latents=torch.cat([stepped[:, :, p:], new_noise], dim=2),
            pose_features=features[:, :, p:],
            decoder_memory=memory,
        )
        return StepOutput(frames=frames, state=next_state)
