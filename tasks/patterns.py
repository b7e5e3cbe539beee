"""The worker side's pattern registry: what differs between vote, section and any later pattern.

Dispatch, the reaper, the batch lane, the request builder and cancel never ask which pattern a run
is: they look up its `PatternEntry` (`entry(run.pattern)`, or `for_role(slot.role)` for one call)
and call what it holds. Each pattern module registers its own entry when it is imported
(`register(...)` at the end of tasks/vote.py and tasks/section.py). `tasks.all_patterns` imports
every pattern module: a module that reads the registry without being called from a pattern's own
task (the reaper, the lane, the client) imports it, and the worker imports them all at start
(worker.TASK_MODULES). This module imports no pattern module, so each of them can register here.

To add a pattern (say `orchestrate`):

1. add its value to `models.tables.Pattern` and the roles of its slots to `OutcomeRole` (stored as plain
   strings: no migration), and to `CALL_ROLES` the roles of single calls the reaper may re-send;
2. write `tasks/orchestrate.py`: its call task (the body is `tasks.calls.run_slot`), its callbacks,
   and the functions a `PatternEntry` names, then `register(PatternEntry(...))` at its end;
3. import it in `tasks.all_patterns` and add it to `worker.TASK_MODULES` (tests/test_pattern_seam.py
   checks both).

Nothing else on the worker side changes. The client side is one `chorus.plans.Plan` class.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from models import OutcomeRole, Pattern

# (claim, config, text) -> CallRequest; (claim, config, request, result) -> CallRequest | None; ...
# Typed loosely: the entries are called with repo.Claim, CallRequest and CallResult values.
Builder = Callable[..., Any]


@dataclass(frozen=True)
class PatternEntry:
    """Everything the worker side does differently for one pattern.

    - `roles`: the roles of its slots; a slot's role finds its pattern (`for_role`).
    - `call_task`: the name of the Celery task that makes one call (its body is `tasks.calls.run_slot`).
    - `spec(config)`: the stored config read back as the pattern's run spec (`workflows.runspec`).
    - `build_request(claim, spec, text, tags)`: the request of one slot (`tasks.requests` passes the
      spec, the document's text, and Flower's tags); `interpret(claim, spec, config, result)`: the
      outcome fields a paid reply means, beyond its text and usage; `retry_request(claim, spec,
      request, result)`: the one retry a paid reply gets before its slot fails (None: no retry).
    - `send(app, run_id, config, callback_id)`: send a stored run's messages; the AsyncResult is its
      callback's. `callback_ends_run`: that callback's result is the run's end (a vote's tally), so a
      client may wait on it; otherwise only the database says when the run ends.
    - `finish(app, run_id)`: the reaper's way to end a run whose slots are all done (or expired) when
      its callback never came; it may also go on with the run (send a next wave or level).
    - `lane_callback(app, run_id)`: what the batch lane runs once a lane run's slots are all done (what
      its chord would have run). It returns a dict; `"released": [...]` asks the lane for a collect now.
    - `settle(run_id)`: for a run whose slots have all finished when it is cancelled, the function that
      finishes it with its real result (a vote's tally) instead of cancelling it; None: cancel it.
    - `call_noun`: what one call of its runs is called in a reason ("voter", "call").
    - `shows`: how `chorus status` prints a run: "tally" (answer and confidence), "synthesis" (text) or
      "plan" (the plan's subtasks, each call by its subtask, and the synthesis).
    - `shares_prefix`: its calls read one shared prefix, so the minimum cost is one cache write and reads
      (`chorus.costing.shared_prefixes`, which reads the config as a vote's: labels and voters).
    """

    pattern: Pattern
    roles: frozenset[OutcomeRole]
    call_task: str
    spec: Callable[[dict[str, Any]], Any]
    build_request: Builder
    interpret: Builder
    send: Builder
    finish: Callable[[Any, str], dict[str, Any]]
    lane_callback: Callable[[Any, str], dict[str, Any]]
    retry_request: Builder | None = None
    settle: Callable[[str], dict[str, Any]] | None = None
    callback_ends_run: bool = False
    call_noun: str = "call"
    shows: str = "synthesis"
    shares_prefix: bool = False


_REGISTRY: dict[Pattern, PatternEntry] = {}


def register(new: PatternEntry) -> PatternEntry:
    """Add a pattern's entry (its module does, once, when imported). A role belongs to one pattern."""
    for other in _REGISTRY.values():
        if other.pattern is not new.pattern and other.roles & new.roles:
            raise ValueError(f"roles {sorted(other.roles & new.roles)} already belong to pattern {other.pattern}")
    _REGISTRY[new.pattern] = new
    return new


def registry() -> Mapping[Pattern, PatternEntry]:
    """Every registered pattern's entry (all of them once `tasks.all_patterns` is imported)."""
    return _REGISTRY


def entry(pattern: Pattern | str) -> PatternEntry:
    """The entry of a run's pattern (a `Pattern` or its stored value)."""
    found = registry().get(Pattern(pattern))
    if found is None:
        raise LookupError(f"no pattern {pattern!r} is registered; import tasks.all_patterns (which imports every "
                          f"pattern's module) before looking one up")
    return found


def for_role(role: OutcomeRole) -> PatternEntry:
    """The entry of the pattern whose runs have slots of this role."""
    for found in registry().values():
        if role in found.roles:
            return found
    raise LookupError(f"no registered pattern has slots of role {role!r}; import tasks.all_patterns first")


def settling() -> frozenset[Pattern]:
    """The patterns whose runs are finished (`settle`), not cancelled, when their slots have all finished."""
    return frozenset(p for p, e in registry().items() if e.settle is not None)
