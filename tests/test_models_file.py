"""CHORUS_MODELS_FILE: the user's models, merged over the registry when the settings are read; their
models get a queue; a bad file stops chorus naming the variable."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from settings import load_settings
from tests.workflows.test_registry_user_models import OPUS_6
from workflows import registry
from workflows.errors import ConfigError
from workflows.queues import all_queues


@pytest.fixture(autouse=True)
def registry_alone() -> Iterator[None]:
    registry.use_user_models(None)
    yield
    registry.use_user_models(None)


def test_the_models_file_is_merged_when_the_settings_are_read_and_its_models_get_a_queue(tmp_path):
    path = tmp_path / "models.toml"
    path.write_text(OPUS_6)
    assert "claude-opus-6" not in load_settings().model_list

    settings = load_settings(models_file=str(path))

    info = registry.model_info("claude-opus-6")
    assert info is not None and info.origin == str(path.resolve())
    assert settings.model_list[-1] == "claude-opus-6"
    assert "llm.claude-opus-6" in all_queues(settings.model_list)
    assert "claude-opus-6" not in load_settings().model_list  # settings without the file give it no queue


@pytest.mark.parametrize(("content", "message"), [
    (None, "CHORUS_MODELS_FILE: cannot read"),
    (OPUS_6.replace("output_per_mtok = 25.0\n", ""), "CHORUS_MODELS_FILE: .*'output_per_mtok' is missing"),
    ("[[model", "CHORUS_MODELS_FILE: .* is not valid TOML"),
])
def test_a_bad_models_file_stops_with_the_variable_named(tmp_path, content, message):
    path = tmp_path / "models.toml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=f"bad configuration: {message}"):
        load_settings(models_file=str(path))
    assert registry.model_info("claude-opus-6") is None
