"""`python -m chorus.embedded.launch ARGS`: `celery ARGS` for the embedded worker, without Python's teardown.

After Celery's warm shutdown (calls in flight finished and recorded, every message acked) and the exit
handlers (logging flushes its files), Python's own finalization still freed every object of Celery,
SQLAlchemy and the task modules one by one: 0.5 to 1 s, measured, on a loaded 2-core machine, which
every embedded command waited for before printing its result. Nothing in it writes data (a committed
SQLite transaction is on disk already), so the process ends with `os._exit` once the exit handlers ran,
with the exit code Celery chose.
"""

from __future__ import annotations

import atexit
import os
import sys


def _code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)  # what `sys.exit("message")` prints
    return 1


def main() -> None:
    from celery.__main__ import main as celery_main  # heavy, and only this process's job: imported here

    sys.argv[0] = "celery"
    try:
        celery_main()
        code = 0
    except SystemExit as exc:
        code = _code(exc)
    atexit._run_exitfuncs()  # what a normal exit runs first: logging.shutdown among them
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
