"""The operator's commands (issue 11): run as subprocesses on a real spool and against a real node."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from spoolq import Spool

from .conftest import PYTHON, python_env, wait_for
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
        assert rounds[1]["peers"]["dc2"]["state"] in ("unreachable", "backing_off", "idle", "up")
        r = cli("top", "--node", node.url, "--token", ADMIN, "--once")
        assert r.returncode == 0 and "dc2" in r.stdout and "state" in r.stdout
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


# -- ls and show ----------------------------------------------------------------------------


def test_ls_and_show_on_a_spool(spool_dir: Path) -> None:
    with Spool(spool_dir) as s:
        ready = s.send(b'{"order": 42}', "orders", headers={"tenant": "acme"}, priority=5)
        later = s.send(b"later", "orders", delay=3600)
        binary = s.send(bytes(range(256)), "blobs")
        nasty = s.send(b"\x1b[2J\x1b[31mboo", "orders", to="dc2")
    d = str(spool_dir)
    rows = jlines(cli("ls", "--json", "--spool", d))
    assert sorted(r["id"] for r in rows) == sorted([ready, later, binary, nasty])
    by_id = {r["id"]: r for r in rows}
    assert by_id[ready]["state"] == "ready" and by_id[ready]["priority"] == 5 and by_id[ready]["size"] == 13
    assert by_id[later]["state"] == "delayed" and by_id[later]["due"] > 0
    assert by_id[nasty]["peer"] == "dc2" and by_id[nasty]["place"] == "outbox"
    assert [r["id"] for r in jlines(cli("ls", "orders", "--state", "delayed", "--json", "--spool", d))] == [later]
    assert [r["id"] for r in jlines(cli("ls", "--header", "tenant=acme", "--json", "--spool", d))] == [ready]
    assert [r["id"] for r in jlines(cli("ls", "--peer", "dc2", "--json", "--spool", d))] == [nasty]
    assert [r["id"] for r in jlines(cli("ls", "--max-priority", "10", "--json", "--spool", d))] == [ready]
    # the table: one line per message, a terminal escape in a body shown, not played
    r = cli("ls", "--spool", d)
    assert r.returncode == 0 and "\x1b" not in r.stdout
    assert len(r.stdout.splitlines()) == 5 and "\\x1b[2J" in r.stdout and "4 messages" in r.stderr
    # show: pretty JSON, headers; binary bodies as base64 and --raw gives the bytes back
    r = cli("show", ready, "--spool", d)
    assert r.returncode == 0 and '"order": 42' in r.stdout and "tenant: acme" in r.stdout
    shown = json.loads(cli("show", ready, "--json", "--spool", d).stdout)["messages"]
    assert shown[0]["body_json"] == {"order": 42} and shown[0]["headers"] == {"tenant": "acme"}
    raw = subprocess.run([PYTHON, "-m", "spoolq", "show", binary, "--raw", "--spool", d], capture_output=True,
                         env=python_env(), timeout=60)
    assert raw.returncode == 0 and raw.stdout == bytes(range(256))
    assert "base64" in cli("show", binary, "--spool", d).stdout
    assert "\x1b" not in cli("show", nasty, "--spool", d).stdout
    with Spool(spool_dir) as s:
        lease = s.lease("orders")
        assert lease is not None and lease.id == ready
        lease.ack()
    r = cli("show", ready, "--spool", d)
    assert r.returncode == 1 and "no message" in r.stderr and "spoolq dead show" in r.stderr
    r = cli("show", "not-an-id", "--spool", d)
    assert r.returncode == 2 and "UUID" in r.stderr and "Traceback" not in r.stderr


def test_ls_follows_the_cursor_and_stops_at_limit(spool_dir: Path) -> None:
    with Spool(spool_dir) as s:
        sent = s.send_many([b"m%d" % i for i in range(2500)], "bulk")
    d = str(spool_dir)
    every = [r["id"] for r in jlines(cli("ls", "bulk", "--json", "--spool", d))]
    assert len(every) == 2500 and set(every) == set(sent)  # three pages, nothing twice
    r = cli("ls", "bulk", "--json", "--limit", "1200", "--spool", d)
    first = [x["id"] for x in jlines(r)]
    assert len(first) == 1200 and "--after" in r.stderr
    cursor = r.stderr.split("--after", 1)[1].split()[0]
    rest = [x["id"] for x in jlines(cli("ls", "bulk", "--json", "--after", cursor, "--spool", d))]
    assert len(rest) == 1300 and not set(first) & set(rest) and set(first) | set(rest) == set(sent)
    r = cli("ls", "bulk", "--after", "garbage!", "--spool", d)
    assert r.returncode == 2 and "after" in r.stderr


# -- acting on messages -----------------------------------------------------------------------


def test_hold_release_requeue_delete_on_a_spool(spool_dir: Path) -> None:
    d = str(spool_dir)
    with Spool(spool_dir) as s:
        jobs = s.send_many([b"1", b"2", b"3"], "jobs")
        later = s.send(b"later", "jobs", delay=3600)
    # a dry run counts and changes nothing
    r = cli("hold", "--channel", "jobs", "--dry-run", "--spool", d)
    assert r.returncode == 0 and "would hold: 4 of 4" in r.stdout
    assert jlines(cli("hold", "--channel", "jobs", "--dry-run", "--json", "--spool", d)) == [
        {"action": "hold", "matched": 4, "changed": 4, "dry_run": True}]  # JSON only on stdout
    with Spool(spool_dir) as s:
        assert s.stats().channels["jobs"].held == 0
    r = cli("hold", "--channel", "jobs", "--json", "--spool", d)
    assert jlines(r) == [{"action": "hold", "matched": 4, "changed": 4, "dry_run": False}]
    with Spool(spool_dir) as s:
        assert s.lease("jobs") is None and s.stats().channels["jobs"].held == 4
    # release two by id (one from standard input): they are leasable again, in their old state
    r = cli("release", jobs[0], "-", "--spool", d, input=later + "\n")
    assert r.returncode == 0 and "released 2 messages" in r.stdout
    with Spool(spool_dir) as s:
        st = s.stats().channels["jobs"]
        assert (st.ready, st.delayed, st.held) == (1, 1, 2)
    # requeue: delayed and held ones ready now
    r = cli("requeue", "--channel", "jobs", "--spool", d)
    assert r.returncode == 0 and "requeued 3 messages" in r.stdout
    with Spool(spool_dir) as s:
        st = s.stats().channels["jobs"]
        assert (st.ready, st.delayed, st.held) == (4, 0, 0)
        lease = s.lease("jobs", visibility=3600)
        assert lease is not None  # a leased message is matched, never deleted
    r = cli("delete", "--channel", "jobs", "--dry-run", "--spool", d)
    assert "would delete: 3 of 4" in r.stdout and "leased" in r.stdout
    r = cli("delete", "--channel", "jobs", "--spool", d)  # not a terminal: no question asked
    assert r.returncode == 0 and "deleted 3 messages" in r.stdout
    with Spool(spool_dir) as s:
        st = s.stats().channels["jobs"]
        assert (st.ready, st.leased) == (0, 1)
    audit = jlines(cli("audit", "--json", "--spool", d))
    assert [(e["who"], e["action"], e["count"]) for e in audit] == [
        ("cli", "delete", 3), ("cli", "requeue", 3), ("cli", "release", 2), ("cli", "hold", 4)]
    r = cli("audit", "--spool", d)
    assert r.returncode == 0 and "requeue" in r.stdout


def test_dead_retry_and_purge_are_audited(spool_dir: Path) -> None:
    d = str(spool_dir)
    with Spool(spool_dir) as s:
        s.send_many([b"a", b"b"], "c")
        for _ in range(2):
            lease = s.lease("c")
            assert lease is not None
            lease.dead("bad")
        first = s.dead_letters()[0].id
    assert cli("dead", "retry", first, "--spool", d).returncode == 0
    dry = jlines(cli("dead", "purge", "--all", "--dry-run", "--json", "--spool", d))
    assert dry == [{"purged": 1, "dry_run": True}]
    assert jlines(cli("dead", "purge", "--all", "--yes", "--json", "--spool", d)) == [{"purged": 1, "dry_run": False}]
    audit = jlines(cli("audit", "--json", "--spool", d))
    assert [(e["who"], e["action"], e["count"]) for e in audit] == [("cli", "dead-purge", 1), ("cli", "dead-retry", 1)]


def test_bad_selections_change_nothing(spool_dir: Path) -> None:
    d = str(spool_dir)
    with Spool(spool_dir) as s:
        mid = s.send(b"x", "jobs")
    cases = [
        (["hold"], "no messages selected"),
        (["hold", mid, "--channel", "jobs"], "not both"),
        (["delete", "nope"], "UUID"),
        (["hold", "--header", "novalue"], "NAME=VALUE"),
        (["hold", "--state", "gone", "--all"], "--state"),
        (["release", "-"], "no ids"),
        (["ls", "--older-than", "soon"], "duration"),
        (["show", mid, "--raw", "--json"], "--raw"),
    ]
    for args, what in cases:
        r = cli(*args, "--spool", d, input="")
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert what in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
    r = cli("hold", "--all", "--read-only", "--spool", d)
    assert r.returncode == 2  # no such option: actions write
    with Spool(spool_dir) as s:
        assert s.stats().channels["jobs"].ready == 1 and s.admin.audit_log() == []


def test_progress_bar_and_confirmation_on_a_terminal(spool_dir: Path) -> None:
    """On a terminal: a progress bar while holding, and delete asks first (answering no deletes nothing)."""
    import os
    import pty
    import select
    import time

    with Spool(spool_dir) as s:
        s.send_many([b"x"] * 3000, "bulk")

    def run_on_pty(args: list[str], answer: bytes | None = None) -> tuple[int, str]:
        master, slave = pty.openpty()
        proc = subprocess.Popen([PYTHON, "-m", "spoolq", *args], stdin=slave, stdout=slave, stderr=slave,
                                env={**python_env(), "COLUMNS": "120", "TERM": "xterm"}, close_fds=True)
        os.close(slave)
        seen = b""
        deadline = time.monotonic() + 120
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([master], [], [], 1.0)
                if ready:
                    try:
                        chunk = os.read(master, 65536)
                    except OSError:  # the child closed the terminal
                        break
                    if not chunk:
                        break
                    seen += chunk
                    if answer is not None and b"[y/N]" in seen:
                        os.write(master, answer)
                        answer = None
                elif proc.poll() is not None:
                    break
            return proc.wait(60), seen.decode(errors="replace")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            os.close(master)

    rc, text = run_on_pty(["hold", "--channel", "bulk", "--spool", str(spool_dir)])
    assert rc == 0 and "3000/3000" in text and "held 3000 messages" in text
    rc, text = run_on_pty(["delete", "--channel", "bulk", "--spool", str(spool_dir)], answer=b"n\n")
    assert rc == 1 and "for good?" in text and "nothing deleted" in text
    with Spool(spool_dir) as s:
        assert s.stats().channels["bulk"].held == 3000
    # not a terminal: no bar, no question
    r = cli("delete", "--channel", "bulk", "--spool", str(spool_dir))
    assert r.returncode == 0 and "3000/3000" not in r.stdout + r.stderr and "deleted 3000" in r.stdout


# -- against a running node -------------------------------------------------------------------


def test_admin_commands_against_a_node(tmp_path: Path) -> None:
    d = tmp_path / "a"
    with Spool(d) as s:
        jobs = s.send_many([b'{"n": 1}', b"two"], "jobs")
        out = s.send(b"for dc2", "orders", to="dc2")
    config = TOKENS + '[node]\nbackoff_cap = 0.5\n\n[peers.dc2]\nurl = "http://127.0.0.1:9"\n'  # dc2 is down
    with NodeProc(d, config=config) as node:
        env = {"SPOOLQ_NODE": node.url, "SPOOLQ_TOKEN": ADMIN}
        rows = jlines(cli("ls", "--json", env=env))
        assert sorted(r["id"] for r in rows) == sorted([*jobs, out])
        assert [r["id"] for r in jlines(cli("ls", "--peer", "dc2", "--json", env=env))] == [out]
        shown = json.loads(cli("show", jobs[0], "--json", env=env).stdout)["messages"]
        assert shown[0]["body_json"] == {"n": 1}
        r = cli("show", jobs[1], env=env)
        assert r.returncode == 0 and "two" in r.stdout
        # the same JSON shapes as on the spool directory (the age aside)
        local = jlines(cli("ls", "jobs", "--json", "--read-only", "--spool", str(d)))
        remote = jlines(cli("ls", "jobs", "--json", env=env))
        assert [{**x, "age": 0} for x in local] == [{**x, "age": 0} for x in remote]

        r = cli("hold", "--peer", "dc2", "--dry-run", env=env)
        assert "would hold: 1 of 1" in r.stdout
        assert jlines(cli("hold", out, "--json", env=env)) == [
            {"action": "hold", "matched": 1, "changed": 1, "dry_run": False}]
        peers = json.loads(cli("outbox", "--json", env=env).stdout)["peers"]
        assert peers["dc2"]["held"] == 1 and peers["dc2"]["waiting"] == 0
        assert peers["dc2"]["state"] in ("unreachable", "backing_off", "idle") and "batch_size" in peers["dc2"]
        r = cli("outbox", env=env)
        assert r.returncode == 0 and "dc2" in r.stdout and "batch" in r.stdout
        # the outbox of the spool directory asks the node running on it for the live part
        peers = json.loads(cli("outbox", "--json", "--spool", str(d), env={"SPOOLQ_TOKEN": ADMIN}).stdout)["peers"]
        assert peers["dc2"]["held"] == 1 and "state" in peers["dc2"]
        assert jlines(cli("release", out, "--json", env=env))[0]["changed"] == 1
        assert jlines(cli("flush", "dc2", "--json", env=env)) == [{"flushed": ["dc2"]}]
        assert jlines(cli("flush", "--json", "--spool", str(d), env={"SPOOLQ_TOKEN": ADMIN})) == [
            {"flushed": ["dc2"]}]
        r = cli("flush", "nowhere", env=env)
        assert r.returncode == 1 and "no peer 'nowhere'" in r.stderr
        r = cli("delete", jobs[1], "--yes", env=env)
        assert r.returncode == 0 and "deleted 1 message" in r.stdout
        audit = jlines(cli("audit", "--json", env=env))
        assert [(e["who"], e["action"], e["count"]) for e in audit] == [
            ("ops", "delete", 1), ("ops", "release", 1), ("ops", "hold", 1)]
        # the node checks what the CLI passes on, and nothing changes
        r = cli("ls", "--after", "bogus", env=env)
        assert r.returncode == 2 and "after" in r.stderr and "Traceback" not in r.stderr
        r = cli("hold", "--channel", "jobs", env={**env, "SPOOLQ_TOKEN": SENDER})
        assert r.returncode == 1 and "admin" in r.stderr
        r = cli("ls", env={**env, "SPOOLQ_TOKEN": "wrong-token-0123456789"})
        assert r.returncode == 1 and "token" in r.stderr and "ID" not in r.stdout
        r = cli("show", "01a2373a-5d08-7a56-8d08-9db9806b66d9", env=env)
        assert r.returncode == 1 and "no message" in r.stderr
        assert len(jlines(cli("audit", "--json", env=env))) == 3
    r = cli("flush", "--spool", str(d))
    assert r.returncode == 1 and "no node runs on" in r.stderr and "--node" in r.stderr  # the node is gone


def test_held_on_a_is_forwarded_to_b_only_once_released(tmp_path: Path) -> None:
    """Two nodes: a message held (by the CLI, on A's spool directory) stays on A while a later one goes
    to B; released (by the CLI, through A's API), it arrives on B."""
    with Spool(tmp_path / "a") as s:
        held = s.send(b"held one", "hop", to="b")
        after = s.send(b"after", "hop", to="b")
    r = cli("hold", held, "--spool", str(tmp_path / "a"))  # before A runs: A never had it in its outbox
    assert r.returncode == 0 and "held 1 message" in r.stdout
    b = NodeProc(tmp_path / "b")
    a = NodeProc(tmp_path / "a", config=TOKENS + f'[node]\nbackoff_cap = 0.5\n\n[peers.b]\nurl = "{b.url}"\n')
    try:
        on_a = {"SPOOLQ_NODE": a.url, "SPOOLQ_TOKEN": ADMIN}
        on_b = {"SPOOLQ_NODE": b.url}  # B has no tokens: loopback only, no token needed

        def ids_on_b() -> list[str]:
            return [m["id"] for m in jlines(cli("ls", "hop", "--json", env=on_b))]

        wait_for(lambda: ids_on_b() == [after], timeout=60)
        assert [m["id"] for m in jlines(cli("ls", "--state", "held", "--json", env=on_a))] == [held]
        assert jlines(cli("release", held, "--json", env=on_a))[0]["changed"] == 1
        assert jlines(cli("flush", "b", "--json", env=on_a)) == [{"flushed": ["b"]}]
        wait_for(lambda: sorted(ids_on_b()) == sorted([held, after]), timeout=60)
        # B stored it before A heard B's answer: A's copy goes once it has
        wait_for(lambda: jlines(cli("ls", "--json", env=on_a)) == [], timeout=60)
        audit = jlines(cli("audit", "--json", env=on_a))
        assert [(e["who"], e["action"]) for e in audit] == [("ops", "release"), ("cli", "hold")]
    finally:
        assert a.stop() == 0, a.log()
        assert b.stop() == 0, b.log()


def test_dead_letter_commands_against_a_node(tmp_path: Path) -> None:
    d = tmp_path / "a"
    with Spool(d) as s:
        s.send_many([b"bad", bytes([0xFF, 0xFE])], "c")
        for _ in range(2):
            lease = s.lease("c")
            assert lease is not None
            lease.dead("[bold]cannot parse\x1b[31m")
        ids = [x.id for x in s.dead_letters()]
    with NodeProc(d) as node:  # no tokens: loopback only, "local" in the audit
        env = {"SPOOLQ_NODE": node.url}
        rows = jlines(cli("dead", "ls", "--json", env=env))
        assert [r["id"] for r in rows] == ids and rows[0]["reason"] == "rejected"
        r = cli("dead", "ls", env=env)
        assert r.returncode == 0 and "[bold]" in r.stdout and "\x1b" not in r.stdout  # markup shown, not obeyed
        shown = json.loads(cli("dead", "show", ids[1], env=env).stdout)
        assert shown["body_base64"] == "//4=" and shown["detail"].startswith("[bold]")
        assert json.loads(cli("dead", "show", ids[0], env=env).stdout)["body"] == "bad"
        r = cli("dead", "show", "01a2373a-5d08-7a56-8d08-9db9806b66d9", env=env)
        assert r.returncode == 1 and "no dead letter" in r.stderr
        r = cli("dead", "retry", ids[0], "--dry-run", env=env)
        assert "would retry 1" in r.stderr and len(jlines(cli("dead", "ls", "--json", env=env))) == 2
        assert jlines(cli("dead", "retry", ids[0], "--dry-run", "--json", env=env)) == [
            {"retried": [ids[0]], "dry_run": True}]
        r = cli("dead", "retry", ids[0], env=env)
        assert r.returncode == 0 and f"retried {ids[0]}" in r.stdout
        assert "would purge 1" in cli("dead", "purge", "--all", "--dry-run", env=env).stdout
        r = cli("dead", "purge", "--all", "--yes", env=env)
        assert r.returncode == 0 and "purged 1" in r.stdout
        assert jlines(cli("dead", "ls", "--json", env=env)) == []
        audit = jlines(cli("audit", "--json", env=env))
        assert [(e["who"], e["action"], e["count"]) for e in audit] == [("local", "dead-purge", 1),
                                                                        ("local", "dead-retry", 1)]
        assert [m["id"] for m in jlines(cli("ls", "c", "--json", env=env))] == [ids[0]]


def test_the_token_is_not_handed_to_a_redirect() -> None:
    """A node never redirects: the CLI reports a 3xx instead of sending its bearer token elsewhere."""
    import http.server
    import threading

    seen: list[str] = []

    class Redirecting(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:9/stolen")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Redirecting)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        r = cli("ls", "--node", f"http://127.0.0.1:{srv.server_port}", "--token", ADMIN)
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(10)
    assert r.returncode == 1 and "302" in r.stderr
    assert seen == ["/v1/admin/messages?limit=1000"]
