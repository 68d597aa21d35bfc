"""Log lines of one connection, prefixed with its label."""

from __future__ import annotations

import logging


class Prefixed(logging.LoggerAdapter):
    """Prefixes every message with the connection's label (never its secret id)."""

    def process(self, msg, kwargs):
        return f"[{self.extra['label']}] {msg}", kwargs
