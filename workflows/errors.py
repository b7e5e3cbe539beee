"""The one error tree of chorus.

ChorusError
├── ConfigError        a setting or an input the user must fix (exit code 2)
├── NotFoundError      a run or batch id that does not exist
├── RunTimeout         waited longer than the caller allowed (also a TimeoutError; exit code 4)
├── RunFailed          a run ended without succeeding (`RunView.raise_for_status()`); `.run` says why
└── ProviderError      anything a provider call can end in
    ├── RetryableError(retry_after)   429, 529, 5xx, timeouts, connection resets
    ├── PermanentError                400, 401, 403, 404: retrying cannot help
    └── InvalidOutput                 the model answered, but not in the expected form

SDK exceptions are translated into this tree at one boundary (`providers.anthropic_provider`).
This module is at the bottom of the layers: settings, models, providers, tasks and the client all
raise from it.
"""

from __future__ import annotations

from typing import Any


class ChorusError(Exception):
    """Base of every error chorus raises on purpose."""


class ConfigError(ChorusError):
    """A bad setting or input; the message says which one and how to fix it."""


class NotFoundError(ChorusError):
    """A run, batch or document id that is not in the database."""


class RunTimeout(ChorusError, TimeoutError):
    """A run or batch was still unfinished when the wait ended; it goes on, and can be looked up."""


class RunFailed(ChorusError):
    """A run ended failed, partial or cancelled; the message is its reason, `run` the run (a RunView)."""

    def __init__(self, message: str, *, run: Any = None) -> None:
        super().__init__(message)
        self.run: Any = run  # chorus.runs.RunView (this bottom layer does not import it)


class ProviderError(ChorusError):
    """A provider call failed. `status` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None, request_id: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.request_id = request_id


class RetryableError(ProviderError):
    """Worth another attempt, no sooner than `retry_after` seconds when the provider said so."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, status=status, request_id=request_id)
        self.retry_after = retry_after


class PermanentError(ProviderError):
    """Retrying the same request cannot succeed (bad request, auth, unknown model)."""


class InvalidOutput(ProviderError):
    """The provider answered, but the answer cannot be used."""
