"""`chorus report RUN_ID|BATCH_ID --html FILE`: one static HTML page that works offline.

No scripts, no CDN: inline CSS and inline SVG only. It shows the per-worker timeline (Gantt) with
wall = slowest worker + overhead, the agreement statistics and correlated errors, the cost
breakdown, the low-agreement items, and each voter's quality (accuracy against gold, double faults,
which voter to drop or rewrite: `workflows.voter_quality`), and why every failed run or call failed
(`chorus.analysis.failures`), as `--json` says it.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from chorus.analysis.advise import agreement_of, voter_quality_of
from chorus.analysis.failures import failure_reason, failures
from chorus.costing import breakdown, minimum_cost, minimum_counted_with, run_cost, run_cost_without_cache
from chorus.runs import RunView, get_run, not_found, prepare
from models import Session, repo
from settings import Settings
from workflows.cost import total
from workflows.errors import NotFoundError
from workflows.voter_quality import VoterQuality

MAX_TIMELINE_RUNS = 60
DETAILED_RUNS = 3


@dataclass
class Subject:
    kind: str  # "run" or "batch"
    id: str
    title: str
    runs: list[RunView]
    config: dict[str, Any]


def load_subject(ref: str, settings: Settings) -> Subject:
    """A batch (by id, id prefix or name) or else a run (by id or prefix)."""
    prepare(settings)
    if not ref:
        raise NotFoundError("give a run id or a batch id")
    with Session() as s:
        batches = repo.find_batches(s, ref)
        if len(batches) == 1:
            batch = batches[0]
            runs = repo.runs_of_batch(s, batch.id)
            return Subject("batch", batch.id, batch.name, [RunView.of(r) for r in runs], dict(batch.config or {}))
    try:
        run = get_run(ref, settings=settings)
    except NotFoundError:
        raise not_found("run or batch", ref, "give a run id or prefix printed by `chorus vote`, `chorus compare` "
                        "or `chorus advise`, or a batch id or name", settings) from None
    return Subject("run", run.id, run.external_id, [run], {})


# ----- small helpers ------------------------------------------------------------------------
def _e(value: Any) -> str:
    return html.escape(str(value))


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None or math.isnan(seconds) else f"{seconds * 1000:.0f} ms"


def _usd(value: float, estimated: bool) -> str:
    return f"{'~' if estimated else ''}${value:.6f}"


def _secs(a: dt.datetime | None, b: dt.datetime | None) -> float | None:
    return None if a is None or b is None else (b - a).total_seconds()


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _rect(x: float, y: float, w: float, h: float, fill: str, title: str = "", extra: str = "") -> str:
    tip = f"<title>{_e(title)}</title>" if title else ""
    return (f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(0.5, w):.1f}" height="{max(0.5, h):.1f}" fill="{fill}"'
            f'{extra}>{tip}</rect>')


def _text(x: float, y: float, text: str, cls: str = "val", anchor: str = "start") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" class="{cls}" text-anchor="{anchor}">{_e(text)}</text>'


# ----- timelines -----------------------------------------------------------------------------
STATUS_COLOUR = {"succeeded": "#2e7d32", "failed": "#c62828", "running": "#f9a825", "retrying": "#f9a825",
                 "pending": "#9e9e9e"}


LABEL_WIDTH = 230


def _axis(t0: dt.datetime, span_s: float, width: int) -> tuple[float, Callable[[dt.datetime | None], float]]:
    """Pixels per second and the x of a timestamp, on an axis that starts at `t0` after the labels."""
    scale = (width - LABEL_WIDTH - 70) / span_s

    def x(t: dt.datetime | None) -> float:
        return LABEL_WIDTH + max(0.0, _secs(t0, t) or 0.0) * scale

    return scale, x


def run_gantt(run: RunView, width: int = 900) -> str:
    """One row per worker (queue wait light, call solid), then the run's wall split into the slowest
    worker and the overhead, on one time axis from submit to tally."""
    t0 = run.submitted_at
    end = run.finished_at or max((o.finished_at for o in run.outcomes if o.finished_at), default=None)
    if t0 is None or end is None:
        return "<p>no timestamps (the run never started)</p>"
    span = max(_secs(t0, end) or 0.0, 1e-6)
    left, row_h = LABEL_WIDTH, 22
    scale, x = _axis(t0, span, width)
    parts = []
    leaders = set((run.config.get("dispatch") or {}).get("leaders", []))
    for i, o in enumerate(run.outcomes):
        y = 10 + i * row_h
        who = (f"slot {o.slot} · {o.model} · {o.prompt_variant or o.title or '-'}"
               + (" · leader" if o.slot in leaders else ""))
        parts.append(_text(4, y + 14, who, "lbl"))
        if o.started_at is not None:
            parts.append(_rect(x(o.queued_at), y + 4, x(o.started_at) - x(o.queued_at), 12, "#cfd8dc", "queued"))
        if o.started_at is not None and o.finished_at is not None:
            colour = STATUS_COLOUR.get(o.status, "#607d8b")
            parts.append(_rect(x(o.started_at), y + 2, x(o.finished_at) - x(o.started_at), 16, colour,
                               f"{o.status} {_ms(o.latency_s)}"))
            parts.append(_text(x(o.finished_at) + 4, y + 14, _ms(o.latency_s)))
    y = 10 + len(run.outcomes) * row_h + 6
    # wall = slowest worker + overhead, drawn on the slowest worker's own start and finish.
    timed = [o for o in run.outcomes if o.latency_s is not None]
    slowest = max(timed, key=lambda o: o.latency_s or 0.0) if timed else None
    parts.append(_text(4, y + 14, "run wall (submit to tally)", "lbl b"))
    if slowest is not None:
        parts.append(_rect(left, y + 2, x(slowest.started_at) - left, 16, "#ffb74d",
                           "overhead before the slowest worker started (queue, dispatch)"))
        parts.append(_rect(x(slowest.started_at), y + 2, x(slowest.finished_at) - x(slowest.started_at), 16,
                           "#1565c0", f"slowest worker: slot {slowest.slot}"))
        parts.append(_rect(x(slowest.finished_at), y + 2, x(end) - x(slowest.finished_at), 16, "#ef6c00",
                           "overhead after it finished (tally, bookkeeping)"))
    parts.append(_text(x(end) + 4, y + 14, _ms(span)))
    height = y + 30
    axis = f'<line x1="{left}" y1="{height - 6}" x2="{left + span * scale:.1f}" y2="{height - 6}" stroke="#555"/>'
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="per-worker timeline">{"".join(parts)}{axis}</svg>')
    caption = ""
    if run.wall_s is not None and run.slowest_worker_s is not None:
        caption = (f"<p class='cap'>wall {_ms(run.wall_s)} = slowest worker {_ms(run.slowest_worker_s)} + overhead "
                   f"{_ms(run.wall_s - run.slowest_worker_s)}"
                   + (" (the overhead includes the followers' wait for the leader: cache-aware dispatch)"
                      if leaders else "") + "</p>")
    return svg + caption


def batch_timeline(runs: Sequence[RunView], width: int = 900) -> str:
    """One row per run from submit to tally, with each worker's call as a thin bar inside it."""
    shown = [r for r in runs if r.submitted_at is not None and r.finished_at is not None][:MAX_TIMELINE_RUNS]
    if not shown:
        return "<p>no finished runs</p>"
    t0 = min(r.submitted_at for r in shown if r.submitted_at)
    t1 = max(r.finished_at for r in shown if r.finished_at)
    span = max(_secs(t0, t1) or 0.0, 1e-6)
    row_h = 16
    _, x = _axis(t0, span, width)
    parts = []
    for i, r in enumerate(shown):
        y = 6 + i * row_h
        parts.append(_text(4, y + 11, r.external_id[:34], "lbl"))
        parts.append(_rect(x(r.submitted_at), y, x(r.finished_at) - x(r.submitted_at), 14, "#e3f2fd",
                           f"wall {_ms(r.wall_s)}", ' stroke="#90caf9"'))
        n = max(1, len(r.outcomes))
        for k, o in enumerate(r.outcomes):
            if o.started_at is None or o.finished_at is None:
                continue
            yy = y + 1 + k * (12 / n)
            colour = STATUS_COLOUR.get(o.status, "#607d8b")
            parts.append(_rect(x(o.started_at), yy, x(o.finished_at) - x(o.started_at), max(1.0, 12 / n - 1), colour))
        parts.append(_text(x(r.finished_at) + 4, y + 11, _ms(r.wall_s)))
    height = 12 + len(shown) * row_h
    more = f"<p class='cap'>showing {len(shown)} of {len(runs)} runs</p>" if len(runs) > len(shown) else ""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
            f'aria-label="batch timeline">{"".join(parts)}</svg>{more}')


def share_chart(distribution: dict[str, int], width: int = 420) -> str:
    if not distribution:
        return ""
    top = max(distribution.values())
    bar_w = (width - 40) / len(distribution)
    parts = []
    for i, (label, count) in enumerate(distribution.items()):
        h = 120 * count / top
        xx = 20 + i * bar_w
        parts.append(_rect(xx + 4, 140 - h, bar_w - 8, h, "#5c6bc0", f"{count} items"))
        parts.append(_text(xx + bar_w / 2, 156, label, anchor="middle"))
        parts.append(_text(xx + bar_w / 2, 136 - h, str(count), anchor="middle"))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="164" role="img" '
            f'aria-label="winning share distribution">{"".join(parts)}</svg>')


# ----- sections -------------------------------------------------------------------------------
def cost_summary(runs: Sequence[RunView], settings: Settings) -> dict[str, Any]:
    """The cost of the runs, without caching, and the minimum under the cache rules counted
    independently of what the runs cached (`chorus.costing.minimum_cost`), with their ratio."""
    cost = total(run_cost(r) for r in runs)
    minimum = minimum_cost(runs, settings)
    return {"cost": cost.to_json(), "cost_without_cache": total(run_cost_without_cache(r) for r in runs).to_json(),
            "minimum_cost": minimum.to_json(), "minimum_counted_with": minimum_counted_with(settings),
            "cost_over_minimum": round(cost.total_usd / minimum.total_usd, 4) if minimum.total_usd > 0 else None,
            "cache_followers": cache_followers(runs)}


def cache_followers(runs: Sequence[RunView]) -> dict[str, Any]:
    """How the followers of cache-aware dispatch fared: each was sent after its leader to read the shared
    prefix; a miss paid the prefix in full (or as another write)."""
    checked = [o.cache_miss for r in runs for o in r.outcomes if o.cache_miss is not None]
    misses = sum(1 for miss in checked if miss)
    return {"followers": len(checked), "misses": misses,
            "hit_rate": round(1 - misses / len(checked), 4) if checked else None}


def cost_section(runs: Sequence[RunView], costs: dict[str, Any]) -> str:
    data = breakdown(runs)
    rows = []
    for model, info in data["models"].items():
        t, c = info["tokens"], info["cost"]
        rows.append([model, t["input_tokens"], t["cache_write_tokens"], t["cache_read_tokens"], t["output_tokens"],
                     _usd(c["input_usd"], c["estimated"]), _usd(c["cache_write_usd"], c["estimated"]),
                     _usd(c["cache_read_usd"], c["estimated"]), _usd(c["output_usd"], c["estimated"]),
                     _usd(c["total_usd"], c["estimated"])])
    cost, plain, minimum = costs["cost"], costs["cost_without_cache"], costs["minimum_cost"]
    est = cost["estimated"]
    lines = [f"total {_usd(cost['total_usd'], est)}",
             f"without any caching {_usd(plain['total_usd'], est)}",
             f"minimum under Anthropic's cache rules {_usd(minimum['total_usd'], minimum['estimated'])} "
             f"(shared prefix counted with {costs['minimum_counted_with']}; one cache write per model, reads for "
             f"the other calls)"]
    if costs["cost_over_minimum"] is not None:
        lines.append(f"ratio to the minimum {costs['cost_over_minimum']:.3f}")
    followers = costs.get("cache_followers") or {}
    if followers.get("followers"):
        lines.append(f"prompt-cache hit rate of the followers {followers['hit_rate']:.0%} "
                     f"({followers['followers'] - followers['misses']} of {followers['followers']} read the prefix "
                     "their leader wrote)")
    note = "<p class='warn'>~ estimates: the offline provider's token counts, priced as if on each model</p>" if est \
        else ""
    return (_table(["model", "input tok", "cache write tok", "cache read tok", "output tok", "input", "cache write",
                    "cache read", "output", "total"], rows)
            + "<p>" + " · ".join(_e(x) for x in lines) + "</p>" + note)


def _votes(runs: Sequence[RunView]) -> list[RunView]:
    return [r for r in runs if r.pattern == "vote" and len(r.outcomes) >= 2]


def quality_summary(runs: Sequence[RunView]) -> dict[str, Any]:
    """The batch-level agreement and the per-voter quality, as `chorus report --json` shows them
    (None where the runs hold no vote to measure)."""
    votes = _votes(runs)
    agreement = None
    if votes:
        labels = votes[0].config.get("labels", [])
        agreement = agreement_of(votes, labels, float(votes[0].config.get("low_agreement_below", 0.6))).to_json()
    quality = voter_quality_of(runs)
    return {"agreement": agreement, "voter_quality": quality.to_json() if quality else None,
            "failures": failures(runs)}


def _f(x: float | None, pct: bool = False) -> str:
    return "-" if x is None else f"{x:.0%}" if pct else f"{x:g}"


def voter_section(quality: VoterQuality | None) -> str:
    """Each voter's (prompt x model) accuracy, its double faults with the others, and what to fix."""
    if quality is None:
        return "<p>no vote runs: no voters to measure</p>"
    gold = quality.gold_documents > 0
    if gold:
        rows = [[f"{v.voter.name}", v.voter.model, v.seats, v.gold_answered, v.correct, v.abstained, v.failed,
                 _f(v.accuracy, True), _f(v.rest_accuracy, True)] for v in quality.voters]
        head = ["voter", "model", "seats", "answered (gold)", "correct", "abstained", "failed", "accuracy",
                "rest of the panel"]
    else:
        rows = [[v.voter.name, v.voter.model, v.seats, v.answered, v.abstained, v.failed,
                 f"{v.disagreed} of {v.compared}", _f(v.disagreement, True)] for v in quality.voters]
        head = ["voter", "model", "seats", "answered", "abstained", "failed", "disagreed with the winner", "share"]
    out = [_table(head, rows)]
    if quality.vote_accuracy is not None:
        out.append(f"<p>the vote: {quality.vote_accuracy:.0%} accurate on {quality.gold_documents} gold "
                   "document(s)</p>")
    if quality.pairs:
        out.append("<h3>voter pairs: wrong together (gold documents both answered)</h3>")
        out.append(_table(["voters", "both answered", "both wrong (double fault)", "agree when wrong",
                           "both wrong if independent"],
                          [[f"{p.a.name} ({p.a.model}) & {p.b.name} ({p.b.model})", p.both_answered,
                            f"{p.double_faults} ({_f(p.double_fault, True)})", p.agree_when_wrong,
                            f"{p.expected_double_faults:.1f}"] for p in quality.pairs]))
    out.append("<h3>which voter to drop or rewrite</h3>")
    if quality.advice:
        out.append("<ul>" + "".join(f"<li>{_e(a.text)}</li>" for a in quality.advice) + "</ul>")
    elif gold and quality.judged:
        out.append("<p>none: no voter is clearly less accurate than the rest of the panel</p>")
    elif gold:
        out.append("<p>no voter answered enough gold documents to be judged</p>")
    out.extend(f"<p class='cap'>{_e(n)}</p>" for n in quality.notes)
    return "".join(out)


def agreement_section(runs: Sequence[RunView]) -> str:
    votes = _votes(runs)
    if not votes:
        return "<p>single calls only: no agreement to measure</p>"
    labels = votes[0].config.get("labels", [])
    low_below = float(votes[0].config.get("low_agreement_below", 0.6))
    report = agreement_of(votes, labels, low_below)
    j = report.to_json()
    stats = [["items", j["items"]], ["voters per item", j["voters"]], ["unanimous", j["unanimous_rate"]],
             ["mean pairwise agreement", j["mean_pairwise_agreement"]], ["Fleiss' kappa", j["fleiss_kappa"]]]
    if report.vote_accuracy is not None:
        stats += [["vote accuracy", j["vote_accuracy"]], ["mean error correlation", j["mean_error_correlation"]],
                  ["effective independent voters", j["effective_voters"]]]
    out = ["<div class='row'><div>", _table(["measure", "value"], stats), "</div><div><h3>winning share</h3>",
           share_chart(report.winning_share), "</div></div>"]
    by_id = {r.external_id: r for r in votes}
    low = [by_id[i] for i in report.low_agreement if i in by_id]
    out.append(f"<h3>low agreement (winning share under {low_below:.0%}): fix the prompt first</h3>")
    if low:
        out.append(_table(["document", "answers", "vote", "gold", "confidence"],
                          [[r.external_id, " ".join(o.answer or "–" for o in r.outcomes if o.role == "voter"),
                            r.answer or "-",
                            r.gold_label or "-", f"{r.confidence:.0%}" if r.confidence is not None else "-"]
                           for r in low]))
    elif report.no_answer:
        out.append("<p>none among the runs where a voter answered</p>")
    else:
        out.append("<p>none</p>")
    silent = [by_id[i] for i in report.no_answer if i in by_id]
    if silent:
        # No share to call low: not one voter gave a label. Listed with why, never folded into "none".
        out.append(f"<h3>no answer at all ({len(silent)} of {len(votes)} runs): no voter gave a valid label</h3>")
        out.append(_table(["document", "status", "why", "run"],
                          [[r.external_id, r.status, failure_reason(r) or "-", r.id[:12]] for r in silent]))
    return "".join(out)


def runs_table(runs: Sequence[RunView]) -> str:
    rows = []
    for r in runs:
        cost = run_cost(r)
        overhead = r.wall_s - r.slowest_worker_s if r.wall_s is not None and r.slowest_worker_s is not None else None
        rows.append([r.external_id, r.status, r.answer or "-", r.gold_label or "-",
                     f"{r.confidence:.0%}" if r.confidence is not None else "-", _ms(r.wall_s),
                     _ms(r.slowest_worker_s), _ms(overhead), _usd(cost.total_usd, cost.estimated), r.id[:12],
                     failure_reason(r) or ""])
    return _table(["document", "status", "answer", "gold", "confidence", "wall", "slowest worker", "overhead",
                   "cost", "run", "why it failed"], rows)


CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1000px}
h1{font-size:20px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}h3{font-size:14px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 7px;text-align:left}
th{background:#f5f5f5}.lbl{font:11px sans-serif;fill:#333}.b{font-weight:bold}.val{font:10px sans-serif;fill:#444}
.cap{color:#555;font-size:12px}.warn{color:#8d6e00}.row{display:flex;gap:32px;flex-wrap:wrap}
.key span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}
"""


def render(subject: Subject, costs: dict[str, Any]) -> str:
    """The page; `costs` is `cost_summary(subject.runs, settings)`."""
    runs = subject.runs
    if not runs:
        raise NotFoundError(f"{subject.kind} {subject.id} has no runs")
    statuses = {s: sum(1 for r in runs if r.status == s) for s in sorted({r.status for r in runs})}
    head = (f"<h1>chorus report: {_e(subject.kind)} {_e(subject.title)}</h1>"
            f"<p>{_e(subject.kind)} id {_e(subject.id)} · {len(runs)} run(s) · "
            + ", ".join(f"{_e(k)} {v}" for k, v in statuses.items())
            + f" · provider {_e(runs[0].provider)}"
            + (f" · {_e(subject.config.get('pattern'))}" if subject.config.get("pattern") else "") + "</p>")
    key = ("<p class='key'><span style='background:#cfd8dc'></span>queued<span style='background:#2e7d32'></span>"
           "call succeeded<span style='background:#c62828'></span>call failed<span style='background:#1565c0'>"
           "</span>slowest worker<span style='background:#ffb74d'></span>overhead before it"
           "<span style='background:#ef6c00'></span>overhead after it</p>")
    timeline = ["<h2>timeline</h2>", key]
    if subject.kind == "batch":
        timeline.append("<h3>every run (rows) and its workers (bars)</h3>" + batch_timeline(runs))
    for r in runs[:DETAILED_RUNS]:
        timeline.append(f"<h3>run {_e(r.external_id)} ({_e(r.id[:12])})</h3>" + run_gantt(r))
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>chorus report "
            f"{_e(subject.title)}</title><style>{CSS}</style></head><body>{head}{''.join(timeline)}"
            f"<h2>agreement and correlated errors</h2>{agreement_section(runs)}"
            f"<h2>per voter (prompt x model)</h2>{voter_section(voter_quality_of(runs))}"
            f"<h2>cost</h2>{cost_section(runs, costs)}<h2>runs</h2>{runs_table(runs)}</body></html>")
