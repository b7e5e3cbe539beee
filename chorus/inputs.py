"""Reading the documents of a batch: a folder of .txt/.md files, a JSONL file or a CSV file (id, text,
optional label). One record at a time, bad ones included with their reason, so a batch's memory
stays flat and one bad document never stops the others."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

from workflows.errors import ConfigError
from workflows.intake import Record, check_bytes, duplicate, parse_jsonl, record_from, too_big

FOLDER_SUFFIXES = (".txt", ".md")
JSONL_SUFFIXES = (".jsonl", ".ndjson")


def input_kind(path: Path) -> str:
    """'folder', 'jsonl' or 'csv'; anything else is refused before anything is written."""
    if not path.exists():
        raise ConfigError(f"no such file or folder: {path}")
    if path.is_dir():
        return "folder"
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix == ".csv":
        with path.open(encoding="utf-8", errors="replace", newline="") as f:
            header = next(csv.reader(f), [])
        missing = [c for c in ("id", "text") if c not in [h.strip().lower() for h in header]]
        if missing:
            raise ConfigError(f"{path}: the CSV header has no {' or '.join(missing)} column "
                              f"(found: {', '.join(header) or 'nothing'}); it needs id, text and optionally label")
        return "csv"
    raise ConfigError(f"{path}: give a folder of .txt/.md files, a .jsonl file or a .csv file")


def read_records(path: Path, max_bytes: int) -> Iterator[Record]:
    """Every input document in order, bad ones included (with their reason); one at a time."""
    kind = input_kind(path)
    seen: dict[str, str] = {}
    for n, (where, record) in enumerate(_raw_records(path, kind, max_bytes), 1):
        if record.key in seen:
            yield duplicate(record, seen[record.key], where, n)
            continue
        seen[record.key] = where
        yield record


def _raw_records(path: Path, kind: str, max_bytes: int) -> Iterator[tuple[str, Record]]:
    if kind == "folder":
        for file in sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in FOLDER_SUFFIXES):
            size = file.stat().st_size
            if size > max_bytes:
                yield file.name, Record(file.name, None, error=too_big(size, max_bytes), size=size)
                continue
            text, reason = check_bytes(file.read_bytes(), max_bytes)
            yield file.name, Record(file.name, text, error=reason, size=size)
    elif kind == "jsonl":
        with path.open("rb") as f:
            for lineno, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield (f"line {lineno}", Record(f"line-{lineno}", None,
                                                    error=f"line {lineno}: invalid UTF-8 at byte {exc.start}"))
                    continue
                yield f"line {lineno}", parse_jsonl(line, lineno, max_bytes)
    else:
        with path.open("rb") as fb:
            reader = csv.DictReader(io.TextIOWrapper(fb, encoding="utf-8", errors="strict", newline=""))
            reader.fieldnames = [h.strip().lower() for h in reader.fieldnames or []]
            row_no = 1
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except UnicodeDecodeError as exc:
                    yield f"row {row_no + 1}", Record(f"row-{row_no + 1}", None,
                                                      error=f"invalid UTF-8 at byte {exc.start}; the rest of the "
                                                            "file cannot be read")
                    return
                row_no += 1
                where = f"row {row_no}"
                if None in row.values():
                    absent = [k for k, v in row.items() if v is None and k in ("id", "text")]
                    if absent:
                        yield where, Record(row.get("id") or f"row-{row_no}", None,
                                            error=f"{where}: missing column(s) {', '.join(absent)}")
                        continue
                yield where, record_from(dict(row), where, f"row-{row_no}", max_bytes)


def count_records(path: Path) -> int:
    """How many documents the input holds (a quick pass that keeps nothing)."""
    kind = input_kind(path)
    if kind == "folder":
        return sum(1 for p in path.iterdir() if p.is_file() and p.suffix.lower() in FOLDER_SUFFIXES)
    if kind == "jsonl":
        with path.open("rb") as f:
            return sum(1 for line in f if line.strip())
    with path.open(encoding="utf-8", errors="replace", newline="") as f:
        return max(0, sum(1 for _ in csv.reader(f)) - 1)
