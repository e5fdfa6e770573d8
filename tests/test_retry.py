"""backoff() is a pure function: checked with a seeded RNG."""

from __future__ import annotations

import random

import pytest

from spoolq import backoff


class _Fixed:
    def __init__(self, r: float) -> None:
        self.r = r

    def random(self) -> float:
        return self.r


@pytest.mark.parametrize(
    "attempt,r,expected",
    [
        (1, 0.0, 0.5),
        (1, 1.0, 1.0),
        (2, 0.0, 1.0),
        (3, 0.5, 3.0),
        (10, 1.0, 512.0),
        (13, 1.0, 3600.0),  # capped
        (200, 0.0, 1800.0),
        (0, 1.0, 1.0),  # below 1 counts as 1
    ],
)
def test_backoff_table(attempt: int, r: float, expected: float) -> None:
    assert backoff(attempt, rng=_Fixed(r)) == pytest.approx(expected)


def test_backoff_grows_and_stays_within_bounds_with_seeded_rng() -> None:
    rng = random.Random(42)
    prev_ceiling = 0.0
    for attempt in range(1, 30):
        ceiling = min(3600.0, 2.0 ** (attempt - 1))
        d = backoff(attempt, rng=rng)
        assert ceiling / 2 <= d <= ceiling
        assert ceiling >= prev_ceiling
        prev_ceiling = ceiling


def test_backoff_is_reproducible_with_same_seed() -> None:
    a = [backoff(i, base=0.1, cap=10, rng=random.Random(7)) for i in range(1, 10)]
    b = [backoff(i, base=0.1, cap=10, rng=random.Random(7)) for i in range(1, 10)]
    assert a == b


def test_backoff_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        backoff(1, base=0)
    with pytest.raises(ValueError):
        backoff(1, cap=-1)
