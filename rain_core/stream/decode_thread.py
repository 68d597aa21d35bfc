"""Decoding a call's finished frames on a thread of their own, while the next call's UNet runs.

A steady call is a UNet pass over the queue, then the streaming decoder on the oldest group. The
decoder needs nothing of the next call and the next call needs nothing of the decoder, so on a CPU
with a core to spare the two can run at once: the model's thread goes on to the next UNet pass
while this thread decodes. Measured on the demo model at one torch thread on 2 cores: UNet 96 ms
and decoder 33 ms a call, 137 ms a call one after the other and 106-115 ms overlapped
(docs/benchmarks.md). Torch releases the GIL inside its kernels, so two Python threads are enough.

One thread serves every stream of a model, first in first out: each stream's decoder memory
passes from one of its decodes to the next in the order of its calls.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable

import torch


class PendingFrames:
    """One stream's P frames [P, 3, H, W] in [0, 1], being decoded on a `DecodeThread`."""

    def __init__(self, future: concurrent.futures.Future):
        self._future = future

    def done(self) -> bool:
        return self._future.done()

    def result(self) -> torch.Tensor:
        """The frames, once decoded; raises what the decoding raised."""
        return self._future.result()

    def wait(self) -> None:
        """Wait until the decoding has ended, without raising what it raised."""
        concurrent.futures.wait([self._future])

    def add_done_callback(self, callback: Callable[[PendingFrames], None]) -> None:
        """Call `callback(self)` once decoded (on the decode thread, or at once if done already)."""
        self._future.add_done_callback(lambda _: callback(self))


class DecodeThread:
    """One thread that runs decodes in the order they are submitted."""

    def __init__(self):
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="rain-decode")

    def submit(self, decode: Callable[[], torch.Tensor]) -> PendingFrames:
        """Run `decode()` (which returns one stream's frames) after every decode submitted before it."""

        def run() -> torch.Tensor:
            # Inference mode is per thread: the model thread's does not reach this one.
            with torch.inference_mode():
                return decode()

        return PendingFrames(self._executor.submit(run))

    def close(self) -> None:
        """Finish the decodes submitted so far and end the thread."""
        self._executor.shutdown(wait=True)
