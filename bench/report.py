"""One way for every benchmark to report: a Markdown table on stdout (ready
to paste into docs/benchmarks.md) and the same rows as JSON in
``bench/results/<name>.json``, with what produced them, so numbers in the
docs can be traced to a run and compared between runs.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return "" if value is None else str(value)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows as a Markdown table; columns default to the keys in first-seen order."""
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += ["| " + " | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) + " |" for r in cells]
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    """What a number depends on besides the code."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "system": platform.system(),
        "cpus": os.cpu_count(),
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
    }


def report(
    name: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    title: str | None = None,
    columns: Sequence[str] | None = None,
    notes: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Print *rows* as a table and write them to ``bench/results/<name>.json``.

    Returns the JSON path. *notes* are printed under the table and stored;
    *extra* holds any further machine-readable figures.
    """
    if title:
        print(f"\n{title}\n")
    print(table(rows, columns))
    for note in notes:
        print(f"\n{note}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "name": name,
        "title": title,
        "environment": environment(),
        "columns": list(columns) if columns else None,
        "rows": [dict(r) for r in rows],
        "notes": list(notes),
        "extra": dict(extra or {}),
    }
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"\n(written to {path.relative_to(RESULTS.parent.parent)})")
    return path
