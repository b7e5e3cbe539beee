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
    assert s.effective_database_url == f"sqlite:///{tmp_path / 'xdg-data' / 'chorus' / 'chorus.db'}"
    assert s.provider_name == "offline"


def test_without_chorus_data_dir_every_folder_uses_the_one_per_user_store(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    stores = set()
    for folder in ("a", "b/c"):
        (tmp_path / folder).mkdir(parents=True)
        monkeypatch.chdir(tmp_path / folder)
        s = load_settings()
        stores.add((s.data_path, s.data_origin))
    assert stores == {(tmp_path / "home" / ".local" / "share" / "chorus", "user")}
    assert not list(tmp_path.rglob(".chorus"))  # reading the settings creates nothing


def test_an_existing_dot_chorus_in_the_current_folder_keeps_working_and_is_named(tmp_path):
    (tmp_path / ".chorus").mkdir()
    s = load_settings()
    assert s.data_path == tmp_path / ".chorus" and s.data_origin == "folder"
    assert s.effective_database_url == f"sqlite:///{tmp_path / '.chorus' / 'chorus.db'}"
    assert s.store_name == f"the store {tmp_path / '.chorus'} (the ./.chorus of the current folder)"


def test_chorus_data_dir_wins_over_a_dot_chorus_here_and_a_blank_one_is_unset(tmp_path, monkeypatch):
    (tmp_path / ".chorus").mkdir()
    monkeypatch.setenv("CHORUS_DATA_DIR", str(tmp_path / "mine"))
    assert load_settings().data_path == tmp_path / "mine" and load_settings().data_origin == "setting"
    monkeypatch.setenv("CHORUS_DATA_DIR", " ")
    assert load_settings().data_origin == "folder"


def test_the_store_named_in_messages_never_shows_a_database_password(monkeypatch):
    monkeypatch.setenv("CHORUS_DATABASE_URL", "postgresql://chorus:s3cret@db:5432/chorus")
    expected = "the database postgresql+psycopg://chorus:***@db:5432/chorus (CHORUS_DATABASE_URL)"
    assert load_settings().store_name == expected


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
