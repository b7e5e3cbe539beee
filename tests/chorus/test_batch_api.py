"""The batch API refuses what it cannot run with a ConfigError that names the problem, before any write."""

from __future__ import annotations

import pytest

from chorus.batch import run_batch
from workflows.errors import ConfigError


def test_a_path_given_as_text_is_read_like_a_path(tmp_path):
    with pytest.raises(ConfigError, match="no such file or folder: .*missing.csv"):
        run_batch(str(tmp_path / "missing.csv"), pattern="vote", options={"labels": "a,b"})


@pytest.mark.parametrize(("options", "message"), [
    ({"labels": "a,b", "voters": 1000}, "over the limit of 64 .CHORUS_MAX_VOTERS."),
    ({"labels": "a,b", "voters": "3"}, "whole number"),
    ({"labels": "a,b", "models": "claude-haiku-5-5"}, "a list of model ids"),
    ({"labels": "a"}, "at least two labels"),
    ({}, "needs --labels"),
])
def test_bad_batch_options_are_refused_before_anything_is_written(tmp_path, options, message):
    source = tmp_path / "docs.jsonl"
    source.write_text('{"id": "a", "text": "some text"}\n')
    with pytest.raises(ConfigError, match=message):
        run_batch(source, pattern="vote", options=options)
