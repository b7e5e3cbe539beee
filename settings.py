"""The one settings object, read once from the environment and `.env`.

Every other module asks `get_settings()`; nothing else reads `os.environ` for configuration.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from workflows import registry
from workflows.errors import ConfigError
from workflows.ratelimit import QueueLimits, parse_limits
from workflows.registry import pool_conflicts

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# Where embedded mode kept its data before the per-user directory: still used where it exists.
FOLDER_DATA_DIR = Path(".chorus")
_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/@]*):[^@/]*@")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CHORUS_", env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True,
        populate_by_name=True,
    )

    broker_url: str | None = Field(default=None, description="Celery broker; unset means embedded mode")
    result_backend: str | None = Field(default=None, description="Celery result backend")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite in data dir")
    data_dir: Path | None = Field(
        default=None, description="Embedded broker, SQLite files, logs; unset: a ./.chorus in the current folder if "
                                  "there is one, else the per-user data directory (platformdirs)")
    anthropic_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_API_KEY", "CHORUS_ANTHROPIC_API_KEY")
    )
    anthropic_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_BASE_URL", "CHORUS_ANTHROPIC_BASE_URL")
    )
    provider: Literal["auto", "anthropic", "offline"] = Field(
        default="auto", description="auto = anthropic when ANTHROPIC_API_KEY is set, else offline"
    )
    # The current line-up and the 4.x models Anthropic still serves (workflows/models.toml).
    models: str = Field(
        default=("claude-haiku-5-5,claude-sonnet-5-5,claude-opus-5-5,claude-haiku-4-5,claude-sonnet-4-6,"
                 "claude-sonnet-4-5,claude-opus-4-7,claude-opus-4-6,claude-opus-4-5"),
        description="Comma-separated models; each gets its own Celery queue",
    )
    default_model: str = Field(default="claude-haiku-5-5", description="Model used when none is given")
    models_file: Path | None = Field(
        default=None, description="TOML file of models outside the registry, each with its prices (merged over it)"
    )
    call_timeout_s: float = Field(default=60.0, gt=0, description="HTTP timeout of one provider call")
    max_attempts: int = Field(default=4, ge=1, le=20, description="Attempts per slot (Celery retries)")
    retry_backoff_s: float = Field(default=1.0, gt=0, description="Base of the exponential retry backoff")
    retry_backoff_max_s: float = Field(default=60.0, gt=0, description="Cap of one retry countdown")
    visibility_timeout_s: float = Field(
        default=3600.0, ge=4, description="Redis redelivers a task left unacked this long; countdowns stay below half"
    )
    rate_limits: str = Field(
        default="",
        description="Token buckets shared by all workers, one set per model family (Anthropic pools limits per "
                    "family), e.g. claude-haiku-5-5:rpm=50,itpm=50000;claude-opus-4:rpm=20",
    )
    rate_limit_max_wait_s: float = Field(default=120.0, gt=0, description="Longest wait a slot reserves a token for")
    reap_after_s: float = Field(default=900.0, gt=0, description="A run unfinished this long is finished by the reaper")
    reap_grace_s: float = Field(default=30.0, gt=0, description="Slots all done but no tally this long: reaper tallies")
    reap_resend_after_s: float = Field(
        default=300.0, gt=0, description="A slot never picked up this long is sent again, once, by the reaper"
    )
    reap_interval_s: float = Field(default=60.0, gt=0, description="How often beat runs the reaper")
    embedded_concurrency: int = Field(default=8, ge=1, le=256, description="Threads of the embedded worker")
    run_timeout_s: float = Field(default=300.0, gt=0, description="How long the CLI waits for a run")
    ready_file: Path | None = Field(default=None, description="Internal: a worker writes it once ready")
    section_tokens: int = Field(default=2000, ge=50, le=200_000, description="Input tokens per section at most")
    synthesis_budget_tokens: int = Field(
        default=8000, ge=10, le=1_000_000, description="Section outputs above this are synthesized as a tree"
    )
    max_document_bytes: int = Field(
        default=2_000_000, ge=1, description="A batch document above this size fails with a reason"
    )
    max_file_bytes: int = Field(
        default=100_000_000, ge=1, le=524_288_000,
        description="A file (PDF, image, Word, HTML) above this size is refused with a reason (Files API: 500 MB)",
    )
    files_api: Literal["auto", "always", "never"] = Field(
        default="auto", description="Upload a PDF or image once per run through the Files API: auto = when it "
                                    "would not fit one request (32 MB), always, or never (too big is refused)",
    )
    max_voters: int = Field(
        default=64, ge=1, le=1000, description="The most voters one vote may have (CLI, API, batches, task files)"
    )
    lane_collect_s: float = Field(
        default=10.0, gt=0, description="How often beat gathers the batch lane's waiting calls into provider batches"
    )
    lane_poll_s: float = Field(default=30.0, gt=0, description="How often beat polls the batch lane's open batches")
    lane_max_requests: int = Field(
        default=100_000, ge=1, le=100_000, description="Requests per provider batch at most (Anthropic: 100,000)"
    )
    lane_max_bytes: int = Field(
        default=256_000_000, ge=1_000, le=256_000_000,
        description="Bytes of one provider batch's request body at most (Anthropic: 256 MB)",
    )
    lane_expire_s: float = Field(
        default=26 * 3600.0, gt=0,
        description="A batch-lane run unfinished this long is finished by the reaper (provider batches end in 24 h)",
    )
    schedule_file: Path | None = Field(default=None, description="JSON or TOML file of scheduled jobs (beat)")
    max_cost_usd: float | None = Field(
        default=None, gt=0, description="Budget in US dollars: a submit estimated above it is refused, and a "
                                        "batch stops sending new runs once its recorded spend passes it"
    )

    @field_validator("broker_url", "result_backend", "database_url", "anthropic_base_url", "max_cost_usd", "data_dir",
                     mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("broker_url")
    @classmethod
    def _broker_scheme(cls, value: str | None) -> str | None:
        if value is not None and "://" not in value:
            raise ValueError("expected a URL such as redis://127.0.0.1:6379/0")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if value.startswith(("postgres://", "postgresql://")):
            # psycopg 3 is the driver we ship; a bare postgresql:// URL would look for psycopg2.
            return "postgresql+psycopg://" + value.split("://", 1)[1]
        if not value.startswith(("sqlite", "postgresql+psycopg://")):
            raise ValueError("expected sqlite:///PATH or postgresql://USER@HOST:PORT/DB")
        return value

    @field_validator("rate_limits")
    @classmethod
    def _rate_limits(cls, value: str) -> str:
        conflicts = pool_conflicts(parse_limits(value))  # parse_limits raises ValueError naming the bad part
        if conflicts:
            raise ValueError("; ".join(conflicts))
        return value

    @field_validator("models")
    @classmethod
    def _models_list(cls, value: str) -> str:
        names = [m.strip() for m in value.split(",") if m.strip()]
        if not names:
            raise ValueError("list at least one model, e.g. claude-haiku-5-5")
        for name in names:
            if not _MODEL_NAME.match(name):
                raise ValueError(f"{name!r} is not a model name")
        return ",".join(names)

    # ----- derived values -------------------------------------------------------------------
    @property
    def queue_limits(self) -> dict[str, QueueLimits]:
        return parse_limits(self.rate_limits)

    @property
    def embedded(self) -> bool:
        return self.broker_url is None

    @property
    def model_list(self) -> list[str]:
        """The models that get a queue: CHORUS_MODELS, the default model, and those of CHORUS_MODELS_FILE."""
        names = self.models.split(",")
        if self.default_model not in names:
            names.insert(0, self.default_model)
        if self.models_file is not None:
            own = str(self.models_file.expanduser().resolve())
            names += [m.id for m in registry.user_models() if m.origin == own and m.id not in names]
        return names

    @property
    def provider_name(self) -> Literal["anthropic", "offline"]:
        if self.provider != "auto":
            return self.provider
        return "anthropic" if self.anthropic_api_key else "offline"

    @property
    def data_origin(self) -> Literal["setting", "folder", "user"]:
        """Why the data directory is where it is: CHORUS_DATA_DIR, a ./.chorus found in the current
        folder (where embedded mode kept its data before), or the per-user data directory."""
        if self.data_dir is not None:
            return "setting"
        return "folder" if FOLDER_DATA_DIR.is_dir() else "user"

    @property
    def data_path(self) -> Path:
        origin = self.data_origin
        if origin == "setting":
            assert self.data_dir is not None
            return self.data_dir.expanduser().resolve()
        if origin == "folder":
            return FOLDER_DATA_DIR.resolve()
        return user_data_dir()

    @property
    def store_name(self) -> str:
        """Where runs are stored, for messages: the database URL (no password) or the data directory and
        why it is that one."""
        if self.database_url is not None:
            return f"the database {hide_password(self.database_url)} (CHORUS_DATABASE_URL)"
        why = {"setting": "CHORUS_DATA_DIR",
               "folder": "the ./.chorus of the current folder",
               "user": "the per-user data directory; CHORUS_DATA_DIR chooses another"}[self.data_origin]
        return f"the store {self.data_path} ({why})"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_path / 'chorus.db'}"

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def effective_result_backend(self) -> str:
        if self.result_backend:
            return self.result_backend
        if self.embedded:
            return f"chorus.embedded.backend:SQLiteKVBackend://{self.data_path / 'results.db'}"
        return self.effective_broker_url


def user_data_dir() -> Path:
    """Embedded mode's one store for every folder: ~/.local/share/chorus on Linux ($XDG_DATA_HOME/chorus),
    ~/Library/Application Support/chorus on macOS, %LOCALAPPDATA%\\chorus on Windows."""
    return Path(platformdirs.user_data_dir("chorus", appauthor=False)).resolve()


def hide_password(url: str) -> str:
    """The URL with its password (if any) replaced by ***, for messages."""
    return _URL_PASSWORD.sub(r"\1:***@", url)


def _env_name(loc: tuple[object, ...]) -> str:
    field = str(loc[0]) if loc else "?"
    info = Settings.model_fields.get(field)
    alias = getattr(info, "validation_alias", None) if info else None
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return f"CHORUS_{field.upper()}"


def load_settings(**overrides: object) -> Settings:
    """Read the settings; a bad value raises ConfigError naming its environment variable."""
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(f"{_env_name(e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"bad configuration: {problems}") from None
    if settings.models_file is not None:
        use_models_file(settings.models_file)
    return settings


def use_models_file(path: Path) -> None:
    """Merge the user's models file (CHORUS_MODELS_FILE) over the registry, for this process: every
    lookup (prices, limits, capabilities, queues) then knows its models. A bad file names the variable."""
    file = path.expanduser().resolve()
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"bad configuration: CHORUS_MODELS_FILE: cannot read {file} ({exc})") from None
    try:
        table = registry.parse_user_models(text, str(file))
    except registry.RegistryError as exc:
        raise ConfigError(f"bad configuration: CHORUS_MODELS_FILE: {exc}") from None
    registry.use_user_models(table)


@functools.cache
def get_settings() -> Settings:
    return load_settings()
