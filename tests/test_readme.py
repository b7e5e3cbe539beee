from pathlib import Path

from settings import Settings, _env_name

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_in_the_readme_configuration_table():
    missing = [_env_name((name,)) for name in Settings.model_fields if f"`{_env_name((name,))}`" not in README]
    assert missing == []


def test_the_readme_gives_the_two_setup_commands():
    assert "pip install -e . && chorus demo" in README
    assert "bash .ci/run" in README
