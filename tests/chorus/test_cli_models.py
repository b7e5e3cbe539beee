"""`chorus models [--json]`: the registry as a table and as JSON."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from chorus.cli import app

LINEUP = ("claude-haiku-5-5", "claude-sonnet-5-5", "claude-opus-5-5")


def test_models_json_lists_the_line_up_with_sources_dates_and_the_haiku_tier():
    done = CliRunner().invoke(app, ["models", "--json"])
    assert done.exit_code == 0, done.output
    data = json.loads(done.output)
    by_id = {m["id"]: m for m in data["models"]}
    assert set(LINEUP) <= set(by_id)
    assert [m["id"] for m in data["models"]][:3] == list(LINEUP)  # the current line-up first
    assert all(m["source"] and m["as_of"] <= data["as_of"] for m in data["models"])
    haiku = by_id["claude-haiku-5-5"]
    assert haiku["long_prompt"]["above_prompt_tokens"] == 100_000
    assert haiku["prices_per_mtok"]["cache_read"] == 0.01 and haiku["long_prompt"]["prices_per_mtok"]["input"] == 0.5
    opus = {m: by_id[f"claude-opus-{m}"]["family"] for m in ("4-6", "4-7", "5-5")}
    assert opus["4-6"] == opus["4-7"] != opus["5-5"]


def test_models_prints_a_table_of_every_model():
    done = CliRunner().invoke(app, ["models"], env={"COLUMNS": "250"})
    assert done.exit_code == 0, done.output
    for model in (*LINEUP, "claude-haiku-4-5", "claude-opus-4-7"):
        assert model in done.output
    assert "above 100K prompt" in done.output and "0.05x" in done.output
