"""Estimates against the bill: chorus's estimate of a run ÷ what the stub bills for the same run.

    python -m bench.estimates [--quick]

For each model family, each kind of document (prose, numbers, code, CJK, emoji) and each way (a vote
with cache-aware dispatch, the same vote all at once with `cache_aware=False`, a section run), the plan
is made as `chorus vote`/`chorus section` make it, its estimate is `chorus.budget.estimate_plan` with
local counts (as `chorus batch --dry-run` has them), and its bill comes from the stub: every call's
request is built as a worker builds it (`plan.spec()`, the one request builder), sent with the real
anthropic SDK in the order the dispatch sends it (`bill`), and the usage the stub reports is priced with
`workflows.cost.cost_of`. No worker runs: what is measured is the estimate, not the orchestration. The
stub counts with its own tokenizer and keeps its own prompt cache (never chorus's estimate or tables).

The ratio must be at least 1 everywhere (the estimate is an upper bound; the property test
tests/integration/test_estimate_property.py checks it on generated documents); how far above 1 it is
says how useful the bound is. "before" is the estimate chorus made before issue 22 (4 characters a
token, no tokenizer ratio, no cache-write premium), for comparison.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench.harness import machine

MODELS = ["claude-haiku-5-5", "claude-sonnet-5-5", "claude-opus-5-5", "claude-fable-5-2", "claude-haiku-4-5",
          "claude-sonnet-4-6"]
KINDS = ["prose", "digits", "code", "cjk", "emoji"]
WAYS = ["vote, cache-aware", "vote, all at once", "section", "section, schema"]
LABELS = "a,b,c"
VOTERS = 3


# ----- documents ---------------------------------------------------------------------------------------
WORDS = ["the", "of", "and", "to", "in", "is", "was", "that", "for", "on", "with", "as", "by", "at", "from",
         "this", "which", "report", "board", "results", "plant", "quarterly", "review", "excellent",
         "terrible", "customers", "shipment", "delayed", "invoice", "payment", "warehouse", "international",
         "organization", "responsibility", "understanding", "characteristics", "a", "I", "we", "it", "be"]
CJK = "日本語の文章は漢字と平仮名と片仮名で書かれます東京大阪会議報告書結果顧客支払倉庫遅延中文文本测试数据"
EMOJI = ["😀", "🎉", "👍", "🚀", "❤️", "👨‍👩‍👧", "🇯🇵", "✅", "🔥", "🙂"]


def prose(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    size = 0
    while size < chars:
        words = [rng.choice(WORDS) for _ in range(rng.randint(6, 18))]
        sentence = " ".join(words).capitalize() + rng.choice([".", ",", ";", "!", "?"]) + (
            "\n" if rng.random() < 0.2 else " ")
        out.append(sentence)
        size += len(sentence)
    return "".join(out)


def digits(rng: random.Random, chars: int) -> str:
    """Lines of numbers, like the batch of issue 22 (120 lines of numbers a document)."""
    lines: list[str] = []
    size = 0
    while size < chars:
        line = " ".join(rng.choice([f"{rng.randint(0, 99999)}", f"{rng.random() * 1000:.3f}",
                                    f"{rng.randint(1, 31):02d}/{rng.randint(1, 12):02d}/2026"])
                        for _ in range(rng.randint(4, 12)))
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)


def code(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    size = 0
    while size < chars:
        name = "_".join(rng.choice(WORDS) for _ in range(2))
        block = (f"def {name}(items: list[int], limit={rng.randint(0, 999)}) -> dict[str, int]:\n"
                 f"    total = 0\n    for i, item in enumerate(items):\n"
                 f"        if item > limit and i % {rng.randint(2, 9)} == 0:\n"
                 f"            total += item * {rng.randint(1, 99)}  # {rng.choice(WORDS)}\n"
                 f"    return {{\"{name}\": total, \"count\": len(items)}}\n\n")
        out.append(block)
        size += len(block)
    return "".join(out)


def cjk(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    size = 0
    while size < chars:
        sentence = "".join(rng.choice(CJK) for _ in range(rng.randint(8, 30))) + rng.choice(["。", "、", "！", "？"])
        if rng.random() < 0.15:
            sentence += "\n"
        out.append(sentence)
        size += len(sentence)
    return "".join(out)


def emoji(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    size = 0
    while size < chars:
        piece = rng.choice(WORDS) + " " + "".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 4))) + " "
        if rng.random() < 0.1:
            piece += "\n"
        out.append(piece)
        size += len(piece)
    return "".join(out)


DOCUMENTS: dict[str, Callable[[random.Random, int], str]] = {
    "prose": prose, "digits": digits, "code": code, "cjk": cjk, "emoji": emoji}


# ----- the bill ----------------------------------------------------------------------------------------
def settings_for(stub_url: str, models: Sequence[str]) -> Any:
    """Settings that send to the stub (the anthropic provider) with a queue for every model."""
    from pydantic import SecretStr

    from settings import get_settings

    return get_settings().model_copy(update={"models": ",".join(models), "anthropic_base_url": stub_url,
                                             "anthropic_api_key": SecretStr("bench-key")})


def call(client: Any, request: Any) -> tuple[Any, str, str | None]:
    """Send one request as a worker's provider sends it; (the usage the stub reported, the reply text, its
    stop reason)."""
    from providers.anthropic_provider import message_body

    response = client.messages.create(**message_body(request))
    text = "".join(getattr(block, "text", "") for block in response.content)
    return response.usage, text, response.stop_reason


def priced(request: Any, usage: Any, *, lane: bool, output_tokens: int | None = None) -> Any:
    """The cost of one call's reported usage (`cost_of`: its own tier), at the lane's price when `lane`."""
    from workflows.cost import TokenUsage, cost_of

    tokens = TokenUsage(usage.input_tokens, usage.output_tokens if output_tokens is None else output_tokens,
                        usage.cache_creation_input_tokens or 0, usage.cache_read_input_tokens or 0)
    return cost_of(request.model, tokens, cache_ttl="1h" if request.cache_ttl == "1h" else "5m", batch_api=lane)


def filler(source: str, max_tokens: int) -> str:
    """A reply of max_tokens tokens by the stub's count, cut from `source` repeated (the worst case a
    synthesis can read)."""
    from chorus.testing.stub.tokenizer import count_text, truncate

    text = source if source.strip() else "reply"
    while count_text(text) < max_tokens:
        text = text + "\n" + text
    return truncate(text, max_tokens)


def bill(plan: Any, client: Any, clear_cache: Callable[[], None], *, lane: bool = False,
         worst_case: bool = False) -> Any:
    """What the stub bills for a planned run, its calls built as the workers build them and sent in the
    dispatch's order: cache leaders (or pre-warms) first, then the rest; a vote without them is sent at
    once, which `clear_cache` (an empty prompt cache before each of its calls) stands for, since calls
    sent together all miss. A section run: every map call, then the synthesis tree the workers would plan
    (`sectioning.plan_level` on the measured replies); with an output schema, a map reply cut at max_tokens
    is sent once more (`SectionSpec.retry_request`) and each part carries its recorded output tokens (both
    calls' when retried), which a fitted synthesis budget reads. `lane`: the voter and section calls at the
    Batches API price with the lane's 1-hour TTL. `worst_case`: every reply taken at max_tokens (billed so,
    and read so by the synthesis), every map reply that may be retried cut first."""
    import dataclasses

    from workflows.cost import total
    from workflows.runspec import VoteSpec
    from workflows.sectioning import Part, output_tokens, plan_level, span_label

    clear_cache()
    spec = plan.spec()

    def send(request: Any, in_lane: bool) -> tuple[Any, str, str | None, int]:
        if in_lane:
            request = dataclasses.replace(request, cache_ttl="1h")
        usage, text, stop = call(client, request)
        assert usage.output_tokens <= request.max_tokens, (usage.output_tokens, request.max_tokens)
        out = request.max_tokens if worst_case else usage.output_tokens
        return priced(request, usage, lane=in_lane, output_tokens=out), text, stop, out

    costs = []
    if isinstance(spec, VoteSpec):
        dispatch = plan.dispatch
        by_slot = {v.slot: v for v in spec.voters}
        if dispatch is not None and dispatch.prewarm:
            for _, model in dispatch.prewarm:
                costs.append(send(spec.prewarm_request(model, plan.document), False)[0])
            waves = [[v.slot for v in spec.voters]]
        elif dispatch is not None and dispatch.leaders:
            waves = [list(dispatch.leaders), list(dispatch.followers)]
        else:
            waves = []
            for v in spec.voters:  # all at once: each call finds the cache as empty as the first did
                costs.append(send(spec.voter_request(v, plan.document), lane)[0])
                clear_cache()
        for wave in waves:
            for slot in wave:
                costs.append(send(spec.voter_request(by_slot[slot], plan.document), lane)[0])
        return total(costs)

    replies: list[tuple[str, str, int]] = []  # (label, text, recorded output tokens) of each section, in order
    for s in plan.sections:
        request = spec.section_request(plan.model, s.index, plan.section_document(s.index))
        cost, text, stop, recorded = send(request, lane)
        costs.append(cost)
        retry = spec.retry_request(request)
        if retry is not None and (worst_case or stop == "max_tokens"):
            cost, text, _, more = send(retry, lane)
            costs.append(cost)
            recorded += more
            request = retry
        replies.append((s.title[:200], filler(s.text(plan.text), request.max_tokens) if worst_case else text,
                        recorded))
    config = plan.config()
    single = len(plan.sections) == 1 and not config["synthesize_single"]
    if plan.task.reduce is None or plan.reduce_model is None or plan.task.merge or single:
        return total(costs)
    items = [(label, text, (i, i), recorded) for i, (label, text, recorded) in enumerate(replies)]
    while True:
        groups = plan_level([output_tokens(text) for _, text, _, _ in items], config["synthesis_budget_tokens"])
        final = groups is None
        carried = []
        for group in [list(range(len(items)))] if groups is None else groups:
            members = [items[i] for i in group]
            if len(members) == 1 and not final:
                carried.append(members[0])
                continue
            request = spec.synthesis_request(plan.reduce_model, [Part(label, text, recorded)
                                                                 for label, text, _, recorded in members], final=final)
            cost, text, _, recorded = send(request, False)
            costs.append(cost)
            first, last = members[0][2][0], members[-1][2][1]
            carried.append((span_label(first + 1, last + 1),
                            filler(text or "partial", request.max_tokens) if worst_case else text, (first, last),
                            recorded))
        if final:
            return total(costs)
        items = carried


def before_estimate(plan: Any) -> float:
    """The estimate as chorus made it before issue 22: 4 characters a token, no premium, `x ` placeholders."""
    from workflows.cost import TokenUsage, cost_of
    from workflows.runspec import VoteSpec
    from workflows.sectioning import Part
    from workflows.tokens import estimate_tokens

    def local(r: Any) -> int:
        return estimate_tokens(r.system) + sum(estimate_tokens(b) for b in r.user_blocks)

    spec = plan.spec()
    if isinstance(spec, VoteSpec):
        requests = [spec.voter_request(v, plan.document) for v in spec.voters]
    else:
        requests = [spec.section_request(plan.model, s.index, plan.section_document(s.index)) for s in plan.sections]
        if len(plan.sections) > 1 and plan.reduce_model is not None:
            part = "x " * spec.section_output_tokens
            requests.append(spec.synthesis_request(plan.reduce_model, [Part(f"section {s.index + 1}", part)
                                                                       for s in plan.sections], final=True))
    return sum(cost_of(r.model, TokenUsage(local(r), r.max_tokens)).total_usd for r in requests)


# ----- the benchmark -----------------------------------------------------------------------------------
# "section, schema": examples/man-options.toml (a JSON list of options per section, budgets fitted to each
# section, a cut reply sent once more) merged by the same model instead of joined.
SCHEMA = {"type": "object", "required": ["options"], "properties": {"options": {"type": "array", "items": {
    "type": "object", "required": ["flag", "meaning"],
    "properties": {"flag": {"type": "string"}, "meaning": {"type": "string"}}}}}}


def plan_of(way: str, model: str, text: str, settings: Any) -> Any:
    from chorus.section import plan_section
    from chorus.vote import plan_vote
    from workflows.taskfile import SectionTask, Step

    if way == "section":
        return plan_section(text, model=model, settings=settings)
    if way == "section, schema":
        task = SectionTask(name="man-options", split="headings", max_tokens=2000,
                           map=Step("List every command-line option this section documents, with its meaning in "
                                    "one line.", model=model, output_schema=SCHEMA),
                           reduce=Step("Merge the lists into one.", model=model))
        return plan_section(text, task=task, settings=settings)
    return plan_vote(text, LABELS, voters=VOTERS, models=[model] * VOTERS, cache_aware=way == "vote, cache-aware",
                     settings=settings)


def run(quick: bool = True, chars: int | None = None) -> dict[str, Any]:
    import anthropic

    from chorus.budget import estimate_plan
    from chorus.testing.stub.testing import running_stub

    chars = chars or (20_000 if quick else 40_000)
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    with running_stub(latency_ms=0) as stub:
        settings = settings_for(stub.base_url, MODELS)
        # An explicit timeout, as the workers' provider has: without one the SDK refuses a non-streamed call
        # whose max_tokens could take over 10 minutes (a fitted synthesis budget can be the model's 128k).
        client = anthropic.Anthropic(api_key="bench-key", base_url=stub.base_url, max_retries=0, timeout=60)
        for kind in KINDS:
            text = DOCUMENTS[kind](random.Random(f"{kind}-{chars}"), chars)
            for model in MODELS:
                for way in WAYS:
                    plan = plan_of(way, model, text, settings)
                    estimate = estimate_plan(plan, settings, count=False).total_usd
                    actual = bill(plan, client, stub.reset).total_usd
                    rows.append({"kind": kind, "model": model, "way": way, "estimate_usd": round(estimate, 8),
                                 "actual_usd": round(actual, 8), "ratio": round(estimate / actual, 3),
                                 "before_ratio": round(before_estimate(plan) / actual, 3)})
    ratios = [r["ratio"] for r in rows]
    return {"command": f"python -m bench.estimates{' --quick' if quick else ''}",
            "date": time.strftime("%Y-%m-%d", time.gmtime()), "machine": machine(),
            "params": {"chars": chars, "voters": VOTERS, "labels": LABELS, "models": MODELS},
            "rows": rows, "below_one": [r for r in rows if r["ratio"] < 1],
            "summary": {"min": min(ratios), "median": statistics.median(ratios), "max": max(ratios),
                        "before_below_one": sum(1 for r in rows if r["before_ratio"] < 1), "cases": len(rows)},
            "seconds": round(time.perf_counter() - started, 1)}


def render(result: dict[str, Any]) -> str:
    p, s = result["params"], result["summary"]
    models = p["models"]
    lines = [
        f"`{result['command']}` — {result['date']}, {result['machine']}.",
        f"Documents of about {p['chars']:,} characters; a vote of {p['voters']} voters of one model (labels "
        f"{p['labels']}), a section run with the default split and synthesis. Each cell is the estimate "
        "(`estimate_plan`, local counts, as `chorus batch --dry-run`) ÷ the stub's bill for the same calls "
        "(built by the run's spec, sent in the dispatch's order, priced from the stub's usage); in brackets "
        "the estimate of before issue 22 ÷ the same bill. It must be at least 1 everywhere.",
        "",
        "| document | way | " + " | ".join(m.removeprefix("claude-") for m in models) + " |",
        "|---|---|" + "---|" * len(models),
    ]
    by_case = {(r["kind"], r["way"], r["model"]): r for r in result["rows"]}
    for kind in KINDS:
        for way in WAYS:
            cells = []
            for m in models:
                r = by_case.get((kind, way, m))
                cells.append("-" if r is None else f"{r['ratio']:.2f} ({r['before_ratio']:.2f})")
            lines.append(f"| {kind} | {way} | " + " | ".join(cells) + " |")
    below = result["below_one"]
    lines += ["", f"{s['cases']} cases: estimate ÷ bill from {s['min']:.2f} to {s['max']:.2f} (median "
                  f"{s['median']:.2f}); {len(below)} below 1"
              + ("" if not below else ": " + ", ".join(f"{r['kind']}/{r['way']}/{r['model']}" for r in below))
              + f". Before issue 22, {s['before_below_one']} of the {s['cases']} were below 1.",
              "",
              "Where the margin comes from: a cache-aware vote's followers read the prefix at 0.1x (0.05x on the "
              "5.5 Opus and Sonnet) while the estimate prices every call that marks it as a write (1.25x), since a "
              "follower may miss; voters sent at once do all write, so that column is the bound's own margin. The "
              "text bound counts a digit as a token (the stub: 3 digits), a CJK character as 2 (the stub counts a "
              "run of CJK as letters, 6 a token, far below what real tokenizers make of CJK, about one a "
              "character), an emoji as 3 (the stub: 1), a lower-case word of n letters as n/3 (the stub: n/6). A "
              "section run's margin is the smallest: its calls mark no prefix, so no cache premium is at stake.",
              "",
              "The schema row is examples/man-options.toml merged by the same model (`merge` replaced by a reduce "
              "step): each map call's budget fits its section restated in the schema's shape and a cut reply is "
              "sent once more at twice it, each merge may write 1.25 x the tokenizer ratio x what its parts "
              "recorded (up to the model's max output), and the estimate bounds what those budgets allow over any "
              "tree the workers can build (`chorus.budget.synthesis_costs`), far above what the stub's replies "
              "take; on Haiku 5.5 the most, where a merge that may read past 100,000 tokens is priced at the "
              "upper tier. Its bracket is today's budgets priced the old way (there was no schema task before)."]
    return "\n".join(lines)


if __name__ == "__main__":
    from bench.harness import bench_main

    bench_main(__doc__, run, render)
