"""The model registry (workflows/models.toml): every entry sourced and dated, ids and snapshots,
per-model cache reads, Haiku 5.5's whole-request long-prompt tier, and the rate-limit families."""

from __future__ import annotations

import re
from datetime import date

import pytest

from settings import Settings, load_settings
from workflows import registry
from workflows.cost import TokenUsage, cost_of, cost_of_requests, minimum_vote_cost
from workflows.errors import ConfigError
from workflows.registry import (
    REGISTRY_AS_OF,
    RegistryError,
    all_models,
    context_window,
    effort_levels,
    family,
    max_output_tokens,
    model_info,
    parse,
    pool_conflicts,
    pooled,
    supports_structured_outputs,
)
from workflows.tokens import estimate_tokens, estimate_tokens_for, min_cacheable_tokens, model_family

M = 1_000_000
LINEUP = ("claude-haiku-5-5", "claude-sonnet-5-5", "claude-opus-5-5")
STILL_SERVED = ("claude-haiku-4-5", "claude-sonnet-4-5", "claude-sonnet-4-6", "claude-opus-4-5", "claude-opus-4-6",
                "claude-opus-4-7")


@pytest.mark.parametrize("info", all_models(), ids=lambda m: m.id)
def test_every_entry_names_its_source_and_the_date_it_was_read(info):
    assert len(info.source.strip()) > 20, "name the pages the figures come from"
    assert date.fromisoformat(info.as_of) <= date.fromisoformat(REGISTRY_AS_OF)
    if info.long_prompt is not None:
        assert info.long_prompt.source.strip()
    assert info.prices.cache_read < info.prices.input < info.prices.cache_write_5m < info.prices.cache_write_1h


def test_the_current_line_up_and_the_4x_models_still_served_are_all_there():
    ids = {m.id for m in all_models()}
    assert set(LINEUP) | set(STILL_SERVED) <= ids
    assert any(m.id.startswith("claude-fable-") and m.status == "current" for m in all_models())
    assert all(model_info(m).status != "retired" for m in LINEUP + STILL_SERVED)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("asked", "entry"),
    [
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-opus-4-5-20251101", "claude-opus-4-5"),
        ("claude-haiku-5-5-latest", "claude-haiku-5-5"),
        ("  Claude-Opus-5-5 ", "claude-opus-5-5"),
        ("claude-opus-4-20250514", "claude-opus-4"),
        ("claude-opus-4-7", "claude-opus-4-7"),  # a model of its own, not claude-opus-4
    ],
)
def test_snapshots_and_latest_resolve_to_their_base_model(asked, entry):
    info = model_info(asked)
    assert info is not None and info.id == entry


@pytest.mark.parametrize("unknown", ["gpt-4", "claude-opus-4-9", "claude-haiku-6-0-20270101", ""])
def test_an_unknown_model_has_no_entry_and_the_safe_answers(unknown):
    assert model_info(unknown) is None
    assert supports_structured_outputs(unknown) is False
    assert effort_levels(unknown) == ()
    assert context_window(unknown) is None and max_output_tokens(unknown) is None
    assert family(unknown) == re.sub(r"-\d{8}$", "", unknown.strip())  # a pool of its own
    assert min_cacheable_tokens(unknown) == 4096


def test_capabilities_and_sizes_come_from_the_entries():
    assert supports_structured_outputs("claude-haiku-5-5") and not supports_structured_outputs("claude-3-haiku")
    assert effort_levels("claude-opus-4-5") == ("low", "medium", "high")
    assert "max" in effort_levels("claude-sonnet-4-6") and "xhigh" not in effort_levels("claude-sonnet-4-6")
    assert effort_levels("claude-haiku-4-5") == () and effort_levels("claude-sonnet-4-5") == ()
    assert context_window("claude-haiku-5-5") == 1_000_000 and max_output_tokens("claude-haiku-5-5") == 128_000
    assert context_window("claude-haiku-4-5-20251001") == 200_000 and max_output_tokens("claude-haiku-4-5") == 64_000


# ----- prices ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "usd_per_mtok_read"),
    [
        ("claude-haiku-5-5", 0.01),  # $0.01, not 0.1x of a tier
        ("claude-sonnet-5-5", 0.05 * 2.0),  # 0.05x on the 5.5 Sonnet and Opus
        ("claude-opus-5-5", 0.05 * 4.0),
        ("claude-haiku-4-5", 0.1 * 1.0),  # 0.1x on most
        ("claude-opus-4-6", 0.1 * 5.0),
    ],
)
def test_cache_reads_are_priced_per_model(model, usd_per_mtok_read):
    read = 100_000  # a 100k-token prompt: Haiku 5.5's lower tier still applies
    assert cost_of(model, TokenUsage(cache_read_tokens=read)).total_usd == pytest.approx(usd_per_mtok_read * read / M)


def test_the_5_5_models_input_output_and_cache_writes():
    assert cost_of("claude-sonnet-5-5", TokenUsage(input_tokens=M, output_tokens=M)).total_usd == pytest.approx(12.0)
    assert cost_of("claude-opus-5-5", TokenUsage(input_tokens=M, output_tokens=M)).total_usd == pytest.approx(24.0)
    assert cost_of("claude-opus-5-5", TokenUsage(cache_write_tokens=M)).total_usd == pytest.approx(5.0)
    assert cost_of("claude-opus-5-5", TokenUsage(cache_write_tokens=M), cache_ttl="1h").total_usd == pytest.approx(8.0)
    assert cost_of("claude-sonnet-5-5", TokenUsage(input_tokens=M), batch_api=True).total_usd == pytest.approx(1.0)


# A Haiku 5.5 request: input + cache write + cache read is its prompt; the tier follows the prompt.
def haiku_request(prompt: int) -> TokenUsage:
    return TokenUsage(input_tokens=prompt - 60_000, output_tokens=1_000, cache_write_tokens=30_000,
                      cache_read_tokens=30_000)


def test_a_haiku_5_5_request_above_100k_prompt_tokens_pays_the_upper_tier_for_every_token():
    usage = haiku_request(100_001)
    expected = (40_001 * 0.50 + 1_000 * 2.50 + 30_000 * 0.625 + 30_000 * 0.05) / M
    cost = cost_of("claude-haiku-5-5", usage)
    assert cost.total_usd == pytest.approx(expected)
    assert cost.output_usd == pytest.approx(1_000 * 2.50 / M)  # output too, not only the input over 100k
    one_hour = cost_of("claude-haiku-5-5", usage, cache_ttl="1h")
    assert one_hour.cache_write_usd == pytest.approx(30_000 * 1.00 / M)
    assert cost_of("claude-haiku-5-5", usage, batch_api=True).total_usd == pytest.approx(expected / 2)


def test_a_haiku_5_5_request_of_exactly_100k_prompt_tokens_stays_in_the_lower_tier():
    usage = haiku_request(100_000)
    expected = (40_000 * 0.10 + 1_000 * 0.50 + 30_000 * 0.125 + 30_000 * 0.01) / M
    assert cost_of("claude-haiku-5-5", usage).total_usd == pytest.approx(expected)


def test_requests_are_priced_one_by_one_never_as_one_summed_usage():
    # Three 60k-token requests are each in the lower tier, though together they hold 180k tokens.
    usages = [TokenUsage(input_tokens=60_000, output_tokens=100)] * 3
    assert cost_of_requests("claude-haiku-5-5", usages).total_usd == pytest.approx(3 * (60_000 * 0.10 + 50) / M)
    cost = minimum_vote_cost("claude-haiku-5-5", 50_000, [10_000] * 3, [100] * 3, min_cacheable=4096)
    lower = (3 * 10_000 * 0.10 + 50_000 * 0.125 + 2 * 50_000 * 0.01 + 300 * 0.50) / M
    assert cost.total_usd == pytest.approx(lower)


# ----- tokens ---------------------------------------------------------------------------------------
def test_the_cache_minimum_and_the_tokenizer_follow_the_model():
    assert min_cacheable_tokens("claude-haiku-5-5") == 4096  # undocumented: the conservative figure
    assert min_cacheable_tokens("claude-sonnet-4-6") == 2048
    assert min_cacheable_tokens("claude-sonnet-4-5-20250929") == 1024
    text = "word " * 400
    assert estimate_tokens_for(text, "claude-haiku-4-5") == estimate_tokens(text)
    assert estimate_tokens_for(text, "claude-haiku-5-5") == pytest.approx(1.35 * estimate_tokens(text), abs=1)
    assert estimate_tokens_for(text, "claude-opus-4-7") > estimate_tokens_for(text, "claude-opus-4-6")


def test_model_family_still_means_the_snapshot_stripped_model_not_the_rate_limit_pool():
    assert model_family("claude-sonnet-4-5-20250929") == "claude-sonnet-4-5"
    assert family("claude-sonnet-4-5-20250929") == "claude-sonnet-4"


# ----- rate-limit families -----------------------------------------------------------------------------
def test_models_anthropic_pools_share_a_family_and_the_others_do_not():
    assert family("claude-opus-4-5") == family("claude-opus-4-6") == family("claude-opus-4-7") == "claude-opus-4"
    assert family("claude-sonnet-4-6") == family("claude-sonnet-4-5-20250929") == "claude-sonnet-4"
    assert family("claude-fable-5-1") == family("claude-fable-5-2")
    # Opus 5.5 has a table of its own on the rate-limits page.
    assert len({family(m) for m in ("claude-opus-5-5", "claude-opus-4-6", "claude-haiku-5-5", "claude-haiku-4-5")}) == 4


def test_a_limit_given_for_a_model_is_its_familys_limit():
    table = {"claude-opus-4-6": "A", "claude-haiku-5-5": "B", "claude-sonnet-4": "C"}
    assert pooled(table, "claude-opus-4-7") == "A"  # the same pool as opus-4-6
    assert pooled(table, "claude-sonnet-4-5") == "C"  # by family name
    assert pooled(table, "claude-opus-5-5") is None  # another family
    assert pool_conflicts(table) == []
    assert pool_conflicts({"claude-opus-4-6": "A", "claude-opus-4-5": "A"}) == []  # the same limit twice is fine
    [problem] = pool_conflicts({"claude-opus-4-6": "A", "claude-opus-4-7": "B", "*": "C"})
    assert "claude-opus-4-6 and claude-opus-4-7" in problem and "'claude-opus-4'" in problem


def test_settings_refuse_two_limits_for_one_family_naming_the_pool():
    with pytest.raises(ConfigError, match=r"CHORUS_RATE_LIMITS.*share the rate-limit pool 'claude-opus-4'"):
        load_settings(rate_limits="claude-opus-4-6:rpm=50;claude-opus-4-7:rpm=60")
    load_settings(rate_limits="claude-opus-4-6:rpm=50;claude-opus-5-5:rpm=60")  # two families: fine


def test_the_default_models_are_the_line_up_and_the_4x_models_still_served():
    defaults = load_settings(models=Settings.model_fields["models"].default, default_model="claude-haiku-5-5")
    assert Settings.model_fields["default_model"].default == "claude-haiku-5-5"
    assert set(defaults.model_list) == set(LINEUP) | set(STILL_SERVED)


# ----- the data file's own checks ------------------------------------------------------------------------
GOOD = """
as_of = "2026-12-02"
[[model]]
id = "m-1"
name = "M 1"
status = "current"
family = "m"
input_per_mtok = 1.0
output_per_mtok = 5.0
cache_write_5m_per_mtok = 1.25
cache_write_1h_per_mtok = 2.0
cache_read_per_mtok = 0.1
batch_discount = 0.5
min_cacheable_tokens = 1024
context_window = 200_000
max_output_tokens = 64_000
tokenizer = "legacy"
tokenizer_ratio = 1.0
structured_outputs = true
effort_levels = ["low"]
thinking = "none"
source = "https://example.invalid/pricing, read for this test"
as_of = "2026-12-02"
"""


def test_a_well_formed_file_parses():
    as_of, table = parse(GOOD)
    assert as_of == "2026-12-02" and table["m-1"].prices.output == 5.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('source = "https://example.invalid/pricing, read for this test"', 'source = " "'), "'source' is empty"),
        (('source = "https://example.invalid/pricing, read for this test"\n', ""), "'source' is missing"),
        (('as_of = "2026-12-02"\n', 'as_of = "yesterday"\n'), "'as_of' must be the date"),
        (("input_per_mtok = 1.0", "input_per_mtok = -1.0"), "'input_per_mtok' must be 0 or more"),
        (("input_per_mtok = 1.0", 'input_per_mtok = "cheap"'), "'input_per_mtok' must be a whole number or number"),
        (("structured_outputs = true", "structured_outputs = 1"), "'structured_outputs' must be a true or false"),
        (("min_cacheable_tokens = 1024", "min_cacheable_tokens = true"), "'min_cacheable_tokens' must be a whole"),
        (('status = "current"', 'status = "beta"'), "'status' must be one of current, served, retired"),
        (('effort_levels = ["low"]', 'effort_levels = ["low"]\ndefault_effort = "max"'), "'default_effort' 'max'"),
        (("batch_discount = 0.5", "batch_discount = 50"), "'batch_discount' is the share taken off"),
    ],
)
def test_a_bad_entry_is_refused_naming_the_model_and_the_field(change, message):
    old, new = change
    text = new.join(GOOD.rsplit(old, 1))  # the last occurrence: the entry's own, not the file's as_of
    assert text != GOOD
    with pytest.raises(RegistryError, match=re.escape(message)) as caught:
        parse(text)
    assert "workflows/models.toml: model 'm-1'" in str(caught.value)


def test_the_same_id_twice_is_refused():
    twice = GOOD + GOOD[GOOD.index("[[model]]"):]
    with pytest.raises(RegistryError, match="'m-1' is listed twice"):
        parse(twice)


def test_the_registry_is_read_from_package_data_not_from_a_path():
    # importlib.resources: a wheel or a zip install reads the same file (pyproject package-data).
    assert registry.DATA_FILE == "models.toml"
    from importlib import resources

    assert "claude-haiku-5-5" in resources.files("workflows").joinpath("models.toml").read_text(encoding="utf-8")
