"""The event loop every spoolq server runs on: uvloop where it is installed, asyncio's own otherwise.

``SPOOLQ_LOOP=asyncio`` forces asyncio's default loop (for debugging, or to compare the two).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import SpoolqError

if TYPE_CHECKING:
    from .lease import Lease
    from .spool import Spool

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """A callable making a new event loop: uvloop's when available and not turned off."""
    if os.environ.get("SPOOLQ_LOOP", "").lower() != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop (uvloop's when available)."""
    return loop_factory()()


def run(main: Coroutine[Any, Any, T], *, debug: bool | None = None) -> T:
    """Like :func:`asyncio.run`, on the loop :func:`loop_factory` picks."""
    with asyncio.Runner(debug=debug, loop_factory=loop_factory()) as runner:
        return runner.run(main)


def name() -> str:
    """Which loop :func:`run` uses: ``"uvloop"`` or ``"asyncio"``."""
    return "uvloop" if loop_factory() is not asyncio.new_event_loop else "asyncio"


async def lease_in_thread(spool: Spool, channel: str, n: int, visibility: float) -> list[Lease]:
    """``spool.lease_many`` in a worker thread, safe to cancel.

    Cancelling the awaiting task does not stop the thread: the rows it leases would be hidden from
    every consumer for the whole visibility, with nobody to ack them (a STOMP UNSUBSCRIBE or a
    client that leaves while its lease is being taken). When the caller is cancelled, the leases
    the thread returns are given back uncounted (``Spool.release``) as soon as it finishes.
    """
    fut = asyncio.ensure_future(asyncio.to_thread(spool.lease_many, channel, n, visibility=visibility))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        fut.add_done_callback(_give_back_late(spool))
        raise


def _give_back_late(spool: Spool) -> Callable[[asyncio.Future[list[Lease]]], None]:
    def done(fut: asyncio.Future[list[Lease]]) -> None:
        if fut.cancelled() or fut.exception() is not None or not fut.result():
            return
        task = asyncio.ensure_future(asyncio.to_thread(_release_quietly, spool, fut.result()))
        _late.add(task)
        task.add_done_callback(_late.discard)
    return done


def _release_quietly(spool: Spool, leases: list[Lease]) -> None:
    try:
        spool.release(leases)
    except SpoolqError:  # they come back when their visibility runs out
        pass


_late: set[asyncio.Future[None]] = set()  # keeps the give-back tasks alive until they finish
