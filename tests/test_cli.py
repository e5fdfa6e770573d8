"""The command line, run as a subprocess the way a user runs it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from spoolq import Spool

from .conftest import PYTHON, python_env, wait_for


def cli(*args: str, input: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "spoolq", *args], input=input, capture_output=True, text=True,
                          env=python_env(), cwd=cwd, timeout=120)


def test_send_lease_round_trip(spool_dir: Path) -> None:
    r = cli("send", "jobs", "hello world", "--spool", str(spool_dir), "--priority", "5", "--header", "k=v")
    assert r.returncode == 0, r.stderr
    mid = r.stdout.strip()
    r = cli("send", "jobs", "--spool", str(spool_dir), input="from stdin")
    assert r.returncode == 0
    r = cli("lease", "jobs", "--json", "--max", "5", "--spool", str(spool_dir))
    assert r.returncode == 0, r.stderr
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["body"] for x in recs] == ["hello world", "from stdin"]
    assert recs[0]["id"] == mid and recs[0]["priority"] == 5 and recs[0]["headers"] == {"k": "v"}
    r = cli("lease", "jobs", "--spool", str(spool_dir))
    assert r.returncode == 3 and "no message" in r.stderr  # all acked


def test_lease_no_ack_leaves_it_leased(spool_dir: Path) -> None:
    cli("send", "jobs", "x", "--spool", str(spool_dir))
    r = cli("lease", "jobs", "--no-ack", "--visibility", "1m", "--spool", str(spool_dir))
    assert r.returncode == 0 and r.stdout == "x\n"
    with Spool(spool_dir) as s:
        assert s.stats().channels["jobs"].leased == 1


def test_env_var_selects_spool(spool_dir: Path, tmp_path: Path) -> None:
    env = python_env()
    env["SPOOLQ_SPOOL"] = str(spool_dir)
    r = subprocess.run([PYTHON, "-m", "spoolq", "send", "c", "x"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0
    with Spool(spool_dir) as s:
        assert s.stats().channels["c"].ready == 1


def test_stats_json_and_table(spool_dir: Path) -> None:
    cli("send", "a", "1", "--spool", str(spool_dir))
    cli("send", "a", "2", "--delay", "5m", "--spool", str(spool_dir))
    cli("send", "b", "3", "--to", "dc2", "--spool", str(spool_dir))
    r = cli("stats", "--json", "--spool", str(spool_dir))
    data = json.loads(r.stdout)
    assert data["channels"]["a"]["ready"] == 1 and data["channels"]["a"]["delayed"] == 1
    assert data["peers"]["dc2"]["outbox"] == 1
    r = cli("stats", "--spool", str(spool_dir))
    assert r.returncode == 0 and "ready" in r.stdout and "dc2" in r.stdout


def test_dead_letter_commands(spool_dir: Path) -> None:
    with Spool(spool_dir) as s:
        s.send(b"bad", "c")
        s.send(b"worse", "c")
        for _ in range(2):
            lease = s.lease("c")
            assert lease is not None
            lease.dead("cannot parse")
        ids = [d.id for d in s.dead_letters()]
    r = cli("dead", "ls", "--json", "--spool", str(spool_dir))
    assert [json.loads(x)["id"] for x in r.stdout.splitlines()] == ids
    r = cli("dead", "show", ids[0], "--spool", str(spool_dir))
    rec = json.loads(r.stdout)
    assert rec["body"] == "bad" and rec["reason"] == "rejected" and rec["detail"] == "cannot parse"
    r = cli("dead", "retry", "--spool", str(spool_dir))
    assert r.returncode == 2 and "no dead letters selected" in r.stderr
    r = cli("dead", "retry", ids[0], "--dry-run", "--spool", str(spool_dir))
    assert "would retry" in r.stdout
    with Spool(spool_dir) as s:
        assert len(s.dead_letters()) == 2
    r = cli("dead", "retry", ids[0], "--spool", str(spool_dir))
    assert r.returncode == 0 and "retried" in r.stdout
    r = cli("dead", "purge", "--all", "--yes", "--spool", str(spool_dir))
    assert "purged 1" in r.stdout
    with Spool(spool_dir) as s:
        assert s.dead_letters() == [] and s.stats().channels["c"].ready == 1
    r = cli("dead", "show", ids[1], "--spool", str(spool_dir))
    assert r.returncode == 1 and "no dead letter" in r.stderr


def test_errors_are_clear_and_change_nothing(spool_dir: Path, tmp_path: Path) -> None:
    r = cli("send", "bad channel!", "x", "--spool", str(spool_dir))
    assert r.returncode == 2
    assert "bad channel name" in r.stderr and "hint" in r.stderr
    r = cli("send", "c", "x", "--priority", "-3", "--spool", str(spool_dir))
    assert r.returncode == 2 and "priority" in r.stderr
    r = cli("send", "c", "x", "--delay", "soon", "--spool", str(spool_dir))
    assert r.returncode == 2 and "duration" in r.stderr
    with Spool(spool_dir) as s:
        assert all(c.ready == 0 for c in s.stats().channels.values())
    f = tmp_path / "afile"
    f.write_text("x")
    r = cli("send", "c", "x", "--spool", str(f))
    assert r.returncode == 2 and "is a file" in r.stderr
    assert "Traceback" not in r.stderr


def test_local_demo_runs_and_loses_nothing() -> None:
    r = cli("demo", "--local", "--producers", "2", "--messages", "300")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "none lost" in r.stdout and "SIGKILL" in r.stdout


def test_two_node_demo_delivers_everything_exactly_once() -> None:
    r = cli("demo", "--producers", "2", "--messages", "500")
    assert r.returncode == 0, r.stdout + r.stderr
    out = " ".join(r.stdout.split())  # rich wraps lines
    assert "Node B is down" in out and "all 1000 messages arrived exactly once" in out


def test_outbox_status_per_peer(tmp_path: Path) -> None:
    import json

    from .nodes import NodeProc

    d = tmp_path / "a"
    with Spool(d) as s:
        s.send_many([b"1", b"2", b"3"], "orders", to="dc2")
    r = subprocess.run([PYTHON, "-m", "spoolq", "outbox", "--json", "--spool", str(d)], env=python_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["node_running"] is False and data["peers"]["dc2"]["waiting"] == 3
    config = '[peers.dc2]\nurl = "http://127.0.0.1:9"\n'  # nothing listens there: the node backs off
    with NodeProc(d, config=config) as node:
        assert node.url
        def status() -> dict[str, Any]:
            r = subprocess.run([PYTHON, "-m", "spoolq", "outbox", "--json", "--spool", str(d)], env=python_env(),
                               capture_output=True, text=True, timeout=60)
            return json.loads(r.stdout)  # type: ignore[no-any-return]

        data = wait_for(lambda: (x := status())["peers"]["dc2"].get("up") is False and x, timeout=30)
        assert data["node_running"] is True  # type: ignore[index]
        dc2 = data["peers"]["dc2"]  # type: ignore[index]
        assert dc2["waiting"] == 3 and dc2["failures"] >= 1 and "dc2" in dc2["last_error"]
