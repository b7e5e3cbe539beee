"""A batch remembers the provider and models it was sent with: a resume with another provider (an
offline run, then the same command with a key) or other models is refused, naming both and the two
ways out (`--new-version`, `--allow-mixed`), while the batch holds answers. And `run_batch` takes the
documents themselves: texts, or records with id and text or path."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from chorus.batch import (
    BatchSpec,
    batch_counts,
    open_batch,
    prepare_batch,
    run_batch,
    wait_for_batch,
    with_provider,
)
from chorus.runs import prepare
from models import Batch, Pattern, RunStatus, Session, in_session, repo
from models.tables import new_id, utcnow
from settings import load_settings
from tests.clirunner import chorus
from tests.conftest import clean_env
from workflows.errors import ConfigError

pytestmark = pytest.mark.integration

OPTIONS = {"labels": "positive,negative", "voters": 2}


def settings_for(provider: str, **extra: object):  # noqa: ANN201 - a Settings
    settings = load_settings(provider=provider, **extra)
    prepare(settings)
    return settings


def stored_batch(name: str, provider: str, *, succeeded: int, record: bool = True, **extra: object) -> str:
    """A batch sent with `provider` whose `succeeded` documents have answers (their runs recorded as the
    batch's were); without `record`, one stored before batches recorded their provider (config without it)."""
    settings = settings_for(provider, **extra)
    spec = with_provider(BatchSpec(Pattern.VOTE, dict(OPTIONS)), settings)
    batch_id, _ = open_batch(None, spec if record else BatchSpec(Pattern.VOTE, dict(OPTIONS)), name)
    now = utcnow()
    docs: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    outcomes: list[dict[str, Any]] = []
    for i in range(succeeded + 1):  # and one failed document, retried by any resume
        doc_id, run_id = new_id(), new_id()
        status = RunStatus.SUCCEEDED if i < succeeded else RunStatus.FAILED
        docs.append({"id": doc_id, "batch_id": batch_id, "external_id": f"d{i}", "text": f"text {i}",
                     "content_hash": repo.content_hash(f"text {i}"), "status": status, "position": i,
                     "created_at": now})
        runs.append({"id": run_id, "document_id": doc_id, "pattern": Pattern.VOTE, "status": status,
                     "provider": provider, "config": {}, "created_at": now})
        outcomes.extend({"run_id": run_id, "slot": slot, "model": model, "status": "succeeded", "attempts": 1,
                         "input_tokens": 0, "output_tokens": 0, "cache_write_tokens": 0, "cache_read_tokens": 0,
                         "usage_estimated": provider == "offline", "role": "voter"}
                        for slot, model in enumerate(spec.models * 2))
    in_session(lambda s: repo.insert_batch_chunk(s, batch_id, documents=docs, runs=runs, outcomes=outcomes, now=now))
    return batch_id


def answered_by(name: str) -> list[dict[str, object]]:
    with Session() as s:
        batch = repo.batch_named(s, name)
        assert batch is not None
        return list(batch.config.get("answered_by") or [])


def test_a_batch_with_offline_answers_refuses_a_resume_with_claude_naming_both_and_the_two_ways_out(
        postgres, tmp_path):
    name = f"mix-{uuid.uuid4().hex[:6]}"
    stored_batch(name, "offline", succeeded=18)
    online = settings_for("anthropic")
    texts = [f"text {i}" for i in range(19)]

    with pytest.raises(ConfigError) as refused:
        prepare_batch(texts, pattern="vote", options=OPTIONS, name=name, settings=online)

    message = str(refused.value)
    assert f"batch {name!r} was sent with the offline provider (claude-haiku-5-5)" in message
    assert "this run would use the anthropic provider (claude-haiku-5-5)" in message
    assert "its 18 document(s) that succeeded" in message
    assert f"--new-version to start {name}.v2" in message and "--allow-mixed" in message
    assert prepare_batch(texts, pattern="vote", options=OPTIONS, name=name, settings=online,
                         new_version=True).name == f"{name}.v2"
    mixed = prepare_batch(texts, pattern="vote", options=OPTIONS, name=name, settings=online, allow_mixed=True)
    assert mixed.name == name
    open_batch(None, mixed.spec, name, allow_mixed=True)
    assert answered_by(name) == [{"provider": "offline", "models": ["claude-haiku-5-5"]},
                                 {"provider": "anthropic", "models": ["claude-haiku-5-5"]}]
    # Mixed with consent: either provider resumes it now without asking again.
    for provider in ("offline", "anthropic"):
        assert prepare_batch(texts, pattern="vote", options=OPTIONS, name=name,
                             settings=settings_for(provider)).name == name


def test_another_default_model_is_refused_too_naming_the_models(postgres):
    name = f"mix-model-{uuid.uuid4().hex[:6]}"
    stored_batch(name, "offline", succeeded=2)
    other = settings_for("offline", default_model="claude-sonnet-5-5")
    with pytest.raises(ConfigError, match=r"offline provider \(claude-haiku-5-5\); this run would use the offline "
                                          r"provider \(claude-sonnet-5-5\)"):
        prepare_batch(["a", "b", "c"], pattern="vote", options=OPTIONS, name=name, settings=other)


def test_a_batch_without_answers_to_keep_starts_over_with_the_new_provider(postgres):
    name = f"mix-none-{uuid.uuid4().hex[:6]}"
    stored_batch(name, "offline", succeeded=0)  # every document failed offline: nothing would be mixed
    online = settings_for("anthropic")
    prepared = prepare_batch(["a"], pattern="vote", options=OPTIONS, name=name, settings=online)
    open_batch(None, prepared.spec, name)
    assert answered_by(name) == [{"provider": "anthropic", "models": ["claude-haiku-5-5"]}]


def test_a_batch_stored_before_batches_recorded_their_provider_is_judged_by_its_runs(postgres):
    name = f"mix-old-{uuid.uuid4().hex[:6]}"
    stored_batch(name, "offline", succeeded=3, record=False)
    assert answered_by(name) == []
    with pytest.raises(ConfigError, match="was sent with the offline provider .claude-haiku-5-5.; this run would "
                                          "use the anthropic provider"):
        prepare_batch(["x"], pattern="vote", options=OPTIONS, name=name, settings=settings_for("anthropic"))
    assert prepare_batch(["x"], pattern="vote", options=OPTIONS, name=name,
                         settings=settings_for("offline")).name == name


# ----- run_batch takes the documents themselves -----------------------------------------------------
def test_run_batch_takes_texts_and_records_and_the_same_documents_resume_the_same_batch(workers, stub, tmp_path):
    review = tmp_path / "review.txt"
    review.write_text("Awful. It broke after a day.")
    tag = uuid.uuid4().hex[:6]
    documents: list[str | dict[str, str]] = [f"I love it, excellent. {tag}", f"Terrible, it broke. {tag}",
                 {"id": "r1", "text": f"Excellent value. {tag}", "label": "positive"},
                 {"id": "r2", "path": str(review), "label": "negative"},
                 {"id": "r1", "text": "a repeated id"},
                 {"text": "no id"}]

    sub = run_batch(iter(documents), pattern="vote", options=OPTIONS)  # a generator: read once
    counts = wait_for_batch(sub.batch_id, timeout=120)
    again = run_batch(documents, pattern="vote", options=OPTIONS)

    assert sub.name.startswith("texts-") and sub.read == 6 and sub.sent == 4 and sub.rejected == 2
    assert dict(sub.reasons) == {"r1#dup-5": "item 5: duplicate id 'r1' (first at item 3)",
                                 "item-6": "item 6: missing 'id'"}
    assert counts.total == 6 and counts.succeeded + counts.partial == 4 and counts.failed == 2
    with Session() as s:
        batch = s.get(Batch, sub.batch_id)
        assert batch is not None and batch.source is None
        docs = {d.external_id: d for d in repo.documents_page(s, sub.batch_id, after_position=-2, after_id="",
                                                               limit=10)}
    assert sorted(docs) == ["item-1", "item-2", "item-6", "r1", "r1#dup-5", "r2"]
    assert docs["r2"].text == "Awful. It broke after a day." and docs["r2"].gold_label == "negative"
    assert again.batch_id == sub.batch_id and again.skipped == counts.succeeded and again.sent == counts.partial
    assert batch_counts(sub.batch_id).total == 6


@pytest.mark.parametrize(("documents", "message"), [
    ([], "no documents: the iterable of texts or records is empty"),
    (["fine", 42], "item 2 is of type int; each document is a text"),
    (b"bytes", "not bytes"),
    ({"id": "a", "text": "b"}, "not dict"),
])
def test_documents_run_batch_cannot_read_are_refused_before_anything_is_written(postgres, documents, message):
    with pytest.raises(ConfigError, match=message):
        prepare_batch(documents, pattern="vote", options=OPTIONS, settings=settings_for("offline"))


# ----- the symptom, as the user met it: the CLI, offline then with a key ------------------------------
def test_the_same_batch_command_with_a_key_after_an_offline_run_is_refused_not_mixed_in_silence(stub, tmp_path):
    tickets = tmp_path / "tickets.jsonl"
    tickets.write_text("".join(json.dumps({"id": f"t{i}", "text": text}) + "\n" for i, text in enumerate([
        "We are locked out and cannot work at all since the update.",
        "The export button is slow, but copying the table by hand works for now."] * 2)))
    task = Path(__file__).resolve().parents[2] / "examples" / "ticket-urgency.toml"
    offline = clean_env(CHORUS_DATA_DIR=str(tmp_path / "store"), COLUMNS="200")
    online = {**offline, "ANTHROPIC_API_KEY": "test-key", "ANTHROPIC_BASE_URL": stub.base_url}  # type: ignore[attr-defined]
    args = ("batch", str(tickets), "--task", str(task), "--json")

    first = chorus(*args, cwd=tmp_path, env=offline)
    refused = chorus(*args, cwd=tmp_path, env=online)
    mixed = chorus(*args, "--allow-mixed", cwd=tmp_path, env=online)

    assert first.returncode in (0, 1, 3), first.stderr
    kept = json.loads(first.stdout)["counts"]["succeeded"]
    assert kept > 0
    assert refused.returncode == 2, refused.stderr
    message = " ".join(refused.stderr.split())
    assert "was sent with the offline provider (claude-haiku-5-5, claude-sonnet-5-5)" in message
    assert "this run would use the anthropic provider (claude-haiku-5-5, claude-sonnet-5-5)" in message
    assert "--new-version" in message and "--allow-mixed" in message and "Traceback" not in refused.stderr
    assert mixed.returncode in (0, 1, 3), mixed.stderr
    assert json.loads(mixed.stdout)["skipped"] == kept
