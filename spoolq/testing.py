"""Fakes for testing code that uses spoolq, without a daemon.

* :class:`FakeClock` — pass it as ``Spool(clock=...)`` and move time with
  :meth:`FakeClock.advance`; leases expire and delayed messages come due
  without sleeping.
* :func:`memory_spool` — a throw-away spool kept in memory (``/dev/shm`` when
  there is one), durability ``normal``, removed on exit.

Example::

    from spoolq.testing import FakeClock, memory_spool

    def test_retry_after_expiry():
        clock = FakeClock()
        with memory_spool(clock=clock) as spool:
            spool.send(b"x", "jobs")
            lease = spool.lease("jobs", visibility=10)
            clock.advance(11)
            assert spool.lease("jobs").attempts == 2
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .spool import Spool

__all__ = ["FakeClock", "memory_spool"]


class FakeClock:
    """A clock that moves only when told to. Thread-safe."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        """Move the clock forward; returns the new time."""
        if seconds < 0:
            raise ValueError("a FakeClock only moves forward")
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, when: float) -> None:
        with self._lock:
            self._now = float(when)


@contextmanager
def memory_spool(**options: Any) -> Iterator[Spool]:
    """A temporary spool in memory-backed storage, deleted afterwards.

    Keyword arguments go to :class:`Spool` (durability defaults to ``normal``).
    """
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    path = tempfile.mkdtemp(prefix="spoolq-test-", dir=base)
    options.setdefault("durability", "normal")
    spool = Spool(path, **options)
    try:
        yield spool
    finally:
        spool.close()
        shutil.rmtree(path, ignore_errors=True)
