"""What a client can get wrong about sessions and viewers (the API maps each to a status)."""

from __future__ import annotations


class CapacityError(RuntimeError):
    """No room for one more session (or viewer); try again later."""


class UnknownSession(KeyError):
    def __str__(self) -> str:
        return "unknown or expired session"


class SessionGone(UnknownSession):
    """The session's server (a cluster's replica) is gone, or did not answer in time: the stream ended."""

    def __str__(self) -> str:
        return "the stream ended: the server that ran this session is gone"


class UnknownViewer(KeyError):
    def __str__(self) -> str:
        return "unknown viewer"


class NoViewToken(PermissionError):
    def __str__(self) -> str:
        return "a view token is required (?token=... or Authorization: Bearer ...)"


class BadViewToken(PermissionError):
    def __str__(self) -> str:
        return "invalid view token"
