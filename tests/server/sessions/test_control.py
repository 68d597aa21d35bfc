"""The control protocol on its own: every message, however hostile, is parsed or refused with a
short error, never an exception; parameters are checked all at once."""

from __future__ import annotations

import json

import pytest

from rain_core.driving import DrivingSettings
from server.sessions.control import (
    MAX_MESSAGE_BYTES,
    ControlError,
    ParamsError,
    check_params,
    error_reply,
    parse_request,
)

# Far below any peer's SCTP message limit (aiortc's default for a peer that names none: 64 kB).
MAX_REPLY_BYTES = 1024


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


HOSTILE = {
    "too large": (json.dumps({"id": "x" * 120_000, "type": "pause"}), "limit is"),
    "binary": (b'{"type": "pause"}', "not binary"),
    "not JSON": ("{not json", "not valid JSON"),
    "a 5000-digit integer": ('{"id": 8, "type": "params", "params": {"fps": ' + "9" * 5000 + "}}", "not valid JSON"),
    "nested 100,000 deep": (_deep(100_000), "limit is"),
    "nested 8,000 deep": (_deep(8_000), "nested too deeply"),
    "not an object": ("[1, 2]", "must be a JSON object"),
    "a long id": (json.dumps({"id": "x" * 10_000, "type": "pause"}), "id must be"),
    "an object id": (json.dumps({"id": {"a": 1}, "type": "pause"}), "id must be"),
    "a boolean id": (json.dumps({"id": True, "type": "pause"}), "id must be"),
    "an inexact id": (json.dumps({"id": 2**60, "type": "pause"}), "id must be"),
    "a NaN id": ('{"id": NaN, "type": "pause"}', "id must be"),
    "a long type": (json.dumps({"id": 1, "type": "t" * 10_000}), "unknown message type"),
    "an unknown type": (json.dumps({"id": 1, "type": "dance"}), "unknown message type 'dance'"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_messages_are_refused_briefly(name: str) -> None:
    message, error = HOSTILE[name]
    with pytest.raises(ControlError) as refused:
        parse_request(message)
    assert error in str(refused.value)
    reply = error_reply(str(refused.value), request_id=refused.value.request_id, kind=refused.value.kind)
    assert not reply["ok"] and len(json.dumps(reply)) < MAX_REPLY_BYTES
    # What the reply echoes is what the client can match it with, and nothing long.
    assert reply["id"] in (None, 1) and reply["type"] in (None, "pause", "dance")


def test_a_good_message_and_the_limit() -> None:
    request = parse_request(json.dumps({"id": "a-1", "type": "params", "params": {"fps": 12}}))
    assert (request.id, request.type, request.params) == ("a-1", "params", {"fps": 12})
    padded = json.dumps({"id": 1, "type": "pause", "pad": "x" * (MAX_MESSAGE_BYTES - 100)})
    assert len(padded) < MAX_MESSAGE_BYTES and parse_request(padded).type == "pause"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("fast", "params must be an object"),
        ({"fps": 0}, "fps: must be a number from 1 to 30"),
        ({"fps": 1e-9}, "fps: must be a number from 1 to 30"),
        ({"fps": 0.99}, "fps: must be a number from 1 to 30"),
        ({"fps": True}, "fps: must be a number"),
        ({"fps": 31}, "from 1 to 30"),
        ({"fps": "x" * 10_000}, "fps: must be a number"),
        ({f"k{i}": i for i in range(5000)}, "Extra inputs are not permitted"),
        ({"calibration": json.loads('{"a": ' * 900 + "1" + "}" * 900)}, "calibration"),
        ({"crop_ratio": 0, "fps": 12}, "crop_ratio"),
    ],
)
def test_bad_params_are_refused_briefly(params, message: str) -> None:
    with pytest.raises(ParamsError, match=message) as refused:
        check_params(params, max_fps=30, current=DrivingSettings())
    assert len(str(refused.value)) < MAX_REPLY_BYTES


def test_params_are_checked_without_being_applied() -> None:
    current = DrivingSettings()
    assert check_params({"fps": 1}, max_fps=30, current=current).fps == 1  # the floor itself
    change = check_params({"fps": 12, "mirror": True}, max_fps=30, current=current)
    assert change.fps == 12 and change.driving.mirror and not current.mirror
    assert check_params({}, max_fps=30, current=current) == type(change)(fps=None, driving=current)
