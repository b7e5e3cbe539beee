"""Documents: a 300-page PDF sectioned by pages against one call, and a 5-voter PDF vote's cost, in one run.

    python -m bench.documents [--quick]

Real PDFs (`tests.docfiles.text_pdf`: a text layer on Letter pages) go through real workers on Redis +
PostgreSQL and the real anthropic SDK against the stub, which bills a PDF page as its text plus a page
image, keeps a prompt cache by Anthropic's rules, and takes longer to answer a request with more PDF
pages: a time to the first token of `ttft_ms` + `ms_per_page` per PDF page of the request, then
`ms_per_output_token` per output token. The stub's cache and log are emptied before each run.

1. Sectioning. The same 300-page PDF as a section run (`plan_section` + `submit_section_plan`) on a model
   that reads 600 PDF pages a request. "one call" is `pages_per_section=300`: one section, and with
   a reduce step that has no schema of its own the run synthesizes nothing, so it is exactly one
   Messages call holding all 300 pages. The others split it into 100, 50 and 25 pages (3, 6, 12 map
   calls + one synthesis call). The ways are interleaved (the order rotates every repetition). Wall is
   `plan_section` (which cuts the PDF) to the run's terminal state; cost is priced per logged request
   from the usage the stub reported (`workflows.cost.cost_of`, so a prompt above a model's long-prompt
   threshold pays its upper tier); the page ranges are the plan's, checked to cover pages 1-300 once,
   and the stub's logged PDF pages are checked to add up to 300.
2. Voting. A PDF of `vote_pages` pages, 5 voters of one model: (a) cache-aware (the default: a leader
   writes the cache, the others read it), (b) `cache_aware=False` (all at once), per document, each
   run on an empty cache. (c), "5 uncached calls", is computed, not run: each voter's logged prompt
   (input + cache write + cache read) priced as plain input. The minimum is one write of the shared
   prefix, 4 reads and the rest uncached (`workflows.cost.minimum_vote_cost`), with the prefix
   (system + the document block of a logged request) counted by the stub's `POST
   /v1/messages/count_tokens`, not by chorus.

A run that does not succeed (or times out) is recorded under `failures` and left out of the figures.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import statistics
import tempfile
import time
import traceback
import urllib.request
from pathlib import Path
from typing import Any

from bench.harness import configure_env, flushed_redis, fresh_postgres, machine, workers

REDIS_DB = 14
PG_DB = "chorus_bench_documents"
MODEL = "claude-haiku-5-5"  # reads 600 PDF pages a request (1M context)
BIG_PAGES = 300
SPLITS = [300, 100, 50, 25]  # pages_per_section; 300 is the one call
VOTERS = 5
LABELS = "positive,negative"
RUN_TIMEOUT_S = 180
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy

POSITIVE = ("The quarterly review on page {i} was excellent: the board was happy with the great results, "
            "and the wonderful new plant works well.")
NEGATIVE = ("The quarterly review on page {i} was terrible: the board was unhappy with the poor results, "
            "and the awful new plant works badly.")


def long_prompt_above(model: str) -> int | None:
    """The prompt size above which every token of a request pays the model's upper tier (None: no tier)."""
    from workflows.registry import model_info

    info = model_info(model)
    tier = info.long_prompt if info is not None else None
    return tier.above_prompt_tokens if tier is not None else None


def way_name(pps: int) -> str:
    return "one call" if pps >= BIG_PAGES else f"{pps} pages per section"


def vote_pdf(doc: int, pages: int) -> tuple[bytes, str]:
    """A PDF whose every page leans one way (even documents positive, odd negative), and its label."""
    from tests.docfiles import text_pdf  # test-only dependencies (reportlab, Pillow): imported on use

    label, template = ("positive", POSITIVE) if doc % 2 == 0 else ("negative", NEGATIVE)
    return text_pdf([f"Document {doc}. " + template.format(i=i) for i in range(1, pages + 1)]), label


def usage_of(entry: dict[str, Any]) -> Any:
    from workflows.cost import TokenUsage

    return TokenUsage(int(entry.get("input_tokens") or 0), int(entry.get("output_tokens") or 0),
                      int(entry.get("cache_write_tokens") or 0), int(entry.get("cache_read_tokens") or 0))


def answered(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The requests the stub answered (an error is billed nothing)."""
    return [e for e in log if e.get("status") == 200]


def priced(log: list[dict[str, Any]]) -> float:
    from workflows.cost import cost_of

    return sum(cost_of(e["model"], usage_of(e)).total_usd for e in answered(log))


def count_prefix(stub: Any, entry: dict[str, Any]) -> int:
    """The shared prefix of a logged vote request (its system prompt and its document block), counted by
    the stub's own count_tokens endpoint."""
    body = entry["body"]
    content = body["messages"][0]["content"]
    document = next(b for b in content if b.get("type") == "document")
    request = {"model": body["model"], "messages": [{"role": "user", "content": [document]}]}
    if body.get("system"):
        request["system"] = body["system"]
    req = urllib.request.Request(
        stub.base_url + "/v1/messages/count_tokens", data=json.dumps(request).encode(), method="POST",
        headers={"content-type": "application/json", "x-api-key": "bench-key",
                 "anthropic-version": entry.get("anthropic_version") or "2023-06-01"})
    with _OPENER.open(req, timeout=30) as response:
        return int(json.loads(response.read())["input_tokens"])


def section_run(stub: Any, document: Any, task: Any, pps: int, settings: Any) -> dict[str, Any]:
    from chorus import plan_section, submit_section_plan, wait_for_run

    stub.reset()
    t0 = time.perf_counter()
    plan = plan_section(document, task=task, pages_per_section=pps, settings=settings)
    t_plan = time.perf_counter()
    view = wait_for_run(submit_section_plan(plan, settings=settings), timeout=RUN_TIMEOUT_S, settings=settings)
    wall = time.perf_counter() - t0
    log = stub.requests(bodies=False)
    ranges = [[s.start, s.end] for s in plan.sections]
    covered = [p for a, b in ranges for p in range(a, b + 1)] == list(range(1, BIG_PAGES + 1))
    ok = answered(log)
    problems = []
    if view.status != "succeeded":
        problems.append(f"run {view.status}: {view.error}")
    if not covered:
        problems.append(f"page ranges {ranges} do not cover 1-{BIG_PAGES} once")
    if sum(int(e.get("pdf_pages") or 0) for e in ok) != BIG_PAGES:
        problems.append(f"the stub read {sum(int(e.get('pdf_pages') or 0) for e in ok)} PDF pages")
    if not (view.result or {}).get("synthesis"):
        problems.append("no synthesis in the result")
    return {"wall_s": wall, "plan_s": t_plan - t0, "calls": len(ok), "requests": len(log), "cost": priced(log),
            "ranges": ranges, "max_prompt_tokens": max((usage_of(e).prompt_tokens for e in ok), default=0),
            "slowest_call_ms": max((float(e.get("latency_ms") or 0) for e in ok), default=0.0),
            "pdf_pages_per_call": [int(e.get("pdf_pages") or 0) for e in ok if e.get("pdf_pages")],
            "status": view.status, "problems": problems}


def vote_run(stub: Any, document: Any, label: str, aware: bool, settings: Any) -> dict[str, Any]:
    from chorus import plan_vote, submit_plan, wait_for_run
    from workflows.cost import cost_of, minimum_vote_cost
    from workflows.tokens import min_cacheable_tokens

    stub.reset()
    plan = plan_vote(document, LABELS, voters=VOTERS, models=[MODEL], cache_aware=aware, settings=settings)
    t0 = time.perf_counter()
    view = wait_for_run(submit_plan(plan, settings=settings), timeout=RUN_TIMEOUT_S, settings=settings)
    wall = time.perf_counter() - t0
    log = stub.requests()
    ok = answered(log)
    problems = [] if view.status == "succeeded" else [f"run {view.status}: {view.error}"]
    if len(ok) != VOTERS:
        problems.append(f"{len(ok)} answered calls of {len(log)} requests, expected {VOTERS}")
    if not ok:
        return {"status": view.status, "problems": problems}
    prefix = count_prefix(stub, ok[0])
    prompts = [usage_of(e).prompt_tokens for e in ok]
    outputs = [usage_of(e).output_tokens for e in ok]
    prefix = min([prefix, *prompts])
    uncached = sum(cost_of(MODEL, usage_of({"input_tokens": p, "output_tokens": o})).total_usd
                   for p, o in zip(prompts, outputs, strict=True))
    minimum = minimum_vote_cost(MODEL, prefix, [p - prefix for p in prompts], outputs,
                                min_cacheable=min_cacheable_tokens(MODEL)).total_usd
    return {"wall_s": wall, "status": view.status, "correct": view.answer == label, "calls": len(ok),
            "cache_writes": sum(1 for e in ok if e.get("cache_write_tokens")),
            "cache_write_tokens": sum(int(e.get("cache_write_tokens") or 0) for e in ok),
            "cache_reads": sum(1 for e in ok if e.get("cache_read_tokens")),
            "cache_read_tokens": sum(int(e.get("cache_read_tokens") or 0) for e in ok),
            "cost": priced(log), "uncached": uncached, "minimum": minimum, "prefix_tokens": prefix,
            "prompt_tokens": prompts, "problems": problems}


def attempt(failures: list[dict[str, Any]], where: dict[str, Any], fn: Any, *args: Any) -> dict[str, Any] | None:
    """One run; its result when it succeeded, else None with the reason kept in `failures`."""
    try:
        result: dict[str, Any] = fn(*args)
    except Exception as exc:  # noqa: BLE001 - a failed run is a figure of the benchmark, not its end
        traceback.print_exc()
        failures.append({**where, "error": f"{type(exc).__name__}: {exc}"})
        return None
    if result["problems"]:
        failures.append({**where, "error": "; ".join(result["problems"])})
        return None
    return result


def run(quick: bool = True, repetitions: int | None = None, vote_docs: int | None = None, vote_pages: int = 10,
        ttft_ms: int = 300, ms_per_page: float = 20.0, ms_per_output_token: float = 1.0,
        concurrency: int = 8) -> dict[str, Any]:
    from chorus.testing.stub.testing import running_stub

    started = time.perf_counter()
    reps = repetitions or (2 if quick else 5)
    ndocs = vote_docs or (3 if quick else 10)
    folder = Path(tempfile.mkdtemp(prefix="chorus-bench-documents-"))
    from tests.docfiles import text_pdf  # test-only dependencies (reportlab, Pillow): imported on use

    big_path = folder / "report-300.pdf"
    big_path.write_bytes(text_pdf(BIG_PAGES))
    vote_paths = []
    for i in range(ndocs):
        data, label = vote_pdf(i, vote_pages)
        path = folder / f"vote-{i}.pdf"
        path.write_bytes(data)
        vote_paths.append((path, label))
    failures: list[dict[str, Any]] = []
    sections: dict[int, list[dict[str, Any]]] = {pps: [] for pps in SPLITS}
    votes: dict[str, list[dict[str, Any]]] = {"cache-aware": [], "all at once": []}
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, folder, ignore_errors=True)
        stub = stack.enter_context(running_stub())
        stack.enter_context(fresh_postgres(PG_DB))
        stack.enter_context(flushed_redis(REDIS_DB))
        data_dir = configure_env(redis_db=REDIS_DB, pg_db=PG_DB, stub_url=stub.base_url)
        stub.set_latency(ttft_ms, ms_per_output_token, ms_per_input_page=ms_per_page)
        from chorus import SectionTask, Step, load_document
        from settings import get_settings

        get_settings.cache_clear()
        settings = get_settings()
        task = SectionTask(name="summary", map=Step("Summarize these pages.", model=MODEL),
                           reduce=Step("Combine the summaries into one.", model=MODEL))
        big = load_document(big_path, settings=settings)
        with workers(data_dir, pool="threads", concurrency=concurrency):
            for rep in range(reps):
                order = SPLITS[rep % len(SPLITS):] + SPLITS[:rep % len(SPLITS)]
                for pps in order:
                    r = attempt(failures, {"part": "sectioning", "way": way_name(pps), "repetition": rep + 1},
                                section_run, stub, big, task, pps, settings)
                    if r is not None:
                        sections[pps].append(r)
            for i, (path, label) in enumerate(vote_paths):
                document = load_document(path, settings=settings)
                for name, aware in (("cache-aware", True), ("all at once", False)):
                    r = attempt(failures, {"part": "vote", "way": name, "document": i + 1},
                                vote_run, stub, document, label, aware, settings)
                    if r is not None:
                        votes[name].append(r)
    return {"benchmark": "documents", "command": f"python -m bench.documents{' --quick' if quick else ''}",
            "machine": machine(), "date": time.strftime("%Y-%m-%d"),
            "params": {"model": MODEL, "long_prompt_above": long_prompt_above(MODEL), "pages": BIG_PAGES,
                       "repetitions": reps, "ttft_ms": ttft_ms,
                       "ms_per_page": ms_per_page, "ms_per_output_token": ms_per_output_token,
                       "workers": f"threads x{concurrency}", "concurrency": concurrency,
                       "vote_docs": ndocs, "vote_pages": vote_pages, "voters": VOTERS},
            "sectioning": summarize_sections(sections), "vote": summarize_votes(votes, ndocs),
            "failures": failures, "bench_seconds": round(time.perf_counter() - started, 1)}


def summarize_sections(measured: dict[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    base = measured[BIG_PAGES]
    base_wall = statistics.median(r["wall_s"] for r in base) if base else None
    base_cost = statistics.median(r["cost"] for r in base) if base else None
    for pps, rs in measured.items():
        row: dict[str, Any] = {"way": way_name(pps), "pages_per_section": pps, "runs": len(rs)}
        if rs:
            wall = statistics.median(r["wall_s"] for r in rs)
            cost = statistics.median(r["cost"] for r in rs)
            row.update(wall_p50_ms=round(wall * 1000), wall_min_ms=round(min(r["wall_s"] for r in rs) * 1000),
                       wall_max_ms=round(max(r["wall_s"] for r in rs) * 1000),
                       split_p50_ms=round(statistics.median(r["plan_s"] for r in rs) * 1000),
                       x_one_call=round(wall / base_wall, 3) if base_wall else None,
                       calls=rs[0]["calls"], cost_usd=round(cost, 6),
                       cost_x_one_call=round(cost / base_cost, 3) if base_cost else None,
                       max_prompt_tokens=max(r["max_prompt_tokens"] for r in rs),
                       slowest_call_p50_ms=round(statistics.median(r["slowest_call_ms"] for r in rs)),
                       pdf_pages_per_call=rs[0]["pdf_pages_per_call"], ranges=rs[0]["ranges"])
        rows.append(row)
    return rows


def summarize_votes(measured: dict[str, list[dict[str, Any]]], ndocs: int) -> dict[str, Any]:
    ways = []
    every = [r for rs in measured.values() for r in rs]
    for name, rs in measured.items():
        row: dict[str, Any] = {"way": name, "docs": len(rs), "of": ndocs}
        if rs:
            n = len(rs)
            cost, uncached, minimum = (sum(r[k] for r in rs) for k in ("cost", "uncached", "minimum"))
            row.update(wall_p50_ms=round(statistics.median(r["wall_s"] for r in rs) * 1000),
                       calls_per_doc=round(sum(r["calls"] for r in rs) / n, 2),
                       cache_writes_per_doc=round(sum(r["cache_writes"] for r in rs) / n, 2),
                       cache_write_tokens_per_doc=round(sum(r["cache_write_tokens"] for r in rs) / n),
                       cache_reads_per_doc=round(sum(r["cache_reads"] for r in rs) / n, 2),
                       cache_read_tokens_per_doc=round(sum(r["cache_read_tokens"] for r in rs) / n),
                       cost_per_doc_usd=round(cost / n, 8), uncached_per_doc_usd=round(uncached / n, 8),
                       minimum_per_doc_usd=round(minimum / n, 8),
                       x_uncached=round(cost / uncached, 4) if uncached else None,
                       x_minimum=round(cost / minimum, 4) if minimum else None,
                       correct=sum(1 for r in rs if r["correct"]))
        ways.append(row)
    out: dict[str, Any] = {"ways": ways}
    if every:
        out.update(prefix_tokens_mean=round(statistics.fmean(r["prefix_tokens"] for r in every)),
                   prompt_tokens_mean=round(statistics.fmean(p for r in every for p in r["prompt_tokens"])),
                   uncached_per_doc_usd=round(sum(r["uncached"] for r in every) / len(every), 8),
                   minimum_per_doc_usd=round(sum(r["minimum"] for r in every) / len(every), 8))
    return out


def _ranges(ranges: list[list[int]]) -> str:
    parts = [f"{a}–{b}" for a, b in ranges]
    return ", ".join(parts) if len(parts) <= 3 else f"{parts[0]}, {parts[1]}, …, {parts[-1]} ({len(parts)})"


def render(result: dict[str, Any]) -> str:
    p = result["params"]
    lines = [
        f"`{result['command']}` — {result['date']}, {result['machine']}.",
        f"Stub latency {p['ttft_ms']} ms to the first token + {p['ms_per_page']:g} ms per PDF page of the request + "
        f"{p['ms_per_output_token']:g} ms per output token; workers {p['workers']} (+ the callback worker); "
        f"{p['model']} (600 PDF pages a request) for every call; the stub's cache and log emptied before each run. "
        "Costs are priced per logged request from the usage the stub reported (a page is its text plus a page "
        "image), with the model's long-prompt tier for a prompt above "
        f"{p['long_prompt_above'] or 0:,} tokens.",
        "",
        f"**A {p['pages']}-page PDF, one call vs sectioned by pages** (`plan_section` + `submit_section_plan`, a "
        "summary task; \"one call\" is `pages_per_section=300`: one section and no synthesis, exactly one Messages "
        f"call with all {p['pages']} pages). {p['repetitions']} repetitions per way, interleaved; wall is "
        "`plan_section` (which cuts the PDF) to the run's terminal state; the slowest call is the longest a "
        "request took at the stub (p50 over the repetitions).",
        "",
        "| way | calls | page ranges | wall p50 (min–max) | × one call | split ms | slowest call at the stub | "
        "largest prompt (tokens) | cost / run | × one call | runs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for w in result["sectioning"]:
        if not w["runs"]:
            lines.append(f"| {w['way']} | - | - | - | - | - | - | - | - | - | 0/{p['repetitions']} |")
            continue
        calls = f"{w['calls']} ({w['calls'] - 1} + synthesis)" if w["calls"] > 1 else str(w["calls"])
        x_wall = "-" if w["x_one_call"] is None else f"**{w['x_one_call']:.2f}**"
        x_cost = "-" if w["cost_x_one_call"] is None else f"{w['cost_x_one_call']:.3f}"
        lines.append(f"| {w['way']} | {calls} | {_ranges(w['ranges'])} | {w['wall_p50_ms']} ms "
                     f"({w['wall_min_ms']}–{w['wall_max_ms']}) | {x_wall} | {w['split_p50_ms']} | "
                     f"{w['slowest_call_p50_ms']} ms | "
                     f"{w['max_prompt_tokens']:,} | ${w['cost_usd']:.4f} | {x_cost} | {w['runs']}/{p['repetitions']} |")
    v = result["vote"]
    lines += [
        "",
        f"**A 5-voter vote on a PDF** ({p['vote_docs']} PDFs of {p['vote_pages']} pages, {p['voters']} voters of "
        f"{p['model']}, each way on an empty cache). \"5 uncached calls\" is computed: each voter's logged prompt "
        "priced as plain input. \"minimum\" is one cache write of the shared prefix, 4 reads and the rest uncached, "
        "the prefix (system + document block of a logged request) counted by the stub's `count_tokens`"
        + (f": {v['prefix_tokens_mean']:,} of {v['prompt_tokens_mean']:,} prompt tokens per call (mean)."
           if "prefix_tokens_mean" in v else "."),
        "",
        "| way | calls / doc | cache writes / doc (tokens) | cache reads / doc (tokens) | wall p50 | cost / doc | "
        "× 5 uncached | × minimum | answer right | succeeded |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for w in v["ways"]:
        if not w["docs"]:
            lines.append(f"| {w['way']} | - | - | - | - | - | - | - | - | 0/{w['of']} |")
            continue
        lines.append(f"| {w['way']} | {w['calls_per_doc']:g} | {w['cache_writes_per_doc']:g} "
                     f"({w['cache_write_tokens_per_doc']:,}) | {w['cache_reads_per_doc']:g} "
                     f"({w['cache_read_tokens_per_doc']:,}) | {w['wall_p50_ms']} ms | ${w['cost_per_doc_usd']:.6f} | "
                     f"**{w['x_uncached']:.3f}** | {w['x_minimum']:.3f} | {w['correct']}/{w['docs']} | "
                     f"{w['docs']}/{w['of']} |")
    if "uncached_per_doc_usd" in v:
        lines.append(f"| 5 uncached calls (computed) | 5 | 0 | 0 | - | ${v['uncached_per_doc_usd']:.6f} | 1.000 | "
                     f"{v['uncached_per_doc_usd'] / v['minimum_per_doc_usd']:.3f} | - | - |")
        lines.append(f"| minimum (computed) | 5 | 1 | 4 | - | ${v['minimum_per_doc_usd']:.6f} | "
                     f"{v['minimum_per_doc_usd'] / v['uncached_per_doc_usd']:.3f} | 1.000 | - | - |")
    lines += ["", *reading(result)]
    if result["failures"]:
        lines += ["", f"Failed runs ({len(result['failures'])}, left out of the figures):"]
        lines += [f"- {f['part']}, {f['way']}: `{f['error']}`" for f in result["failures"]]
    return "\n".join(lines)


def tier_note(result: dict[str, Any]) -> str:
    above = result["params"].get("long_prompt_above")
    if not above:
        return ""
    upper = [f"{w['way']} ({w['max_prompt_tokens']:,} tokens a call)" for w in result["sectioning"]
             if w["runs"] and w["max_prompt_tokens"] > above]
    if not upper:
        return f"; no call's prompt went above {above:,} tokens, the model's long-prompt tier"
    return (f", but a prompt above {above:,} tokens pays the model's upper tier on every token of the request: "
            f"{' and '.join(upper)}")


def waves(result: dict[str, Any], split: list[dict[str, Any]]) -> str:
    threads = result["params"].get("concurrency")
    over = [w for w in split if threads and w["calls"] - 1 > threads]
    if not over:
        return ""
    return "; " + ", ".join(f"{w['calls'] - 1} sections" for w in over) + (
        f" are more than the {threads} worker threads, so their map calls go in waves")


def write_multiplier() -> float:
    from workflows.cost import model_entry

    prices = model_entry(MODEL).prices
    return round(prices.cache_write_5m / prices.input, 3)


def reading(result: dict[str, Any]) -> list[str]:
    """What the tables show, in numbers read from them."""
    out = []
    split = [w for w in result["sectioning"] if w["runs"] and w["pages_per_section"] < BIG_PAGES
             and w["x_one_call"] is not None]
    if split:
        best = min(split, key=lambda w: w["x_one_call"])
        walls = ", ".join(f"{w['pages_per_section']} pages {w['x_one_call']:.2f}×" for w in split)
        costs = ", ".join(f"{w['cost_x_one_call']:.2f}×" for w in split)
        out.append(f"- Sectioned wall time over the one call: {walls}; the fastest split is "
                   f"{best['pages_per_section']} pages per section. A section's call reads fewer pages, so it "
                   "answers sooner, and the synthesis adds one short call without pages" + waves(result, split)
                   + f". Cost over the one call: {costs} "
                   "(in that order): the same pages are billed either way" + tier_note(result) + ".")
    ways = {w["way"]: w for w in result["vote"]["ways"] if w["docs"]}
    aware, at_once = ways.get("cache-aware"), ways.get("all at once")
    if aware:
        text = (f"- The cache-aware vote costs **{aware['x_uncached']:.3f}×** five uncached calls and "
                f"{aware['x_minimum']:.3f}× the minimum (one write, four reads)")
        if at_once:
            text += (f"; sent all at once, every voter writes the PDF ({at_once['cache_writes_per_doc']:g} writes "
                     f"per vote), {at_once['x_uncached']:.3f}× the uncached calls (a write costs "
                     f"{write_multiplier():g}× input), at {at_once['wall_p50_ms'] / aware['wall_p50_ms']:.2f}× "
                     "the cache-aware wall time (cache-aware, the followers are sent once the leader has answered)")
        out.append(text + ".")
    return out


if __name__ == "__main__":
    from bench.harness import bench_main

    bench_main(__doc__, run, render)
