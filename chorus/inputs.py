"""Reading the documents of a batch: a folder of files of any kind (PDF, image, Word, HTML, text;
with `recursive`, its subfolders too), a JSONL file or a CSV file (id, text or path, optional label;
a `path` names a file, relative to the input file). One record at a time, bad ones included with
their reason (a file of a kind chorus cannot read is a failed document, never skipped), so a batch's
memory stays flat and one bad document never stops the others."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

from chorus.documents import read_path
from chorus.native import as_input
from workflows.calls import Attachment
from workflows.documents import SUFFIXES, Kind, sniff
from workflows.errors import ConfigError
from workflows.intake import Record, check_text, duplicate, parse_jsonl, record_from

JSONL_SUFFIXES = (".jsonl", ".ndjson")
# Files of a folder that are never documents: the operating system's and editors' own.
IGNORED_NAMES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


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
        columns = [h.strip().lower() for h in header]
        missing = [c for c in ("id", "text") if c not in columns and not (c == "text" and "path" in columns)]
        if missing:
            raise ConfigError(f"{path}: the CSV header has no {' or '.join(missing)} column "
                              f"(found: {', '.join(header) or 'nothing'}); it needs id, text (or path, a file) "
                              "and optionally label")
        return "csv"
    raise ConfigError(f"{path}: give a folder of documents (PDF, images, Word, HTML, text), a .jsonl file or a "
                      ".csv file; for one document, use chorus vote or chorus section")


def read_records(path: Path, max_bytes: int, *, max_file_bytes: int | None = None,
                 recursive: bool = False) -> Iterator[Record]:
    """Every input document in order, bad ones included (with their reason); one at a time. Text is
    held to `max_bytes`; a file (of a folder, or named by a row's `path`) to `max_file_bytes`."""
    kind = input_kind(path)
    file_cap = max_file_bytes or max_bytes
    seen: dict[str, str] = {}
    for n, (where, record) in enumerate(_raw_records(path, kind, max_bytes, file_cap, recursive), 1):
        if record.path is not None:
            record = read_file_record(record, (path.parent / record.path), where, max_bytes, file_cap)
        if record.key in seen:
            yield duplicate(record, seen[record.key], where, n)
            continue
        seen[record.key] = where
        yield record


def folder_files(path: Path, recursive: bool) -> list[Path]:
    """The files of a folder in a stable order (by relative path): every file, hidden ones included,
    but the operating system's own (.DS_Store, Thumbs.db) and, with `recursive`, what hidden folders
    hold (.git); `left_out` counts those, so that a summary can say so."""
    return sorted((p for p in _walk(path, recursive) if _kept(path, p)), key=lambda p: p.relative_to(path).as_posix())


def left_out(path: Path, recursive: bool) -> int:
    """How many files of the folder `folder_files` leaves out (system files, hidden folders' files)."""
    return sum(1 for p in _walk(path, recursive) if not _kept(path, p))


def _walk(path: Path, recursive: bool) -> Iterator[Path]:
    return (p for p in (path.rglob("*") if recursive else path.iterdir()) if p.is_file())


def _kept(root: Path, file: Path) -> bool:
    parts = file.relative_to(root).parts
    return file.name not in IGNORED_NAMES and not any(part.startswith(".") for part in parts[:-1])


def read_file(file: Path, key: str, max_bytes: int, max_file_bytes: int, label: str | None = None) -> Record:
    """One file as a record: its kind, its text (and for a PDF or image its bytes), or why it failed."""
    try:
        doc = read_path(file, max_file_bytes)
    except ConfigError as exc:
        return Record(key, None, label, error=str(exc), size=_size(file), kind=_suffix_kind(file))
    document = as_input(doc)
    size = doc.size
    if isinstance(document, Attachment):
        return Record(key, document.text, label, None, size, kind=document.kind, native=document)
    text, reason = check_text(document, max_bytes)
    if reason is not None:
        reason = f"{file.name}: {reason}" + (" (the text converted from it)" if doc.kind.value != "text" else "")
    return Record(key, text, label, reason, size, kind=doc.kind.value)


def read_file_record(record: Record, file: Path, where: str, max_bytes: int, max_file_bytes: int) -> Record:
    if not file.is_file():
        return Record(record.key, None, record.label, error=f"{where}: no such file: {file}")
    return read_file(file, record.key, max_bytes, max_file_bytes, record.label)


def _size(file: Path) -> int | None:
    try:
        return file.stat().st_size
    except OSError:
        return None


def _suffix_kind(file: Path) -> str:
    """The kind of a file that could not be read (for the summary's count per kind): by its first bytes
    where they say (a PDF named .txt is a PDF), else by its suffix."""
    try:
        with file.open("rb") as f:
            head = f.read(64 * 1024)
    except OSError:
        head = b""
    sniffed = sniff(head, file.name).kind if head else None
    if sniffed is not None and sniffed is not Kind.TEXT:
        return sniffed.value
    kind = SUFFIXES.get(file.suffix.lower())
    if kind is not None:
        return kind.value
    suffix = file.suffix.lower().lstrip(".")
    return suffix[:16] if suffix else "unknown"


def _raw_records(path: Path, kind: str, max_bytes: int, max_file_bytes: int,
                 recursive: bool) -> Iterator[tuple[str, Record]]:
    if kind == "folder":
        for file in folder_files(path, recursive):
            key = file.relative_to(path).as_posix()
            yield key, read_file(file, key[:200], max_bytes, max_file_bytes)
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


def count_records(path: Path, *, recursive: bool = False) -> int:
    """How many documents the input holds (a quick pass that keeps nothing)."""
    kind = input_kind(path)
    if kind == "folder":
        return len(folder_files(path, recursive))
    if kind == "jsonl":
        with path.open("rb") as f:
            return sum(1 for line in f if line.strip())
    with path.open(encoding="utf-8", errors="replace", newline="") as f:
        return max(0, sum(1 for _ in csv.reader(f)) - 1)
