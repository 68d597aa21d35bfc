"""Several streams of one model in one batched call.

Streams at the same fill level need the same call: the same frames of the queue at the same
timesteps. Their inputs are concatenated along the batch, the `QueueModel` runs once, and each
stream takes its share of the result back. Every stream keeps its own queue, reference and
noise, so it gives the same frames whether it is stepped alone or in a batch (up to the
reduction order of batched kernels).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch

from rain_core.stream.engine import Conditioning, QueueCall, QueueCallResult, StreamEngine


@torch.inference_mode()
def step_streams(engines: Sequence[StreamEngine], drivings: Sequence) -> list[torch.Tensor | None]:
    """Step several streams of one model; those at the same fill level share one batched call.

    Every input is checked before any stream moves, so a refused batch leaves every stream as it
    was. Returns, per engine, its P frames [P, 3, H, W] or None while its queue is filling.
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
        call = _concat_calls([engines[i].call_inputs(poses[i]) for i in indices])
        shares = _split_result(engines[indices[0]].model.run(call), len(indices))
        for i, share in zip(indices, shares, strict=True):
            results[i] = engines[i].advance(share)
    return results


def _concat_calls(calls: Sequence[QueueCall]) -> QueueCall:
    """The calls of streams at one fill level as one call over their concatenated batch."""
    if len(calls) == 1:
        return calls[0]
    memories = [c.decoder_memory for c in calls]
    return QueueCall(
        driving=torch.cat([c.driving for c in calls]),
        latents=torch.cat([c.latents for c in calls]),
        pose_features=torch.cat([c.pose_features for c in calls]),
        step_noise=torch.cat([c.step_noise for c in calls]),
        conditioning=_concat_conditioning([c.conditioning for c in calls]),
        decoder_memory=None if memories[0] is None else [torch.cat(parts) for parts in zip(*memories, strict=True)],
    )


def _split_result(result: QueueCallResult, streams: int) -> list[QueueCallResult]:
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


def _concat_conditioning(conditionings: Sequence[Conditioning]) -> Conditioning:
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
