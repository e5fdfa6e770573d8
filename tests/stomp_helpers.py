"""A real `spoolq stomp` subprocess on a free port, and a tiny raw-socket STOMP client."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from spoolq.stomp.wire import Frame, Heartbeat, Parser, encode

from .conftest import PYTHON, python_env


class StompProc:
    def __init__(self, spool_dir: Path, listen: str = "127.0.0.1:0", extra: tuple[str, ...] = (),
                 loop: str = "default") -> None:
        self.spool_dir = spool_dir
        env = python_env()
        env.pop("SPOOLQ_LOOP", None)
        if loop == "asyncio":
            env["SPOOLQ_LOOP"] = "asyncio"
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "spoolq", "stomp", "--spool", str(spool_dir), "--listen", listen, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if "listening on" not in line:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise RuntimeError(f"stomp server did not start: {line!r} {err}")
        host, port = line.rsplit(" ", 1)[1].strip().rsplit(":", 1)
        self.host, self.port = host, int(port)

    def uses_uvloop(self) -> bool:
        """Whether uvloop is loaded in the server process (SPOOLQ_LOOP=asyncio never imports it)."""
        with open(f"/proc/{self.proc.pid}/maps") as f:
            return "uvloop" in f.read()

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@contextmanager
def stomp_server(spool_dir: Path, *extra: str, loop: str = "default") -> Iterator[StompProc]:
    p = StompProc(spool_dir, extra=extra, loop=loop)
    try:
        yield p
    finally:
        p.stop()


class Raw:
    """Raw socket client: send bytes, read back frames."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.parser = Parser(commands=frozenset({"CONNECTED", "MESSAGE", "RECEIPT", "ERROR"}))
        self.events: list[Frame | Heartbeat] = []

    def send(self, data: bytes | Frame) -> None:
        self.sock.sendall(encode(data) if isinstance(data, Frame) else data)

    def connect(self, **headers: str) -> Frame:
        h = {"accept-version": "1.2", "host": "localhost", **headers}
        self.send(Frame("CONNECT", tuple(h.items())))
        f = self.frame()
        assert f.command == "CONNECTED", f
        return f

    def next(self) -> Frame | Heartbeat | None:
        while not self.events:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.events += self.parser.feed(data)
        return self.events.pop(0)

    def frame(self) -> Frame:
        while True:
            ev = self.next()
            assert ev is not None, "connection closed"
            if isinstance(ev, Frame):
                return ev

    def closed(self) -> bool:
        """True when the server closes the connection (after any frames)."""
        while True:
            ev = self.next()
            if ev is None:
                return True

    def close(self) -> None:
        self.sock.close()
