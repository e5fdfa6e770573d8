"""Real brokers for the bridge tests: redis-server, nats-server -js, a private rabbitmq-server.

Each runs on free 127.0.0.1 ports with its data in a temp dir and is stopped by its PID
(rabbitmq: ``rabbitmqctl -n NODE stop``, then the PID). ``restart()`` brings one back on the
same port with the same data, for the broker-down tests.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import IO

from .nodes import free_port

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")


def _find(name: str) -> str:
    for d in (None, "/usr/sbin", "/usr/lib/rabbitmq/bin"):
        path = shutil.which(name, path=d)
        if path:
            return path
    raise RuntimeError(f"{name} is not installed (.ci/run installs it)")


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"broker did not listen on {port} within {timeout}s:\n{log.read_text(errors='replace')[-3000:]}")


class Broker:
    url: str
    port: int
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def __init__(self, tmp: Path) -> None:
        self.tmp = Path(tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = self.tmp / "broker.log"

    def _args(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self, timeout: float = 30.0) -> None:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self._args(), env=self._env(), stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=self.tmp)
        _wait_port(self.port, self.proc, self.log_path, timeout)

    def kill(self) -> None:
        """SIGKILL: the broker vanishes mid-conversation."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._log is not None:
            self._log.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()

    def restart(self) -> None:
        self.start()


class Redis(Broker):
    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def _args(self) -> list[str]:
        return [_find("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.tmp),
                "--appendonly", "yes", "--appendfsync", "always", "--save", ""]


class Nats(Broker):
    def __init__(self, tmp: Path, max_payload: int | None = None) -> None:
        super().__init__(tmp)
        self.url = f"nats://127.0.0.1:{self.port}"
        self.max_payload = max_payload

    def _args(self) -> list[str]:
        args = [_find("nats-server"), "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.tmp / "js")]
        if self.max_payload is not None:
            conf = self.tmp / "nats.conf"
            conf.write_text(f"max_payload: {self.max_payload}\n")
            args += ["-c", str(conf)]
        return args


class Rabbit(Broker):
    """A private rabbitmq-server: own node name, epmd port, cookie (HOME), dirs; no plugins."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.node = f"spoolqtest{uuid.uuid4().hex[:8]}@localhost"
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        (self.tmp / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n")
        (self.tmp / "enabled_plugins").write_text("[].\n")
        self.epmd: subprocess.Popen[bytes] | None = None

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(HOME=str(self.tmp), RABBITMQ_NODENAME=self.node, RABBITMQ_MNESIA_BASE=str(self.tmp / "mnesia"),
                   RABBITMQ_LOG_BASE=str(self.tmp / "log"), RABBITMQ_CONFIG_FILE=str(self.tmp / "rabbitmq.conf"),
                   RABBITMQ_ENABLED_PLUGINS_FILE=str(self.tmp / "enabled_plugins"),
                   RABBITMQ_DIST_PORT=str(self.dist_port), ERL_EPMD_PORT=str(self.epmd_port))
        return env

    def _args(self) -> list[str]:
        return [str(RABBIT_BIN / "rabbitmq-server")]

    def start(self, timeout: float = 90.0) -> None:
        if self.epmd is None or self.epmd.poll() is not None:  # our own epmd, stopped by its PID
            self.epmd = subprocess.Popen([_find("epmd"), "-port", str(self.epmd_port)], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
        super().start(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            subprocess.run([str(RABBIT_BIN / "rabbitmqctl"), "-n", self.node, "stop"], env=self._env(),
                           capture_output=True, timeout=60)
        super().stop()

    def close(self) -> None:
        self.stop()
        if self.epmd is not None and self.epmd.poll() is None:
            self.epmd.kill()
            self.epmd.wait()
