"""Writing files so that an interrupted run leaves the previous version whole: a temp file, then a rename."""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence


def write_csv_atomic(path: str | Path, header: Sequence[str], rows: Iterable[Sequence | Mapping]) -> Path:
    """Write a CSV with ``header``; rows are sequences in header order or dicts keyed by it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for row in rows:
            w.writerow([row.get(k, "") for k in header] if isinstance(row, Mapping) else row)
    os.replace(tmp, path)
    return path
