"""Build a labelled set from the manual pages installed on this machine (nobody wrote them for chorus).

Each document is one man page rendered to plain text (`man -l -P cat`), labelled by its section:
1 command, 2 system call, 3 library function, 5 file format, 8 administration. The header and
footer lines are dropped because they print the section number (the answer). Pages that only
redirect to another (`.so`), duplicate texts and a second page of the same family (`gcloud_…`) are
skipped; the choice is deterministic (every k-th page of the sorted list).

    python -m bench.manpages --out /tmp/manpages.jsonl --per-section 12
    python -m bench.manpages --out /tmp/long.jsonl --per-section 4 --min-chars 20000
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

MAN_ROOT = Path("/usr/share/man")
SECTIONS = {"1": "command", "2": "system call", "3": "library function", "5": "file format", "8": "administration"}
LABELS = ",".join(SECTIONS.values())


def _raw(path: Path) -> str:
    data = path.read_bytes()
    return (gzip.decompress(data) if path.suffix == ".gz" else data).decode("utf-8", "replace")


def render(path: Path) -> str:
    env = {**os.environ, "MANWIDTH": "80", "LANG": "C.UTF-8", "MAN_KEEP_FORMATTING": ""}
    text = subprocess.run(["man", "-l", "-P", "cat", str(path)], capture_output=True, text=True, env=env,
                          timeout=30, check=False).stdout
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines[1:-1]).strip()  # drop the header and footer: they print the section


def pages(section: str) -> list[Path]:
    folder = MAN_ROOT / f"man{section}"
    found = []
    for path in sorted(folder.iterdir()):
        name = path.name.removesuffix(".gz")
        if not name.endswith(f".{section}"):  # 3pm, 3ssl, ...: other subsections
            continue
        if _raw(path).lstrip().startswith(".so "):
            continue
        found.append(path)
    return found


def build(per_section: int, min_chars: int) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    for section, label in SECTIONS.items():
        candidates = pages(section)
        step = max(1, len(candidates) // (per_section * 2))
        taken = 0
        families: set[str] = set()
        for path in candidates[::step] + candidates:
            if taken >= per_section:
                break
            family = re.split(r"[_.-]", path.name.lstrip("_"), maxsplit=1)[0].lower()
            if family in families:  # one page per family: gcloud alone has thousands of section-1 pages
                continue
            text = render(path)
            digest = hashlib.sha256(text.encode()).hexdigest()
            if len(text) < max(min_chars, 200) or digest in seen:
                continue
            seen.add(digest)
            families.add(family)
            rows.append({"id": path.name.removesuffix(".gz"), "label": label, "text": text,
                         "source": str(path)})
            taken += 1
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-section", type=int, default=12)
    parser.add_argument("--min-chars", type=int, default=0, help="skip shorter pages (e.g. 20000 for long ones)")
    args = parser.parse_args(argv)
    rows = build(args.per_section, args.min_chars)
    args.out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows)} documents -> {args.out}; labels: {LABELS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
