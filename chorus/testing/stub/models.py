"""What each Claude model accepts, as the stub reads it from a model id (Anthropic's docs, Nov 2026).

The stub decides per request from the id's family and version, not from a table of ids, so a dated
id (`claude-haiku-4-5-20251001`) and a new one (`claude-fable-5-2`) are read alike, and an id it
cannot read (`stub-model`) gets no model-specific rule at all. It keeps no list of known models: the
stub has never answered 404 for an unknown model, and chorus's own registry is not its business.

Sources (platform.claude.com):
* structured outputs (`output_config.format`): "generally available ... for Claude Opus 4.6, Claude
  Sonnet 4.6, Claude Sonnet 4.5, Claude Opus 4.5, and Claude Haiku 4.5" and every later model
  (build-with-claude/structured-outputs; the 5.x model pages);
* effort (`output_config.effort`): Opus 4.5 only low/medium/high ("the only model that supports the
  effort parameter" in What's new in Claude 4.5); Opus 4.6 and Sonnet 4.6 add `max`; Opus 4.7 and later,
  Sonnet 5 and later, Haiku 5.5 and Fable add `xhigh` (build-with-claude/effort, the model pages'
  "Default effort" column; Haiku 4.5 and Sonnet 4.5 show none);
* assistant prefill: "Prefilling assistant messages returns a 400 error on Claude 4.6 models"
  (models/migration-guide), and on every later model (Sonnet 5.5 migration guide: "leaves out five
  settings that return a 400 error: ... assistant prefill, forced tool choice");
* forced tool use (`tool_choice` `any` or `tool`): "Forced tool use returns an error" on Opus 5.5,
  Sonnet 5.5 and Haiku 5.5 (What's new in Claude Opus/Sonnet 5.5), and "the first three also apply on
  Claude Fable 5.1".
* context window (`context_window`, which sets the PDF page limit, see `documents`): 1M tokens for
  Claude Opus 4.6 and Sonnet 4.6 and every later Opus and Sonnet, every Fable and Mythos model, and
  Claude Haiku 5.5 ("a 1M token context window", models/haiku-5-5/overview, read 2026-12); 200K for
  Haiku 4.5 and the older models (Opus 4.5 and 4.1, Sonnet 4.5 and 4, the 3.x models).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

EFFORT_LEVELS = ("low", "medium", "high", "xhigh", "max")
ONE_MILLION, TWO_HUNDRED_K = 1_000_000, 200_000
_NEW_ID = re.compile(r"^claude-(?P<family>[a-z]+)-(?P<major>\d+)(?:-(?P<minor>\d{1,2}))?(?:-\d{8}|-latest)?$")
_OLD_ID = re.compile(r"^claude-(?P<major>\d+)(?:-(?P<minor>\d{1,2}))?-(?P<family>[a-z]+)(?:-\d{8}|-latest)?$")


@dataclass(frozen=True)
class ModelTraits:
    family: str  # haiku, sonnet, opus, fable, ...
    version: tuple[int, int]

    @property
    def structured_outputs(self) -> bool:
        return self.version >= (4, 5)

    @property
    def efforts(self) -> tuple[str, ...]:
        """The effort levels the model accepts; () when it has no effort parameter."""
        family, version = self.family, self.version
        if family == "haiku":
            return EFFORT_LEVELS if version >= (5, 5) else ()
        if family == "sonnet":
            if version >= (5, 0):
                return EFFORT_LEVELS
            return ("low", "medium", "high", "max") if version >= (4, 6) else ()
        if family == "opus":
            if version >= (4, 7):
                return EFFORT_LEVELS
            if version >= (4, 6):
                return ("low", "medium", "high", "max")
            return ("low", "medium", "high") if version >= (4, 5) else ()
        return EFFORT_LEVELS if version >= (5, 0) else ()  # Fable, Mythos

    @property
    def context_window(self) -> int:
        """Tokens of context the model takes."""
        family, version = self.family, self.version
        if family == "haiku":
            return ONE_MILLION if version >= (5, 5) else TWO_HUNDRED_K
        if family in ("sonnet", "opus"):
            return ONE_MILLION if version >= (4, 6) else TWO_HUNDRED_K
        return ONE_MILLION if version >= (5, 0) else TWO_HUNDRED_K  # Fable, Mythos

    @property
    def rejects_prefill(self) -> bool:
        return self.version >= (4, 6)

    @property
    def rejects_forced_tool_use(self) -> bool:
        if self.family in ("haiku", "sonnet", "opus"):
            return self.version >= (5, 5)
        return self.version >= (5, 1)  # Fable 5.1 and later


def traits(model: str) -> ModelTraits | None:
    """The family and version of a Claude model id, or None for an id the stub cannot read."""
    match = _NEW_ID.match(model) or _OLD_ID.match(model)
    if match is None:
        return None
    return ModelTraits(match["family"], (int(match["major"]), int(match["minor"] or 0)))
