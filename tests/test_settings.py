import pytest

from settings import load_settings
from workflows.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in ("CHORUS_BROKER_URL", "CHORUS_RESULT_BACKEND", "CHORUS_DATABASE_URL", "CHORUS_DATA_DIR",
                 "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "CHORUS_MODELS", "CHORUS_PROVIDER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_no_configuration_means_embedded_mode_with_sqlite_and_the_offline_provider(tmp_path):
    s = load_settings()
    assert s.embedded
    assert s.effective_broker_url == "filesystem://"
    assert s.effective_database_url == f"sqlite:///{tmp_path / '.chorus' / 'chorus.db'}"
    assert s.provider_name == "offline"


def test_an_api_key_selects_the_anthropic_provider(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
    s = load_settings()
    assert s.provider_name == "anthropic"
    assert s.anthropic_base_url == "http://127.0.0.1:9"
    assert "sk-test" not in repr(s)


def test_a_postgres_url_gets_the_psycopg3_driver(monkeypatch):
    monkeypatch.setenv("CHORUS_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    assert load_settings().effective_database_url == "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def test_a_redis_broker_leaves_embedded_mode_and_backs_results_too(monkeypatch):
    monkeypatch.setenv("CHORUS_BROKER_URL", "redis://127.0.0.1:6379/3")
    s = load_settings()
    assert not s.embedded
    assert s.effective_result_backend == "redis://127.0.0.1:6379/3"


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("CHORUS_DATABASE_URL", "mysql://x"),
        ("CHORUS_BROKER_URL", "localhost:6379"),
        ("CHORUS_MAX_ATTEMPTS", "zero"),
        ("CHORUS_MAX_ATTEMPTS", "0"),
        ("CHORUS_PROVIDER", "openai"),
        ("CHORUS_MODELS", "claude haiku"),
        ("CHORUS_CALL_TIMEOUT_S", "-1"),
        ("ANTHROPIC_BASE_URL", ""),  # blank is fine: unset
    ],
)
def test_a_bad_value_names_its_environment_variable(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    if value == "":
        assert load_settings().anthropic_base_url is None
        return
    with pytest.raises(ConfigError, match=var):
        load_settings()
