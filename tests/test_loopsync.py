"""LoopSync: the syncs of commits written on an event loop, one thread hop per group (issue 15)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from spoolq.errors import StorageError
from spoolq.store.loopsync import LoopSync


def test_callers_queued_during_a_sync_share_the_next_one() -> None:
    started, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def sync() -> None:
        calls.append(threading.current_thread().name)
        started.set()
        assert release.wait(30)

    ls = LoopSync(sync)

    async def main() -> None:
        first = asyncio.ensure_future(ls.wait())
        assert await asyncio.to_thread(started.wait, 30)  # the first sync runs
        others = [asyncio.ensure_future(ls.wait()) for _ in range(5)]
        await asyncio.sleep(0)  # they queue while it runs
        assert not any(t.done() for t in [first, *others])
        release.set()
        await asyncio.wait_for(asyncio.gather(first, *others), 30)

    try:
        asyncio.run(main())
    finally:
        release.set()
        ls.close()
    assert (ls.syncs, ls.callers) == (2, 6)  # one for the first caller, one for the five queued meanwhile
    assert calls == ["spoolq-sync", "spoolq-sync"]


def test_a_failed_sync_fails_every_caller_of_its_group_and_the_next_group_syncs_again() -> None:
    results = [StorageError("cannot sync"), None]

    def sync() -> None:
        error = results.pop(0)
        if error is not None:
            raise error

    ls = LoopSync(sync)

    async def main() -> None:
        with pytest.raises(StorageError, match="cannot sync"):
            await asyncio.wait_for(ls.wait(), 30)
        await asyncio.wait_for(ls.wait(), 30)

    try:
        asyncio.run(main())
    finally:
        ls.close()
    assert ls.syncs == 2 and not results


def test_close_ends_the_thread_and_refuses_more() -> None:
    ls = LoopSync(lambda: None)

    async def main() -> None:
        await asyncio.wait_for(ls.wait(), 30)

    asyncio.run(main())
    thread = ls._thread
    ls.close()
    assert thread is None or not thread.is_alive()
    with pytest.raises(RuntimeError):
        asyncio.run(main())
