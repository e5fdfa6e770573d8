"""Connections taken while ``spoolq-beanstalkd`` is still starting (standard library only).

Between binding its socket and serving, the server imports asyncio, SQLite and
the spool and opens the spool: tens of milliseconds, more on a busy machine.
beanstalkd answers at once, and client test suites time their first command
from when they send it (greenstalk's allows 50 ms of slack on a
``reserve-with-timeout``). So, meanwhile, a thread accepts connections and
reads what they send, noting when each chunk arrived; the server then adopts
the connections and decodes the chunks as if they had just been read, but
counts a ``reserve-with-timeout`` from the chunk's arrival, as beanstalkd would
have. What one connection may send before the server is ready is capped
(``MAX_EARLY_BYTES``; after that it is left in the socket), and so is the number
of connections taken this way.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time

MAX_EARLY_BYTES = 1 << 16  # per connection (what a server reads behind a pending reply: server.PAUSE_READING_AT)
MAX_EARLY_CONNS = 1024


class EarlyConn:
    """A connection accepted before the server was ready, with what it sent and when."""

    __slots__ = ("chunks", "size", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.chunks: list[tuple[float, bytes]] = []  # (time.monotonic() of arrival, bytes)
        self.size = 0


class EarlyAccept:
    """Accept and read on ``listener`` in a thread until :meth:`finish`."""

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.conns: dict[int, EarlyConn] = {}
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="spoolq-beanstalkd-early", daemon=True)
        self._thread.start()

    def finish(self) -> list[EarlyConn]:
        """Stop the thread; the connections it took, in the order they came."""
        os.write(self._wake_w, b"x")
        self._thread.join()
        os.close(self._wake_r)
        os.close(self._wake_w)
        return list(self.conns.values())

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        poller.register(self.listener.fileno(), select.POLLIN)
        listening = True
        while True:
            for fd, _ev in poller.poll():
                if fd == self._wake_r:
                    return
                if fd == self.listener.fileno():
                    while len(self.conns) < MAX_EARLY_CONNS:
                        try:
                            sock, _ = self.listener.accept()
                        except (BlockingIOError, InterruptedError):
                            break
                        except OSError:  # out of fds and the like: leave them in the backlog
                            break
                        sock.setblocking(False)
                        self.conns[sock.fileno()] = EarlyConn(sock)
                        poller.register(sock.fileno(), select.POLLIN)
                    if listening and len(self.conns) >= MAX_EARLY_CONNS:
                        poller.unregister(self.listener.fileno())
                        listening = False
                    continue
                conn = self.conns[fd]
                try:
                    data = conn.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if data:
                    conn.chunks.append((time.monotonic(), data))
                    conn.size += len(data)
                if not data or conn.size >= MAX_EARLY_BYTES:  # EOF (the server will see it too) or enough
                    poller.unregister(fd)
