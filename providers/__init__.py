"""LLM providers behind one interface (`workflows.calls.Provider`).

This module is the one place a settings name picks a provider: `get_provider` makes it,
`provider_capabilities` says what it can do without making it, and `preload` imports its module.
Nothing outside `providers/` compares provider names (tests/test_provider_names.py)."""

from __future__ import annotations

import dataclasses
import functools

from providers.anthropic_capabilities import ANTHROPIC_CAPABILITIES
from providers.offline import OfflineProvider
from settings import Settings, get_settings
from workflows.calls import Provider, ProviderCapabilities
from workflows.errors import ConfigError


def provider_capabilities(settings: Settings | None = None) -> ProviderCapabilities:
    """What the provider the settings ask for can do. Counting tokens also needs the API key (without one,
    sizes are local estimates)."""
    settings = settings or get_settings()
    if settings.provider_name == "anthropic":
        return dataclasses.replace(ANTHROPIC_CAPABILITIES, counts_tokens=bool(settings.anthropic_api_key))
    return OfflineProvider.capabilities


def get_provider(settings: Settings | None = None) -> Provider:
    """The provider the settings ask for, one instance per process."""
    settings = settings or get_settings()
    if settings.provider_name == "anthropic":
        key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else ""
        if not key:
            raise ConfigError("provider anthropic needs ANTHROPIC_API_KEY (or set CHORUS_PROVIDER=offline)")
        return _anthropic(key, settings.anthropic_base_url, settings.call_timeout_s)
    return _offline()


def preload(settings: Settings | None = None) -> None:
    """Import the module of the provider the settings ask for, so that prefork children inherit it."""
    if (settings or get_settings()).provider_name == "anthropic":
        import providers.anthropic_provider  # noqa: F401 - the SDK, ~1.7 s of CPU: only when Claude is used


@functools.cache
def _anthropic(api_key: str, base_url: str | None, timeout_s: float) -> Provider:
    from providers.anthropic_provider import AnthropicProvider  # the SDK is only imported when used

    return AnthropicProvider(api_key=api_key, base_url=base_url, timeout_s=timeout_s)


@functools.cache
def _offline() -> Provider:
    return OfflineProvider()
