"""`python -m stubserver --port 0 --latency-ms 200 --fail slot=2:500`: serve until SIGTERM/SIGINT.

Once listening it prints one JSON line `{"host": ..., "port": ..., "pid": ...}` to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence

from stubserver.server import FaultRule, make_server, serve_forever


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stubserver", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on start)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before each answer")
    parser.add_argument(
        "--fail", action="append", default=[], metavar="RULE",
        help="fault rule [run=R,][slot=S]:STATUS[:times=K][:retry_after=S], e.g. slot=2:500; repeatable",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rules = [FaultRule.parse(spec) for spec in args.fail]
        server = make_server(args.host, args.port, args.latency_ms, rules)
    except (ValueError, OSError) as exc:
        print(f"stubserver: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(json.dumps({"host": server.host, "port": server.port, "pid": os.getpid()}), flush=True)
    serve_forever(server, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
