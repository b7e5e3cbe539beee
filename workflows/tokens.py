"""Token estimates, token upper bounds, and the prompt-cache minimum per model (from the model registry).

Two counts, for two questions:

* `estimate_tokens` (and `estimate_tokens_for`, `request_tokens`) is the usual ~4 characters per token
  heuristic: a TYPICAL size, deterministic and cheap, close enough to decide whether a prefix can be
  cached, to take tokens from the rate-limit bucket or to size a section. Dispatch's cache decisions
  read it (and `count_tokens` near the cache minimum).
* `upper_tokens` (and `upper_request_tokens`) is an UPPER BOUND of what a real tokenizer counts, for
  every place chorus promises one: a budget, a batch's estimate, a dry run. It counts the text by
  character class, the way a subword tokenizer splits it at worst (see `upper_text_tokens`), times the
  model's `tokenizer_ratio`, plus an allowance for the request's framing.

Real counts come from the provider's `usage`. Models from Opus 4.7 on use a newer tokenizer that counts
more tokens for the same text; both counts scale by the registry's ratio for the model.
"""

from __future__ import annotations

import functools
import json
import math
import re

from workflows import registry
from workflows.calls import Attachment, CallRequest

# Anthropic's minimum cacheable prompt lengths, per model (workflows/models.toml); a shorter prefix
# marked with cache_control is silently not cached. Sonnet 4.6 is 2048 there, not the documented
# 1024, and models the caching guide does not list take 4096: never claim a saving that does not happen.
MIN_CACHEABLE_TOKENS: dict[str, int] = {m.id: m.min_cacheable_tokens for m in registry.all_models()}
UNKNOWN_MODEL_MIN_CACHEABLE = 4096


ESTIMATE_CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """About one token per 4 characters; 0 for empty text, at least 1 otherwise."""
    return math.ceil(len(text) / ESTIMATE_CHARS_PER_TOKEN) if text else 0


def estimate_tokens_for(text: str, model: str) -> int:
    """`estimate_tokens` in the model's own tokenizer (x1.35 for the newer tokenizer, the upper figure)."""
    info = registry.model_info(model)
    ratio = info.tokenizer_ratio if info else 1.0
    return math.ceil(estimate_tokens(text) * ratio)


def model_family(model: str) -> str:
    """`claude-sonnet-4-5-20250929` -> `claude-sonnet-4-5` (the key of per-model tables).

    Not the rate-limit family: that is `workflows.registry.family`."""
    return registry.canonical_id(model)


def min_cacheable_tokens(model: str) -> int:
    info = registry.model_info(model)
    return info.min_cacheable_tokens if info else UNKNOWN_MODEL_MIN_CACHEABLE


# A document's text layer is counted at one token per 2 characters (the estimate above takes 4): a
# PDF page's text is a small share of its price next to the page image, and a document estimate must
# stay an upper bound on text that tokenizes densely (tables of digits, short words, non-Latin script).
DOCUMENT_CHARS_PER_TOKEN = 2


def attachment_tokens(attachment: Attachment, model: str) -> int:
    """Upper bound of what a natively read document costs in the model's tokenizer: its page or
    picture images (`image_tokens`, by Anthropic's documented rules) plus its text layer."""
    info = registry.model_info(model)
    ratio = info.tokenizer_ratio if info else 1.0
    text = math.ceil(len(attachment.text) / DOCUMENT_CHARS_PER_TOKEN * ratio) if attachment.text else 0
    return attachment.image_tokens + text


def marks_prefix(request: CallRequest) -> bool:
    """Whether the request's cacheable prefix is sent marked with `cache_control` (so the provider may
    bill it as a cache write): it spans a block and reaches the model's minimum, by the API's count where
    one was taken (`prefix_tokens`), else by the typical estimate. The same rule as the request body's
    (`providers.anthropic_provider.message_body`)."""
    if request.prefix_blocks == 0:
        return False
    prefix = request.prefix_tokens if request.prefix_tokens is not None else request_tokens(request, prefix_only=True)
    return prefix >= min_cacheable_tokens(request.model)


def request_tokens(request: CallRequest, *, prefix_only: bool = False) -> int:
    """Estimated prompt tokens of a request in its model's tokenizer: system, attachments and text
    blocks (with `prefix_only`, only what its cacheable prefix spans)."""
    if prefix_only:
        if request.prefix_blocks == 0:
            return 0
        request = request.prefix_request()
    blocks = request.user_blocks
    return (estimate_tokens_for(request.system, request.model)
            + sum(attachment_tokens(a, request.model) for a in request.attachments)
            + sum(estimate_tokens_for(b, request.model) for b in blocks))


# ----- upper bounds --------------------------------------------------------------------------------
# What a subword tokenizer (byte-level BPE, as Claude's and every current LLM's) can make of each kind
# of character at worst, in tokens of the older ("legacy") tokenizer; docs/decisions.md, "The estimate is
# an upper bound (issue 22, item 1)", says why each figure is a bound.
LETTERS_PER_TOKEN = 3  # a run of lower-case letters (an optional capital first): ceil(n / 3)
CAPITALS_PER_TOKEN = 2  # a run of two capitals or more (acronyms, shouting): ceil(n / 2)
SPACES_PER_TOKEN = 4  # a run of spaces or tabs; the last one joins a following letter or punctuation
# Framing: a request counts more than its text (role turns, the system prompt's wrapping: "the count
# includes the formatting of the request", token counting guide); an allowance per request and per block.
FRAMING_TOKENS = 16
BLOCK_FRAMING_TOKENS = 2

_UPPER = re.compile(
    r"(?P<caps>[A-Z]{2,}(?![a-z]))"  # an acronym; "HTTPServer" is HTTP + Server
    r"|(?P<word>[A-Z]?[a-z]+)"
    r"|(?P<digits>[0-9]+)"
    r"|(?P<space>[ \t]+)"
    r"|(?P<wide>[^\x00-\x7f]+)"
    r"|(?P<one>[\s\S])"  # a lone capital, punctuation, a symbol, a newline, a control char
)
_JOINS = re.compile(r"[A-Za-z!-/:-@\[-`{-~]")  # what a space before it joins: a letter or ASCII punctuation


# A few entries: the voters of a document send the same blocks (and a document may be megabytes).
@functools.lru_cache(maxsize=16)
def upper_text_tokens(text: str) -> int:
    """An upper bound of the tokens of `text` in the older tokenizer, piece by piece:

    * a run of lower-case ASCII letters (with an optional capital first) of n letters: ceil(n/3);
      two capitals or more in a row: ceil(n/2); a lone capital: 1;
    * every ASCII digit: 1 (some tokenizers split numbers digit by digit);
    * every other ASCII character (punctuation, a symbol, a newline, a control character): 1;
    * a run of n spaces or tabs: ceil((n-1)/4) before a letter or punctuation (the last space joins it),
      else ceil(n/4);
    * a character outside ASCII of k UTF-8 bytes: k-1 (accented Latin, Cyrillic, Greek, Hebrew, Arabic:
      1; CJK, kana, Hangul, Indic scripts, most symbols: 2; emoji and rare ideographs: 3; a ZWJ or a
      variation selector: 2).
    """
    tokens = 0
    for m in _UPPER.finditer(text):
        kind = m.lastgroup
        piece = m.group()
        if kind == "word":
            tokens += -(-len(piece) // LETTERS_PER_TOKEN)
        elif kind == "caps":
            tokens += -(-len(piece) // CAPITALS_PER_TOKEN)
        elif kind == "digits":
            tokens += len(piece)
        elif kind == "space":
            joins = m.end() < len(text) and _JOINS.match(text, m.end()) is not None
            tokens += -(-(len(piece) - (1 if joins else 0)) // SPACES_PER_TOKEN)
        elif kind == "wide":
            tokens += len(piece.encode("utf-8", "surrogatepass")) - len(piece)
        else:
            tokens += 1
    return tokens


def tokenizer_ratio(model: str) -> float:
    """Tokens of the model's tokenizer per token of the older one, same text (the registry's upper figure)."""
    info = registry.model_info(model)
    return info.tokenizer_ratio if info else max(m.tokenizer_ratio for m in registry.all_models())


def upper_tokens(text: str, model: str) -> int:
    """An upper bound of the tokens of `text` in the model's tokenizer: `upper_text_tokens` times the
    model's `tokenizer_ratio` (a model chorus does not know takes the largest ratio of the registry)."""
    return math.ceil(upper_text_tokens(text) * tokenizer_ratio(model)) if text else 0


def upper_attachment_tokens(attachment: Attachment, model: str) -> int:
    """An upper bound of a natively read document: its images plus its text layer, by the larger of
    `attachment_tokens`' 2 characters a token and `upper_tokens`."""
    return max(attachment_tokens(attachment, model), attachment.image_tokens + upper_tokens(attachment.text, model))


def upper_request_tokens(request: CallRequest, *, prefix_only: bool = False) -> int:
    """An upper bound of the prompt tokens the provider bills for a request in its model's tokenizer:
    the framing allowance, the system prompt, the output schema's text (structured outputs put the
    format before the model; counted as an allowance, in the prefix), attachments and text blocks.
    With `prefix_only`, what its cacheable prefix spans (everything but the text blocks after it), so
    the prompt less the prefix bounds the uncached tail."""
    model = request.model
    blocks = len(request.attachments) + len(request.user_blocks)
    if prefix_only:
        request = request.prefix_request()
    schema = json.dumps(request.output_schema, sort_keys=True) if request.output_schema is not None else ""
    return (FRAMING_TOKENS + BLOCK_FRAMING_TOKENS * blocks
            + upper_tokens(request.system, model) + upper_tokens(schema, model)
            + sum(upper_attachment_tokens(a, model) for a in request.attachments)
            + sum(upper_tokens(b, model) for b in request.user_blocks))
