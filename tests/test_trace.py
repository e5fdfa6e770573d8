"""The per-message event log and ``spoolq trace`` (issue 11, section 2).

The end-to-end test runs three real ``spoolq node`` processes A -> B -> C with
tokens (a relay program on B hands the message on with ``Lease.forward``);
C is down for a while, so B's failed attempts are in the log; a consumer on C
nacks once and acks; ``spoolq trace`` (a subprocess) follows the
hops over HTTP and prints one timeline, naming a hop it cannot reach.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from spoolq import Spool
from spoolq.errors import InvalidArgument, LeaseLost
from spoolq.node.config import NodeConfig

from .conftest import PYTHON, python_env, wait_for
from .nodes import NodeProc, free_port
from .test_node import Cluster, node_config

TOKENS = {n: f"token-of-node-{n}-0123456789" for n in "abc"}


def tokens_toml(node: str, scopes: list[str]) -> str:
    return f'\n[tokens.ops]\ntoken = "{TOKENS[node]}"\nscopes = {json.dumps(scopes)}\n' \
           f'\n[tokens.feeder]\ntoken = "feeder-only-token-{node}-0123456789"\nscopes = ["peer"]\n'


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = python_env()
    full.update(env or {})
    full["COLUMNS"] = "250"
    return subprocess.run([PYTHON, "-m", "spoolq", *args], capture_output=True, text=True, env=full, timeout=120)


def http(url: str, token: str | None = None, data: bytes | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=data, headers={"Authorization": f"Bearer {token}"} if token else {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def kinds_on(node: NodeProc, mid: str) -> list[str]:
    status, data = http(f"{node.url}/v1/admin/trace/{mid}", TOKENS[node.spool_dir.name])
    assert status == 200, data
    return [e["kind"] for e in data["events"]]


@pytest.fixture
def cluster(tmp_path: Path) -> Any:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


def test_trace_follows_a_message_over_three_nodes(cluster: Cluster, tmp_path: Path) -> None:
    c_port = free_port()
    c_url = f"http://127.0.0.1:{c_port}"
    all_scopes = ["peer", "send", "consume", "admin"]
    c_config = node_config() + tokens_toml("c", all_scopes)
    b = cluster.start("b", config=node_config({"c": {"url": c_url, "token": TOKENS["c"]}})
                      + tokens_toml("b", all_scopes))
    a_config = node_config({"b": {"url": b.url, "token": TOKENS["b"]}},
                           routes=[{"channels": "job*", "to": ["b"]}]) + tokens_toml("a", all_scopes)
    a = cluster.start("a", config=a_config)
    # the operator's config for `spoolq trace`: A's, plus C's token (matched by C's URL)
    ops_config = tmp_path / "ops.toml"
    ops_config.write_text(node_config({"b": {"url": b.url, "token": TOKENS["b"]},
                                       "c": {"url": c_url, "token": TOKENS["c"]}}))

    status, sent = http(f"{a.url}/v1/channels/jobs/messages", TOKENS["a"], json.dumps({"body": "hello"}).encode())
    assert status == 201, sent
    mid = sent["id"]

    # a relay on B passes it on to C under the same id (a node does not relay by itself)
    relay = cluster.spool("b")
    passing = wait_for(lambda: relay.lease("jobs", visibility=60), 30)
    assert passing.id == mid  # type: ignore[attr-defined]
    passing.forward("c")  # type: ignore[attr-defined]

    # C is down: B keeps trying (each failed attempt is logged), the message waits in B's outbox
    wait_for(lambda: kinds_on(b, mid).count("forward_failed") >= 2, 30)
    r = cli("trace", mid, "--node", a.url, "--token", TOKENS["a"], "--config", str(ops_config))
    assert r.returncode == 3, r.stdout + r.stderr
    assert "could not reach hop c" in r.stdout and c_url in r.stdout and "cannot connect" in r.stdout
    assert "forward_failed" in r.stdout and "token:ops" in r.stdout

    c = cluster.start("c", config=c_config, port=c_port)
    consumer = cluster.spool("c")
    lease = wait_for(lambda: consumer.lease("jobs", visibility=60), 30)
    assert lease.id == mid  # type: ignore[attr-defined]
    assert lease.nack(0, reason="database was locked")  # type: ignore[attr-defined]
    again = wait_for(lambda: consumer.lease("jobs", visibility=60), 10)
    again.ack()  # type: ignore[attr-defined]

    r = cli("trace", mid, "--node", a.url, "--token", TOKENS["a"], "--config", str(ops_config), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    tl = json.loads(r.stdout)
    assert tl["unreachable"] == []
    node_of = {n["peer"]: n["node"] for n in tl["nodes"]}
    assert set(node_of) == {"start", "b", "c"}
    steps = [(e["peer"], e["kind"]) for e in tl["events"]]
    assert [e["at"] for e in tl["events"]] == sorted(e["at"] for e in tl["events"])
    per_node = {n: [k for p, k in steps if p == n] for n in node_of}
    assert per_node["start"] == ["created", "forwarded"]
    fails = per_node["b"].count("forward_failed")
    assert fails >= 2
    assert per_node["b"] == ["received", "leased", "relayed"] + ["forward_failed"] * fails + ["forwarded"]
    assert per_node["c"] == ["received", "leased", "nacked", "leased", "acked"]
    at = {(e["peer"], e["kind"]): e["at"] for e in tl["events"]}  # the last of each kind
    # one timeline: each hop's receipt lies between its sender's hand-over and the sender's settling
    assert at[("start", "created")] <= at[("b", "received")] <= at[("start", "forwarded")]
    assert at[("b", "relayed")] <= at[("c", "received")] <= at[("b", "forwarded")]
    assert at[("c", "received")] <= at[("c", "acked")]  # (C may ack before B has settled its batch)
    ev = {(e["peer"], e["kind"]): e["detail"] for e in tl["events"]}
    assert ev[("start", "created")] == {"channel": "jobs", "by": "token:ops", "client": "127.0.0.1",
                                        "to": "b", "route": "job*"}
    assert ev[("start", "forwarded")]["result"] == "accepted" and ev[("start", "forwarded")]["url"] == b.url
    assert ev[("b", "received")] == {"channel": "jobs", "from": node_of["start"], "result": "new"}
    assert "cannot reach c" in ev[("b", "forward_failed")]["error"]
    assert ev[("b", "relayed")] == {"to": "c"} and ev[("b", "forwarded")]["url"] == c_url
    assert ev[("c", "nacked")]["reason"] == "database was locked"
    assert all(e["node"] == node_of[e["peer"]] for e in tl["events"])

    # the table names every node; and once C is gone again, it is named as the hop that is down
    c.stop()
    r = cli("trace", mid, "--node", a.url, "--token", TOKENS["a"], "--config", str(ops_config))
    assert r.returncode == 3
    assert "acked" not in r.stdout and "received" in r.stdout  # C's events are not known without C
    assert f"could not reach hop c at {c_url}" in r.stdout

    # without C's token the hop is named with the reason, not skipped
    r = cli("trace", mid, "--node", a.url, "--token", TOKENS["a"], "--json")
    assert r.returncode == 3
    down = json.loads(r.stdout)["unreachable"]
    assert [(h["peer"], h["url"]) for h in down] == [("b", b.url)] and "401" in down[0]["error"]


def test_trace_api_refuses_bad_requests(cluster: Cluster) -> None:
    a = cluster.start("a", config=node_config() + tokens_toml("a", ["send", "admin"])
                      + '\n[tokens.consumer]\ntoken = "consumer-token-a-0123456789"\nscopes = ["consume"]\n')
    url = f"{a.url}/v1/admin/trace/"
    status, data = http(url + "not-an-id", TOKENS["a"])
    assert status == 400 and data["error"] == "invalid_argument" and "UUID" in data["message"]
    status, data = http(url + "x" * 5000, TOKENS["a"])
    assert status == 400 and data["error"] == "invalid_argument"
    mid = "0190f1e2-0000-7000-8000-000000000001"
    assert http(url + mid)[0] == 401
    status, data = http(url + mid, "feeder-only-token-a-0123456789")
    assert status == 403 and "admin" in data["message"]
    status, data = http(url + mid, TOKENS["a"])  # unknown id: no events, no hops
    assert status == 200 and data["events"] == [] and data["next"] == [] and data["trace"] is True
    # a nack over HTTP keeps its reason; a reason that is not a short string changes nothing
    status, sent = http(f"{a.url}/v1/channels/jobs/messages", TOKENS["a"], b'{"body": "x"}')
    assert status == 201
    status, _ = http(f"{a.url}/v1/channels/jobs/leases", TOKENS["a"], b"{}")
    assert status == 403  # the token has no consume scope: nothing leased
    with Spool(a.spool_dir) as s:  # a library process follows the setting the node stored (trace = true)
        assert s.trace is True
        lease = s.lease("jobs", visibility=60)
        assert lease is not None
    nack = f"{a.url}/v1/leases/{lease.handle}/nack"
    for bad in (b'{"reason": 5}', b'{"reason": "' + b"x" * 1001 + b'"}'):
        status, data = http(nack, "consumer-token-a-0123456789", bad)
        assert status == 400 and "reason" in data["message"]
    status, _ = http(nack, "consumer-token-a-0123456789", b'{"delay": 0, "reason": "upstream 503"}')
    assert status == 204
    status, data = http(url + sent["id"], TOKENS["a"])
    assert [(e["kind"], e["detail"].get("reason")) for e in data["events"]][-2:] == [
        ("leased", None), ("nacked", "upstream 503")]  # the lease was the library process's
    assert data["events"][0]["detail"]["by"] == "token:ops"
    # the CLI says so, and refuses a bad id before asking anything
    r = cli("trace", mid, "--node", a.url, "--token", TOKENS["a"])
    assert r.returncode == 0 and "no events" in r.stdout
    r = cli("trace", "nope", "--node", a.url)
    assert r.returncode == 2 and "UUID" in r.stderr
    r = cli("trace", mid, "--node", "ftp://x")
    assert r.returncode == 2 and "http" in r.stderr
    r = cli("trace", mid, "--node", a.url, "--token", "wrong-token-0123456789")
    assert r.returncode == 1 and "401" in r.stdout


def test_trace_from_a_spool_directory(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with Spool(d) as s:
        assert s.trace is False and s.trace_setting() is False  # a new spool does not log
    r = cli("trace", "--enable", "--spool", str(d))  # another process stores the setting ...
    assert r.returncode == 0 and "now on" in r.stdout, r.stderr
    with Spool(d) as s:  # ... which this one follows
        assert s.trace is True
        mid = s.send(b"x", "jobs", to="http://127.0.0.1:9")
    r = cli("trace", mid, "--spool", str(d), "--json")
    tl = json.loads(r.stdout)
    assert [e["kind"] for e in tl["events"]] == ["created"]
    assert tl["events"][0]["detail"]["to"] == "http://127.0.0.1:9"
    assert tl["unreachable"] == []  # never forwarded: no next hop yet
    assert r.returncode == 0


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def test_events_of_every_local_change(tmp_path: Path) -> None:
    clock = Clock()
    with Spool(tmp_path / "s", clock=clock, max_attempts=2, trace=True) as s:
        mid = s.send(b"x", "jobs")
        first = s.lease("jobs", visibility=10)
        assert first is not None
        clock.t += 11  # the lease runs out
        second = s.lease("jobs", visibility=10)
        assert second is not None and second.attempts == 2
        assert not second.nack(5, reason="boom")  # attempts used up: dead
        s.retry_dead([mid])
        third = s.lease("jobs")
        assert third is not None
        third.ack()
        kinds = [(e["kind"], e["detail"]) for e in s.trace_events(mid)]
        assert [k for k, _ in kinds] == ["created", "leased", "lease_expired", "leased", "nacked", "dead",
                                         "retried", "leased", "acked"]
        assert kinds[2][1] == {"attempt": 1} and kinds[4][1] == {"delay": 5.0, "reason": "boom", "attempt": 2}
        assert kinds[5][1]["reason"] == "max_attempts"
        # the expiry is dated when the lease ran out, not when it was noticed
        at = [e["at"] for e in s.trace_events(mid)]
        assert at[2] == pytest.approx(at[1] + 10)

        # delayed, ttl and a caller's id go through the general write path
        other = s.send(b"y", "jobs", delay=5, ttl=1, id="0190f1e2-0000-7000-8000-000000000002")
        assert s.send(b"y", "jobs", id=other) == other  # a repeated send is a no-op: no second event
        clock.t += 6
        s.sweep()
        assert [e["kind"] for e in s.trace_events(other)] == ["created", "dead"]


def test_arrival_comes_first_within_a_millisecond(tmp_path: Path) -> None:
    """``n`` orders one process's events; a relay process may log ``leased`` with a lower ``n`` in the
    very millisecond the receiver logged ``received`` (seen in the three-node trace under load)."""
    from spoolq.store.events import record, runs

    at = 1_800_000_000_000
    with Spool(tmp_path / "s", trace=True) as s:
        db = s.event_log.db
        one = bytes.fromhex("0190f1e2000070008000000000000001")
        batch = [bytes.fromhex(f"0190f1e20000700080000000000001{i:02x}") for i in range(20)]

        def write(flat: list[Any], blocks: list[tuple[str, tuple[Any, ...]]] | None = None) -> None:
            db.txn(db.move, lambda c: record(c, flat, blocks))

        for ids in ([one], batch):
            # the "relay" writes first, so its n is lower; the "receiver" then logs the arrival
            write([ids[0], at, "leased", "{}"])
            write([ids[0], at + 1, "acked", "{}"])
            flat: list[Any] = []
            blocks: list[tuple[str, tuple[Any, ...]]] = []
            runs(ids, at, "received", "{}", flat, blocks)  # a batch: one event run for all its ids
            assert bool(blocks) == (len(ids) > 1)
            write(flat, blocks)
            assert [e["kind"] for e in s.trace_events(ids[0])] == ["received", "leased", "acked"]


def test_a_rolled_back_change_leaves_no_event(tmp_path: Path) -> None:
    with Spool(tmp_path / "s", trace=True) as s:
        s.send(b"x", "jobs")
        lease = s.lease("jobs")
        assert lease is not None
        lease.ack()
        with pytest.raises(LeaseLost):
            s.ack_many([lease])  # not held any more: the transaction is undone, no second "acked"
        assert [e["kind"] for e in s.trace_events(lease.id)].count("acked") == 1


def test_trace_off_logs_nothing(tmp_path: Path) -> None:
    with Spool(tmp_path / "s", trace=False) as s:
        mid = s.send(b"x", "jobs")
        lease = s.lease("jobs")
        assert lease is not None
        lease.ack()
        assert s.trace_events(mid) == []
    with Spool(tmp_path / "s") as s:  # a spool that never logged reads as empty
        assert s.trace_events(mid) == []


def test_prune_by_age_and_by_rows(tmp_path: Path) -> None:
    clock = Clock()
    with Spool(tmp_path / "s", clock=clock, trace=True) as s:
        old = s.send_many([b"o"] * 3000, "jobs")
        clock.t += 3600
        new = s.send_many([b"n"] * 7000, "jobs")
        assert s.event_log.prune(7200, None) == 0
        assert s.event_log.prune(1800, None) == 3000  # by age: the first hour goes
        assert s.trace_events(old[-1]) == [] and len(s.trace_events(new[0])) == 1
        assert s.event_log.prune(None, 1000) == 6000  # by rows: the newest 1000 stay
        assert s.trace_events(new[-1000]) and not s.trace_events(new[-1001])
        assert s.event_log.prune(1800, 1000) == 0


def test_trace_config_is_validated() -> None:
    assert NodeConfig().trace is True and NodeConfig().trace_retention == 86400.0
    for kwargs, key in (({"trace": "yes"}, "node.trace"), ({"trace_retention": 0}, "node.trace_retention"),
                        ({"trace_retention": True}, "node.trace_retention"),
                        ({"trace_max_rows": 0}, "node.trace_max_rows"),
                        ({"trace_max_rows": 1.5}, "node.trace_max_rows")):
        with pytest.raises(InvalidArgument, match=key):
            NodeConfig(**kwargs).validate()


def test_events_of_a_block_of_sends_name_each_copy(tmp_path: Path) -> None:
    with Spool(tmp_path / "s", trace=True) as s:
        before = s.send_many([b"0"] * 5, "other")  # rows of other blocks are not taken for this one's
        out = s.send_many([b"a", b"b", b"c"], "jobs", to=["p1", "http://127.0.0.1:9"])
        later = s.send_many([b"d", b"e"], "jobs", delay=60)
        full = s.send_many([b"f", b"g"], "jobs", ttl=60, headers={"k": "v"})
        after = s.send_many([b"1"] * 5, "other")
        for mid in out:
            events = s.trace_events(mid)
            assert [e["kind"] for e in events] == ["created", "created"]
            assert {e["detail"]["to"] for e in events} == {"p1", "http://127.0.0.1:9"}
        for mid in [*later, *full, *before, *after]:
            events = s.trace_events(mid)
            assert [(e["kind"], e["detail"]["channel"]) for e in events] == [
                ("created", "other" if mid in before + after else "jobs")]


def test_beanstalkd_reserves_are_logged(tmp_path: Path) -> None:
    clock = Clock()
    with Spool(tmp_path / "s", clock=clock, trace=True) as s:
        (job,) = s.jobs.put([(b"x", "tube", 10, 0.0, None)])
        assert isinstance(job, int)
        lease, _ = s.jobs.lease_any(["tube"], visibility=5)
        assert lease is not None
        assert lease.nack(0)  # released at once: not an expiry
        again = s.jobs.lease(job, visibility=5)
        assert again is not None
        clock.t += 6  # this lease runs out
        third, _ = s.jobs.lease_any(["tube"], visibility=5)
        assert third is not None
        third.ack()
        assert [e["kind"] for e in s.trace_events(lease.id)] == [
            "created", "leased", "nacked", "leased", "lease_expired", "leased", "acked"]


def test_a_version_1_spool_read_only_has_no_events(tmp_path: Path) -> None:
    import sqlite3

    d = tmp_path / "s"
    with Spool(d) as s:
        mid = s.send(b"x", "jobs")
    c = sqlite3.connect(d / "spool.db")  # what spoolq 0.1 wrote: no events table
    for table in ("held", "audit", "events"):
        c.execute(f"DROP TABLE {table}")
    c.execute("PRAGMA user_version=1")
    c.commit()
    c.close()
    with Spool(d, read_only=True) as s:
        assert s.trace is False and s.trace_events(mid) == []
    r = cli("trace", mid, "--spool", str(d))
    assert r.returncode == 0 and "no events" in r.stdout


def test_a_dead_letter_keeps_its_new_priority_with_the_log_on(tmp_path: Path) -> None:
    with Spool(tmp_path / "s", trace=True) as s:
        mid = s.send(b"x", "jobs", priority=8)
        lease = s.lease("jobs")
        assert lease is not None
        lease.dead("no", priority=9)  # beanstalkd's bury with a priority
        assert s.dead_letter(mid).message.priority == 9
        assert [e["kind"] for e in s.trace_events(mid)][-1] == "dead"


def test_admin_actions_are_logged(tmp_path: Path) -> None:
    with Spool(tmp_path / "s", trace=True) as s:
        mid = s.send(b"x", "jobs")
        gone = s.send(b"y", "jobs")
        s.admin.hold([mid])
        s.admin.release([mid])
        s.admin.hold([mid])
        s.admin.requeue([mid])
        s.admin.delete([gone])
        assert [e["kind"] for e in s.trace_events(mid)] == ["created", "held", "released", "held", "requeued"]
        assert [e["kind"] for e in s.trace_events(gone)] == ["created", "deleted"]
        assert s.trace_events(gone)[-1]["detail"] == {"by": "library"}


def test_prune_by_age_keeps_the_recent_events_of_an_old_message(tmp_path: Path) -> None:
    clock = Clock()
    clock.t = time.time()
    with Spool(tmp_path / "s", clock=clock, trace=True) as s:
        old = s.send(b"x", "jobs")  # its id is from now
        clock.t += 7200
        lease = s.lease("jobs")  # two hours later, still there
        assert lease is not None
        many = s.send_many([b"y"] * 12000, "other")  # more than one prune chunk
        clock.t += 3600
        assert s.event_log.prune(5400, None) == 1  # only the old message's first event is old enough
        assert [e["kind"] for e in s.trace_events(old)] == ["leased"]
        assert s.trace_events(many[0]) and s.trace_events(many[-1])
        clock.t += 3600
        assert s.event_log.prune(5400, None) == 12001


def test_the_table_collapses_repeated_failures_and_names_nodes() -> None:
    from rich.console import Console

    from spoolq.cli.trace import render
    from spoolq.tracing import Hop, Timeline

    a, b = "01a2375a-0000-7000-8000-00000000aaaa", "01a2375a-0000-7000-8000-00000000bbbb"
    fail = {"peer": "b", "url": "http://b:7070", "error": "refused"}
    tl = Timeline("01a2375a-7329-7660-9fb8-c90c6e6375dc", events=[
        {"at": 1.0, "node": a, "peer": "start", "kind": "created", "detail": {"channel": "jobs"}},
        *({"at": 2.0 + i, "node": a, "peer": "start", "kind": "forward_failed", "detail": fail} for i in range(5)),
        {"at": 9.0, "node": a, "peer": "start", "kind": "forwarded", "detail": {"peer": "b"}},
        {"at": 9.5, "node": b, "peer": "b", "kind": "received", "detail": {"from": a}},
    ], hops=[Hop("start", "http://a:7070", node=a), Hop("b", "http://b:7070", via=a, node=b),
             Hop("c", "http://c:7070", via=b, error="cannot connect")])
    console = Console(width=200, record=True)
    render(tl, console)
    text = console.export_text()
    assert text.count("forward_failed") == 1 and "(x5, the last at 00:00:06.000)" in text
    assert "a:7070 (…00aaaa)" in text and "b (…00bbbb)" in text and "from=a:7070 (…00aaaa)" in text
    assert "could not reach hop c at http://c:7070 (named by b (…00bbbb)): cannot connect" in text


SEND_AND_EXIT = """
import sys
from spoolq import Spool
with Spool(sys.argv[1]) as s:
    print(s.send(b"from another process", "jobs"))
"""


def test_the_stored_setting_reaches_every_process(tmp_path: Path) -> None:
    d = tmp_path / "s"

    def other_process_sends() -> str:
        r = subprocess.run([PYTHON, "-c", SEND_AND_EXIT, str(d)], capture_output=True, text=True, env=python_env(),
                           timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    with Spool(d) as s, Spool(d, trace=True) as own:
        assert s.trace is False and s.trace_events(s.send(b"x", "jobs")) == []
        assert own.trace_events(own.send(b"x", "jobs"))  # an explicit setting: this object only
        assert s.trace_events(other_process_sends()) == []
        r = cli("trace", "--enable", "--spool", str(d))
        assert r.returncode == 0, r.stderr
        # a process that has the spool open already follows within about a second (it re-reads it)
        wait_for(lambda: s.trace_events(s.send(b"y", "jobs")), timeout=10)
        assert [e["kind"] for e in s.trace_events(other_process_sends())] == ["created"]
        r = cli("trace", "--spool", str(d))
        assert r.returncode == 0 and "trace is on" in r.stdout
        s.set_trace(False)
        assert s.trace is False and s.trace_events(s.send(b"z", "jobs")) == []
        assert own.trace is True and own.trace_events(own.send(b"z", "jobs"))
        assert s.trace_events(other_process_sends()) == []
    assert "trace is off" in cli("trace", "--spool", str(d)).stdout
    r = cli("trace", "0190f1e2-0000-7000-8000-000000000001", "--enable", "--spool", str(d))
    assert r.returncode != 0 and "not both" in r.stderr


def test_a_node_stores_its_config_setting(tmp_path: Path) -> None:
    import asyncio

    from spoolq.node.daemon import Node

    d = tmp_path / "s"
    with Spool(d) as s:
        s.set_trace(True)

    async def start_stop(trace: bool) -> bool:
        node = Node(NodeConfig(spool=str(d), listen="127.0.0.1:0", trace=trace).validate())
        await node.start()
        try:
            return node.spool.trace
        finally:
            await node.stop()

    assert asyncio.run(start_stop(False)) is False
    with Spool(d) as s:
        assert s.trace_setting() is False and s.trace is False
    assert asyncio.run(start_stop(True)) is True
    with Spool(d) as s:
        assert s.trace is True
