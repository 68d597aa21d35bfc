"""Which tensor operations of a streaming call would stall or break a GPU, found without one.

`DeviceAudit` is a `TorchDispatchMode`: it sees every aten operation with its tensors, so a call run
with the model on a device other than the host shows each place where host memory meets the device
(a host-to-device or device-to-host copy, a host tensor handed to a device operation) and each host
synchronisation (`.item()`, `.tolist()`, a tensor's truth value, `nonzero`). On CUDA each of these
waits for the device, and inside a CUDA-graph capture it is an error (a pageable copy or a sync
during capture: `cudaErrorStreamCaptureUnsupported`). The `meta` device is such a device: it
computes shapes only, so the whole engine runs on it in milliseconds on any machine.

Transfers are allowed only in the functions named in `allowed_transfers` (the driving upload and
the frame download of `rain_core.stream.transfer`), found on the Python stack of the operation.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

aten = torch.ops.aten

# Operations that read a device tensor's values on the host.
HOST_SYNCS = {
    aten._local_scalar_dense.default,
    aten.is_nonzero.default,
    aten.nonzero.default,
    aten.equal.default,
    aten.allclose.default,
}


@dataclass(frozen=True)
class Finding:
    kind: str  # "sync", "copy" or "mixed"
    op: str
    devices: tuple[str, ...]
    where: str  # the innermost frame of our code that issued the operation

    def __str__(self) -> str:
        return f"{self.kind}: {self.op} on {'/'.join(self.devices)} at {self.where}"


def _our_frames() -> list[tuple[str, str, int]]:
    """(file, function, line) of each frame of rain_core on the stack, innermost first."""
    frames, frame = [], sys._getframe()
    while frame is not None:
        name = frame.f_code.co_filename
        if "/rain_core/" in name and "/tests/" not in name:
            frames.append((name.split("/rain_core/", 1)[1], frame.f_code.co_name, frame.f_lineno))
        frame = frame.f_back
    return frames


class DeviceAudit(TorchDispatchMode):
    """Records every host synchronisation and every mix of host and `device` memory."""

    def __init__(self, device: torch.device, allowed_transfers: tuple[tuple[str, str], ...] = ()):
        super().__init__()
        self.device = torch.device(device)
        self.allowed_transfers = allowed_transfers  # (file under rain_core/, function)
        self.findings: list[Finding] = []
        self.ops = 0

    def _allowed(self, frames: list[tuple[str, str, int]]) -> bool:
        return any((file, function) in self.allowed_transfers for file, function, _ in frames)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops += 1
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        devices = {t.device.type for t in tensors}
        kind = None
        if func in HOST_SYNCS and any(t.device.type == self.device.type for t in tensors):
            kind = "sync"
        elif self.device.type in devices and "cpu" in devices:
            kind = "mixed"
        if kind == "sync":  # recorded first: reading a meta tensor's value raises
            self._record(kind, func, devices)
            return func(*args, **kwargs)
        out = func(*args, **kwargs)
        if kind is None:
            out_devices = {t.device.type for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)}
            if devices and out_devices and devices != out_devices:
                kind = "copy"
                devices |= out_devices
        if kind is not None:
            self._record(kind, func, devices)
        return out

    def _record(self, kind: str, func, devices: set[str]) -> None:
        frames = _our_frames()
        if kind == "sync" or not self._allowed(frames):
            where = ":".join(map(str, frames[0])) if frames else "outside rain_core"
            self.findings.append(Finding(kind, str(func), tuple(sorted(devices)), where))
