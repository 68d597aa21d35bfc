"""TURN credentials that expire: coturn's `use-auth-secret` (the "TURN REST API" scheme).

The server and coturn share one secret; the secret itself never leaves the server. For each page
load, WHEP viewer and peer connection of its own the server mints a credential that coturn
checks on its own, with no database: username `<expiry unix time>:<name>`, credential
`base64(HMAC-SHA1(secret, username))`. Whoever copies one from a page can relay only until
it expires, and rotating the secret revokes every one at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from server.core.config import IceServer, Settings

# What a minted username may name (it shows in coturn's log): no ':' (the scheme's separator).
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def mint_turn_credential(secret: str, name: str, ttl: int, *, now: float | None = None) -> tuple[str, str]:
    """(username, credential) for coturn's `static-auth-secret`, valid `ttl` seconds from `now`."""
    if not name or len(name) > 64 or not set(name) <= _NAME_CHARS:
        raise ValueError(f"a TURN credential name is 1-64 letters, digits, '-', '_' or '.' (got {name[:64]!r})")
    if ttl <= 0:
        raise ValueError(f"a TURN credential's ttl must be positive (got {ttl})")
    expiry = int(time.time() if now is None else now) + ttl
    username = f"{expiry}:{name}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def ice_servers(settings: Settings, name: str) -> list[IceServer]:
    """The ICE servers to use or hand out now: the static `ICE_SERVERS`, then the `TURN_URLS`
    with a freshly minted credential when a `TURN_SECRET` is set."""
    servers = list(settings.ICE_SERVERS)
    if settings.TURN_SECRET is not None:
        username, credential = mint_turn_credential(settings.TURN_SECRET.get_secret_value(), name, settings.TURN_TTL)
        servers.append(IceServer(urls=list(settings.TURN_URLS), username=username, credential=credential))
    return servers
