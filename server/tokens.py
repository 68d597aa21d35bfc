"""Unguessable names: sessions, view tokens, viewers and uploaded references are each named by
128 random bits from `secrets`, and whoever knows a name may use what it names."""

from __future__ import annotations

import secrets

# The longest id or token accepted from a client (the server's own are 22 characters).
MAX_TOKEN_CHARS = 64


def new_token() -> str:
    return secrets.token_urlsafe(16)


def same_token(given: str, expected: str) -> bool:
    """Compared in constant time: the time taken says nothing of how much of `given` was right."""
    return secrets.compare_digest(given.encode(), expected.encode())
