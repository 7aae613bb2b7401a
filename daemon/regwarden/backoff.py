"""Exponential backoff with full jitter: the one retry rhythm for Vault, sources, sinks and probes."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff", "jittered"]


@dataclass
class Backoff:
    """`next()` returns the delay before the next try: random in [initial, min(max, initial * 2**n)]."""

    initial: float = 1.0
    maximum: float = 300.0
    factor: float = 2.0
    attempts: int = field(default=0, init=False)
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def next(self, hint: float | None = None) -> float:
        ceiling = min(self.maximum, self.initial * self.factor**self.attempts)
        self.attempts += 1
        delay = self._rng.uniform(self.initial, max(self.initial, ceiling))
        if hint is not None:  # a server's Retry-After is a floor, never shortened by jitter
            delay = max(delay, min(hint, self.maximum))
        return delay

    def reset(self) -> None:
        self.attempts = 0


def jittered(seconds: float, fraction: float = 0.1, rng: random.Random | None = None) -> float:
    """`seconds` ± `fraction`, so that a fleet started together does not poll in lockstep."""
    return seconds * (1 + (rng or random).uniform(-fraction, fraction))
