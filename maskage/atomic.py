"""Files written so that an interrupted run leaves the previous version whole (a temporary file beside it, then a
rename), and the files' hashes. The one home of both: every writer of a model, checkpoint, cache entry or CSV
goes through ``atomic_path``."""
from __future__ import annotations

import csv
import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix, for writers that choose a format by it) to write to; it
    replaces ``path`` when the block ends without an error and is removed when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def torch_save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through a file object (the archive's inner name then never holds the temporary name, so equal
    objects give equal bytes), atomically."""
    import torch

    with atomic_path(path) as tmp, tmp.open("wb") as f:
        torch.save(obj, f)
    return Path(path)


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2))
    return Path(path)


def write_csv_atomic(path: str | Path, header: Sequence[str], rows: Iterable[Sequence | Mapping]) -> Path:
    """Write a CSV with ``header``; rows are sequences in header order or dicts keyed by it."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for row in rows:
            w.writerow([row.get(k, "") for k in header] if isinstance(row, Mapping) else row)
    return Path(path)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
