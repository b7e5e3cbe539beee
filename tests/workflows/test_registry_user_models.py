"""Model names: a name the registry does not know is refused with the closest ones, and a model outside
the registry is used only through an entry of the user's models file, with its prices."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from workflows import registry
from workflows.cost import TokenUsage, cost_of
from workflows.registry import RegistryError, model_info, parse_user_models, unknown_model, use_user_models

FILE = "/home/me/models.toml"
OPUS_6 = """
[[model]]
id = "claude-opus-6"
like = "claude-opus-5-5"
input_per_mtok = 5.0
output_per_mtok = 25.0
cache_write_5m_per_mtok = 6.25
cache_write_1h_per_mtok = 10.0
cache_read_per_mtok = 0.25
source = "https://platform.claude.com/docs/en/about-claude/pricing, read for this test"
as_of = "2026-12-10"
"""


@pytest.fixture(autouse=True)
def registry_alone() -> Iterator[None]:
    use_user_models(None)
    yield
    use_user_models(None)


@pytest.mark.parametrize(("name", "best"), [
    ("claude-sonet-5-5", "claude-sonnet-5-5"),   # the typo
    ("claude-haiku-55", "claude-haiku-5-5"),
    ("Claude-Opus-5.5", "claude-opus-5-5"),
    ("claude-sonnet-5-5-2026", "claude-sonnet-5-5"),
])
def test_a_misspelt_model_is_refused_with_the_closest_registry_name_first(name, best):
    problem = unknown_model(name)
    assert problem is not None
    assert f"did you mean {best}?" in problem
    assert "`chorus models`" in problem and "CHORUS_MODELS_FILE" in problem
    assert "CHORUS_MODELS " not in problem and "no queue" not in problem  # the old, wrong advice


def test_a_model_of_another_vendor_is_refused_without_a_guess_and_says_how_to_add_it():
    problem = unknown_model("gpt-4o")
    assert problem is not None and "did you mean" not in problem
    assert "not in the model registry" in problem and "with its prices" in problem


def test_retired_models_are_not_suggested():
    # claude-3-haiku is retired in the registry: the API no longer serves it.
    assert model_info("claude-3-haiku") is not None and model_info("claude-3-haiku").status == "retired"  # type: ignore[union-attr]
    assert "claude-3-haiku" not in registry.close_models("claude-3-haiku-x")


@pytest.mark.parametrize("name", ["claude-sonnet-5-5", "claude-sonnet-4-5-20250929", "claude-haiku-5-5-latest"])
def test_registry_names_and_their_snapshots_pass(name):
    assert unknown_model(name) is None


def test_a_user_entry_takes_limits_from_like_and_its_own_prices_and_is_priced():
    assert unknown_model("claude-opus-6") is not None
    use_user_models(parse_user_models(OPUS_6, FILE))
    info = model_info("claude-opus-6")
    assert info is not None and info.origin == FILE and unknown_model("claude-opus-6") is None
    opus = model_info("claude-opus-5-5")
    assert opus is not None
    assert (info.context_window, info.tokenizer, info.structured_outputs, info.effort_levels) == (
        opus.context_window, opus.tokenizer, opus.structured_outputs, opus.effort_levels)
    assert info.family == "claude-opus-6"  # its own rate-limit pool, not Opus 5.5's
    assert info.prices.input == 5.0 and info.long_prompt is None
    # 1M input and 1M output at $5 + $25: a cost, never "-".
    assert cost_of("claude-opus-6", TokenUsage(1_000_000, 1_000_000)).total_usd == pytest.approx(30.0)
    assert [m.id for m in registry.all_models()][-1] == "claude-opus-6"
    assert registry.user_models() == (info,)


def test_a_user_entry_with_a_registry_id_replaces_it_and_its_snapshots():
    text = OPUS_6.replace('id = "claude-opus-6"\nlike = "claude-opus-5-5"',
                          'id = "claude-sonnet-4-5"\nlike = "claude-sonnet-4-5"')
    use_user_models(parse_user_models(text, FILE))
    assert model_info("claude-sonnet-4-5").prices.input == 5.0  # type: ignore[union-attr]
    assert model_info("claude-sonnet-4-5-20250929").prices.input == 5.0  # type: ignore[union-attr]
    use_user_models(None)
    assert model_info("claude-sonnet-4-5").prices.input == 3.0  # type: ignore[union-attr]


@pytest.mark.parametrize(("change", "message"), [
    (("cache_read_per_mtok = 0.25\n", ""), "'cache_read_per_mtok' is missing: a model outside the registry needs all "
                                           "five prices"),
    (('like = "claude-opus-5-5"\n', ""), "'batch_discount' is missing; write it, or take the limits and "
                                         "capabilities of a registry model with like ="),
    (('like = "claude-opus-5-5"', 'like = "claude-opus-55"'), "'like' must name a model of the registry "
                                                              "(`chorus models`), got 'claude-opus-55'; did you "
                                                              "mean claude-opus-5-5?"),
    (('as_of = "2026-12-10"', 'as_of = "today"'), "'as_of' must be the date"),
    (("input_per_mtok = 5.0", "input_per_mtok = -5.0"), "'input_per_mtok' must be 0 or more"),
    (("input_per_mtok = 5.0", "input_per_mtok = 5.0\neffort_levels = [\"fast\"]"), "'default_effort' 'medium'"),
])
def test_a_bad_user_entry_is_refused_naming_the_file_the_model_and_the_field(change, message):
    old, new = change
    assert old in OPUS_6
    with pytest.raises(RegistryError, match=re.escape(message)) as caught:
        parse_user_models(OPUS_6.replace(old, new), FILE)
    assert f"{FILE}: model 'claude-opus-6'" in str(caught.value)


@pytest.mark.parametrize(("text", "message"), [
    ("model = 3", "list the models as [[model]] tables"),
    ("[[model", "is not valid TOML"),
    (OPUS_6 + OPUS_6, "'claude-opus-6' is listed twice"),
])
def test_a_bad_models_file_is_refused_naming_it(text, message):
    with pytest.raises(RegistryError, match=re.escape(message)):
        parse_user_models(text, FILE)


def test_an_entry_without_like_writes_out_every_limit_and_capability():
    full = OPUS_6.replace('like = "claude-opus-5-5"\n', """batch_discount = 0.5
min_cacheable_tokens = 1024
context_window = 200_000
max_output_tokens = 64_000
tokenizer = "legacy"
tokenizer_ratio = 1.0
structured_outputs = false
effort_levels = []
thinking = "none"
family = "my-proxy"
""")
    info = parse_user_models(full, FILE)["claude-opus-6"]
    assert (info.context_window, info.structured_outputs, info.family) == (200_000, False, "my-proxy")
