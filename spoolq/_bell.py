"""Cross-process wake-ups ("doorbells") for a spool.

A writer that makes something ready (a send into a channel, a message put into
the outbox) *rings* a bell after its commit: a one-byte ``pwrite`` to a small
file under ``<spool>/bells/``. A waiter watches that file with inotify, so the
kernel wakes every waiting process at once, within microseconds, and no one
polls the database. Rules:

* A bell is rung only after the commit it announces is visible.
* A waiter arms its watch *before* it looks at the database, so a ring between
  its look and its sleep is not lost.
* Bells carry no data; a wake-up means "look again". Spurious wake-ups are fine.

Where inotify is unavailable (not Linux), waiters fall back to polling every
``POLL_FALLBACK`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import threading
import time
import weakref
from collections import OrderedDict, defaultdict
from pathlib import Path
from typing import Any, Final

from .errors import SpoolUnavailable

_inotify: Any = None  # inotify_simple, imported on first use: it loads ctypes, which costs start-up time


def _load_inotify() -> Any:
    """The inotify_simple module, or None where it cannot work (not Linux)."""
    global _inotify
    if _inotify is None:
        try:
            import inotify_simple

            _inotify = inotify_simple
        except Exception:  # pragma: no cover - non-Linux
            _inotify = False
    return _inotify or None

POLL_FALLBACK: Final = 0.005
OUTBOX: Final = "outbox"


CHANNEL_PREFIX: Final = "c."  # Spool.send adds it itself (issue 9: a call less per send)


def channel_bell(channel: str) -> str:
    """Bell name for a channel (prefixed, so '.' and '..' stay plain file names)."""
    return CHANNEL_PREFIX + channel


class Bells:
    """Rings bells; one per spool object, thread-safe.

    The bells rung most recently keep their file open (at most ``MAX_OPEN``),
    so a spool with thousands of channels holds a bounded number of fds.
    """

    MAX_OPEN = 64

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()
        self._closed = False

    def ring(self, name: str) -> None:
        """Wake everyone waiting on ``name``. Never raises: a lost ring only delays a waiter."""
        if self._closed:
            return
        with self._lock:
            fd = self._fds.get(name)
            try:
                if fd is None:
                    fd = os.open(self.directory / name, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
                    self._fds[name] = fd
                    if len(self._fds) > self.MAX_OPEN:
                        os.close(self._fds.popitem(last=False)[1])
                else:
                    self._fds.move_to_end(name)
                os.pwrite(fd, b"\x01", 0)
            except OSError:
                pass

    def open_count(self) -> int:
        return len(self._fds)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            fds, self._fds = self._fds, OrderedDict()
        for fd in fds.values():
            try:
                os.close(fd)
            except OSError:
                pass


class Watch:
    """Waits for rings of bells. Arm it (``add``) before checking the database.

    One inotify instance holds watches for any number of bells; a spool keeps
    one per thread and reuses it, because creating and closing an inotify
    instance costs milliseconds on some kernels.
    """

    def __init__(self, directory: Path, names: list[str] | None = None) -> None:
        self.directory = directory
        self._inotify = None
        self._watched: set[str] = set()
        ino = _load_inotify()
        if ino is not None:
            try:
                self._inotify = ino.INotify()
            except OSError:  # pragma: no cover - out of inotify instances: poll instead
                self._inotify = None
        for name in names or ():
            self.add(name)

    def add(self, name: str) -> None:
        """Watch the bell ``name`` too (idempotent)."""
        if self._inotify is None or name in self._watched:
            return
        path = self.directory / name
        if not path.exists():
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
            except OSError as e:
                raise SpoolUnavailable(
                    f"cannot create the wake-up file {path}: {e.strerror or e}",
                    hint="the spool's bells/ directory must be writable by every process that waits on it",
                ) from e
        try:
            self._inotify.add_watch(path, _load_inotify().flags.MODIFY)
        except OSError:  # pragma: no cover - out of watches: this waiter polls
            self._inotify.close()
            self._inotify = None
            return
        self._watched.add(name)

    def watching(self, name: str) -> bool:
        """``name`` is watched by inotify (armed by an earlier :meth:`add`): every ring since the last
        :meth:`drain` (or :meth:`wait`) is pending."""
        return name in self._watched and self._inotify is not None

    def fileno(self) -> int:
        """The file descriptor to poll (for event loops). -1 when polling is the fallback."""
        return self._inotify.fileno() if self._inotify is not None else -1

    def wait(self, timeout: float) -> bool:
        """Sleep until a ring or ``timeout`` seconds. Returns ``True`` on a ring (or a poll tick)."""
        if timeout <= 0:
            return False
        if self._inotify is None:
            time.sleep(min(timeout, POLL_FALLBACK))
            return True
        fd = self._inotify.fileno()
        r, _, _ = select.select([fd], [], [], timeout)
        if r:
            self.drain()
            return True
        return False

    def drain(self) -> None:
        """Consume pending events without blocking (rings from before the caller's next look)."""
        if self._inotify is not None:
            try:
                self._inotify.read(timeout=0)
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BellHub:
    """Turns bell rings (inotify on ``<spool>/bells``) into asyncio events.

    It watches the files of the bells someone subscribed to, not the directory (unless someone
    subscribes to ``"*"``, every bell): a node's own rings of channels nobody waits on here (every
    batch it receives rings one) then do not wake its loop (issue 15).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._subs: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._ino: Any = None
        self._listening = False
        self._poll_task: asyncio.Task[None] | None = None
        self._wd_name: dict[int, str] = {}  # inotify watch -> bell name ("*": the directory)
        self._name_wd: dict[str, int] = {}
        self._dir_always = False  # a bell's file could not be watched: the directory is, until close
        self._by_dir: set[str] = set()  # bells without a file yet, watched through the directory (subscribe)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            from inotify_simple import INotify

            ino = INotify(nonblocking=True)
            self._ino = ino
            for name in list(self._subs):
                self._watch(name)
            loop.add_reader(ino.fileno(), self._readable)
            self._listening = True
        except Exception as e:  # pragma: no cover - non-Linux: poll instead
            logging.getLogger("spoolq").warning("no inotify (%s): waking waiters every 20 ms instead", e)
            if self._ino is not None:
                self._ino.close()
                self._ino = None
            self._wd_name.clear()
            self._name_wd.clear()
            self._poll_task = asyncio.create_task(self._poll())

    def _watch(self, name: str, create: bool = True) -> None:
        """Add the inotify watch of bell ``name`` (the directory's for ``"*"``), creating its file if needed
        (``create``; otherwise a bell without a file is watched through the directory: its first ring
        makes the file). A file that cannot be watched is covered by watching the directory from then on."""
        if self._ino is None or name in self._name_wd:
            return
        if name != "*":
            path = self.directory / name
            if not create and not path.exists():
                self._by_dir.add(name)
            else:
                from inotify_simple import flags as fl

                try:
                    if not path.exists():
                        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
                    wd = self._ino.add_watch(path, fl.MODIFY)
                except (OSError, ValueError):  # out of watches, no file, a name no file can have: every
                    self._dir_always = True  # ring is seen through the directory
                else:
                    self._wd_name[wd] = name
                    self._name_wd[name] = wd
                    return
        if "*" not in self._name_wd:
            from inotify_simple import flags as fl

            wd = self._ino.add_watch(self.directory, fl.MODIFY)
            self._wd_name[wd] = "*"
            self._name_wd["*"] = wd

    def _unwatch(self, name: str) -> None:
        if name in self._by_dir:
            self._by_dir.discard(name)
            if not self._by_dir and "*" not in self._subs:
                self._drop("*")
        self._drop(name)

    def _drop(self, name: str) -> None:
        if name == "*" and (self._dir_always or self._by_dir or "*" in self._subs):
            return
        wd = self._name_wd.pop(name, None)
        if wd is None:
            return
        self._wd_name.pop(wd, None)
        if self._ino is not None:
            with contextlib.suppress(OSError):
                self._ino.rm_watch(wd)

    def listen(self, on: bool) -> None:
        """Stop (``False``) or resume (``True``) turning rings into events.

        A server whose waiters are all served can stop listening, so that its
        own writes (which ring bells) do not wake it up for nothing. Rings
        missed meanwhile are dropped: resume before looking at the database.
        """
        if self._ino is None or on == self._listening:
            return
        loop = asyncio.get_running_loop()
        if on:
            with contextlib.suppress(BlockingIOError, OSError):
                self._ino.read(timeout=0)
            loop.add_reader(self._ino.fileno(), self._readable)
        else:
            loop.remove_reader(self._ino.fileno())
        self._listening = on

    def _readable(self) -> None:
        try:
            events = self._ino.read(timeout=0)
        except (BlockingIOError, OSError):
            return
        fired = set()
        for e in events:
            name = self._wd_name.get(e.wd)
            if name == "*":
                name = e.name
            if name and name not in fired:  # None: a watch removed meanwhile
                fired.add(name)
                self._fire(name)

    def _fire(self, name: str) -> None:
        for ev in list(self._subs.get(name, ())):
            ev.set()
        for ev in list(self._subs.get("*", ())):
            ev.set()

    async def _poll(self) -> None:  # pragma: no cover - non-Linux
        while True:
            await asyncio.sleep(0.02)
            for name in list(self._subs):
                self._fire(name)

    def subscribe(self, name: str, event: asyncio.Event | None = None, *, create: bool = True) -> asyncio.Event:
        """An event set by every ring of bell ``name`` (``"*"``: of any bell) from now on.

        ``create=False``: a bell without a file (nobody rang it yet) is watched through the directory
        rather than by making its file, so that waiters naming any channel they like do not fill the
        directory with files (a client's long poll). Before :meth:`start`, every bell gets its file."""
        ev = event or asyncio.Event()
        self._subs[name].add(ev)
        self._watch(name, create)
        return ev

    def unsubscribe(self, name: str, event: asyncio.Event) -> None:
        subs = self._subs.get(name)
        if subs is not None:
            subs.discard(event)
            if not subs:
                del self._subs[name]
                self._unwatch(name)

    def close(self) -> None:
        if self._ino is not None:
            with contextlib.suppress(Exception):
                if self._listening:
                    asyncio.get_running_loop().remove_reader(self._ino.fileno())
            self._ino.close()
            self._ino = None
        self._wd_name.clear()
        self._name_wd.clear()
        if self._poll_task is not None:
            self._poll_task.cancel()


class ThreadWatches:
    """One bell watcher per thread that waits in ``lease`` (creating one per wait costs milliseconds)."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._tls = threading.local()
        self._lock = threading.Lock()
        self._all: weakref.WeakSet[Watch] = weakref.WeakSet()

    def for_thread(self) -> Watch:
        w: Watch | None = getattr(self._tls, "watch", None)
        if w is None:
            w = Watch(self._directory)
            self._tls.watch = w
            with self._lock:
                self._all.add(w)
        return w

    def close(self) -> None:
        with self._lock:
            for w in list(self._all):
                w.close()
