"""Reading the CSV tables maskage is given (labels, predictions, face lists): one error type naming file and line."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

from .errors import MaskageError


class DatasetError(MaskageError, ValueError):
    """A dataset that does not follow the expected layout; the message names the file and row."""


def read_csv_rows(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a CSV as dicts of stripped strings; DatasetError naming the file (and line) when the file is
    missing or unreadable, a required column is missing, or a row has more fields than the header."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            missing = [c for c in required if c not in fields]
            if missing:
                raise DatasetError(f"{path}: missing column(s) {missing}; found {fields}")
            rows = []
            for row in reader:
                if None in row:
                    raise DatasetError(f"{path} line {reader.line_num}: more fields than the header's {len(fields)}")
                rows.append({k: (v or "").strip() for k, v in row.items()})
            return rows
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise DatasetError(f"{path}: not a readable CSV ({exc})") from None
