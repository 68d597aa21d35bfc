"""Reference image -> what the denoising UNet is conditioned on: CLIP context and latents.

The official profile encodes with the SD VAE (latent mean x 0.18215) and the CLIP vision
encoder of sd-image-variations, as the reference implementation does. Profiles without those
downloads encode latents with TAESDV's encoder (trained to produce the same scaled SD
latents) and use a learned context token in place of the CLIP embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers.image_processor import VaeImageProcessor
from PIL import Image

from rain_core.stream.components import RainComponents

try:  # transformers >= 5 names the PIL-only processor; older releases use it by default.
    from transformers import CLIPImageProcessorPil as _CLIPImageProcessor
except ImportError:  # pragma: no cover - depends on the installed transformers
    from transformers import CLIPImageProcessor as _CLIPImageProcessor

# The SD VAE's latent scaling factor.
VAE_SCALING = 0.18215
# The largest reference image accepted, in pixels: the server's default upload limit too
# (`RAIN_MAX_REFERENCE_PIXELS`). The encoders resize to the model's size, so a larger image
# adds nothing but memory.
MAX_REFERENCE_PIXELS = 40_000_000


class ReferenceImageError(ValueError):
    """The reference is not a usable RGB image; the message says why."""


@dataclass
class ReferenceEncoding:
    clip_embeds: torch.Tensor  # [1, 1, D]
    latents: torch.Tensor  # [1, C, h, w]
    # [1, 3, H, W] in [0, 1], at the model's size: what a codec with a reference gate decodes with.
    pixels: torch.Tensor | None = None


def as_rgb_image(image: Image.Image | np.ndarray, *, max_pixels: int = MAX_REFERENCE_PIXELS) -> Image.Image:
    """Accept a PIL image or an HxWx3/HxWx4/HxW uint8 array of at most `max_pixels` pixels;
    return an RGB PIL image."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
            raise ReferenceImageError(
                f"reference array must be uint8 HxW, HxWx3 or HxWx4, got {image.dtype} {tuple(image.shape)}"
            )
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise ReferenceImageError(f"reference must be an image, got {type(image).__name__}")
    if image.width < 8 or image.height < 8:
        raise ReferenceImageError(f"reference image is {image.width}x{image.height}; at least 8x8 is needed")
    if image.width * image.height > max_pixels:
        raise ReferenceImageError(f"reference image is {image.width}x{image.height}; at most {max_pixels} pixels")
    if image.mode == "RGBA":
        # Transparent character cut-outs go on black, like the driving images' background.
        background = Image.new("RGB", image.size)
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")


class ReferenceEncoder:
    def __init__(self, components: RainComponents):
        self.components = components
        self.config = components.config
        self.vae_processor = VaeImageProcessor(vae_scale_factor=8, do_convert_rgb=True, do_normalize=False)
        self.clip_processor = _CLIPImageProcessor() if components.image_encoder is not None else None
        if components.image_encoder is None and components.context is None:
            raise ValueError("components need an image encoder or a learned context token to encode references")

    @torch.inference_mode()
    def latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """Images [N, 3, H, W] in [0, 1], already at the model's size -> latents [N, C, H/8, W/8]."""
        c = self.components
        decoder_param = next(c.decoder.parameters())
        pixels = pixels.to(device=decoder_param.device, dtype=decoder_param.dtype)
        if c.vae is not None:
            return c.vae.encode(pixels * 2 - 1).latent_dist.mean * VAE_SCALING
        return c.decoder.encode(pixels)

    @torch.inference_mode()
    def __call__(self, image: Image.Image | np.ndarray) -> ReferenceEncoding:
        image = as_rgb_image(image)
        c = self.components
        decoder_param = next(c.decoder.parameters())
        device, dtype = decoder_param.device, decoder_param.dtype
        pixels = self.vae_processor.preprocess(image, height=self.config.height, width=self.config.width)
        latents = self.latents(pixels)
        if c.image_encoder is not None:
            clip_pixels = self.clip_processor.preprocess(image, return_tensors="pt").pixel_values
            clip_embeds = c.image_encoder(clip_pixels.to(device=device, dtype=dtype)).image_embeds.unsqueeze(1)
        else:
            clip_embeds = c.context(batch=1)
        # Only a decoder with a reference gate reads the image: others need not carry it (nor send it
        # between cluster replicas).
        image = pixels.to(device=device, dtype=dtype) if c.decoder.uses_reference else None
        return ReferenceEncoding(clip_embeds=clip_embeds, latents=latents, pixels=image)
