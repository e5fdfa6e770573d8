"""The server's tubes: which exist, in what order, and what each has counted (no I/O of its own).

beanstalkd keeps a tube while anything refers to it: a connection using or watching it, or a job in
it (``default`` always). When the last reference goes, the tube is freed with its counters
(``total-jobs``, ``cmd-delete``, ``cmd-pause-tube``) and its pause; a tube made again under the
same name starts from zero and comes last in ``list-tubes``. :class:`Tubes` follows that: it counts
the connections referring to each tube, and when a tube gains its first connection again it asks
whether jobs kept it alive meanwhile (``holds_jobs``); if not, the tube was freed in between, and
what it had counted is forgotten before the new reference counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

from .names import tube_channel

__all__ = ["Tubes"]

CHANNEL_CACHE_MAX: Final = 4096
ORDER_PRUNE: Final = 4096


class Tubes:
    """Per-tube state of one server. ``holds_jobs(channel)``: whether the store has any job (ready,
    reserved, delayed or buried) in ``channel``; ``existing()``: the tubes that exist now (see
    ``Server.tubes``), called to prune when the creation-order table grows past ``ORDER_PRUNE``."""

    def __init__(self, holds_jobs: Callable[[str], bool], existing: Callable[[], list[str]]) -> None:
        self._holds_jobs = holds_jobs
        self._existing = existing
        self.jobs: dict[str, int] = {}  # total-jobs
        self.deletes: dict[str, int] = {}  # cmd-delete
        self.pauses: dict[str, int] = {}  # cmd-pause-tube
        self.paused: dict[str, tuple[float, int]] = {}  # tube -> (time.monotonic() until, seconds)
        self.order: dict[str, None] = {"default": None}  # creation order
        self.refs: dict[str, int] = {}  # connections using or watching the tube (each counted once per role)
        self._channels: dict[str, str | None] = {}

    def channel(self, tube: str) -> str | None:
        """The channel holding ``tube``'s jobs (cached; bounded)."""
        ch = self._channels.get(tube, "")
        if ch == "":
            if len(self._channels) >= CHANNEL_CACHE_MAX:  # 500k distinct "use x" must not stay in RAM
                self._channels.clear()
            ch = self._channels[tube] = tube_channel(tube)
        return ch

    def ref(self, tube: str) -> None:
        """A connection now uses or watches ``tube``."""
        n = self.refs.get(tube, 0)
        if n == 0 and tube != "default" and self._counted(tube):
            ch = self.channel(tube)
            if ch is None or not self._holds_jobs(ch):  # freed since it was last referred to
                self.forget(tube)
        self.refs[tube] = n + 1
        if tube not in self.order:
            self.order[tube] = None
            if len(self.order) > ORDER_PRUNE:
                self._existing()  # forget the ones that no longer exist (bounded memory)

    def unref(self, tube: str) -> None:
        """A connection no longer uses (or no longer watches) ``tube``."""
        n = self.refs.get(tube, 0) - 1
        if n > 0:
            self.refs[tube] = n
        else:
            self.refs.pop(tube, None)

    def _tables(self) -> tuple[dict[str, Any], ...]:
        """Every table keyed by tube."""
        return (self.order, self.jobs, self.deletes, self.pauses, self.paused)

    def _counted(self, tube: str) -> bool:
        return any(tube in table for table in self._tables())

    def forget(self, tube: str) -> None:
        """``tube`` stopped existing: its counters, pause and place in the creation order go."""
        for table in self._tables():
            table.pop(tube, None)

    def prune(self, names: Iterable[str]) -> list[str]:
        """Keep only the tubes in ``names`` (those that exist), in creation order, new ones last in
        name order; returns them."""
        names = set(names)
        for table in self._tables():
            for gone in [t for t in table if t not in names]:
                del table[gone]
        for t in sorted(names.difference(self.order)):
            self.order[t] = None
        return list(self.order)

    def end_pauses(self, now: float) -> None:
        """Forget the pauses that ended by ``now`` (time.monotonic()), as beanstalkd sets them back to 0."""
        for tube in [t for t, (until, _) in self.paused.items() if until <= now]:
            del self.paused[tube]
