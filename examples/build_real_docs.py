"""Build a JSONL batch of real documents from this machine: Debian package copyright files.

    python examples/build_real_docs.py --count 80 > /tmp/copyrights.jsonl
    chorus batch /tmp/copyrights.jsonl --pattern vote --labels gpl,bsd,mit,apache,other

Each line is {"id": <package>, "text": <its /usr/share/doc/<package>/copyright>}. Which licence a
package uses is a real question the files answer, so the vote means something. Packages are taken
in name order; files over `--max-bytes` are skipped so the batch stays quick.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=80)
    parser.add_argument("--max-bytes", type=int, default=20_000)
    parser.add_argument("--root", type=Path, default=Path("/usr/share/doc"))
    args = parser.parse_args(argv)
    written = 0
    for path in sorted(args.root.glob("*/copyright")):
        if written >= args.count:
            break
        if path.is_symlink() or path.stat().st_size > args.max_bytes:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        sys.stdout.write(json.dumps({"id": path.parent.name, "text": text}) + "\n")
        written += 1
    print(f"{written} documents from {args.root}/*/copyright", file=sys.stderr)
    return 0 if written else 1


if __name__ == "__main__":
    raise SystemExit(main())
