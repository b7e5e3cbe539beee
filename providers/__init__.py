"""LLM providers behind one interface (`workflows.calls.Provider`); `get_provider` picks one."""

from __future__ import annotations

import functools

from providers.offline import OfflineProvider
from settings import Settings, get_settings
from workflows.calls import Provider
from workflows.errors import ConfigError


def get_provider(settings: Settings | None = None) -> Provider:
    """The provider the settings ask for, one instance per process."""
    settings = settings or get_settings()
    if settings.provider_name == "anthropic":
        key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else ""
        if not key:
            raise ConfigError("provider anthropic needs ANTHROPIC_API_KEY (or set CHORUS_PROVIDER=offline)")
        return _anthropic(key, settings.anthropic_base_url, settings.call_timeout_s)
    return _offline()


@functools.cache
def _anthropic(api_key: str, base_url: str | None, timeout_s: float) -> Provider:
    from providers.anthropic_provider import AnthropicProvider  # the SDK is only imported when used

    return AnthropicProvider(api_key=api_key, base_url=base_url, timeout_s=timeout_s)


@functools.cache
def _offline() -> Provider:
    return OfflineProvider()
