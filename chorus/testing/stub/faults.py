"""A seeded random fault mix for the stub: `429=0.2,529=0.05,500=0.05,hang=0.02`.

Each request draws once from one seeded generator, so the same seed and the same request order
give the same faults. A `hang` holds the request for `hang_s` (longer than the client's timeout,
never forever) and then answers 504, which a client that is still waiting would treat as retryable.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

HANG = "hang"
ERROR_STATUSES = frozenset({429, 500, 502, 503, 504, 529})


@dataclass(frozen=True)
class Fault:
    kind: str  # "429", "500", ... or "hang"

    @property
    def status(self) -> int:
        return 504 if self.kind == HANG else int(self.kind)


def parse_mix(spec: str) -> list[tuple[str, float]]:
    """`429=0.2,hang=0.02` → [("429", 0.2), ("hang", 0.02)]; the shares add up to at most 1."""
    mix: list[tuple[str, float]] = []
    for item in (i.strip() for i in spec.split(",") if i.strip()):
        kind, eq, raw = item.partition("=")
        kind = kind.strip().lower()
        if not eq:
            raise ValueError(f"fault {item!r}: expected KIND=SHARE like 429=0.2")
        if kind != HANG and (not kind.isdigit() or int(kind) not in ERROR_STATUSES):
            raise ValueError(f"fault {item!r}: kind is one of {sorted(ERROR_STATUSES)} or hang")
        try:
            share = float(raw)
        except ValueError:
            raise ValueError(f"fault {item!r}: {raw.strip()!r} is not a number") from None
        if not 0 <= share <= 1:
            raise ValueError(f"fault {item!r}: a share is between 0 and 1")
        mix.append((kind, share))
    if sum(share for _, share in mix) > 1 + 1e-9:
        raise ValueError(f"fault mix {spec!r}: the shares add up to more than 1")
    return mix


class FaultMix:
    def __init__(self, mix: list[tuple[str, float]], seed: int = 0, hang_s: float = 30.0,
                 retry_after_s: float = 1.0) -> None:
        if hang_s <= 0:
            raise ValueError("hang_s must be positive: a hang is bounded")
        self.mix = mix
        self.seed = seed
        self.hang_s = hang_s
        self.retry_after_s = retry_after_s
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    @classmethod
    def parse(cls, spec: str, **options: float) -> FaultMix:
        return cls(parse_mix(spec), **options)  # type: ignore[arg-type]

    def draw(self) -> Fault | None:
        with self._lock:
            u = self._rng.random()
        edge = 0.0
        for kind, share in self.mix:
            edge += share
            if u < edge:
                return Fault(kind)
        return None

    def to_json(self) -> dict[str, object]:
        return {"mix": dict(self.mix), "seed": self.seed, "hang_s": self.hang_s, "retry_after_s": self.retry_after_s}
