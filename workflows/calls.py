"""The provider interface: one request shape, one result shape, one method."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol


@dataclass(frozen=True)
class Attachment:
    """A document Claude reads natively: a PDF (a `document` block: each page as its text and an image)
    or an image (an `image` block). It goes first in the user message, inside the cacheable prefix.

    The bytes travel as base64 (`data`), or as a Files API reference (`file_id`) when the run uploaded
    them once. `text` is its text layer (a PDF's extracted pages; "" for an image): what the offline
    provider reads, and what token estimates count with `image_tokens`, the upper bound of the
    page or picture images (workflows.documents)."""

    kind: str  # "pdf" | "image"
    media_type: str
    data: bytes | None = None
    file_id: str | None = None
    title: str | None = None
    text: str = ""
    pages: int = 0
    image_tokens: int = 0
    sha256: str = ""

    def as_text(self) -> str:
        """How a reader of text only (the offline provider, a log) sees it: its text layer."""
        return f"<document>\n{self.text}\n</document>\n"

    @property
    def has_text(self) -> bool:
        return bool(self.text.strip())

    @property
    def blind_reason(self) -> str:
        """Why a reader of text only (the offline provider) cannot read it, when it has no text."""
        what = "an image" if self.kind == "image" else "a PDF with no text layer (a scan)"
        return (f"no text layer: {what} needs a Claude model that reads images; the offline provider reads "
                "text only (set ANTHROPIC_API_KEY to use Claude)")


@dataclass(frozen=True)
class CallRequest:
    """One Messages-API call.

    `user_blocks` become the text blocks of the single user message, in order, after the request's
    `attachments` (documents read natively). The first `cache_blocks` content blocks of the message
    (attachments first, then text blocks) form the prefix that voters share (marked with
    cache_control when prompt caching applies). `tags` are short labels (run id, slot) sent as request headers so a
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
    attachments: tuple[Attachment, ...] = ()

    @property
    def user_text(self) -> str:
        """The user message as text: attachments by their text layer, then the text blocks."""
        return "".join(a.as_text() for a in self.attachments) + "".join(self.user_blocks)

    @property
    def prefix_blocks(self) -> int:
        """How many content blocks (attachments, then text blocks) the cacheable prefix spans."""
        return max(0, min(self.cache_blocks, len(self.attachments) + len(self.user_blocks)))

    def prefix_request(self) -> CallRequest:
        """The request cut to its cacheable prefix (what count_tokens measures for a cache decision)."""
        n = self.prefix_blocks
        return replace(self, attachments=self.attachments[:n],
                       user_blocks=self.user_blocks[: max(0, n - len(self.attachments))])


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
    # Why a provider that is no model (the offline scorer) gave no answer, naming itself; None for a
    # model's reply. Readers report it as it is: it is never worded as a model's refusal.
    no_answer: str | None = None


@dataclass(frozen=True)
class ProviderCapabilities:
    """What a provider can do. Callers read these, never the provider's name (`providers.capabilities`)."""

    counts_tokens: bool = False  # sizes a request before it is sent (Anthropic's free count_tokens)
    caches_prompts: bool = False  # a marked prefix is cached for later calls: cache-aware dispatch pays
    batches_api: bool = False  # has a Message Batches API (the batch lane)
    reads_documents: bool = False  # reads PDF and image blocks natively (their bytes), not only a text layer
    files_api: bool = False  # uploads a document once and references it by file_id


class Provider(Protocol):
    """Anything that can answer a CallRequest. Failures raise `workflows.errors.ProviderError`."""

    name: str
    capabilities: ProviderCapabilities

    def call(self, request: CallRequest) -> CallResult: ...
