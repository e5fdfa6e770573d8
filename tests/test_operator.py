"""Running a node in production: systemd readiness (sd_notify), the sample unit in contrib/, and
``spoolq node --check-config``."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from spoolq.node.sdnotify import notify

from .conftest import PYTHON, ROOT, python_env
from .nodes import NodeProc
from .test_history import CONFIG, call

UNIT = ROOT / "contrib" / "spoolq-node.service"


@pytest.fixture
def notify_socket() -> Any:
    d = tempfile.mkdtemp(prefix="sdn", dir="/tmp")  # a short path: unix socket names are limited to 107 bytes
    path = os.path.join(d, "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(30)
    try:
        yield s, path
    finally:
        s.close()
        os.unlink(path)
        os.rmdir(d)


def test_node_tells_systemd_it_is_ready_and_stopping(tmp_path: Path, notify_socket: Any) -> None:
    sock, path = notify_socket
    node = NodeProc(tmp_path / "spool", env={"NOTIFY_SOCKET": path}, wait=False)
    try:
        msg = sock.recv(4096).decode()
        assert "READY=1" in msg and f"MAINPID={node.proc.pid}" in msg
        node.wait_ready()  # ready means serving: node.json names it and the port answers
        assert call(f"{node.url}/healthz", token=None)[0] == 200
    finally:
        assert node.stop() == 0
    assert "STOPPING=1" in sock.recv(4096).decode()


def test_notify_without_a_socket_or_with_a_bad_one() -> None:
    assert notify("READY=1", {}) is False
    assert notify("READY=1", {"NOTIFY_SOCKET": "relative/path"}) is False
    assert notify("READY=1", {"NOTIFY_SOCKET": "/nonexistent/dir/notify"}) is False


def check_config(tmp_path: Path, text: str | None, *flags: str) -> subprocess.CompletedProcess[str]:
    args = [PYTHON, "-m", "spoolq", "node", "--check-config", *flags]
    if text is not None:
        cfg = tmp_path / "node.toml"
        cfg.write_text(text)
        args += ["--config", str(cfg)]
    return subprocess.run(args, env=python_env(), capture_output=True, text=True, timeout=60)


def test_check_config_good(tmp_path: Path) -> None:
    r = check_config(tmp_path, CONFIG + '\n[peers.dc2]\nurl = "http://127.0.0.1:7071"\n')
    assert r.returncode == 0, r.stderr
    assert "config OK" in r.stdout and "1 peers" in r.stdout and "2 tokens" in r.stdout
    assert not (tmp_path / "spool").exists()  # nothing started, nothing created
    r = check_config(tmp_path, None, "--listen", "127.0.0.1:0")
    assert r.returncode == 0 and "defaults" in r.stdout


@pytest.mark.parametrize(("text", "flags", "key"), [
    ("[node]\nhistory_interval = 0\n", (), "node.history_interval"),
    ("[node]\nlisten = \"nowhere\"\n", (), "node.listen"),
    ("[node]\nbogus = 1\n", (), "bogus"),
    ("[peers.dc2]\nurl = \"ftp://x\"\n", (), "peers.dc2.url"),
    ("[node\n", (), "not valid TOML"),
    ("", ("--durability", "fast"), "--durability"),
])
def test_check_config_names_the_bad_key(tmp_path: Path, text: str, flags: tuple[str, ...], key: str) -> None:
    r = check_config(tmp_path, text, *flags)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert key in r.stderr and "config OK" not in r.stdout


def test_the_sample_unit_is_valid_and_hardened(tmp_path: Path) -> None:
    text = UNIT.read_text()
    for line in ("Type=notify", "Restart=on-failure", "LimitNOFILE=65536", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "ExecReload=/bin/kill -HUP $MAINPID", "--check-config"):
        assert line in text, line
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the unit's syntax is not checked")
    spoolq = Path(PYTHON).with_name("spoolq")
    unit = tmp_path / "spoolq-node.service"
    unit.write_text(text.replace("/usr/local/bin/spoolq", str(spoolq) if spoolq.exists() else "/bin/true"))
    r = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "spoolq-node.service" not in r.stderr, r.stderr
