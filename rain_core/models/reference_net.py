"""The reference net: an SD1.5 UNet run once per reference image to fill the attention banks.

It is diffusers' `UNet2DConditionModel` as it is. The banks are the normalised inputs of the
self-attention of its 16 spatial transformer blocks, caught with forward hooks on the blocks'
`norm1` while the net runs at timestep 0 with the CLIP embedding as context.
"""

from __future__ import annotations

from functools import partial, wraps

import torch
from diffusers import UNet2DConditionModel
from torch import nn

from rain_core.models.attention import reference_blocks


class ReferenceUNet(UNet2DConditionModel):
    """`UNet2DConditionModel` without its output head; it takes the same keyword arguments.

    The published `reference_unet.pth` leaves out `conv_norm_out` and `conv_out`: the reference
    pass only needs the banks, never the UNet's output.
    """

    # `wraps` sets `__wrapped__`, so that this `__init__` shows the parent's signature: diffusers
    # reads the keyword arguments of a model's config from it when it loads one (`from_config`).
    @wraps(UNet2DConditionModel.__init__, assigned=())
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.conv_norm_out = None
        self.conv_out = nn.Identity()

    def compute_banks(self, latents: torch.Tensor, clip_embeds: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reference latents [B, 4, h, w] and CLIP embeds [B, 1, D] -> bank name -> [B, h_i*w_i, C_i]."""
        banks: dict[str, torch.Tensor] = {}

        def keep(name: str, _module, _inputs, output: torch.Tensor) -> None:
            banks[name] = output

        handles = [block.norm1.register_forward_hook(partial(keep, name)) for name, block in reference_blocks(self)]
        try:
            timestep = torch.zeros(latents.shape[0], device=latents.device, dtype=torch.long)
            self(latents.to(self.dtype), timestep, encoder_hidden_states=clip_embeds.to(self.dtype))
        finally:
            for handle in handles:
                handle.remove()
        return banks
