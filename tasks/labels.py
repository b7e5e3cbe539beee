"""What Flower and the worker events show as a task's arguments: its parameters by name, short.

Celery shows `repr(args)`, cut at 1 KiB. A chord callback's first argument is the list of every
header result, so a tally's run id came last and was cut off once a panel had a dozen voters.
`LabelledTask` (the app's task class, see worker.py) sends `argsrepr` as `slot=1 model=…
run_id=…`, with a list shown as its length, on every send: first sends, retries, chord callbacks.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from celery import Task

MAX_VALUE_CHARS = 80


def describe_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return f"<{len(value)} items>"
    if isinstance(value, Mapping):
        return f"<{len(value)} keys>"
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def describe_call(names: Sequence[str], args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """`slot=1 model=claude-haiku-4-5 run_id=ab12…`: the arguments named after the parameters.

    Ids go last: Flower's tasks table cuts the cell, and a run id is the same on every row of a run,
    while the slot and the model tell the rows apart."""
    pairs = list(zip(names, args, strict=False))
    pairs += [(f"arg{i}", a) for i, a in enumerate(args[len(names):], start=len(names))]
    pairs += list(kwargs.items())
    pairs.sort(key=lambda pair: pair[0] == "id" or pair[0].endswith("_id"))
    return " ".join(f"{name}={describe_value(value)}" for name, value in pairs)


def parameter_names(task: Task) -> list[str]:
    params = inspect.signature(task.run).parameters.values()
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


class LabelledTask(Task):  # type: ignore[misc]
    def apply_async(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
                    **options: Any) -> Any:
        if options.get("argsrepr") is None:
            options["argsrepr"] = describe_call(parameter_names(self), args or (), kwargs or {})
            options["kwargsrepr"] = ""
        return super().apply_async(args, kwargs, **options)
