"""The stub's model of a tokenizer: word and punctuation pieces, deliberately not chorus's estimate.

chorus estimates about one token per 4 characters (`workflows.tokens.estimate_tokens`). If the stub
counted the same way, every decision chorus takes from its estimate (is a prefix long enough to
cache? how many input tokens will a call take from the bucket?) would be right by construction. So
the stub counts differently, the way a real subword tokenizer does: by pieces of the text.

* A run of letters is one token per started 6 letters ("kettle" 1, "excellent" 2,
  "internationalization" 4).
* A run of digits is one token per started 3 digits ("2026" 2).
* Every other visible character (punctuation, a symbol, an underscore) is one token.
* A line break is one token; spaces and tabs are free (they attach to the next piece).
* Framing, as Anthropic's `count_tokens` reports it (Token counting guide: the count includes the
  formatting of the request, not only its text): `SYSTEM_FRAMING` tokens when there is a system
  prompt, `MESSAGE_FRAMING` tokens per message (its role turn).
* The newer tokenizer: Claude Opus 4.7 and every later model (the 5.x models, Fable included) "use
  the same newer tokenizer [...] so the same text counts as approximately 30% more tokens" (the
  Claude Haiku 5.5 overview, https://platform.claude.com/docs/en/models/haiku-5-5/overview, read
  2026-12-02). For those models a block's text counts `NEW_TOKENIZER_RATIO` times its pieces
  (rounded up); framing is unchanged. `NEW_TOKENIZER_MODELS` names them by prefix.

Document and image blocks are counted by `documents` (its token rule: the page text plus an image
per PDF page, `ceil(w*h/750)` per image), which reads them for the request: `segments` and
`count_request` take that reader (`MediaReader`) and refuse a media block without one.

On English prose the two counts are close (about 4 characters a token); they drift apart on text
with many short words, digits or symbols (the stub counts more), and on long words (it counts
fewer), which is what a test needs to see whether chorus decides from its estimate or from what
the API tells it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

SYSTEM_FRAMING = 2
MESSAGE_FRAMING = 3
LETTERS_PER_TOKEN = 6
DIGITS_PER_TOKEN = 3

NEW_TOKENIZER_RATIO = 1.3
# Opus 4.7 and later: 4.7/4.8 by id, every 5.x model of any line by its major version.
NEW_TOKENIZER_MODELS = re.compile(r"^claude-(?:opus-4-[78]|(?:opus|sonnet|haiku|fable|mythos)-5)(?:-|$)")

_PIECE = re.compile(r"[^\W\d_]+|\d+|\n|[^\s]")


def _piece_tokens(piece: str) -> int:
    if piece[0].isdigit():
        return math.ceil(len(piece) / DIGITS_PER_TOKEN)
    if piece[0].isalpha():
        return math.ceil(len(piece) / LETTERS_PER_TOKEN)
    return 1


def uses_new_tokenizer(model: str | None) -> bool:
    return bool(model) and NEW_TOKENIZER_MODELS.match(str(model).strip().lower()) is not None


def count_text(text: str, model: str | None = None) -> int:
    """Tokens of a piece of text (no framing), in the model's tokenizer (the older one when None)."""
    pieces = sum(_piece_tokens(m.group()) for m in _PIECE.finditer(text))
    return math.ceil(pieces * NEW_TOKENIZER_RATIO) if uses_new_tokenizer(model) else pieces


def truncate(text: str, max_tokens: int) -> str:
    """The longest start of `text` that is at most `max_tokens` tokens (whole pieces only)."""
    used, end = 0, 0
    for m in _PIECE.finditer(text):
        cost = _piece_tokens(m.group())
        if used + cost > max_tokens:
            return text[:end]
        used += cost
        end = m.end()
    return text


def blocks(content: Any) -> list[dict[str, Any]]:
    """The content blocks of a string or a list (a string is one text block)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


MEDIA_BLOCKS = ("document", "image")


class MediaReader(Protocol):
    """What the tokenizer needs of `documents.MediaReader`, which has parsed the request's media blocks."""

    def tokens(self, block: dict[str, Any], model: str | None) -> int | None: ...

    def digest(self, block: dict[str, Any]) -> str | None: ...


@dataclass(frozen=True)
class Segment:
    """One counted part of a request, in the order the model reads it."""

    tokens: int
    block: dict[str, Any] | None  # None for framing
    where: str  # "system" or "messages.<i>"
    digest: str | None = None  # a document or image block: the SHA-256 of its content


def _block(b: dict[str, Any], where: str, model: str | None, media: MediaReader | None) -> Segment:
    if b.get("type") in MEDIA_BLOCKS:
        tokens = media.tokens(b, model) if media is not None else None
        if tokens is None:
            raise ValueError(f"{where}: a {b.get('type')} block is counted by a documents.MediaReader that has "
                             "checked the request; none was given")
        return Segment(tokens, b, where, media.digest(b) if media is not None else None)
    return Segment(count_text(str(b.get("text", "")), model), b, where)


def segments(body: dict[str, Any], media: MediaReader | None = None) -> Iterator[Segment]:
    """The request as the model reads it: system (framing, blocks), then each message (framing, blocks),
    counted in the tokenizer of the request's `model`. Text blocks count their text; document and image
    blocks what `media` (a reader that has checked this request) says they cost."""
    model = body.get("model")
    model = model if isinstance(model, str) else None
    system = blocks(body.get("system", ""))
    if system:
        yield Segment(SYSTEM_FRAMING, None, "system")
        for b in system:
            yield Segment(count_text(str(b.get("text", "")), model), b, "system")
    for i, message in enumerate(body.get("messages") or []):
        if not isinstance(message, dict):
            continue
        yield Segment(MESSAGE_FRAMING, None, f"messages.{i}")
        for b in blocks(message.get("content")):
            yield _block(b, f"messages.{i}", model, media)


def count_request(body: dict[str, Any], media: MediaReader | None = None) -> int:
    """Every input token of a Messages request, the way `count_tokens` and `usage` report them."""
    return total(segments(body, media))


def total(parts: Iterable[Segment]) -> int:
    return sum(p.tokens for p in parts)
