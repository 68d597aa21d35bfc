"""The streaming engine: RAIN's staggered-noise queue, one stream per `StreamEngine`.

The queue holds G groups of P latent frames. Group g sits at the g-th smallest of the G
scheduler timesteps, so the oldest group is one LCM step from clean and the newest is pure
noise. Every call takes the P newest driving images, runs the UNet once over the whole
queue, returns the oldest group decoded, and moves every group one level down.

Start-up follows the reference's PyTorch path: the queue fills from the top. The first call
denoises one group at the highest noise level, the next two groups, and so on; the first
frames come out of the G-th call, after G*P driving images. Nothing is emitted before.

Several engines that share a `QueueModel` can be stepped in one batched UNet call with
`step_streams`; each keeps its own queue, reference and noise generator, so a stream gives
the same frames whether it is stepped alone or in a batch.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from rain_core.models.attention import BlockReference
from rain_core.models.embeddings import guidance_scale_embedding
from rain_core.stream.components import RainComponents
from rain_core.stream.reference_encoder import ReferenceEncoder, ReferenceEncoding


class NoiseSource(Protocol):
    """Gives the noise a stream consumes, in the order it asks for it."""

    def __call__(self, shape: tuple[int, ...], *, device: torch.device, dtype: torch.dtype) -> torch.Tensor: ...


class SeededNoise:
    """Gaussian noise from a stream's own seeded generator: the same seed, the same stream."""

    def __init__(self, seed: int, device: torch.device):
        self.generator = torch.Generator(device)
        self.seed(seed)

    def seed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def __call__(self, shape, *, device, dtype):
        return torch.randn(shape, generator=self.generator, device=device, dtype=dtype)


class StageTimer:
    """Wall time per stage of a call (pose guider, UNet, scheduler, decoder).

    On CUDA it synchronises around each stage, which costs overlap: only benchmarks turn it on.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self.seconds[stage] += time.perf_counter() - start
        self.counts[stage] += 1

    def mean_ms(self, stage: str) -> float:
        return 1000 * self.seconds[stage] / max(self.counts[stage], 1)

    def clear(self) -> None:
        self.seconds.clear()
        self.counts.clear()


@dataclass
class Conditioning:
    """What a reference contributes to every call: CLIP context [B, 1, D] and per-block banks or K/V."""

    clip_embeds: torch.Tensor
    reference: Mapping[str, BlockReference]


@dataclass
class QueueSnapshot:
    """A copy of a full queue: latents [1, C, G*P, h, w], pose features of all but the newest
    group [1, C0, (G-1)*P, h, w], and the decoder memory."""

    latents: torch.Tensor
    pose_features: torch.Tensor
    decoder_memory: list[torch.Tensor]


class QueueModel:
    """The model work of a queue call, shared by every stream of one set of components."""

    def __init__(self, components: RainComponents):
        config = components.config
        self.components = components
        self.config = config
        self.device = config.torch_device
        self.dtype = config.torch_dtype
        self.groups = config.noise_groups
        self.per_group = config.frames_per_group
        self.timesteps = components.scheduler.frame_timesteps(config.num_inference_steps, config.frames_per_group).to(
            self.device
        )
        self.time_cond = guidance_scale_embedding(config.guidance_scale, config.denoising_unet.cond_proj_dim).to(
            device=self.device, dtype=self.dtype
        )
        self.reference_encoder: ReferenceEncoder | None = None
        # Benchmarks set a StageTimer; live use runs untimed.
        self.timer: StageTimer | None = None

    def _timed(self, stage: str):
        return self.timer(stage) if self.timer is not None else nullcontext()

    def _encoder(self) -> ReferenceEncoder:
        if self.reference_encoder is None:
            self.reference_encoder = ReferenceEncoder(self.components)
        return self.reference_encoder

    def encode_reference(self, image) -> ReferenceEncoding:
        return self._encoder()(image)

    def encode_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        """Frames [N, 3, H, W] in [0, 1] at the model's size -> latents, encoded as references are."""
        return self._encoder().latents(pixels)

    @torch.inference_mode()
    def conditioning(self, encoding: ReferenceEncoding, *, cache_kv: bool) -> Conditioning:
        c = self.components
        clip = encoding.clip_embeds.to(device=self.device, dtype=self.dtype)
        banks = c.reference_unet.compute_banks(encoding.latents.to(device=self.device, dtype=self.dtype), clip)
        reference = c.denoising_unet.cache_reference(banks) if cache_kv else banks
        return Conditioning(clip_embeds=clip, reference=reference)

    def pose_features(self, pose: torch.Tensor) -> torch.Tensor:
        with self._timed("pose_guider"):
            return self.components.pose_guider(pose)

    def denoise(
        self, latents: torch.Tensor, features: torch.Tensor, conditioning: Conditioning, step_noise: torch.Tensor
    ) -> torch.Tensor:
        """One UNet pass and LCM step over the newest `latents.shape[2]` frames of the queue."""
        frames = latents.shape[2]
        timesteps = self.timesteps[-frames:]
        with self._timed("unet"):
            model_output = self.components.denoising_unet(
                latents,
                timesteps,
                conditioning.clip_embeds,
                pose_features=features,
                time_cond=self.time_cond,
                reference=conditioning.reference,
            ).sample
        with self._timed("scheduler"):
            return self.components.scheduler.step_frames(
                model_output, timesteps, latents, step_noise, self.config.num_inference_steps
            ).prev_sample

    def decode(self, latents: torch.Tensor, memory: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """[B, C, P, h, w] clean latents -> frames [B, P, 3, H, W] clamped to [0, 1], new memory."""
        with self._timed("decoder"):
            frames, memory = self.components.decoder.decode_stream(latents.transpose(1, 2), memory)
            return frames.clamp_(0, 1), memory


class StreamEngine:
    """One endless animation stream.

    Feed it P driving images at a time with `step`; after the queue has filled (G calls) every
    call returns P frames. The reference can change at any time and takes effect on the next call.
    """

    def __init__(
        self,
        model: QueueModel | RainComponents,
        *,
        seed: int | None = None,
        cache_reference_kv: bool = True,
        noise: NoiseSource | None = None,
    ):
        self.model = model if isinstance(model, QueueModel) else QueueModel(model)
        config = self.model.config
        self.config = config
        self.cache_reference_kv = cache_reference_kv
        self._seed = config.seed if seed is None else seed
        self.noise: NoiseSource = noise or SeededNoise(self._seed, self.model.device)
        g, p = config.noise_groups, config.frames_per_group
        h, w = config.latent_height, config.latent_width
        device, dtype = self.model.device, self.model.dtype
        channels = config.unet.in_channels
        features = config.pose_guider.conditioning_embedding_channels
        # The big state buffers live for the whole stream; calls write into them.
        self._latents = torch.empty(1, channels, g * p, h, w, device=device, dtype=dtype)
        self._features = [torch.empty(1, features, g * p, h, w, device=device, dtype=dtype) for _ in range(2)]
        self._memory = self.model.components.decoder.initial_memory(1, h, w, device=device, dtype=dtype)
        self._conditioning: Conditioning | None = None
        self._groups = 0
        self.frames_in = 0
        self.frames_out = 0
        self.first_output_after: int | None = None
        self.reset()

    # Properties ------------------------------------------------------------------------
    @property
    def frames_per_call(self) -> int:
        return self.config.frames_per_group

    @property
    def first_frame_latency_frames(self) -> int:
        """Driving images consumed before the first output frame: G*P."""
        return self.config.queue_length

    @property
    def is_full(self) -> bool:
        return self._groups == self.config.noise_groups

    @property
    def has_reference(self) -> bool:
        return self._conditioning is not None

    # Reference -------------------------------------------------------------------------
    def set_reference(self, image: Image.Image | np.ndarray) -> None:
        """Encode a reference image (CLIP, VAE, reference net) and use it from the next call on."""
        self.set_reference_encoding(self.model.encode_reference(image))

    def set_reference_encoding(self, encoding: ReferenceEncoding) -> None:
        """Use an already encoded reference (CLIP embeds + latents); runs the reference net once."""
        self._conditioning = self.model.conditioning(encoding, cache_kv=self.cache_reference_kv)

    # Queue state -----------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> None:
        """Empty the queue (new session, scene cut); the reference and the models stay."""
        if seed is not None:
            self._seed = seed
        if isinstance(self.noise, SeededNoise):
            self.noise.seed(self._seed)
        for memory in self._memory:
            memory.zero_()
        self._groups = 1
        self._latents[:, :, -self.config.frames_per_group :].copy_(self._draw(self.config.frames_per_group))
        self.frames_in = self.frames_out = 0
        self.first_output_after = None

    def restore(self, snapshot: QueueSnapshot) -> None:
        """Continue from a full queue (see `snapshot`)."""
        g, p = self.config.noise_groups, self.config.frames_per_group
        expected = (self._latents.shape, (*self._features[0].shape[:2], (g - 1) * p, *self._features[0].shape[3:]))
        if (snapshot.latents.shape, snapshot.pose_features.shape) != expected:
            raise ValueError(
                f"snapshot shapes {tuple(snapshot.latents.shape)} / {tuple(snapshot.pose_features.shape)} do not fit "
                f"this stream's {tuple(expected[0])} / {tuple(expected[1])}"
            )
        self._latents.copy_(snapshot.latents)
        self._features[0][:, :, : (g - 1) * p].copy_(snapshot.pose_features)
        for memory, saved in zip(self._memory, snapshot.decoder_memory, strict=True):
            memory.copy_(saved)
        self._groups = g

    def snapshot(self) -> QueueSnapshot:
        if not self.is_full:
            raise RuntimeError("only a full queue can be snapshotted")
        p = self.config.frames_per_group
        return QueueSnapshot(
            latents=self._latents.clone(),
            pose_features=self._features[0][:, :, :-p].clone(),
            decoder_memory=[m.clone() for m in self._memory],
        )

    def _draw(self, frames: int) -> torch.Tensor:
        shape = (1, self._latents.shape[1], frames, *self._latents.shape[3:])
        return self.noise(shape, device=self.model.device, dtype=self.model.dtype)

    # Stepping --------------------------------------------------------------------------
    def step(self, driving) -> torch.Tensor | None:
        """Take P driving images; return P frames [P, 3, H, W] in [0, 1], or None while filling."""
        return step_streams([self], [driving])[0]

    def _prepare(self, driving) -> torch.Tensor:
        if self._conditioning is None:
            raise RuntimeError("set a reference before stepping the stream")
        return driving_tensor(driving, self.config.frames_per_group, self.config.height, self.config.width).to(
            device=self.model.device, dtype=self.model.dtype
        )

    def _active(self) -> slice:
        p = self.config.frames_per_group
        return slice((self.config.noise_groups - self._groups) * p, self.config.queue_length)

    def _advance(self, stepped: torch.Tensor, features: torch.Tensor) -> None:
        """Move every group one level down and put fresh noise on top."""
        p, g = self.config.frames_per_group, self.config.noise_groups
        full = self.is_full
        keep = slice(p, None) if full else slice(None)
        start = 0 if full else (g - self._groups - 1) * p
        spare = self._features[1]
        spare[:, :, start : g * p - p].copy_(features[:, :, keep])
        self._features.reverse()
        self._latents[:, :, start : g * p - p].copy_(stepped[:, :, keep])
        self._latents[:, :, -p:].copy_(self._draw(p))
        self.frames_in += p
        if full:
            self.frames_out += p
            if self.first_output_after is None:
                self.first_output_after = self.frames_in
        else:
            self._groups += 1


def driving_tensor(driving, frames: int, height: int, width: int) -> torch.Tensor:
    """P driving images as [1, 3, P, H, W] float in [0, 1].

    Accepts a uint8 array [P, H, W, 3] (as drawn by the driving renderer) or a float tensor
    [P, 3, H, W] in [0, 1].
    """
    if isinstance(driving, np.ndarray):
        if driving.dtype != np.uint8 or driving.ndim != 4 or driving.shape[-1] != 3:
            raise ValueError(f"driving images must be uint8 [P, H, W, 3], got {driving.dtype} {tuple(driving.shape)}")
        driving = torch.from_numpy(driving).permute(0, 3, 1, 2).float().div_(255)
    if not isinstance(driving, torch.Tensor) or driving.dim() != 4:
        raise ValueError("driving images must be a [P, 3, H, W] tensor or a [P, H, W, 3] uint8 array")
    if tuple(driving.shape) != (frames, 3, height, width):
        raise ValueError(f"expected {frames} driving images of 3x{height}x{width}, got {tuple(driving.shape)}")
    return driving.transpose(0, 1).unsqueeze(0)


@torch.inference_mode()
def step_streams(engines: Sequence[StreamEngine], drivings: Sequence) -> list[torch.Tensor | None]:
    """Step several streams of one model; those at the same fill level share one batched UNet call.

    Returns, per engine, its P frames [P, 3, H, W] or None while its queue is filling.
    """
    if len(engines) != len(drivings):
        raise ValueError(f"{len(engines)} engines but {len(drivings)} driving batches")
    if len({id(e.model) for e in engines}) > 1:
        raise ValueError("streams stepped together must share one QueueModel")
    results: list[torch.Tensor | None] = [None] * len(engines)
    poses = [engine._prepare(d) for engine, d in zip(engines, drivings, strict=True)]
    by_level: dict[int, list[int]] = defaultdict(list)
    for index, engine in enumerate(engines):
        by_level[engine._groups].append(index)
    for indices in by_level.values():
        frames = _step_batch([engines[i] for i in indices], [poses[i] for i in indices])
        for i, out in zip(indices, frames, strict=True):
            results[i] = out
    return results


def _cat_reference(conditionings: Sequence[Conditioning]) -> Conditioning:
    if len(conditionings) == 1:
        return conditionings[0]
    first = conditionings[0].reference
    reference = {}
    for name, value in first.items():
        parts = [c.reference[name] for c in conditionings]
        if isinstance(value, torch.Tensor):
            reference[name] = torch.cat(parts)
        else:
            keys, values = torch.cat([p.key for p in parts]), torch.cat([p.value for p in parts])
            reference[name] = type(value)(key=keys, value=values)
    return Conditioning(clip_embeds=torch.cat([c.clip_embeds for c in conditionings]), reference=reference)


def _step_batch(engines: Sequence[StreamEngine], poses: Sequence[torch.Tensor]) -> list[torch.Tensor | None]:
    model = engines[0].model
    p = model.per_group
    active = engines[0]._active()
    kinds = {e.cache_reference_kv for e in engines}
    if len(kinds) > 1:
        raise ValueError("streams stepped together must all use the reference K/V cache, or all not")

    new_features = model.pose_features(torch.cat(list(poses)))
    for i, engine in enumerate(engines):
        engine._features[0][:, :, -p:].copy_(new_features[i : i + 1])
    latents = torch.cat([e._latents[:, :, active] for e in engines])
    features = torch.cat([e._features[0][:, :, active] for e in engines])
    step_noise = torch.cat([e._draw(latents.shape[2]) for e in engines])
    conditioning = _cat_reference([e._conditioning for e in engines])

    stepped = model.denoise(latents, features, conditioning, step_noise)

    frames: list[torch.Tensor | None] = [None] * len(engines)
    if engines[0].is_full:
        memory = [torch.cat(parts) for parts in zip(*(e._memory for e in engines), strict=True)]
        decoded, memory = model.decode(stepped[:, :, :p], memory)
        for i, engine in enumerate(engines):
            for own, new in zip(engine._memory, memory, strict=True):
                own.copy_(new[i : i + 1])
            frames[i] = decoded[i]
    for i, engine in enumerate(engines):
        engine._advance(stepped[i : i + 1], features[i : i + 1])
    return frames


def stream_frames(engine: StreamEngine, images: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Stream driving images [H, W, 3] uint8 through `engine`; yield one output frame per image.

    Outputs lag the inputs by the queue (G*P frames), so when `images` ends the queue is
    flushed by repeating the last image until every input has its frame.
    """
    p = engine.frames_per_call
    seen = emitted = 0
    group: list[np.ndarray] = []

    def step() -> Iterator[np.ndarray]:
        nonlocal emitted, group
        frames = engine.step(np.stack(group))
        group = []
        if frames is not None:
            for frame in frames_to_uint8(frames)[: seen - emitted]:
                emitted += 1
                yield frame

    last = None
    for last in images:
        group.append(last)
        seen += 1
        if len(group) == p:
            yield from step()
    while emitted < seen:
        group += [last] * (p - len(group))
        yield from step()


def frames_to_uint8(frames: torch.Tensor) -> np.ndarray:
    """[P, 3, H, W] floats in [0, 1] -> [P, H, W, 3] uint8 on the CPU."""
    return frames.mul(255).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
