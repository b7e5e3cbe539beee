"""Why a run or one of its calls failed, in words, for every human view (`chorus report`, its HTML
page, `chorus status`, `chorus section`): the same reason `--json` carries, never a bare "-".

A call failed when its status is failed or cancelled; a voter that returned without a valid label
(an abstention) has its reason in `error` too. Skipped voters (adaptive voting) are not failures.
Identical reasons are told once, with every call they hit.
"""

from __future__ import annotations

from typing import Any

FAILED_CALLS = ("failed", "cancelled")


def call_failed(outcome: Any) -> bool:
    """A call with a reason to show: it failed, was cancelled, or (a voter) returned no valid label."""
    if outcome.status in FAILED_CALLS:
        return True
    return outcome.status == "succeeded" and outcome.role == "voter" and outcome.answer is None \
        and bool(outcome.error)


def who(outcome: Any) -> str:
    """How a call is named in a reason: `section 2 (Install)`, `voter 1 (lead)`, `worker 3 (Indemnity)`."""
    name = outcome.prompt_variant if outcome.role == "voter" else outcome.title
    return f"{outcome.role} {outcome.slot}" + (f" ({name})" if name else "")


def call_reasons(run: Any) -> list[str]:
    """One line per distinct reason of the run's failed calls: "voter 0 (direct), voter 1 (lead): abstained: …"."""
    grouped: dict[str, list[str]] = {}
    for o in sorted(run.outcomes, key=lambda o: o.slot):
        if call_failed(o):
            grouped.setdefault(o.error or f"{o.status} (no reason was recorded)", []).append(who(o))
    return [f"{', '.join(names)}: {reason}" for reason, names in grouped.items()]


def has_failure(run: Any) -> bool:
    """A run to explain: it did not succeed, or a vote that decided nothing, or a call of it failed."""
    if run.status != "succeeded":
        return True
    if run.pattern == "vote" and run.answer is None:
        return True
    return any(o.status in FAILED_CALLS for o in run.outcomes)


def failure_reason(run: Any) -> str | None:
    """Why the run has no full result: its own error, then its failed calls' reasons; None when it has
    nothing to explain. A run still in flight says so rather than guess."""
    if not has_failure(run):
        return None
    if run.status in ("pending", "running"):
        return f"still {run.status}"
    parts = [run.error] if run.error else []
    parts += [r for r in call_reasons(run) if r not in parts]
    return "; ".join(parts) or f"{run.status} (no reason was recorded)"


def failures(runs: Any) -> list[dict[str, Any]]:
    """Every run with something to explain: its document id, run id, status and reason."""
    return [{"id": r.external_id, "run_id": r.id, "status": r.status, "reason": failure_reason(r)}
            for r in runs if has_failure(r)]
