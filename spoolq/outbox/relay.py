"""The relay: moves committed outbox rows into the spool, then deletes them.

Theory of operation. One round (:meth:`Relay.step`) reads up to ``batch`` committed
rows, hands them to the spool with their own ids (``Spool.send_many(ids=...)``,
durable before it returns), and only then deletes them from the outbox. A crash
between the two leaves the rows in the outbox; the next round hands them off again
and the spool drops the ids it has already seen. So every committed row reaches the
target inbox exactly once, whatever instant a process dies at. A rolled-back
transaction leaves no row, so it never produces a message.

Between rounds the relay waits on the backend's wake-up (PostgreSQL LISTEN/NOTIFY)
or, without one, polls every ``poll_interval`` seconds.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from ..spool import Spool
from ._rows import Row, hand_off

log = logging.getLogger("spoolq.outbox")

# Test hook: after handing a round to the spool and before deleting it from the outbox,
# create this file and stop (the crash tests SIGKILL the relay there).
PAUSE_ENV = "SPOOLQ_OUTBOX_PAUSE_FILE"


class Backend(Protocol):
    """What a relay needs from an outbox's database."""

    def claim(self, batch: int) -> tuple[list[Row], object]: ...
    def settle(self, token: object, rows: Sequence[Row]) -> None: ...
    def abandon(self, token: object) -> None: ...
    def wait(self, timeout: float) -> bool: ...
    def close(self) -> None: ...


class Relay:
    """A loop you can step: ``step()`` does one round, ``run()`` repeats until ``stop()``.

    Args:
        backend: the outbox's database side (made by ``outbox.relay()``).
        spool: where the messages go.
        to: forward rows that have no ``to=`` of their own to this peer (or peers).
        batch: rows per round.
        poll_interval: longest wait between rounds when nothing wakes the relay.
    """

    def __init__(
        self,
        backend: Backend,
        spool: Spool,
        *,
        to: str | Sequence[str] | None = None,
        batch: int = 500,
        poll_interval: float = 1.0,
    ) -> None:
        self._backend = backend
        self.spool = spool
        self.to = to
        self.batch = batch
        self.poll_interval = poll_interval
        self.relayed = 0
        self._stop = threading.Event()
        self._last_error_log = 0.0

    def step(self, now: float | None = None) -> int:
        """One round: hand off up to ``batch`` committed rows; returns how many."""
        rows, token = self._backend.claim(self.batch)
        if not rows:
            self._backend.abandon(token)
            return 0
        try:
            hand_off(self.spool, rows, self.to, time.time() if now is None else now)
        except BaseException:
            self._backend.abandon(token)
            raise
        pause = os.environ.get(PAUSE_ENV)
        if pause:
            Path(pause).write_text(",".join(r.id for r in rows))
            while True:
                time.sleep(3600)
        self._backend.settle(token, rows)
        self.relayed += len(rows)
        return len(rows)

    def run(self) -> None:
        """Repeat :meth:`step` until :meth:`stop`; errors are logged (at most every 10 s) and retried."""
        while not self._stop.is_set():
            try:
                n = self.step()
            except Exception as e:  # the database or the spool is down: wait and try again
                now = time.monotonic()
                if now - self._last_error_log > 10:
                    log.warning("outbox relay: %s (retrying)", e)
                    self._last_error_log = now
                self._stop.wait(min(self.poll_interval, 1.0))
                continue
            if n >= self.batch:
                continue
            deadline = time.monotonic() + self.poll_interval
            while not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    if self._backend.wait(min(left, 0.25)):
                        break
                except Exception:
                    self._stop.wait(min(left, 0.25))

    def stop(self) -> None:
        """Make :meth:`run` return after its current round (callable from any thread or a signal handler)."""
        self._stop.set()

    def close(self) -> None:
        self.stop()
        self._backend.close()
