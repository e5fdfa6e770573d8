"""Integration tests of `spoolq node`: real daemons as subprocesses, real spools, real HTTP.

Every node is a `spoolq node` process (tests/nodes.py) on 127.0.0.1 with its
own temporary spool. The test process plays producer (``Spool(A's dir)``) and
consumer (``Spool(B's dir)``) beside the daemons, as users' programs do.
Nothing waits with a bare sleep: every wait is ``wait_for`` on a condition,
with a timeout that fails the test.

The daemons get short retry timings (``FAST``) so that a peer that comes back
is retried within half a second.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from spoolq import Lease, Spool

from .conftest import PYTHON, python_env, small_tmpfs, wait_for
from .nodes import NodeProc, free_port

FAST = {"backoff_base": 0.05, "backoff_cap": 0.5, "scan_interval": 0.5, "sweep_interval": 0.5}


def node_config(peers: dict[str, str | dict[str, Any]] | None = None, routes: Sequence[dict[str, Any]] = (),
                **node: Any) -> str:
    """A node config (TOML). ``peers``: name -> url, or name -> {url=..., other keys}."""

    def value(v: Any) -> str:
        return json.dumps(v)  # a JSON string, number or list of strings is valid TOML too

    lines = ["[node]"] + [f"{k} = {value(v)}" for k, v in {**FAST, **node}.items()]
    for name, peer in (peers or {}).items():
        table = {"url": peer} if isinstance(peer, str) else peer
        lines += ["", f"[peers.{name}]"] + [f"{k} = {value(v)}" for k, v in table.items()]
    for r in routes:
        lines += ["", "[[routes]]"] + [f"{k} = {value(v)}" for k, v in r.items()]
    return "\n".join(lines) + "\n"


class Cluster:
    """Nodes and spool handles of one test; everything is stopped and closed at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[NodeProc] = []
        self.spools: list[Spool] = []

    def dir(self, name: str) -> Path:
        return self.root / name

    def start(self, name: str, *, config: str | None = None, port: int = 0, directory: Path | None = None) -> NodeProc:
        p = NodeProc(directory or self.dir(name), config=config, listen=f"127.0.0.1:{port}")
        self.procs.append(p)
        return p

    def spool(self, name: str, directory: Path | None = None) -> Spool:
        s = Spool(directory or self.dir(name))
        self.spools.append(s)
        return s

    def close(self) -> None:
        try:
            for p in self.procs:
                p.stop()  # SIGTERM, then SIGKILL after 30 s; a no-op for a node that is gone
        finally:
            for s in self.spools:
                s.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


def health(node: NodeProc) -> dict[str, Any]:
    with urllib.request.urlopen(node.url + "/healthz", timeout=5) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def peer_health(node: NodeProc, peer: str) -> dict[str, Any]:
    return health(node)["peers"].get(peer, {})


def outbox(spool: Spool) -> int:
    """Messages waiting in a spool's outbox, all peers together."""
    return sum(p.outbox for p in spool.stats().peers.values())


def stored(spool: Spool, channel: str) -> int:
    """Messages of ``channel`` in a spool's inbox: ready, leased or delayed."""
    st = spool.stats().channels.get(channel)
    return st.ready + st.leased + st.delayed if st is not None else 0


def drain(spool: Spool, channel: str, expect: int, timeout: float = 20.0) -> list[Lease]:
    """Lease and ack until ``expect`` messages came (more are not waited for, but kept if leased)."""
    got: list[Lease] = []

    def more() -> bool:
        while leases := spool.lease_many(channel, 1000, visibility=300):
            got.extend(leases)
            spool.ack_many(leases)
        return len(got) >= expect

    try:
        wait_for(more, timeout)
    except AssertionError:
        raise AssertionError(f"{channel}: {len(got)} of {expect} messages arrived within {timeout}s") from None
    return got


def assert_delivered_once(sender: Spool, receiver: Spool, channel: str, got: list[Lease],
                          expected_ids: Sequence[str]) -> None:
    """``got`` holds exactly ``expected_ids``, once each, and nothing else is on its way or waiting."""
    ids = [x.id for x in got]
    assert len(ids) == len(set(ids)), "a message was delivered twice"
    assert set(ids) == set(expected_ids)
    wait_for(lambda: outbox(sender) == 0, 20)  # every batch is settled: nothing can still arrive
    assert stored(receiver, channel) == 0
    assert receiver.lease(channel) is None


# -- 1. delivery ----------------------------------------------------------------------------------


def test_two_node_delivery_keeps_every_attribute(cluster: Cluster) -> None:
    b = cluster.start("b")
    a = cluster.start("a", config=node_config(
        {"b": b.url}, [{"channels": "orders.*", "to": ["b"]}]))
    a_id = json.loads((cluster.dir("a") / "node.json").read_text())["node_id"]
    producer = cluster.spool("a")
    consumer = cluster.spool("b")
    assert [r.channels for r in producer.routes()] == ["orders.*"]

    sent: dict[str, tuple[bytes, dict[str, str], int]] = {}  # id -> body, headers, priority
    for i in range(30):  # by the route
        body, hdrs, pri = f"order {i}".encode(), {"n": str(i), "kind": "order"}, (i % 3) * 100
        sent[producer.send(body, "orders.new", priority=pri, headers=hdrs)] = (body, hdrs, pri)
    routed_plain = producer.send_many([b"bulk-%d" % i for i in range(20)], "orders.bulk")
    by_name = {producer.send(b"name %d" % i, "misc", to="b", priority=7, headers={"via": "name"}): i
               for i in range(5)}
    t_ttl = time.time()
    by_url = {producer.send(b"url %d" % i, "misc", to=b.url, ttl=600, headers={"via": "url"}): i
              for i in range(5)}
    t_delay = time.time()
    delayed_id = producer.send(b"later", "orders.later", delay=3.0, priority=5)
    t_delay_end = time.time()
    local_id = producer.send(b"stays here", "local")  # matches no route: delivered on A

    # the delayed message reaches B well before its time and waits there
    wait_for(lambda: consumer.stats().channels.get("orders.later") is not None
             and consumer.stats().channels["orders.later"].delayed == 1)
    assert time.time() < t_delay + 2.0, "forwarding took too long to check the delay"
    assert consumer.lease("orders.later") is None

    # routed messages: every one, once, with body, headers and priority; leased in priority order
    wait_for(lambda: stored(consumer, "orders.new") == 30)
    leases = consumer.lease_many("orders.new", 100)
    assert len(leases) == 30
    assert [(x.priority, x.id) for x in leases] == sorted((x.priority, x.id) for x in leases)
    for x in leases:
        assert (x.body, x.headers, x.priority) == sent[x.id]
        assert x.origin == a_id
        assert x.attempts == 1
    consumer.ack_many(leases)

    bulk = drain(consumer, "orders.bulk", 20)
    assert sorted((x.id, x.body) for x in bulk) == sorted(zip(routed_plain, [b"bulk-%d" % i for i in range(20)],
                                                             strict=True))
    misc = drain(consumer, "misc", 10)
    for x in misc:
        if x.id in by_name:
            assert (x.body, x.headers, x.priority, x.expires_at) == (b"name %d" % by_name[x.id], {"via": "name"},
                                                                      7, None)
        else:
            assert (x.body, x.headers, x.priority) == (b"url %d" % by_url[x.id], {"via": "url"}, 1024)
            assert x.expires_at is not None and abs(x.expires_at - (t_ttl + 600)) < 2.0  # the TTL came along
    assert {x.id for x in misc} == set(by_name) | set(by_url)

    later = consumer.lease("orders.later", wait=10)
    leased_at = time.time()
    assert later is not None and later.id == delayed_id and later.body == b"later" and later.priority == 5
    due = later.message.deliver_at
    assert due is not None and t_delay + 3.0 - 0.002 <= due <= t_delay_end + 3.0  # the delay came along
    assert leased_at >= due - 0.001  # and was kept: not ready before its time (same host, same clock)
    later.ack()

    wait_for(lambda: outbox(producer) == 0)
    assert producer.stats().peers.keys() <= {"b", b.url}
    assert all(p.outbox == 0 for p in producer.stats().peers.values())
    assert consumer.stats().channels.get("local") is None
    mine = producer.lease("local")
    assert mine is not None and mine.id == local_id
    for ch in ("orders.new", "orders.bulk", "misc", "orders.later"):
        assert stored(consumer, ch) == 0
    assert a.proc.poll() is None and b.proc.poll() is None


# -- 2. a receiver that is down for a while ---------------------------------------------------------


def test_receiver_down_then_up(cluster: Cluster) -> None:
    port = free_port()
    a = cluster.start("a", config=node_config({"b": f"http://127.0.0.1:{port}"}))
    producer = cluster.spool("a")
    ids, took = [], []
    for i in range(100):
        t = time.perf_counter()
        ids.append(producer.send(b"m%d" % i, "jobs", to="b"))
        took.append(time.perf_counter() - t)
    # send() is a local commit: it neither fails nor waits for the peer
    assert max(took) < 0.5, f"slowest send took {max(took):.3f}s"
    assert sum(took) < 5.0, f"100 sends took {sum(took):.3f}s"
    wait_for(lambda: peer_health(a, "b").get("failures", 0) >= 2)  # A did try, and B was down
    assert outbox(producer) == 100

    b = cluster.start("b", port=port)
    consumer = cluster.spool("b")
    got = drain(consumer, "jobs", 100)
    assert sorted(x.body for x in got) == sorted(b"m%d" % i for i in range(100))
    assert_delivered_once(producer, consumer, "jobs", got, ids)
    wait_for(lambda: peer_health(a, "b").get("up") is True)
    assert b.proc.poll() is None


# -- 3. fan-out ------------------------------------------------------------------------------------


def test_fanout_gives_each_peer_every_message(cluster: Cluster) -> None:
    b = cluster.start("b")
    c = cluster.start("c")
    cluster.start("a", config=node_config(
        {"b": b.url, "c": c.url}, [{"channels": "events.*", "to": ["b", "c"], "mode": "fanout"}]))
    producer = cluster.spool("a")
    ids = [producer.send(b"e%d" % i, "events.click") for i in range(40)]
    ids += producer.send_many([b"e%d" % i for i in range(40, 100)], "events.click")
    for name in ("b", "c"):
        consumer = cluster.spool(name)
        got = drain(consumer, "events.click", 100)
        assert sorted(x.body for x in got) == sorted(b"e%d" % i for i in range(100))
        assert_delivered_once(producer, consumer, "events.click", got, ids)


# -- 4. failover -----------------------------------------------------------------------------------


def test_failover_to_the_next_peer_and_back(cluster: Cluster) -> None:
    b_port = free_port()
    c = cluster.start("c")
    a = cluster.start("a", config=node_config(
        {"b": f"http://127.0.0.1:{b_port}", "c": c.url},
        [{"channels": "jobs.*", "to": ["b", "c"], "mode": "failover"}]))
    producer = cluster.spool("a")
    first = producer.send_many([b"first %d" % i for i in range(50)], "jobs.x")

    # B never ran: C gets them all
    c_spool = cluster.spool("c")
    at_c = drain(c_spool, "jobs.x", 50)
    assert_delivered_once(producer, c_spool, "jobs.x", at_c, first)
    assert peer_health(a, "b").get("failures", 0) >= 1  # B was tried first, and failed

    # B comes up, C goes down: new messages reach B
    b = cluster.start("b", port=b_port)
    assert c.stop() == 0
    second = [producer.send(b"second %d" % i, "jobs.x") for i in range(50)]
    b_spool = cluster.spool("b")
    at_b = drain(b_spool, "jobs.x", 50)
    assert_delivered_once(producer, b_spool, "jobs.x", at_b, second)
    assert stored(c_spool, "jobs.x") == 0  # nothing else went to C

    # every message arrived at B or C, none at both, none lost
    assert {x.id for x in at_b} | {x.id for x in at_c} == set(first) | set(second)
    assert not {x.id for x in at_b} & {x.id for x in at_c}
    assert b.proc.poll() is None


# -- 5. SIGKILL in the middle of a transfer ----------------------------------------------------------

BIG = 50_000


def checksum(pairs: Iterator[tuple[str, bytes]] | list[tuple[str, bytes]]) -> str:
    h = hashlib.sha256()
    for mid, body in sorted(pairs):
        h.update(mid.encode())
        h.update(len(body).to_bytes(4, "big"))
        h.update(body)
    return h.hexdigest()


class Consumer(threading.Thread):
    """Leases and acks a channel in the background, keeping (id, body) of every lease."""

    def __init__(self, directory: Path, channel: str) -> None:
        super().__init__(daemon=True)
        self.directory, self.channel = directory, channel
        self.got: list[tuple[str, bytes]] = []
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            with Spool(self.directory) as spool:
                while not self.done.is_set():
                    leases = spool.lease_many(self.channel, 1000, visibility=300, wait=0.05)
                    if leases:
                        self.got.extend((x.id, x.body) for x in leases)
                        spool.ack_many(leases)
        except BaseException as e:
            self.error = e

    def finish(self) -> list[tuple[str, bytes]]:
        self.done.set()
        self.join(30)
        assert not self.is_alive()
        if self.error is not None:
            raise self.error
        return self.got


@pytest.mark.parametrize("consume", ["after", "during"])
@pytest.mark.parametrize("victim", ["sender", "receiver"])
def test_sigkill_during_transfer_loses_and_duplicates_nothing(cluster: Cluster, victim: str, consume: str) -> None:
    """``after``: B's inbox must end up with exactly the 50,000. ``during``: a consumer acks as they
    come, so a batch sent again after the kill finds its messages gone from the inbox, and only
    B's memory of seen ids keeps them from being delivered twice."""
    port = free_port()
    b = cluster.start("b", port=port)
    producer = cluster.spool("a")
    bodies = [b"msg-%06d-" % i + os.urandom(24) for i in range(BIG)]
    ids = producer.send_many(bodies, "bulk", to="b")
    sent_sum = checksum(zip(ids, bodies, strict=True))
    assert len(set(ids)) == BIG
    watch = cluster.spool("b")
    background = Consumer(cluster.dir("b"), "bulk") if consume == "during" else None
    if background is not None:
        background.start()

    def received() -> int:
        return stored(watch, "bulk") + (len(background.got) if background is not None else 0)

    # small batches so that the transfer takes long enough to be interrupted
    config = node_config({"b": {"url": b.url, "batch_messages": 250}})
    a = cluster.start("a", config=config)
    try:
        wait_for(lambda: 1000 <= received() < BIG - 5000, 30, interval=0.002)
        if victim == "sender":
            a.kill()
            assert outbox(producer) > 0
            cluster.start("a", config=config)
        else:
            b.kill()
            assert outbox(producer) > 0
            assert cluster.start("b", port=port).url == b.url
        wait_for(lambda: outbox(producer) == 0, 60)
        if background is not None:
            wait_for(lambda: len(background.got) >= BIG, 60)
    finally:
        got = background.finish() if background is not None else []

    if background is None:
        assert stored(watch, "bulk") == BIG
        got = [(x.id, x.body) for x in drain(watch, "bulk", BIG, timeout=60)]
    assert len(got) == BIG  # leased in total
    assert len({mid for mid, _ in got}) == BIG  # distinct
    assert checksum(got) == sent_sum
    assert stored(watch, "bulk") == 0 and watch.lease("bulk") is None
    assert watch.stats().channels["bulk"].dead == 0
    assert all(p.dead == 0 for p in producer.stats().peers.values())


# -- 6. operations ------------------------------------------------------------------------------------


def run_node(spool_dir: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run `spoolq node` to completion (for nodes that must refuse to start)."""
    return subprocess.run([PYTHON, "-m", "spoolq", "node", "--spool", str(spool_dir), *args],
                          env=python_env(), capture_output=True, text=True, timeout=timeout)


def test_sigterm_exits_zero_and_removes_node_json(cluster: Cluster) -> None:
    info = cluster.dir("a") / "node.json"
    # at once: node.json says the node is ready, so a signal from then on is handled
    a = NodeProc(cluster.dir("a"), wait=False)
    cluster.procs.append(a)
    wait_for(info.exists, 30, interval=0.0005)
    a.signal(signal.SIGTERM)
    assert a.proc.wait(30) == 0, a.log()
    assert not info.exists()

    # and a node that has been working
    b = cluster.start("b")
    a = cluster.start("a", config=node_config({"b": b.url}))
    assert json.loads(info.read_text())["pid"] == a.proc.pid
    producer = cluster.spool("a")
    producer.send_many([b"x"] * 10, "c", to="b")
    consumer = cluster.spool("b")
    wait_for(lambda: stored(consumer, "c") == 10)
    a.signal(signal.SIGTERM)
    assert a.proc.wait(30) == 0, a.log()
    assert not info.exists()
    assert "node stopped" in a.log()
    again = cluster.start("a")  # the lock is free again
    assert again.proc.poll() is None


def test_second_node_on_a_spool_is_refused(cluster: Cluster) -> None:
    a = cluster.start("a")
    r = run_node(cluster.dir("a"), "--listen", "127.0.0.1:0")
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "already running" in out
    assert str(a.proc.pid) in out
    # the first node is unharmed and still the one node.json names
    assert a.proc.poll() is None
    assert json.loads((cluster.dir("a") / "node.json").read_text())["pid"] == a.proc.pid
    assert health(a)["status"] == "ok"


def test_public_listen_without_tokens_is_refused(cluster: Cluster) -> None:
    r = run_node(cluster.dir("a"), "--listen", f"0.0.0.0:{free_port()}")
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "refusing to listen on 0.0.0.0" in out
    assert not (cluster.dir("a") / "node.json").exists()
    # the message must say what to add: the [tokens] section
    assert "[tokens]" in out and "[tokens.NAME]" in out, out


def test_public_listen_with_tokens_starts(cluster: Cluster, tmp_path: Path) -> None:
    cfg = tmp_path / "tokens.toml"
    cfg.write_text('[tokens.peers]\ntoken = "0123456789abcdef0123"\nscopes = ["peer"]\n')
    p = NodeProc(cluster.dir("a"), listen="0.0.0.0:0", extra=["--config", str(cfg)])
    cluster.procs.append(p)
    assert p.proc.poll() is None


def test_sighup_reloads_peers(cluster: Cluster) -> None:
    dead = free_port()
    b = cluster.start("b")
    a = cluster.start("a", config=node_config({"b": f"http://127.0.0.1:{dead}"}))
    producer = cluster.spool("a")
    ids = producer.send_many([b"h%d" % i for i in range(30)], "jobs", to="b")
    wait_for(lambda: peer_health(a, "b").get("failures", 0) >= 1)
    consumer = cluster.spool("b")
    assert stored(consumer, "jobs") == 0
    assert outbox(producer) == 30

    a.config_path.write_text(node_config({"b": b.url}))
    a.signal(signal.SIGHUP)
    got = drain(consumer, "jobs", 30)
    assert_delivered_once(producer, consumer, "jobs", got, ids)
    assert peer_health(a, "b")["url"] == b.url
    assert "configuration reloaded" in a.log()
    assert a.proc.poll() is None


def test_sighup_right_at_startup_is_not_fatal(cluster: Cluster) -> None:
    b = cluster.start("b")
    info = cluster.dir("a") / "node.json"
    config = cluster.root / "a.toml"
    config.write_text(node_config({"b": f"http://127.0.0.1:{free_port()}"}))
    a = NodeProc(cluster.dir("a"), extra=["--config", str(config)], wait=False)
    cluster.procs.append(a)
    wait_for(info.exists, 30, interval=0.0005)
    config.write_text(node_config({"b": b.url}))
    a.signal(signal.SIGHUP)  # while the node may still be starting: applied, not fatal
    a.wait_ready()
    producer = cluster.spool("a")
    ids = producer.send_many([b"s%d" % i for i in range(10)], "jobs", to="b")
    consumer = cluster.spool("b")
    got = drain(consumer, "jobs", 10)
    assert_delivered_once(producer, consumer, "jobs", got, ids)
    assert a.proc.poll() is None, a.log()


# -- 7. a receiver whose disk is full -------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "small", "8m") as mnt:
        yield mnt


def fill(directory: Path) -> Path:
    """Write a file until the filesystem is full; returns it."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass
    return filler


def test_receiver_disk_full_then_freed(small_fs: Path, cluster: Cluster) -> None:
    b = cluster.start("b", directory=small_fs / "b")
    a = cluster.start("a", config=node_config({"b": b.url}))
    filler = fill(small_fs)
    producer = cluster.spool("a")
    bodies = [b"%04d" % i + os.urandom(8000) for i in range(100)]  # 800 kB: more than any free page
    ids = producer.send_many(bodies, "big", to="b")

    wait_for(lambda: "507" in (peer_health(a, "b").get("last_error") or ""))
    assert peer_health(a, "b")["up"] is False
    consumer = cluster.spool("b", directory=small_fs / "b")
    assert stored(consumer, "big") == 0
    assert producer.stats().peers["b"].outbox == 100  # kept for later, not dropped or dead-lettered
    assert all(p.dead == 0 for p in producer.stats().peers.values())
    assert b.proc.poll() is None

    filler.unlink()
    got = drain(consumer, "big", 100, timeout=20)
    assert sorted((x.id, x.body) for x in got) == sorted(zip(ids, bodies, strict=True))
    assert_delivered_once(producer, consumer, "big", got, ids)
    b.stop()
