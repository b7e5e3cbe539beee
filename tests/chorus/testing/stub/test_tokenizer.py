"""The stub counts tokens its own way (word and punctuation pieces), not with chorus's estimate, and
what its count_tokens says is what a call bills."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from chorus.testing.stub.tokenizer import MESSAGE_FRAMING, SYSTEM_FRAMING, count_request, count_text, truncate
from workflows.tokens import estimate_tokens

STUB = Path(__file__).resolve().parents[4] / "chorus" / "testing" / "stub"


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 0),
        ("kettle", 1),  # up to 6 letters: one token
        ("excellent", 2),  # 9 letters: two
        ("internationalization", 4),
        ("2026", 2),  # digits: one token per started 3
        ("a, b.", 4),  # every punctuation mark is a token; spaces are free
        ("one\ntwo", 3),  # a line break is a token
        ("snake_case", 3),
    ],
)
def test_the_stub_counts_word_and_punctuation_pieces(text, tokens):
    assert count_text(text) == tokens


@pytest.mark.parametrize(
    ("text", "stub_vs_chorus"),
    [
        ("x " * 1000, 1000 / 500),  # short words: the stub counts twice chorus's estimate
        ("a, b; c. " * 100, 600 / 225),  # punctuation
        ("internationalization " * 100, 400 / 525),  # long words: the stub counts fewer
    ],
)
def test_the_stub_count_is_not_chorus_estimate(text, stub_vs_chorus):
    assert count_text(text) / estimate_tokens(text) == pytest.approx(stub_vs_chorus, rel=0.01)


def test_a_request_counts_its_framing_once_per_message_and_for_the_system_prompt():
    body = {"system": "Be brief.", "messages": [{"role": "user", "content": "Hi there"},
                                                {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
                                                {"role": "user", "content": "Bye"}]}
    assert count_request(body) == SYSTEM_FRAMING + 3 + 3 * MESSAGE_FRAMING + 2 + 1 + 1


def test_truncate_keeps_whole_pieces_within_the_budget():
    assert truncate("Answer: positive", 2) == "Answer:"
    assert count_text(truncate("excellent " * 50, 15)) <= 15
    assert truncate("short", 10) == "short"


def test_count_tokens_over_the_sdk_is_the_stubs_count_and_what_a_call_bills(stub_client):
    system, text = "You classify documents.", "x " * 300 + "Reply with one line: Answer: <label>"
    messages: list[Any] = [{"role": "user", "content": text}]
    model = "claude-haiku-4-5"
    counted = stub_client.messages.count_tokens(model=model, system=system, messages=messages).input_tokens
    billed = stub_client.messages.create(model=model, system=system, messages=messages, max_tokens=16).usage
    assert counted == count_request({"system": system, "messages": messages}) == billed.input_tokens
    assert counted == SYSTEM_FRAMING + 5 + MESSAGE_FRAMING + 300 + 11
    # chorus's ~4 characters a token says about half of that: only the API's count is right here
    assert counted > 1.8 * (estimate_tokens(system) + estimate_tokens(text))
    assert billed.output_tokens <= 16


def test_the_stub_imports_nothing_of_chorus_but_the_offline_model():
    """The stub is the API chorus is checked against: it must not reuse chorus's estimates, tables or limiter."""
    allowed_outside = {"providers.offline"}
    for path in STUB.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                top = name.split(".")[0]
                if top in {"workflows", "providers", "tasks", "models", "settings", "worker"}:
                    assert name in allowed_outside, f"{path.name} imports {name}"
                if top == "chorus":
                    assert name.startswith("chorus.testing.stub"), f"{path.name} imports {name}"
