"""The worker side's database: the one sessionmaker bound to the settings' engine."""

from __future__ import annotations

from models import get_engine
from settings import get_settings


def bind() -> None:
    """Bind the sessionmaker to this process's database (cheap after the first call)."""
    get_engine(get_settings().effective_database_url)
