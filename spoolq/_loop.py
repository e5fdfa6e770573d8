"""The event loop every spoolq server runs on: uvloop where it is installed, asyncio's own otherwise.

``SPOOLQ_LOOP=asyncio`` forces asyncio's default loop (for debugging, or to compare the two).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

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
