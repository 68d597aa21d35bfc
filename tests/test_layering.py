"""rain_core is the model library; it must not depend on the server or the command line."""

from __future__ import annotations

import ast
from pathlib import Path

RAIN_CORE = Path(__file__).resolve().parents[1] / "rain_core"


def test_rain_core_never_imports_server_or_cli():
    offenders = []
    for path in RAIN_CORE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            above = [n for n in names if n.split(".")[0] in ("server", "cli")]
            offenders += [f"{path.relative_to(RAIN_CORE.parent)}: {n}" for n in above]
    assert offenders == []
