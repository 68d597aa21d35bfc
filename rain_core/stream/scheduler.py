"""The LCM step as RAIN runs it: one timestep per frame, explicit noise.

diffusers' `LCMScheduler` supplies the noise schedule (betas, zero-terminal-SNR rescale,
`alphas_cumprod`); this subclass adds what a staggered queue needs and diffusers does not
offer: the reference's trailing timesteps (diffusers subsamples a 50-step schedule and lands
on other values) and a step where every frame has its own timestep.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import LCMScheduler
from diffusers.schedulers.scheduling_lcm import LCMSchedulerOutput

from rain_core.config import SchedulerConfig

# LCM's boundary-condition scalings use sigma_data = 0.5.
_SIGMA_DATA = 0.5


class StreamingLCMScheduler(LCMScheduler):
    @classmethod
    def from_rain_config(cls, config: SchedulerConfig) -> StreamingLCMScheduler:
        return cls(**config.model_dump())

    def streaming_timesteps(self, num_inference_steps: int) -> torch.Tensor:
        """Descending trailing timesteps: round(arange(T, 0, -T/S)) - 1 (999/749/499/249 for S=4)."""
        total = self.config.num_train_timesteps
        if not 1 <= num_inference_steps <= total:
            raise ValueError(f"num_inference_steps must be in [1, {total}], got {num_inference_steps}")
        spaced = np.round(np.arange(total, 0, -total / num_inference_steps)).astype(np.int64) - 1
        return torch.from_numpy(spaced)

    def move_tables_to(self, device: torch.device | str) -> StreamingLCMScheduler:
        """Keep the noise schedule's table (`alphas_cumprod`) on `device`, where the queue runs.

        diffusers keeps it in host memory; read from there, every step of a device's queue would
        copy it up: a host-to-device copy from pageable memory waits for the device, and inside a
        CUDA-graph capture it is an error. `QueueModel` moves it once, when it is made.
        """
        self.alphas_cumprod = self.alphas_cumprod.to(device)
        return self

    def frame_timesteps(self, num_inference_steps: int, frames_per_group: int) -> torch.Tensor:
        """Per-frame timesteps of a full queue, oldest (least noisy) group first: [G*P]."""
        ascending = self.streaming_timesteps(num_inference_steps).flip(0)
        return ascending.repeat_interleave(frames_per_group)

    def step_frames(
        self,
        model_output: torch.Tensor,
        timesteps: torch.Tensor,
        sample: torch.Tensor,
        noise: torch.Tensor,
        num_inference_steps: int,
    ) -> LCMSchedulerOutput:
        """One LCM step for a queue of frames at different noise levels.

        Args:
            model_output, sample, noise: [B, C, F, h, w].
            timesteps: [B, F] or [F] integer timesteps, one per frame.
            num_inference_steps: S; the previous timestep is t - T // S as in the reference
                (which for S not dividing T differs by one from the schedule).

        Returns:
            `prev_sample` (noised again to t - T//S; frames whose previous timestep is below zero
            come out clean) and `denoised` (the x0 estimate).
        """
        if timesteps.dim() == 1:
            timesteps = timesteps.unsqueeze(0)
        timesteps = timesteps.to(device=sample.device)
        # A no-op once `move_tables_to(sample.device)` ran; else a copy each step (see there).
        alphas_cumprod = self.alphas_cumprod.to(device=sample.device)
        previous = timesteps - self.config.num_train_timesteps // num_inference_steps

        alpha_t = alphas_cumprod[timesteps]
        alpha_prev = torch.where(previous >= 0, alphas_cumprod[previous.clamp(min=0)], torch.ones_like(alpha_t))
        scaled_t = timesteps.to(torch.float32) * self.config.timestep_scaling
        c_skip = _SIGMA_DATA**2 / (scaled_t**2 + _SIGMA_DATA**2)
        c_out = scaled_t / (scaled_t**2 + _SIGMA_DATA**2) ** 0.5

        def per_frame(x: torch.Tensor) -> torch.Tensor:  # [B, F] -> broadcastable to [B, C, F, h, w]
            return x[:, None, :, None, None].to(sample.dtype)

        alpha_t, alpha_prev, c_skip, c_out = map(per_frame, (alpha_t, alpha_prev, c_skip, c_out))
        beta_t = 1 - alpha_t

        prediction = self.config.prediction_type
        if prediction == "v_prediction":
            original = alpha_t.sqrt() * sample - beta_t.sqrt() * model_output
        elif prediction == "epsilon":
            original = (sample - beta_t.sqrt() * model_output) / alpha_t.sqrt()
        elif prediction == "sample":
            original = model_output
        else:
            raise ValueError(f"prediction_type {prediction!r} is not supported")
        if self.config.clip_sample:
            original = original.clamp(-self.config.clip_sample_range, self.config.clip_sample_range)

        denoised = c_out * original + c_skip * sample
        prev_sample = alpha_prev.sqrt() * denoised + (1 - alpha_prev).sqrt() * noise
        return LCMSchedulerOutput(prev_sample=prev_sample, denoised=denoised)
