"""Start real `spoolq node` daemons as subprocesses for integration tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from .conftest import PYTHON, python_env


def free_port() -> int:
    """A port that was free a moment ago (for a node that must come back on the same port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProc:
    """A server subprocess of a test, logging to ``log_path``: stop it gently, kill it, signal it."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes]

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (SIGKILL if it does not exit within ``timeout``); returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: no chance to clean up."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._log.close()

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)


class NodeProc(ServerProc):
    """A `spoolq node` process. ``url`` is its real address (read from <spool>/node.json)."""

    def __init__(self, spool_dir: Path, *, config: str | None = None, listen: str = "127.0.0.1:0",
                 extra: list[str] | None = None, env: dict[str, str] | None = None, wait: bool = True,
                 preexec_fn: Callable[[], None] | None = None) -> None:
        self.spool_dir = Path(spool_dir)
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.spool_dir.parent / f"{self.spool_dir.name}.node.log"
        args = [PYTHON, "-m", "spoolq", "node", "--spool", str(self.spool_dir), "--listen", listen]
        if config is not None:
            self.config_path = self.spool_dir.parent / f"{self.spool_dir.name}.toml"
            self.config_path.write_text(config)
            args += ["--config", str(self.config_path)]
        args += extra or []
        full_env = python_env()
        full_env.update(env or {})
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
                                     preexec_fn=preexec_fn)
        self.url = ""
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> str:
        """Wait until node.json names this process (a stale one, or a running node's, is not ours)."""
        info = self.spool_dir / "node.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited with {self.proc.returncode}:\n{self.log()}")
            if info.exists():
                try:
                    data = json.loads(info.read_text())
                except ValueError:
                    data = {}
                if data.get("pid") == self.proc.pid:
                    self.url = data["url"]
                    return self.url
            time.sleep(0.02)
        self.kill()  # a node that does not come up is not left running (the constructor raises)
        raise AssertionError(f"node did not start within {timeout}s:\n{self.log()}")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def __enter__(self) -> NodeProc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
