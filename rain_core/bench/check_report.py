"""The GPU check's report: every section's outcome and figures, as JSON and as markdown.

The report is written again after every section, so that a run cut short (a hung compile, the
device's time limit) still leaves every figure measured before it on disk.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

JSON_NAME = "gpu_check.json"
MARKDOWN_NAME = "gpu_check.md"

# "timeout": the section reached its time limit; its rows are those measured before.
Status = Literal["ok", "error", "skipped", "timeout"]


@dataclass
class SectionReport:
    """One section's outcome: its rows of figures, or why it has none."""

    name: str
    title: str
    status: Status
    seconds: float
    # One dict per measured configuration (a variant, a batch size); a row may carry its own
    # "error" when that configuration failed and the section went on with the next.
    rows: list[dict[str, Any]] = field(default_factory=list)
    # The error text (status "error"), why the section did not run (status "skipped") or where its
    # time ran out (status "timeout").
    reason: str | None = None
    notes: list[str] = field(default_factory=list)
    # The section's time limit (seconds), and the graphs torch.compile compiled while it ran
    # (None: not counted).
    limit_s: float | None = None
    compiled_graphs: int | None = None


@dataclass
class CheckReport:
    environment: dict[str, Any]
    options: dict[str, Any]
    sections: list[SectionReport] = field(default_factory=list)
    elapsed_s: float = 0.0
    finished: bool = False

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["sections"] = {section.name: asdict(section) for section in self.sections}
        return _finite(data)

    def to_markdown(self) -> str:
        lines = ["# GPU check", ""]
        state = "finished" if self.finished else "cut short (the sections below are those that ran)"
        lines.append(f"{state} after {self.elapsed_s:.0f} s.")
        lines.append("")
        lines += ["| environment | |", "| --- | --- |"]
        lines += [f"| {key} | {_cell(value)} |" for key, value in self.environment.items()]
        lines.append("")
        lines += _table([dict(section=s.name, status=s.status, seconds=s.seconds, limit_s=s.limit_s,
                              compiled_graphs=s.compiled_graphs) for s in self.sections])
        counted = [s.compiled_graphs for s in self.sections if s.compiled_graphs is not None]
        if counted:
            lines += ["", f"{sum(counted)} graphs compiled in all."]
        lines.append("")
        for section in self.sections:
            lines.append(f"## {section.title}")
            lines.append("")
            if section.status != "ok":
                lines.append(f"**{section.status}**: {section.reason}")
                lines.append("")
            if section.rows:
                lines += _table(section.rows)
                lines.append("")
            lines += [f"- {note}" for note in section.notes]
            if section.notes:
                lines.append("")
        return "\n".join(lines)

    def write(self, directories: list[Path]) -> list[Path]:
        """Write the JSON and the markdown into each directory (made if missing); returns the files."""
        written = []
        data = json.dumps(self.to_json(), indent=2) + "\n"
        markdown = self.to_markdown() + "\n"
        for directory in directories:
            directory.mkdir(parents=True, exist_ok=True)
            for name, text in ((JSON_NAME, data), (MARKDOWN_NAME, markdown)):
                path = directory / name
                path.write_text(text)
                written.append(path)
        return written


def _table(rows: list[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(column)) for column in columns) + " |")
    return lines


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{key}={_cell(item)}" for key, item in value.items())
    # One line, and no column break, whatever an error text holds.
    return str(value).replace("|", "/").replace("\n", " ")


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: a figure that is not finite becomes None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value
