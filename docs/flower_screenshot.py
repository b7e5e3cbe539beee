"""Screenshot a Flower page with headless Chromium (Debian's `chromium` package).

    python docs/flower_screenshot.py --url http://127.0.0.1:5555 --user admin --password "$FLOWER_PASSWORD"

writes docs/flower-tasks.png (the tasks page). Flower's basic auth travels in the URL; Chromium
answers the 401 challenge with those credentials and reuses them for the page's own requests (the
tasks table is loaded by a script after the page). `--dump-dom` prints the rendered page instead:
docs/operations.md shows how to check a vote's task ids are in it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

DOCS = Path(__file__).resolve().parent
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
    "--no-first-run", "--disable-component-update", "--disable-sync", "--no-proxy-server",
    "--hide-scrollbars",
]


def page_url(base: str, page: str, user: str, password: str) -> str:
    parts = urllib.parse.urlsplit(base.rstrip("/") + page)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}@{host}" if user else host
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise SystemExit("chromium is not installed: apt-get install chromium")
    return found


def render(url: str, *, out: Path | None, size: str = "1400,900", wait_ms: int = 10000, timeout: float = 90) -> str:
    """Run Chromium on `url`: a PNG at `out`, or (out=None) the rendered DOM, which is returned."""
    with tempfile.TemporaryDirectory(prefix="chorus-chromium-") as profile:
        action = [f"--screenshot={out}"] if out else ["--dump-dom"]
        cmd = [chromium(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={size}",
               f"--virtual-time-budget={wait_ms}", *action, url]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0 or (out is not None and not out.exists()):
        raise SystemExit(f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:5555", help="Flower's address")
    parser.add_argument("--page", default="/tasks", help="page to take, e.g. /tasks or /workers")
    parser.add_argument("--user", default=os.environ.get("FLOWER_USER", "admin"))
    parser.add_argument("--password", default=os.environ.get("FLOWER_PASSWORD", ""))
    parser.add_argument("--out", type=Path, default=DOCS / "flower-tasks.png")
    parser.add_argument("--size", default="1400,900", help="window width,height")
    parser.add_argument("--dump-dom", action="store_true", help="print the rendered page instead of a PNG")
    args = parser.parse_args(argv)
    url = page_url(args.url, args.page, args.user, args.password)
    if args.dump_dom:
        sys.stdout.write(render(url, out=None, size=args.size))
    else:
        args.out.unlink(missing_ok=True)
        render(url, out=args.out.resolve(), size=args.size)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
