"""The learned context token: the UNets' cross-attention context for profiles without CLIP."""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class LearnedContext(ModelMixin, ConfigMixin):
    """One learned token [B, 1, embed_dim], in place of the CLIP image embedding of the reference.

    Models trained here encode the reference with TAESDV alone and need no CLIP download; the
    UNets' cross-attention then attends to this token, the same for every reference.

    Parameters:
        embed_dim (`int`, *optional*, defaults to 768): width of the token, the UNets'
            `cross_attention_dim`.
    """

    @register_to_config
    def __init__(self, embed_dim: int = 768):
        super().__init__()
        self.token = nn.Parameter(torch.randn(1, 1, embed_dim) * embed_dim**-0.5)

    def forward(self, batch: int = 1) -> torch.Tensor:
        return self.token.expand(batch, -1, -1)
