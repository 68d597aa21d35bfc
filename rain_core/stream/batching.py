"""Several streams of one model in one batched call.

Streams at the same fill level need the same call: the same frames of the queue at the same
timesteps. Their inputs are gathered along the batch into call buffers the model's batcher keeps
(no allocation per call), the `QueueModel` runs once, and each stream takes its share of the
result back. Every stream keeps its own queue, reference and noise, so it gives the same frames
whether it is stepped alone or in a batch (up to the reduction order of batched kernels).

The streams' conditioning (CLIP context and every block's reference K/V, the largest input of a
batched call) is concatenated once per set of streams and reused while no stream of the set
changes its reference.
"""

from __future__ import annotations

import math
import weakref
from collections import OrderedDict, defaultdict
from collections.abc import Sequence

import torch

from rain_core.stream.decode_thread import PendingFrames
from rain_core.stream.engine import (
    Conditioning,
    QueueCall,
    QueueCallResult,
    QueueModel,
    StreamEngine,
)

# Concatenated conditionings kept per model: the server's batches come from a few recurring sets
# of streams; each entry holds B streams' reference K/V, so the bound is small.
CONDITIONING_CACHE_SIZE = 2


@torch.inference_mode()
def step_streams(
    engines: Sequence[StreamEngine], drivings: Sequence, *, defer_decode: bool = False
) -> list[torch.Tensor | PendingFrames | None]:
    """Step several streams of one model; those at the same fill level share one batched call.

    Every input is checked before any stream moves, so a refused batch leaves every stream as it
    was. Returns, per engine, its P frames [P, 3, H, W] or None while its queue is filling.
    `defer_decode`: a stream alone at its level decodes on the model's decode thread, if it has
    one (`StreamEngine.submit`), and its frames come back pending; a batched call decodes at once.
    """
    if len(engines) != len(drivings):
        raise ValueError(f"{len(engines)} engines but {len(drivings)} driving batches")
    if len({id(e.model) for e in engines}) > 1:
        raise ValueError("streams stepped together must share one QueueModel")
    if len({e.cache_reference_kv for e in engines}) > 1:
        raise ValueError("streams stepped together must all use the reference K/V cache, or all not")
    poses = [engine.prepare_driving(driving) for engine, driving in zip(engines, drivings, strict=True)]
    by_level: dict[int, list[int]] = defaultdict(list)
    for index, engine in enumerate(engines):
        by_level[engine.fill_level].append(index)
    results: list[torch.Tensor | None] = [None] * len(engines)
    for indices in by_level.values():
        if len(indices) == 1:
            engine = engines[indices[0]]
            call = engine.call_inputs(poses[indices[0]], defer_decode=defer_decode)
            results[indices[0]] = engine.advance(engine.model.run(call))
            continue
        # A set of streams is one batch whatever order their jobs came in: one cached conditioning.
        indices.sort(key=lambda i: id(engines[i]))
        batch = [engines[i] for i in indices]
        batcher = batcher_of(batch[0].model)
        shares = split_result(batch[0].model.run(batcher.call(batch, [poses[i] for i in indices])), len(batch))
        for i, engine, share in zip(indices, batch, shares, strict=True):
            results[i] = engine.advance(share)
    return results


_batchers: weakref.WeakKeyDictionary[QueueModel, Batcher] = weakref.WeakKeyDictionary()


def batcher_of(model: QueueModel) -> Batcher:
    """The one `Batcher` of `model` (its call buffers live as long as the model)."""
    batcher = _batchers.get(model)
    if batcher is None:
        batcher = _batchers[model] = Batcher(model)
    return batcher


class Batcher:
    """Gathers streams' call inputs into batched call buffers, and keeps their concatenated conditioning.

    The buffers are flat storages sized for the largest batch stepped so far; a call of B streams
    at F frames uses contiguous views of their first part, in the layouts a lone stream hands out
    (frame-major latents, pose features and driving images, contiguous step noise and decoder
    memory), so that a stream's kernels see the same layouts alone and in a batch.
    """

    def __init__(self, model: QueueModel):
        config = model.config
        # Not the model itself: the batcher is kept in a weak mapping keyed by it.
        self.per_group = model.per_group
        self.device, self.dtype, self.decoder_dtype = model.device, model.dtype, model.decoder_dtype
        self._sizes = {
            "driving": (3, config.frames_per_group, (config.height, config.width)),
            "latents": (config.unet.in_channels, config.queue_length, (config.latent_height, config.latent_width)),
            "features": (
                config.pose_guider.conditioning_embedding_channels,
                config.queue_length,
                (config.latent_height, config.latent_width),
            ),
        }
        self._memory_shapes = model.components.decoder.memory_shapes(1, config.latent_height, config.latent_width)
        self._capacity = 0
        self._storage: dict[str, torch.Tensor] = {}
        self._memory_storage: list[torch.Tensor] = []
        self._conditionings: OrderedDict[tuple[int, ...], tuple[tuple[Conditioning, ...], Conditioning]] = (
            OrderedDict()
        )

    def call(self, engines: Sequence[StreamEngine], poses: Sequence[torch.Tensor]) -> QueueCall:
        """One call over the batch of `engines` (at one fill level), their prepared driving images `poses`.

        Draws each stream's step noise straight into its share of the batch; copies into the batch
        the queue frames and older pose features each stream holds, and its decoder memory.
        """
        batch, p = len(engines), self.per_group
        self._reserve(batch)
        frames = engines[0].fill_level * p
        driving = self._frame_major("driving", batch, p)
        latents = self._frame_major("latents", batch, frames)
        features = self._frame_major("features", batch, frames)
        channels, _, size = self._sizes["latents"]
        noise = self._storage["noise"][: batch * channels * frames * math.prod(size)].view(
            batch, channels, frames, *size
        )
        full = engines[0].is_full
        memory = None
        if full:
            memory = [
                m[: batch * math.prod(s[1:])].view(batch, *s[1:])
                for m, s in zip(self._memory_storage, self._memory_shapes, strict=True)
            ]
        conditionings = []
        for i, (engine, pose) in enumerate(zip(engines, poses, strict=True)):
            own = engine.call_inputs(pose, step_noise=noise[i : i + 1])
            driving[i : i + 1].copy_(own.driving)
            latents[i : i + 1].copy_(own.latents)
            # The newest group's features are the call's to compute.
            features[i : i + 1, :, :-p].copy_(own.pose_features[:, :, :-p])
            if memory is not None:
                for batched, part in zip(memory, own.decoder_memory, strict=True):
                    batched[i : i + 1].copy_(part)
            conditionings.append(own.conditioning)
        return QueueCall(
            driving=driving,
            latents=latents,
            pose_features=features,
            step_noise=noise,
            conditioning=self.conditioning(conditionings),
            decoder_memory=memory,
        )

    def conditioning(self, conditionings: Sequence[Conditioning]) -> Conditioning:
        """The streams' conditionings concatenated along the batch, cached per set of conditionings.

        A stream that changes its reference gets a new `Conditioning` object, so the set's key
        changes with it; the entry holds the objects it was made from, so their ids stay theirs.
        """
        key = tuple(id(c) for c in conditionings)
        entry = self._conditionings.get(key)
        if entry is not None and all(a is b for a, b in zip(entry[0], conditionings, strict=True)):
            self._conditionings.move_to_end(key)
            return entry[1]
        concatenated = concat_conditioning(conditionings)
        self._conditionings[key] = (tuple(conditionings), concatenated)
        while len(self._conditionings) > CONDITIONING_CACHE_SIZE:
            self._conditionings.popitem(last=False)
        return concatenated

    def _reserve(self, batch: int) -> None:
        if batch <= self._capacity:
            return

        def storage(elements: int, dtype: torch.dtype = self.dtype) -> torch.Tensor:
            return torch.empty(batch * elements, device=self.device, dtype=dtype)

        for name, (channels, frames, size) in self._sizes.items():
            self._storage[name] = storage(channels * frames * math.prod(size))
        channels, frames, size = self._sizes["latents"]
        self._storage["noise"] = storage(channels * frames * math.prod(size))
        self._memory_storage = [storage(math.prod(shape[1:]), self.decoder_dtype) for shape in self._memory_shapes]
        self._capacity = batch

    def _frame_major(self, name: str, batch: int, frames: int) -> torch.Tensor:
        """[batch, C, frames, ...] view, frame-major, of the first part of a storage."""
        channels, _, size = self._sizes[name]
        flat = self._storage[name][: batch * frames * channels * math.prod(size)]
        return flat.view(batch, frames, channels, *size).transpose(1, 2)


def split_result(result: QueueCallResult, streams: int) -> list[QueueCallResult]:
    """A batched call's result -> one result per stream, in the order of the batch."""
    if streams == 1:
        return [result]

    def share(i: int) -> QueueCallResult:
        return QueueCallResult(
            latents=result.latents[i : i + 1],
            pose_features=result.pose_features[i : i + 1],
            frames=None if result.frames is None else result.frames[i : i + 1],
            decoder_memory=None if result.decoder_memory is None else [m[i : i + 1] for m in result.decoder_memory],
        )

    return [share(i) for i in range(streams)]


def concat_conditioning(conditionings: Sequence[Conditioning]) -> Conditioning:
    """Conditionings of streams concatenated along the batch (every block's bank or K/V)."""
    first = conditionings[0].reference
    reference = {}
    for name, value in first.items():
        parts = [c.reference[name] for c in conditionings]
        if isinstance(value, torch.Tensor):
            reference[name] = torch.cat(parts)
        else:
            keys, values = torch.cat([p.key for p in parts]), torch.cat([p.value for p in parts])
            reference[name] = type(value)(key=keys, value=values)
    decoder_reference = None
    if conditionings[0].decoder_reference is not None:
        pairs = [c.decoder_reference for c in conditionings]
        decoder_reference = tuple(torch.cat(parts) for parts in zip(*pairs, strict=True))
    return Conditioning(
        clip_embeds=torch.cat([c.clip_embeds for c in conditionings]),
        reference=reference,
        decoder_reference=decoder_reference,
    )
