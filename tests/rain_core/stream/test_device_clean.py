"""The steady streaming call never touches host memory or waits for the device (issue 26).

Run with the model on the `meta` device (shapes only, no values: a device that is not the host,
on any machine), every call the server makes is audited op by op (`device_audit.DeviceAudit`):
one stream, several streams batched at different fill levels, a reference swap mid-stream, the
decoder with and without a reference gate. A host copy, a host tensor in a device operation or a
host synchronisation is what would stall every call on a GPU and break a CUDA-graph capture of
`QueueModel.run`; the only transfers allowed are the driving upload of `rain_core.stream.transfer`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rain_core.config import demo_config, tiny_config
from rain_core.stream.batching import step_streams
from rain_core.stream.components import RainComponents
from rain_core.stream.engine import QueueModel, StreamEngine
from rain_core.stream.preparation import warm_up_encoding
from tests.helpers import random_driving
from tests.rain_core.stream.device_audit import DeviceAudit

DEVICE = torch.device("meta")
# The driving images' upload is the one designated host-to-device transfer of a call.
UPLOAD = (("stream/transfer.py", "__call__"), ("stream/transfer.py", "_upload_uint8"))


def meta_noise(shape, *, device, dtype):
    return torch.empty(shape, device=device, dtype=dtype)


def meta_model(config) -> QueueModel:
    config = config.with_overrides(device="meta")
    components = RainComponents.build(config, device="meta")
    return QueueModel(components)


def driving(config, seed: int) -> np.ndarray:
    return random_driving(config, 1, seed)[0]


def audited(audit: DeviceAudit, fn, *args):
    with audit:
        return fn(*args)


@pytest.mark.parametrize("make_config", [tiny_config, demo_config], ids=["plain codec", "gated codec"])
def test_every_call_path_stays_on_the_device(make_config):
    model = meta_model(make_config())
    config = model.config
    engines = [StreamEngine(model, noise=meta_noise) for _ in range(3)]
    for i, engine in enumerate(engines):
        engine.set_reference_encoding(warm_up_encoding(config, i))
    audit = DeviceAudit(DEVICE, allowed_transfers=UPLOAD)

    # One stream alone from empty to several steady calls: filling calls and the decode.
    for call in range(config.noise_groups + 2):
        out = audited(audit, engines[0].step, driving(config, call))
    assert out is not None and out.device == DEVICE
    # Streams at different fill levels in one step (one full, one filling, one new).
    for call in range(config.noise_groups + 2):
        audited(audit, step_streams, engines[1:], [driving(config, call)] * 2)
    audited(audit, step_streams, engines, [driving(config, 9)] * 3)
    engines[2].reset()
    for call in range(config.noise_groups + 1):
        audited(audit, step_streams, engines, [driving(config, call)] * 3)
    # A reference swap (encoded outside the call, as the worker does) and the calls after it,
    # batched and alone.
    engines[1].set_reference_encoding(warm_up_encoding(config, 7))
    audited(audit, step_streams, engines, [driving(config, 10)] * 3)
    audited(audit, engines[1].step, driving(config, 11))

    assert audit.ops > 1000  # the audit saw the networks run, not an empty call
    assert audit.findings == [], "\n".join(map(str, audit.findings[:20]))


def test_the_audit_finds_a_host_table_put_back_into_the_scheduler():
    """The test above can fail: the scheduler's table in host memory (as it was before issue 26) is
    copied to the device inside every call, and the audit reports it at the scheduler's step."""
    model = meta_model(tiny_config())
    scheduler = model.components.scheduler
    scheduler.alphas_cumprod = torch.empty(scheduler.config.num_train_timesteps)  # a host table
    engine = StreamEngine(model, noise=meta_noise)
    engine.set_reference_encoding(warm_up_encoding(model.config, 0))
    audit = DeviceAudit(DEVICE, allowed_transfers=UPLOAD)
    audited(audit, engine.step, driving(model.config, 0))
    assert audit.findings, "a host-to-device copy inside the call went unnoticed"
    assert {f.kind for f in audit.findings} == {"copy"}
    assert all(f.where.startswith("stream/scheduler.py:step_frames") for f in audit.findings), audit.findings


def test_the_audit_finds_a_host_synchronisation():
    audit = DeviceAudit(DEVICE)
    with audit, pytest.raises(Exception):  # noqa: B017 - meta tensors have no value to read
        bool(torch.ones(1, device=DEVICE).sum() > 0)
    assert [f.kind for f in audit.findings] == ["sync"]
