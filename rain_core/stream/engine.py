"""The streaming engine: RAIN's staggered-noise queue, one stream per `StreamEngine`.

The queue holds G groups of P latent frames. Group g sits at the g-th smallest of the G
scheduler timesteps, so the oldest group is one LCM step from clean and the newest is pure
noise. Every call takes the P newest driving images, runs the UNet once over the whole
queue, returns the oldest group decoded, and moves every group one level down.

Start-up follows the reference's PyTorch path: the queue fills from the top. The first call
denoises one group at the highest noise level, the next two groups, and so on; the first
frames come out of the G-th call, after G*P driving images. Nothing is emitted before.

A call is three moves: the engine hands out its inputs (`call_inputs`: views of its queue and
pose features, step noise drawn into its own buffer, the conditioning and, once the queue is
full, its decoder memory), the `QueueModel` runs them (`QueueModel.run`, which writes the newest
group's pose features in place), and the engine takes the result back (`advance`). A steady call
allocates no queue buffer and copies only what moves: the latents one group down, P frames of
fresh noise, the decoder memory.
`StreamEngine.step` does the three for one stream; `StreamEngine.submit` too, but leaves the
decoder to the model's decode thread where it has one (`rain_core.stream.decode_thread`), so that
the next call need not wait for it; `rain_core.stream.batching` does them for several streams of
one model in one batched call, each keeping its own queue, reference and noise generator.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from rain_core.models.attention import BlockReference
from rain_core.models.embeddings import guidance_scale_embedding
from rain_core.stream.components import RainComponents
from rain_core.stream.decode_thread import DecodeThread, PendingFrames
from rain_core.stream.reference_encoder import ReferenceEncoder, ReferenceEncoding
from rain_core.stream.transfer import DrivingUpload, frames_to_uint8


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

    def fill_(self, out: torch.Tensor) -> torch.Tensor:
        """Draw into `out` what `self(out.shape, ...)` would give: `out` must be contiguous, since a
        draw into strided memory takes another algorithm (other numbers) on the CPU."""
        if not out.is_contiguous():
            raise ValueError("seeded noise is drawn into contiguous memory only")
        return out.normal_(generator=self.generator)


@dataclass
class Conditioning:
    """What a reference contributes to every call: CLIP context [B, 1, D] and per-block banks or K/V."""

    clip_embeds: torch.Tensor
    reference: Mapping[str, BlockReference]
    # The reference image [B, 3, H, W] and its latents [B, C, h, w], for a decoder that uses them.
    decoder_reference: tuple[torch.Tensor, torch.Tensor] | None = None


@dataclass
class QueueCall:
    """The inputs of one queue call, for B streams at the same fill level.

    The F frames of the call are the queue's filled part, G*P frames once the queue is full.
    """

    driving: torch.Tensor  # [B, 3, P, H, W] the newest driving images, in [0, 1]
    latents: torch.Tensor  # [B, C, F, h, w]; the call only reads them
    # [B, C0, F, h, w]: the pose features of the frames already in the queue, followed by room for
    # the newest P, which the call writes in place (no concatenation on every call).
    pose_features: torch.Tensor
    step_noise: torch.Tensor  # [B, C, F, h, w] the LCM step's noise
    conditioning: Conditioning
    # The memory of the streaming decoder, given only when the call finishes the oldest group; the
    # call only reads it and returns the new memory.
    decoder_memory: list[torch.Tensor] | None
    # Decode on the model's decode thread, if it has one, and write the new memory into
    # `decoder_memory` there: only for one stream's call whose `decoder_memory` is its own buffers.
    defer_decode: bool = False


@dataclass
class QueueCallResult:
    """What one queue call computed, for the B streams of its `QueueCall`."""

    latents: torch.Tensor  # [B, C, F, h, w] every frame one step further
    pose_features: torch.Tensor  # [B, C0, F, h, w] the call's pose features, the newest group's included
    # [B, P, 3, H, W] the oldest group decoded, in [0, 1]; None while filling. A deferred decode's
    # frames are its one stream's [P, 3, H, W], pending.
    frames: torch.Tensor | PendingFrames | None
    # The memory to carry into the next call (a deferred decode's: the call's own, written by the decode).
    decoder_memory: list[torch.Tensor] | None


@dataclass(frozen=True)
class Networks:
    """The three networks a queue call runs, as callables: the modules themselves, or a fast path's
    version of them (compiled), which leaves the modules as they are for every other call."""

    pose_guider: Callable[..., torch.Tensor]
    denoising_unet: Callable[..., Any]
    decode_stream: Callable[..., tuple[torch.Tensor, list[torch.Tensor]]]

    @classmethod
    def of(cls, components: RainComponents) -> Networks:
        return cls(components.pose_guider, components.denoising_unet, components.decoder.decode_stream)


class QueueModel:
    """The model work of a queue call, shared by every stream of one set of components.

    Steady calls (a full queue) of a batch size in `fast_calls` run there (compiled, or replayed as a
    CUDA graph: see `rain_core.stream.fast_paths`); every other call runs the networks eager.
    """

    def __init__(self, components: RainComponents):
        config = components.config
        self.components = components
        self.config = config
        self.device = config.torch_device
        # The queue runs in the dtype its networks were placed in: the config's, unless a caller
        # cast the components (tests run them in float64 to compare exactly).
        self.dtype = next(components.denoising_unet.parameters()).dtype
        # The codec's decoder may run in a dtype of its own (`FastPaths.bfloat16_decoder`): its memory
        # and reference are kept in it, its frames come back in the queue's dtype.
        self.decoder_dtype = components.decoder.decoding_dtype
        self.per_group = config.frames_per_group
        components.scheduler.move_tables_to(self.device)
        self.timesteps = components.scheduler.frame_timesteps(config.num_inference_steps, config.frames_per_group).to(
            self.device
        )
        self.time_cond = guidance_scale_embedding(config.guidance_scale, config.denoising_unet.cond_proj_dim).to(
            device=self.device, dtype=self.dtype
        )
        self.networks = Networks.of(components)
        # Batch size -> the steady call of that many streams on a fast path; filled by `prepare_model`,
        # possibly from another thread while this model serves (a dict's item assignment is atomic).
        self.fast_calls: dict[int, Callable[[QueueCall], QueueCallResult]] = {}
        # Held by each call, and by a CUDA-graph capture on the preparing thread: nothing else runs on
        # the device while a graph is captured (reentrant: a capture may happen inside a call).
        self.calls_lock = threading.RLock()
        self.reference_encoder: ReferenceEncoder | None = None
        # Where deferred decodes run (see `rain_core.stream.decode_thread`); set by `prepare_model`.
        self.decode_thread: DecodeThread | None = None

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
        return Conditioning(clip_embeds=clip, reference=reference, decoder_reference=self.decoder_reference(encoding))

    def decoder_reference(self, encoding: ReferenceEncoding) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The reference image and latents a decoder with a reference gate decodes with; None for others."""
        if not self.components.decoder.uses_reference:
            return None
        if encoding.pixels is None:
            raise ValueError("this model's decoder needs the reference image: the encoding has no pixels")
        return (
            encoding.pixels.to(device=self.device, dtype=self.decoder_dtype),
            encoding.latents.to(device=self.device, dtype=self.decoder_dtype),
        )

    def is_steady_call(self, call: QueueCall) -> bool:
        """Whether `call` covers a full queue: the one shape a stream's calls keep for good."""
        return call.latents.shape[2] == self.config.queue_length

    @torch.inference_mode()
    def run(self, call: QueueCall) -> QueueCallResult:
        """One queue call, on the fast path prepared for its batch size when it is steady and there is one."""
        fast = self.fast_calls.get(call.latents.shape[0]) if self.is_steady_call(call) else None
        with self.calls_lock:
            return fast(call) if fast is not None else self.compute(call)

    @torch.inference_mode()
    def compute(self, call: QueueCall, networks: Networks | None = None) -> QueueCallResult:
        """One queue call: pose guider on the new driving images, UNet and LCM step over the queue,
        and, when the call finishes the oldest group, the decoder; with `networks` (default: the
        modules, eager)."""
        networks = networks or self.networks
        features = call.pose_features
        features[:, :, -self.per_group :] = self.pose_features(call.driving, networks)
        latents = self.denoise(call.latents, features, call.conditioning, call.step_noise, networks)
        frames = memory = None
        if call.decoder_memory is not None:
            oldest, reference = latents[:, :, : self.per_group], call.conditioning.decoder_reference
            if call.defer_decode and self.decode_thread is not None:
                # `latents` is this call's own new tensor (the queue copies out of it, nothing writes
                # into it), so the decode can read its oldest group later without a copy.
                frames = self.decode_thread.submit(
                    functools.partial(self._decode_into, oldest, call.decoder_memory, reference, networks)
                )
                memory = call.decoder_memory
            else:
                frames, memory = self.decode(oldest, call.decoder_memory, reference, networks)
        return QueueCallResult(latents=latents, pose_features=features, frames=frames, decoder_memory=memory)

    def pose_features(self, pose: torch.Tensor, networks: Networks | None = None) -> torch.Tensor:
        """Driving images [B, 3, P, H, W] in [0, 1] -> pose features [B, C0, P, h, w]."""
        return (networks or self.networks).pose_guider(pose)

    def denoise(
        self, latents: torch.Tensor, features: torch.Tensor, conditioning: Conditioning, step_noise: torch.Tensor,
        networks: Networks | None = None,
    ) -> torch.Tensor:
        """One UNet pass and LCM step over the newest `latents.shape[2]` frames of the queue."""
        timesteps = self.timesteps[-latents.shape[2] :]
        model_output = self.unet(latents, timesteps, features, conditioning, networks)
        return self.scheduler_step(model_output, timesteps, latents, step_noise)

    def unet(
        self, latents: torch.Tensor, timesteps: torch.Tensor, features: torch.Tensor, conditioning: Conditioning,
        networks: Networks | None = None,
    ) -> torch.Tensor:
        """The denoising UNet's prediction for frames [B, C, F, h, w] at per-frame `timesteps` [F]."""
        return (networks or self.networks).denoising_unet(
            latents,
            timesteps,
            conditioning.clip_embeds,
            pose_features=features,
            time_cond=self.time_cond,
            reference=conditioning.reference,
        ).sample

    def scheduler_step(
        self, model_output: torch.Tensor, timesteps: torch.Tensor, latents: torch.Tensor, step_noise: torch.Tensor
    ) -> torch.Tensor:
        """The LCM step of every frame from its timestep to the next lower one (the oldest to clean)."""
        return self.components.scheduler.step_frames(
            model_output, timesteps, latents, step_noise, self.config.num_inference_steps
        ).prev_sample

    def decode(
        self,
        latents: torch.Tensor,
        memory: Sequence[torch.Tensor],
        reference: tuple[torch.Tensor, torch.Tensor] | None = None,
        networks: Networks | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """[B, C, P, h, w] clean latents -> frames [B, P, 3, H, W] clamped to [0, 1], new memory.
        `reference`: the conditioning's `decoder_reference`, for a decoder that uses it."""
        latents = latents.transpose(1, 2).to(self.decoder_dtype)
        frames, memory = (networks or self.networks).decode_stream(latents, memory, reference)
        return frames.to(self.dtype).clamp_(0, 1), memory

    def _decode_into(
        self, latents: torch.Tensor, memory: Sequence[torch.Tensor],
        reference: tuple[torch.Tensor, torch.Tensor] | None, networks: Networks | None = None,
    ) -> torch.Tensor:
        """One stream's deferred decode: its frames [P, 3, H, W]; the new memory written into `memory`."""
        frames, new_memory = self.decode(latents, memory, reference, networks)
        for own, new in zip(memory, new_memory, strict=True):
            own.copy_(new)
        return frames[0]


class StreamEngine:
    """One endless animation stream.

    Feed it P driving images at a time with `step`; after the queue has filled (G calls) every
    call returns P frames. The reference can change at any time and takes effect on the next call.
    `submit` is `step` with the frames decoded on the model's decode thread, when it has one.
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
        # The state buffers live for the whole stream; calls read them in place and write into them.
        # Latents and pose features are stored frame-major and handed out as [1, C, F, h, w] views:
        # the networks fold frames into the batch, which is free in that layout, and any run of
        # consecutive frames is one contiguous block.
        self._latents = frame_major_buffer(1, channels, g * p, device=device, dtype=dtype, size=(h, w))
        # The pose features of the queue sit in a window of G*P frames that slides one group per
        # call through a store twice as long, so that they never move (the call writes the newest
        # group's into the window's top P frames) except when the window wraps: one copy of the
        # older groups every G + 1 calls.
        self._feature_store = frame_major_buffer(1, features, 2 * g * p, device=device, dtype=dtype, size=(h, w))
        self._feature_start = 0
        # Noise is drawn into contiguous memory, where a seeded draw gives the numbers `torch.randn`
        # gives (the same stream as before); shapes of up to G*P frames are views of one buffer.
        self._noise = torch.empty(channels * g * p * h * w, device=device, dtype=dtype)
        self._memory = self.model.components.decoder.initial_memory(
            1, h, w, device=device, dtype=self.model.decoder_dtype
        )
        self._upload = DrivingUpload(p, config.height, config.width, device=device, dtype=dtype)
        self._conditioning: Conditioning | None = None
        # The last deferred decode of this stream, which may still be reading and writing `_memory`.
        self._decoding: PendingFrames | None = None
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
    def fill_level(self) -> int:
        """Groups in the queue, 1 to G; streams at the same level can share a call."""
        return self._groups

    @property
    def is_full(self) -> bool:
        return self._groups == self.config.noise_groups

    @property
    def conditioning(self) -> Conditioning:
        """What the current reference gives every call (a new object whenever the reference changes)."""
        return self._reference()

    @property
    def _features(self) -> torch.Tensor:
        """The pose features of the queue's G*P frames [1, C0, G*P, h, w]; the newest group's are
        written by the next call."""
        return self._feature_store[:, :, self._feature_start : self._feature_start + self.config.queue_length]

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
        self.settle_decoding()
        for memory in self._memory:
            memory.zero_()
        self._groups = 1
        self._feature_start = 0
        self._latents[:, :, -self.config.frames_per_group :].copy_(self._draw(self.config.frames_per_group))
        self.frames_in = self.frames_out = 0
        self.first_output_after = None

    def _draw(self, frames: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """Noise for `frames` frames [1, C, frames, h, w], drawn into `out` (contiguous) or the engine's buffer."""
        latents = self._latents
        shape = (1, latents.shape[1], frames, *latents.shape[3:])
        if out is None:
            out = self._noise[: math.prod(shape)].view(shape)
        if isinstance(self.noise, SeededNoise):
            return self.noise.fill_(out)
        return out.copy_(self.noise(shape, device=self.model.device, dtype=self.model.dtype))

    # Stepping --------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self, driving) -> torch.Tensor | None:
        """Take P driving images; return P frames [P, 3, H, W] in [0, 1], or None while filling."""
        return self.advance(self.model.run(self.call_inputs(self.prepare_driving(driving))))

    @torch.inference_mode()
    def submit(self, driving) -> torch.Tensor | PendingFrames | None:
        """`step`, but once the queue is full and the model has a decode thread, the frames come back
        pending: this returns when the UNet is done, and the next call can run while they decode.

        At most one decode of the stream is pending once this returns: a stream whose decodes take
        longer than its calls waits for them here rather than falling behind.
        """
        return self.advance(self.model.run(self.call_inputs(self.prepare_driving(driving), defer_decode=True)))

    def settle_decoding(self) -> None:
        """Wait for the stream's pending decode, if any (its decoder memory is then this thread's)."""
        if self._decoding is not None:
            self._decoding.wait()
            self._decoding = None

    def prepare_driving(self, driving) -> torch.Tensor:
        """Check P driving images and upload them: a uint8 array [P, H, W, 3] (as drawn by the driving
        renderer) or a float tensor [P, 3, H, W] in [0, 1] -> [1, 3, P, H, W] on the model's device,
        in the model's dtype, in the stream's upload buffer (valid until its next `prepare_driving`).

        Changes no queue state, so that a batch can check every stream's input before stepping any.
        """
        self._reference()
        return self._upload(driving)

    def call_inputs(
        self, driving: torch.Tensor, *, step_noise: torch.Tensor | None = None, defer_decode: bool = False
    ) -> QueueCall:
        """This call's inputs for prepared driving images: views of the queue's filled part and its
        pose features (the call writes the newest group's), the step noise (drawn now, from this
        stream's noise, into `step_noise` if given, a contiguous [1, C, F, h, w], such as a batch's
        share), the conditioning and, when the oldest group finishes, the decoder memory.
        `defer_decode`: the call may decode on the model's decode thread (see `submit`); a call that
        does not first waits for the stream's pending decode, whose memory it reads.
        Pass its result to `advance`."""
        conditioning = self._reference()
        if not defer_decode:
            self.settle_decoding()
        first = (self.config.noise_groups - self._groups) * self.config.frames_per_group
        latents = self._latents[:, :, first:]
        return QueueCall(
            driving=driving,
            latents=latents,
            pose_features=self._features[:, :, first:],
            step_noise=self._draw(latents.shape[2], step_noise),
            conditioning=conditioning,
            decoder_memory=self._memory if self.is_full else None,
            defer_decode=defer_decode,
        )

    def _reference(self) -> Conditioning:
        if self._conditioning is None:
            raise RuntimeError("set a reference before stepping the stream")
        return self._conditioning

    def advance(self, result: QueueCallResult) -> torch.Tensor | None:
        """Take a call's result: move every group one level down and put fresh noise on top.

        Returns the finished group's frames [P, 3, H, W] (pending when the call deferred its decode),
        or None while the queue fills.
        """
        p, g = self.config.frames_per_group, self.config.noise_groups
        full = self.is_full
        # The newest group's pose features are in place when the call ran on this stream's buffers;
        # a batched (or captured) call computed them in buffers of its own.
        _copy_unless_same(self._features[:, :, -p:], result.pose_features[:, :, -p:])
        self._slide_features()
        # A full queue drops its oldest group; a filling one keeps every frame one group lower.
        keep = slice(p, None) if full else slice(None)
        start = 0 if full else (g - self._groups - 1) * p
        self._latents[:, :, start : g * p - p].copy_(result.latents[:, :, keep])
        self._latents[:, :, -p:].copy_(self._draw(p))
        self.frames_in += p
        if not full:
            self._groups += 1
            return None
        self.frames_out += p
        if self.first_output_after is None:
            self.first_output_after = self.frames_in
        if isinstance(result.frames, PendingFrames):
            # The decode writes the new memory into the stream's own buffers itself.
            earlier, self._decoding = self._decoding, result.frames
            if earlier is not None:
                earlier.wait()
            return result.frames
        for own, new in zip(self._memory, result.decoder_memory, strict=True):
            _copy_unless_same(own, new)
        return result.frames[0]

    def _slide_features(self) -> None:
        """Move the feature window one group up: the oldest group leaves, the top group is free."""
        p, length = self.config.frames_per_group, self.config.queue_length
        self._feature_start += p
        store = self._feature_store
        if self._feature_start + length > store.shape[2]:
            # The window's older groups go back to the store's start; the store is long enough
            # that they do not overlap where they come from.
            kept = store[:, :, self._feature_start : self._feature_start + length - p]
            store[:, :, : length - p].copy_(kept)
            self._feature_start = 0


def frame_major_buffer(
    batch: int, channels: int, frames: int, *, device: torch.device, dtype: torch.dtype, size: tuple[int, int]
) -> torch.Tensor:
    """An uninitialised [batch, channels, frames, h, w] tensor stored as [batch, frames, channels, h, w]:
    the layout in which the networks fold frames into the batch without a copy."""
    return torch.empty(batch, frames, channels, *size, device=device, dtype=dtype).transpose(1, 2)


def _copy_unless_same(own: torch.Tensor, new: torch.Tensor) -> None:
    """`own.copy_(new)`, skipped when `new` is `own`'s memory already (a call that wrote in place)."""
    if new.data_ptr() != own.data_ptr() or new.stride() != own.stride():
        own.copy_(new)


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
