"""TAESDV: the tiny video autoencoder for SD latents, with a streaming decoder.

The decoder's ten memory blocks each combine a frame's features with those of the frame
before it. Decoding a stream in slices of P frames therefore needs, for each memory block,
the input it saw for the last frame of the previous slice: that is the decoder memory the
stream carries from call to call. Module indices match the published `taesdv.pth`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

# Three stride-2 stages: latents lie on a grid of image / 8, as the SD VAE's do. The pose
# guider's features land on the same grid.
LATENT_SCALE = 8
# Channels of the reference gate's latent-grid comparison, upsampled to full resolution.
GATE_GRID_CHANNELS = 8


def _conv(n_in: int, n_out: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class _SoftClamp(nn.Module):
    """Squashes latents smoothly into (-3, 3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class _Block(nn.Module):
    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.conv = nn.Sequential(_conv(n_in, n_out), nn.ReLU(), _conv(n_out, n_out), nn.ReLU(), _conv(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.conv(x) + self.skip(x))


class MemoryBlock(nn.Module):
    """A block that also sees the previous frame's input (`memory`)."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.conv = nn.Sequential(
            _conv(n_in * 2, n_out), nn.ReLU(), _conv(n_out, n_out), nn.ReLU(), _conv(n_out, n_out)
        )
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.act = nn.ReLU()
        self.memory_channels = n_in

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(torch.cat([x, memory], 1)) + self.skip(x))


class TAESDV(ModelMixin, ConfigMixin):
    """Frames [N, 3, H, W] in [0, 1] <-> latents [N, C, H/8, W/8], decoded as a stream.

    Parameters:
        latent_channels (`int`, *optional*, defaults to 4): channels of the latents (the SD VAE's 4).
        channels (`int` or four `int`s, *optional*, defaults to 64): one width for every stage, or
            four widths from full resolution down to the latent grid. Codecs trained here are wide
            where the grid is small and narrow at full resolution, which costs little and gives the
            decoder the capacity to draw shapes from the latents.
        blocks_per_stage (`int`, *optional*, defaults to 3): blocks at each resolution.
        patch_path (`bool`, *optional*, defaults to `False`): a linear 8x8-patch path beside the
            conv stacks.
        reference_gate (`bool`, *optional*, defaults to `False`): the decoder also sees the stream's
            reference image and its latents, and mixes each decoded pixel with the reference's pixel
            at the same place by a learned gate (see `decode_stream`).

    The defaults are the published layout (and its module indices).
    """

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 4,
        channels: int | Sequence[int] = 64,
        blocks_per_stage: int = 3,
        patch_path: bool = False,
        reference_gate: bool = False,
    ):
        super().__init__()
        widths = (channels,) * 4 if isinstance(channels, int) else tuple(channels)
        if len(widths) != 4:
            raise ValueError(f"channels: one width or four (full resolution to latent grid), got {channels}")
        n = blocks_per_stage
        encoder: list[nn.Module] = [_conv(3, widths[0]), _Block(widths[0], widths[0])]
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            encoder += [_conv(c_in, c_out, stride=2, bias=False), *(_Block(c_out, c_out) for _ in range(n))]
        encoder.append(_conv(widths[-1], latent_channels))
        self.encoder = nn.Sequential(*encoder)
        decoder: list[nn.Module] = [_SoftClamp(), _conv(latent_channels, widths[-1]), nn.ReLU()]
        for c_in, c_out in zip(widths[:0:-1], widths[-2::-1], strict=True):
            decoder += [
                *(MemoryBlock(c_in, c_in) for _ in range(n)),
                nn.Upsample(scale_factor=2),
                _conv(c_in, c_out, bias=False),
            ]
        decoder += [MemoryBlock(widths[0], widths[0]), _conv(widths[0], 3)]
        self.decoder = nn.Sequential(*decoder)
        # A linear map between each 8x8 patch and its latent, added beside the conv stacks.
        # Not in the published layout: codecs trained here from scratch learn colours and
        # smooth shading through it in a few hundred steps, leaving the convs the edges
        # (measured: +2 dB on held-out frames after three minutes of training).
        self.patch_encoder = nn.Conv2d(3 * LATENT_SCALE**2, latent_channels, 1) if patch_path else None
        self.patch_decoder = nn.Conv2d(latent_channels, 3 * LATENT_SCALE**2, 1) if patch_path else None
        # Not in the published layout either. Most of a streamed frame is what the reference image
        # already shows in the same place (the background, the parts that did not move), and a
        # 16x16 latent grid cannot carry its detail: the gate lets the decoder take those pixels
        # from the reference itself. It compares the frame's latents with the reference's on the
        # grid, then decides per pixel from that comparison, the decoded colour and the reference's.
        self.gate_grid = nn.Conv2d(2 * latent_channels, GATE_GRID_CHANNELS, 3, padding=1) if reference_gate else None
        self.gate = (
            nn.Sequential(_conv(GATE_GRID_CHANNELS + 6, widths[0]), nn.ReLU(), _conv(widths[0], 1))
            if reference_gate
            else None
        )

    @property
    def num_memories(self) -> int:
        return sum(isinstance(b, MemoryBlock) for b in self.decoder)

    def memory_shapes(self, batch: int, latent_height: int, latent_width: int) -> list[tuple[int, ...]]:
        """Shapes of the carried decoder memory for a stream of the given latent size."""
        shapes, scale = [], 1
        for block in self.decoder:
            if isinstance(block, nn.Upsample):
                scale *= 2
            elif isinstance(block, MemoryBlock):
                shapes.append((batch, block.memory_channels, latent_height * scale, latent_width * scale))
        return shapes

    def initial_memory(
        self, batch: int, latent_height: int, latent_width: int, *, device=None, dtype=None
    ) -> list[torch.Tensor]:
        """The memory of a stream that has decoded nothing yet: zeros."""
        return [
            torch.zeros(s, device=device, dtype=dtype) for s in self.memory_shapes(batch, latent_height, latent_width)
        ]

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames [N, 3, H, W] in [0, 1] -> latents [N, C, H/8, W/8]."""
        latents = self.encoder(frames)
        if self.patch_encoder is not None:
            latents = latents + self.patch_encoder(F.pixel_unshuffle(frames, LATENT_SCALE))
        return latents

    def decoding_modules(self) -> list[nn.Module]:
        """The modules `decode_stream` runs (not the encoder's)."""
        return [m for m in (self.decoder, self.patch_decoder, self.gate_grid, self.gate) if m is not None]

    @property
    def decoding_dtype(self) -> torch.dtype:
        """The dtype `decode_stream` runs in: the decoding modules' (a fast path may cast them alone)."""
        return next(self.decoder.parameters()).dtype

    @property
    def uses_reference(self) -> bool:
        """Whether `decode_stream` needs the stream's reference (image and latents)."""
        return self.gate is not None

    def decode_stream(
        self,
        latents: torch.Tensor,
        memory: Sequence[torch.Tensor],
        reference: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Decode the next T frames of a stream.

        Args:
            latents: [N, T, C, h, w], the next T latent frames of N streams.
            memory: for each memory block, its input for the stream's previous frame, [N, c, h', w']
                (zeros for a stream's first frame).
            reference: for a codec with `reference_gate`, each stream's reference image [N, 3, H, W]
                in [0, 1] and its latents [N, C, h, w] (as `encode` gives them).

        Returns:
            frames [N, T, 3, 8h, 8w] (not clamped) and the memory to carry into the next call.
        """
        frames, new_memory, _ = self.decode_stream_and_gate(latents, memory, reference)
        return frames, new_memory

    def decode_stream_and_gate(
        self,
        latents: torch.Tensor,
        memory: Sequence[torch.Tensor],
        reference: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor | None]:
        """`decode_stream`, and the reference gate's logits [N, T, 1, 8h, 8w] (None without a gate):
        training supervises the gate directly, since a gate saturated early (all reference, before
        the decoder draws anything) gets no gradient back through the frames."""
        batch, frames, channels, height, width = latents.shape
        if len(memory) != self.num_memories:
            raise ValueError(f"decoder memory has {len(memory)} entries, expected {self.num_memories}")
        if self.uses_reference and reference is None:
            raise ValueError("this codec decodes with the stream's reference: pass reference=(image, latents)")
        x = latents.reshape(batch * frames, channels, height, width)
        flat_latents = x
        patches = None
        if self.patch_decoder is not None:
            patches = F.pixel_shuffle(self.patch_decoder(self.decoder[0](x)), LATENT_SCALE)
        carried = iter(memory)
        new_memory = []
        for block in self.decoder:
            if isinstance(block, MemoryBlock):
                per_stream = x.view(batch, frames, *x.shape[1:])
                previous = next(carried)
                # Each frame's memory is the frame before it; the first frame's is the carried one.
                shifted = torch.cat([previous.unsqueeze(1), per_stream[:, :-1]], dim=1)
                new_memory.append(per_stream[:, -1].clone())
                x = block(x, shifted.reshape(x.shape))
            else:
                x = block(x)
        if patches is not None:
            x = x + patches
        logits = None
        if self.gate is not None:
            x, logits = self._gate(x, flat_latents, reference, frames)
            logits = logits.view(batch, frames, *logits.shape[1:])
        return x.view(batch, frames, *x.shape[1:]), new_memory, logits

    def _gate(
        self, decoded: torch.Tensor, latents: torch.Tensor, reference: tuple[torch.Tensor, torch.Tensor], frames: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded frames [N*T, 3, H, W] mixed per pixel with their stream's reference image; the gate's logits."""
        image, reference_latents = reference

        def per_frame(t: torch.Tensor) -> torch.Tensor:
            return t.unsqueeze(1).expand(-1, frames, *t.shape[1:]).reshape(-1, *t.shape[1:])

        image, clamp = per_frame(image), self.decoder[0]
        grid = self.gate_grid(torch.cat([clamp(latents), clamp(per_frame(reference_latents))], 1))
        # Bilinear, not nearest: a gate constant over 8x8 cells would bring the blocks back.
        grid = F.interpolate(grid, scale_factor=LATENT_SCALE, mode="bilinear", align_corners=False)
        logits = self.gate(torch.cat([grid, decoded, image], 1))
        return torch.lerp(decoded, image, torch.sigmoid(logits)), logits
