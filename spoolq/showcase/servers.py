"""Private PostgreSQL and memcached servers in temp dirs on free ports (showcase and tests).

As root, PostgreSQL refuses to run: the cluster directory is chowned to ``postgres``
and ``initdb``/``pg_ctl`` run through ``runuser -u postgres --``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / name).exists():
            return str(d / name)
    raise FileNotFoundError(f"{name} not found: install PostgreSQL (apt-get install postgresql)")


class PgCluster:
    """A throw-away PostgreSQL cluster: ``start()``, ``stop(immediate)``, ``dsn``."""

    def __init__(self) -> None:
        # its own temp dir right under /tmp: the postgres user must be able to reach it
        self.root = Path(tempfile.mkdtemp(prefix="spoolq-pg-"))
        self.data = self.root / "pgdata"
        self.port = free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
        if self._as:
            shutil.chown(self.root, "postgres")
        subprocess.run([*self._as, _bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                        "--no-sync", "-E", "UTF8"], check=True, capture_output=True)

    @property
    def dsn(self) -> str:
        return f"host={self.root} port={self.port} user=postgres dbname=postgres connect_timeout=5"

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses='' -c fsync=off -c max_connections=100"
        subprocess.run([*self._as, _bin("pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.root / "pg.log"),
                        "-w", "-t", "60", "start"], check=True, capture_output=True)

    def stop(self, mode: str = "immediate") -> None:
        subprocess.run([*self._as, _bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"],
                       capture_output=True)

    def cleanup(self) -> None:
        """Stop (immediately) and remove the cluster's directory."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def running(self) -> bool:
        r = subprocess.run([*self._as, _bin("pg_ctl"), "-D", str(self.data), "status"], capture_output=True)
        return r.returncode == 0


class Memcached:
    """A memcached on a free 127.0.0.1 port, stopped by PID."""

    def __init__(self) -> None:
        self.port = free_port()
        args = [_bin("memcached"), "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-m", "64"]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("memcached did not start") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
