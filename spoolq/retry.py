"""Backoff as a pure function.

Used for a consumer's ``nack()`` without a delay and for a peer that fails.
The loops around it own the sleeping; this module only computes how long.
"""

from __future__ import annotations

import random
from typing import Protocol

__all__ = ["backoff"]


class _Rng(Protocol):
    def random(self) -> float: ...


_default_rng = random.Random()


def backoff(attempt: int, *, base: float = 1.0, cap: float = 3600.0, rng: _Rng | None = None) -> float:
    """Exponential backoff with "equal jitter".

    The ceiling doubles with each attempt (``base``, ``2*base``, ``4*base`` …,
    at most ``cap``); the result is uniform in ``[ceiling/2, ceiling]``, so
    retries from many clients spread out but never come back immediately.

    Args:
        attempt: 1 for the first retry, 2 for the second, and so on (values
            below 1 count as 1).
        base: ceiling of the first retry, in seconds.
        cap: largest ceiling, in seconds.
        rng: source of randomness (pass a seeded ``random.Random`` in tests).

    Returns:
        Seconds to wait.
    """
    if base <= 0 or cap <= 0:
        raise ValueError("base and cap must be positive")
    n = max(1, attempt)
    ceiling = cap if n > 62 else min(cap, base * (1 << (n - 1)))
    r = (rng or _default_rng).random()
    return ceiling / 2 + r * ceiling / 2
