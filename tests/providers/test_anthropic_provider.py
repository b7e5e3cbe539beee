"""The Anthropic provider drives the real SDK over HTTP (against the stub) and speaks our error tree."""

from __future__ import annotations

import email.utils
import socket
import time
from collections.abc import Iterator

import pytest

import providers
from chorus.testing.stub.testing import StubHandle, running_stub
from providers.anthropic_provider import AnthropicProvider, build_params, parse_retry_after, tag_headers
from providers.offline import EVIDENCE_NOTE, OfflineProvider
from settings import load_settings
from workflows.errors import ConfigError, PermanentError, RetryableError
from workflows.tokens import estimate_tokens, min_cacheable_tokens
from workflows.voting import Voter, parse_answer, vote_request

LABELS = ("positive", "negative")
REVIEW = "I loved this kettle. It is fast, quiet and beautiful. I recommend it."


@pytest.fixture(scope="module")
def stub_process() -> Iterator[StubHandle]:
    with running_stub() as handle:
        yield handle


@pytest.fixture
def stub_server(stub_process: StubHandle) -> StubHandle:
    """The module's HTTP stub, reset for each test (a test using it is in the integration lane)."""
    stub_process.reset()
    return stub_process


def provider(stub: StubHandle, timeout_s: float = 10) -> AnthropicProvider:
    return AnthropicProvider(api_key="test-key", base_url=stub.base_url, timeout_s=timeout_s)


def request(run: str = "run-1", slot: int = 0, model: str = "claude-haiku-4-5", document: str = REVIEW):
    return vote_request(Voter(slot, model, "direct", 0.0), LABELS, document, tags=(("run", run), ("slot", str(slot))))


def test_a_vote_through_the_real_sdk_parses_and_reports_usage(stub_server):
    result = provider(stub_server).call(request())
    assert parse_answer(result.text, LABELS) == "positive"
    usage = result.usage
    for value in (usage.input_tokens, usage.output_tokens, usage.cache_creation_input_tokens,
                  usage.cache_read_input_tokens):
        assert type(value) is int
    assert usage.input_tokens > 0 and usage.output_tokens > 0 and usage.estimated is False
    assert result.request_id is not None and result.request_id.startswith("req_")
    assert result.stop_reason == "end_turn" and result.model == "claude-haiku-4-5"


def test_the_stub_answers_exactly_like_the_offline_provider(stub_server):
    req = request(model="claude-sonnet-4-6")
    offline = OfflineProvider().call(req).text  # the same scorer; only offline notes that it is an estimate
    assert EVIDENCE_NOTE in offline
    assert provider(stub_server).call(req).text == offline.replace(EVIDENCE_NOTE, "")


def test_run_and_slot_tags_arrive_as_headers(stub_server):
    p = provider(stub_server)
    for slot in (0, 1, 2):
        p.call(request(run="run-tags", slot=slot))
    seen = [(r["run"], r["slot"], r["status"]) for r in stub_server.requests()]
    assert seen == [("run-tags", "0", 200), ("run-tags", "1", 200), ("run-tags", "2", 200)]


def test_a_429_is_retryable_and_carries_retry_after(stub_server):
    stub_server.set_rules([{"slot": "3", "status": 429, "retry_after": 2.5}])
    with pytest.raises(RetryableError) as info:
        provider(stub_server).call(request(slot=3))
    err = info.value
    assert err.status == 429 and err.retry_after == 2.5
    assert err.request_id is not None and err.request_id.startswith("req_")
    assert str(err).startswith("HTTP 429 rate_limit_error:")


@pytest.mark.parametrize(("status", "kind"), [(500, "api_error"), (529, "overloaded_error")])
def test_server_errors_and_overload_are_retryable(stub_server, status, kind):
    stub_server.set_rules([{"status": status}])
    with pytest.raises(RetryableError) as info:
        provider(stub_server).call(request())
    assert info.value.status == status
    assert str(info.value).startswith(f"HTTP {status} {kind}:")


@pytest.mark.parametrize(("status", "hint"), [(400, "fix the request"), (401, "ANTHROPIC_API_KEY"),
                                              (404, "model name")])
def test_client_errors_are_permanent_and_say_what_to_fix(stub_server, status, hint):
    stub_server.set_rules([{"status": status}])
    with pytest.raises(PermanentError) as info:
        provider(stub_server).call(request())
    assert info.value.status == status
    assert hint in str(info.value)


def test_one_call_is_one_attempt_because_sdk_retries_are_off(stub_server):
    stub_server.set_rules([{"status": 500, "times": 1}])
    with pytest.raises(RetryableError):
        provider(stub_server).call(request())
    assert [r["status"] for r in stub_server.requests()] == [500]


@pytest.mark.integration  # a real connection, refused
def test_a_dead_port_is_a_retryable_connection_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = AnthropicProvider(api_key="test-key", base_url=f"http://127.0.0.1:{port}", timeout_s=5)
    with pytest.raises(RetryableError) as info:
        dead.call(request())
    assert info.value.status is None
    assert "connection" in str(info.value)


@pytest.mark.integration  # the stub server, a process
def test_a_slow_answer_past_the_timeout_is_retryable():
    with running_stub(latency_ms=2000) as slow:
        started = time.monotonic()
        with pytest.raises(RetryableError) as info:
            provider(slow, timeout_s=0.3).call(request())
        assert time.monotonic() - started < 1.9
    assert "timed out" in str(info.value)


# ----- the request we build (pure) ---------------------------------------------------------------

LONG = "The kettle is quiet and the design is beautiful. " * 500  # ~6 000 tokens
MEDIUM = "The kettle is quiet and the design is beautiful. " * 150  # ~1 900 tokens


@pytest.mark.parametrize(
    ("model", "document", "cached"),
    [
        ("claude-haiku-4-5", LONG, True),
        ("claude-haiku-4-5", MEDIUM, False),  # below Haiku 4.5's 4096
        ("claude-sonnet-4-5", MEDIUM, True),  # above Sonnet 4.5's 1024
        ("claude-haiku-4-5", REVIEW, False),
    ],
)
def test_cache_control_marks_the_shared_prefix_only_when_it_can_be_cached(model, document, cached):
    params = build_params(request(model=model, document=document))
    blocks = params["messages"][0]["content"]
    assert [b["text"] for b in blocks] == list(request(model=model, document=document).user_blocks)
    assert ("cache_control" in blocks[0]) is cached
    if cached:
        assert blocks[0]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in blocks[1]  # the per-voter instruction is never part of the prefix


def test_without_cache_blocks_nothing_is_marked():
    req = vote_request(Voter(0, "claude-haiku-4-5", "direct", 0.0), LABELS, LONG)
    params = build_params(type(req)(**{**req.__dict__, "cache_blocks": 0}))
    assert all("cache_control" not in b for b in params["messages"][0]["content"])


def test_built_params_carry_system_tags_and_no_sampling_parameters():
    params = build_params(vote_request(Voter(0, "claude-haiku-4-5", "direct", 0.7), LABELS, REVIEW,
                                       tags=(("run", "abc"), ("slot", "4"))))
    assert params["system"].startswith("You classify documents.")
    assert params["extra_headers"] == {"x-chorus-run": "abc", "x-chorus-slot": "4"}
    assert params["model"] == "claude-haiku-4-5" and params["max_tokens"] == 64
    assert not {"temperature", "top_p", "top_k"} & set(params)


def test_tag_headers_are_sanitized_into_single_ascii_lines():
    assert tag_headers((("Run Id", "a\r\nb"), ("", "x"))) == {"x-chorus-run-id": "ab"}


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "1500", "retry-after": "2"}, 1.5),
        ({"retry-after": "-4"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_retry_after_is_read_in_seconds(headers, expected):
    assert parse_retry_after(headers) == expected


def test_retry_after_also_accepts_an_http_date():
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (parse_retry_after({"retry-after": when}) or 0) <= 30


@pytest.mark.parametrize(
    ("model", "minimum"),
    [
        ("claude-haiku-4-5", 4096),
        ("claude-haiku-4-5-20251001", 4096),
        ("claude-opus-4-6", 4096),
        ("claude-opus-4-5-20251101", 4096),
        ("claude-sonnet-4-6", 2048),
        ("claude-sonnet-4-5-20250929", 1024),
        ("claude-opus-4-20250514", 1024),
        ("claude-3-5-haiku-latest", 2048),
        ("claude-opus-4-7", 4096),  # an unknown model must not inherit claude-opus-4's minimum
        ("some-other-model", 4096),
    ],
)
def test_the_minimum_cacheable_prefix_follows_the_model(model, minimum):
    assert min_cacheable_tokens(model) == minimum


@pytest.mark.parametrize(("text", "tokens"), [("", 0), ("a", 1), ("abcd", 1), ("abcde", 2), ("x" * 400, 100)])
def test_tokens_are_estimated_at_about_four_characters_each(text, tokens):
    assert estimate_tokens(text) == tokens


# ----- choosing a provider ----------------------------------------------------------------------

def test_the_offline_provider_is_chosen_without_an_api_key():
    assert providers.get_provider(load_settings(provider="auto", ANTHROPIC_API_KEY="")).name == "offline"


def test_the_anthropic_provider_needs_an_api_key():
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        providers.get_provider(load_settings(provider="anthropic", ANTHROPIC_API_KEY=""))


def test_the_provider_is_built_once_per_process():
    settings = load_settings(provider="anthropic", ANTHROPIC_API_KEY="k-1")
    first = providers.get_provider(settings)
    assert first.name == "anthropic"
    assert providers.get_provider(load_settings(provider="anthropic", ANTHROPIC_API_KEY="k-1")) is first
    assert "k-1" not in repr(first)
