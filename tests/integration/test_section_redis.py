"""Sectioning through real Celery workers on Redis, stored in PostgreSQL, with the real anthropic
SDK calling the stub server (whose answers come from the offline provider: an extractive summary
per section and a merge for the synthesis)."""

from __future__ import annotations

import time

import pytest

from chorus.runs import wait_for_run
from chorus.section import plan_section, submit_section, submit_section_plan
from settings import load_settings

pytestmark = pytest.mark.integration

TOPICS = ["Apples", "Bridges", "Comets", "Dunes", "Eels", "Ferns"]


def document(n: int) -> str:
    """n Markdown sections; each has one marker sentence naming its topic, so the synthesis shows
    which sections reached it and in what order."""
    return "".join(f"# {t}\nMarker {t.upper()} is the topic of section {i + 1}.\n\n" for i, t in enumerate(TOPICS[:n]))


def markers_in(text: str) -> list[str]:
    return [t for t in TOPICS if f"Marker {t.upper()}" in text]


def slot_calls(stub, run_id: str) -> list[tuple[float, int]]:
    return sorted((r["time"], int(r["slot"])) for r in stub.requests() if r["run"] == run_id)


def test_a_multi_section_document_is_synthesized_from_its_sections_in_order(workers, stub):
    stub.reset()
    run = wait_for_run(submit_section(document(4), task="summarize"), timeout=60)

    assert run.status == "succeeded", run.error
    sections = [o for o in run.outcomes if o.role == "section"]
    steps = [o for o in run.outcomes if o.role == "synthesis"]
    assert [o.slot for o in sections] == [0, 1, 2, 3]
    assert all(o.status == "succeeded" and o.input_tokens > 0 for o in run.outcomes)
    assert [markers_in(o.raw_output or "") for o in sections] == [[t] for t in TOPICS[:4]]
    assert len(steps) == 1 and steps[0].prompt_variant == "final"
    assert run.result is not None
    assert markers_in(run.result["synthesis"]) == TOPICS[:4]
    assert run.result["synthesis"].index("APPLES") < run.result["synthesis"].index("DUNES")
    assert run.result["missing"] == [] and run.result["sections"] == 4
    # The synthesis call went out after every section call had answered.
    calls = slot_calls(stub, run.id)
    assert calls[-1][1] == steps[0].slot
    assert sorted(slot for _, slot in calls[:-1]) == [0, 1, 2, 3]


def test_a_failed_section_is_named_in_the_result_and_the_rest_is_synthesized(workers, stub):
    stub.reset()
    plan = plan_section(document(4))
    stub.set_rules([{"slot": "2", "status": 400}])  # a permanent error: not retried
    try:
        run = wait_for_run(submit_section_plan(plan), timeout=60)
    finally:
        stub.reset()

    assert run.status == "partial"
    assert run.error == "section 3 missing"
    assert run.result is not None and run.result["missing"] == [3]
    assert markers_in(run.result["synthesis"]) == ["Apples", "Bridges", "Dunes"]
    assert [o.status for o in run.outcomes if o.role == "section"] == ["succeeded", "succeeded", "failed",
                                                                         "succeeded"]


def test_outputs_over_the_budget_are_synthesized_as_a_tree_that_keeps_the_order(workers, stub):
    stub.reset()
    tight = load_settings(synthesis_budget_tokens=25)  # a section output is ~11 tokens: 2 per partial
    run = wait_for_run(submit_section(document(6), settings=tight), timeout=90)

    assert run.status == "succeeded", run.error
    steps = [o for o in run.outcomes if o.role == "synthesis"]
    partials = [o for o in steps if o.prompt_variant == "partial"]
    assert len(partials) >= 2 and run.result is not None and run.result["levels"] >= 2
    final = steps[-1]
    assert final.prompt_variant == "final" and final.level == run.result["levels"]
    # Each partial merges consecutive sections; together they cover every section once, in order.
    first_level = sorted((o for o in partials if o.level == 1), key=lambda o: o.slot)
    leaves = [i for o in first_level for i in (o.inputs or [])]
    assert leaves == sorted(leaves) and len(set(leaves)) == len(leaves)
    assert markers_in(run.result["synthesis"]) == TOPICS


def test_a_run_whose_synthesis_callback_was_lost_is_carried_on_by_the_reaper_hook(workers, stub):
    from celery import group

    from chorus.runs import celery_app, get_run, prepare
    from models import RunStatus, Session, repo
    from models.tables import OutcomeRole, Pattern, utcnow
    from settings import get_settings
    from tasks.section import call, reap_section
    from workflows.queues import queue_for_model

    stub.reset()
    plan = plan_section(document(3))
    settings = get_settings()
    prepare(settings)
    with Session.begin() as s:  # stored like submit_section_plan, but sent without its callback
        run = repo.create_run(s, text=plan.text, external_id="lost", pattern=Pattern.SECTION,
                              provider=settings.provider_name, config=plan.config(), slots=plan.slots())
        run.status, run.submitted_at = RunStatus.RUNNING, utcnow()
        run_id = run.id
    group(call.si(run_id, i, plan.model).set(queue=queue_for_model(plan.model)) for i in range(3)).apply_async()
    deadline = time.monotonic() + 30
    while any(o.status != "succeeded" for o in get_run(run_id).outcomes):
        assert time.monotonic() < deadline, "the section calls did not finish"
        time.sleep(0.1)
    assert get_run(run_id).status == "running"  # nothing would ever finish it

    reap_section(celery_app(settings), run_id)
    run_view = wait_for_run(run_id, timeout=60)

    assert run_view.status == "succeeded"
    assert [o.role for o in run_view.outcomes] == [OutcomeRole.SECTION.value] * 3 + [OutcomeRole.SYNTHESIS.value]
    assert run_view.result is not None and markers_in(run_view.result["synthesis"]) == TOPICS[:3]


def test_chorus_section_on_redis_exits_cleanly_with_no_noise_at_shutdown(workers, stub, tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    path = tmp_path / "doc.md"
    path.write_text(document(3))
    done = subprocess.run([sys.executable, "-m", "chorus.cli", "section", str(path), "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
