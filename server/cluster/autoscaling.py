"""Serve's autoscaling on live sessions: as many avatar replicas as the sessions need, plus room for one more.

Serve's own policy scales on ongoing requests, but a session is one offer and then minutes of
media that Serve never sees; each replica reports its live sessions instead
(`AvatarReplica.record_autoscaling_stats`), and this policy wants ceil((sessions + 1) /
MAX_SESSIONS) replicas within the configured bounds. Imported by Serve's controller: no heavy imports.
"""

from __future__ import annotations

import math
from typing import Any

SESSIONS_METRIC = "sessions"


class SessionsPolicy:
    def __init__(self, max_sessions: int):
        self.max_sessions = max_sessions

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        sessions = sum((ctx.aggregated_metrics or {}).get(SESSIONS_METRIC, {}).values())
        wanted = math.ceil((sessions + 1) / self.max_sessions)
        return max(ctx.capacity_adjusted_min_replicas, min(ctx.capacity_adjusted_max_replicas, wanted)), {}
