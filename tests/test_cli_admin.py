"""The operator's commands (issue 11): run as subprocesses on a real spool and against a real node."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from spoolq import Spool

from .conftest import PYTHON, python_env
from .nodes import NodeProc

ADMIN = "admin-token-0123456789abcdef"
SENDER = "send-token-0123456789abcdef0"
TOKENS = (f'[tokens.ops]\ntoken = "{ADMIN}"\nscopes = ["admin"]\n'
          f'[tokens.app]\ntoken = "{SENDER}"\nscopes = ["send"]\n')


def cli(*args: str, input: str | None = None, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    e = python_env()
    e.update(env or {})
    return subprocess.run([PYTHON, "-m", "spoolq", *args], input=input, capture_output=True, text=True, env=e,
                          timeout=timeout)


def jlines(r: subprocess.CompletedProcess[str]) -> list[Any]:
    assert r.returncode == 0, r.stdout + r.stderr
    return [json.loads(x) for x in r.stdout.splitlines() if x.strip()]


# -- top ------------------------------------------------------------------------------------


def test_top_local_rounds_and_rates(spool_dir: Path) -> None:
    with Spool(spool_dir) as s:
        s.send_many([b"a"] * 5, "orders")
        s.send(b"x", "orders", to="dc2")
    rounds = jlines(cli("top", "--iterations", "3", "--interval", "0.2", "--json", "--spool", str(spool_dir)))
    assert len(rounds) == 3
    assert rounds[0]["interval"] is None and rounds[0]["channels"]["orders"]["net_rate"] is None
    assert rounds[0]["channels"]["orders"]["ready"] == 5 and rounds[0]["peers"]["dc2"]["waiting"] == 1
    for r in rounds[1:]:
        assert r["interval"] > 0 and r["channels"]["orders"]["net_rate"] == 0.0
        assert r["peers"]["dc2"]["sent_rate"] == 0.0
    # not a terminal: one plain frame, no escape codes, nothing written to the spool
    r = cli("top", "--spool", str(spool_dir))
    assert r.returncode == 0, r.stderr
    assert "orders" in r.stdout and "dc2" in r.stdout and "\x1b[" not in r.stdout
    r = cli("top", "--once", "--spool", str(spool_dir / "missing"))
    assert r.returncode == 1 and "error" in r.stderr and not (spool_dir / "missing").exists()
    r = cli("top", "--once", "--interval", "0", "--spool", str(spool_dir))
    assert r.returncode == 2 and "--interval" in r.stderr


def test_top_sees_a_draining_channel(spool_dir: Path) -> None:
    """The rate is a real difference between rounds: a consumer acking between them shows a negative net/s."""
    with Spool(spool_dir) as s:
        s.send_many([b"a"] * 50, "jobs")
    # rounds every 0.2s for at most 2 minutes; we stop it once it has seen the drain
    proc = subprocess.Popen([PYTHON, "-m", "spoolq", "top", "--iterations", "600", "--interval", "0.2", "--json",
                             "--spool", str(spool_dir)], stdout=subprocess.PIPE, text=True, env=python_env())
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["channels"]["jobs"]["ready"] == 50
        r = cli("lease", "jobs", "--max", "20", "--spool", str(spool_dir))  # leased and acked: 20 gone
        assert r.returncode == 0
        rates = []
        for line in proc.stdout:
            rec = json.loads(line)["channels"]["jobs"]
            rates.append(rec["net_rate"])
            if rec["ready"] + rec["leased"] == 30:  # leased then acked: gone once acked
                break
        else:
            raise AssertionError("top never saw the channel drained")
    finally:
        proc.kill()
        proc.wait()
    assert rates[-1] < 0 and all(x <= 0 for x in rates)


def test_top_against_a_node(tmp_path: Path) -> None:
    d = tmp_path / "a"
    with Spool(d) as s:
        s.send_many([b"1", b"2"], "orders")
    with NodeProc(d, config=TOKENS + '[peers.dc2]\nurl = "http://127.0.0.1:9"\n') as node:
        with Spool(d) as s:
            s.send(b"3", "orders", to="dc2")
        rounds = jlines(cli("top", "--node", node.url, "--token", ADMIN, "--iterations", "2", "--interval", "0.2",
                            "--json"))
        assert rounds[1]["channels"]["orders"]["ready"] == 2
        assert rounds[1]["peers"]["dc2"]["waiting"] == 1 and "up" in rounds[1]["peers"]["dc2"]
        assert rounds[0]["source"] == f"node {node.url}"
        # a token without the admin scope still sees the depths (no peer health)
        rounds = jlines(cli("top", "--node", node.url, "--token", SENDER, "--once", "--json"))
        assert rounds[0]["channels"]["orders"]["ready"] == 2 and "up" not in rounds[0]["peers"]["dc2"]
        r = cli("top", "--node", node.url, "--token", "wrong-token-0123456789", "--once")
        assert r.returncode == 1 and "token" in r.stderr and "Traceback" not in r.stderr
    r = cli("top", "--node", node.url, "--once")  # stopped: nothing listens there now
    assert r.returncode == 1 and "cannot reach the node" in r.stderr
    r = cli("top", "--node", "ftp://x", "--once")
    assert r.returncode == 2 and "http://" in r.stderr
