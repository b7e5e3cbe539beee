"""Read a labelled set for `chorus compare` and `chorus advise`: JSONL or CSV with id, text, label.

A bad row (no text, a label outside the label set, broken JSON) is skipped and reported; the other
documents carry on. A file that cannot be read at all is a ConfigError naming the problem.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from workflows.errors import ConfigError
from workflows.taskfile import canonical_label


@dataclass(frozen=True)
class LabelledDoc:
    id: str
    text: str
    label: str | None


@dataclass
class LabelledSet:
    docs: list[LabelledDoc]
    skipped: list[str] = field(default_factory=list)  # "line 7: no text"

    @property
    def labelled(self) -> bool:
        return bool(self.docs) and all(d.label is not None for d in self.docs)


def _rows(path: Path) -> list[tuple[int, dict[str, object] | str]]:
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder; give one JSONL or CSV file of id, text and label") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        rows: list[tuple[int, dict[str, object] | str]] = []
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                rows.append((n, f"not JSON ({exc.msg})"))
                continue
            rows.append((n, value if isinstance(value, dict) else "not a JSON object"))
        return rows
    if suffix == ".csv":
        reader = csv.DictReader(raw.splitlines())
        header = [h.strip().lower() for h in reader.fieldnames or []]
        if "text" not in header:
            raise ConfigError(f"{path}: the CSV header needs a text column (found: {', '.join(header) or 'none'})")
        return [(n, {k.strip().lower(): v for k, v in row.items() if k}) for n, row in enumerate(reader, 2)]
    raise ConfigError(f"{path}: give a .jsonl or .csv file with id, text and label fields")


def read_labelled(path: Path, labels: Sequence[str], *, limit: int | None = None) -> LabelledSet:
    # Gold labels match case-insensitively and are kept as the label set writes them, so they compare
    # equal to the answers (which are the label as written, see workflows.taskfile.canonical_label).
    result = LabelledSet([])
    seen: dict[str, int] = {}
    for n, row in _rows(path):
        if limit is not None and len(result.docs) >= limit:
            break
        if isinstance(row, str):
            result.skipped.append(f"line {n}: {row}")
            continue
        text = row.get("text")
        if not isinstance(text, str) or not text.strip():
            result.skipped.append(f"line {n}: no text")
            continue
        raw_label = row.get("label")
        label = canonical_label(str(raw_label), labels) if raw_label not in (None, "") else None
        if raw_label not in (None, "") and label is None:
            result.skipped.append(f"line {n}: label {str(raw_label).strip()!r} is not one of {', '.join(labels)}")
            continue
        doc_id = str(row.get("id") or f"line-{n}")
        if doc_id in seen:
            result.skipped.append(f"line {n}: id {doc_id!r} repeats line {seen[doc_id]}")
            continue
        seen[doc_id] = n
        result.docs.append(LabelledDoc(doc_id, text, label))
    if not result.docs:
        detail = f" ({'; '.join(result.skipped[:3])})" if result.skipped else ""
        raise ConfigError(f"{path}: no usable documents{detail}")
    return result
