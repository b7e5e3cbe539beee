"""The provider interface: one request shape, one result shape, one method."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class CallRequest:
    """One Messages-API call.

    `user_blocks` become the text blocks of the single user message, in order. The first
    `cache_blocks` of them form the prefix that voters share (marked with cache_control when
    prompt caching applies). `tags` are short labels (run id, slot) sent as request headers so a
    stub server or a proxy can tell calls apart; they never carry document text or secrets.
    """

    model: str
    system: str
    user_blocks: tuple[str, ...]
    max_tokens: int = 256
    temperature: float | None = None  # recorded; not sent (see providers/anthropic_provider.py)
    cache_blocks: int = 0
    tags: tuple[tuple[str, str], ...] = ()
    # Structured outputs: a JSON schema the reply must follow (sent as `output_config.format`), or None
    # for free text. Only set for models that support it (workflows.registry).
    output_schema: dict[str, Any] | None = None
    effort: str | None = None  # `output_config.effort` (low | medium | high | ...), where the model has it
    # The cacheable prefix's size as the API counted it (count_tokens), when chorus's estimate was too
    # close to the model's cache minimum to decide whether marking it would cache anything.
    prefix_tokens: int | None = None
    # How long the marked prefix stays cached: "5m" (the API's default) or "1h" (the batch lane, whose
    # requests may run far apart; Anthropic advises the 1-hour TTL for batches). Sent as
    # `cache_control.ttl` only when "1h".
    cache_ttl: str = "5m"

    @property
    def user_text(self) -> str:
        return "".join(self.user_blocks)


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    estimated: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CallResult:
    text: str
    model: str
    usage: Usage = field(default_factory=Usage)
    stop_reason: str | None = "end_turn"
    request_id: str | None = None
    rate_limit: dict[str, float] = field(default_factory=dict)  # remaining per dimension, from headers


class Provider(Protocol):
    """Anything that can answer a CallRequest. Failures raise `workflows.errors.ProviderError`."""

    name: str

    def call(self, request: CallRequest) -> CallResult: ...
