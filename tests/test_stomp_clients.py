"""STOMP clients used as their users use them: stomp.py, a PHP script, aiohttp WebSocket; crash durability."""

from __future__ import annotations

import contextlib
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stomp

from spoolq import Spool

from .conftest import wait_for
from .stomp_helpers import StompProc, stomp_server

HERE = Path(__file__).parent


class Listener(stomp.ConnectionListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.messages: queue.Queue[Any] = queue.Queue()
        self.errors: list[Any] = []
        self.heartbeats = 0
        self.receipts: set[str] = set()
        self.cond = threading.Condition()

    def on_message(self, frame: Any) -> None:
        self.messages.put(frame)

    def on_error(self, frame: Any) -> None:
        self.errors.append(frame)

    def on_heartbeat(self) -> None:
        self.heartbeats += 1

    def on_receipt(self, frame: Any) -> None:
        self.receipts.add(frame.headers["receipt-id"])

    def take(self, n: int, timeout: float = 10.0) -> list[Any]:
        return [self.messages.get(timeout=timeout) for _ in range(n)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StompProc]:
    with stomp_server(tmp_path_factory.mktemp("stompc") / "spool", "--heart-beat", "200,200") as s:
        yield s


def client(server: StompProc, heartbeats: tuple[int, int] = (0, 0)) -> tuple[stomp.Connection12, Listener]:
    conn = stomp.Connection12([("127.0.0.1", server.port)], heartbeats=heartbeats)
    lis = Listener()
    conn.set_listener("t", lis)
    conn.connect(wait=True)
    return conn, lis


def send_receipted(conn: stomp.Connection12, lis: Listener, dest: str, bodies: list[str], **h: str) -> None:
    ids = [f"r-{time.monotonic_ns()}-{i}" for i in range(len(bodies))]
    for body, rid in zip(bodies, ids, strict=True):
        conn.send(dest, body, headers={"receipt": rid, **h})
    wait_for(lambda: set(ids) <= lis.receipts)


@pytest.mark.parametrize("mode", ["auto", "client", "client-individual"])
def test_stomp_py_ack_modes(server: StompProc, mode: str) -> None:
    dest = f"/queue/py-{mode}"
    p, pl = client(server)
    send_receipted(p, pl, dest, [f"m{i}" for i in range(10)], persistent="true")
    c, cl = client(server)
    c.subscribe(dest, id="1", ack=mode, headers={"activemq.prefetchSize": "4"})
    got = []
    for _ in range(10):
        [m] = cl.take(1)
        got.append(m.body)
        if mode != "auto":
            c.ack(m.headers["ack"])
    assert sorted(got) == sorted(f"m{i}" for i in range(10))
    c.disconnect(receipt="bye")
    p.disconnect()
    with Spool(server.spool_dir) as s:
        wait_for(lambda: s.peek(dest.rsplit("/", 1)[1]) == [])


def test_stomp_py_transactions_nack_reconnect(server: StompProc) -> None:
    p, pl = client(server)
    tx = p.begin()
    p.send("/queue/py-tx", "a", transaction=tx)
    p.send("/queue/py-tx", "b", transaction=tx)
    p.commit(tx)
    tx2 = p.begin()
    p.send("/queue/py-tx", "never", transaction=tx2)
    p.abort(tx2)
    send_receipted(p, pl, "/queue/py-tx", ["c"])
    c, cl = client(server)
    c.subscribe("/queue/py-tx", id="1", ack="client-individual", headers={"activemq.prefetchSize": "3"})
    first = cl.take(3)
    assert [m.body for m in first] == ["a", "b", "c"]
    m = first[0]
    c.nack(m.headers["ack"])  # back with spoolq backoff (about a second for the first attempt)
    c.disconnect()  # b and c unacked: given back at once
    c, cl = client(server)  # reconnect
    c.subscribe("/queue/py-tx", id="2", ack="client-individual", headers={"prefetch-count": "10"})
    got = sorted(f.body for f in cl.take(3, timeout=15))
    assert got == ["a", "b", "c"]
    c.disconnect()
    p.disconnect()


def test_stomp_py_heartbeats(server: StompProc) -> None:
    c, cl = client(server, heartbeats=(200, 200))
    wait_for(lambda: cl.heartbeats >= 2)
    assert c.is_connected() and not cl.errors
    c.disconnect()


def test_durability_kill9(tmp_path: Path) -> None:
    s = StompProc(tmp_path / "spool")
    try:
        conn, lis = client(s)
        sent = [f"d{i}" for i in range(200)]
        for b in sent:
            conn.send("/queue/durable", b, headers={"receipt": b, "persistent": "true"})
        wait_for(lambda: len(lis.receipts) >= 100)
        s.kill9()  # while later sends may still be in flight
        receipted = set(lis.receipts)
        with contextlib.suppress(Exception):
            conn.transport.stop()
    finally:
        s.stop()
    s = StompProc(tmp_path / "spool")
    try:
        with Spool(tmp_path / "spool") as sp:
            stored = {m.body.decode() for m in sp.peek("durable", limit=1000)}
        assert receipted <= stored
    finally:
        s.stop()


PHP_CLIENT = HERE / "stomp_client.php"


def _php_has_stomp() -> bool:
    if shutil.which("php") is None:
        return False
    r = subprocess.run(["php", "-r", "echo extension_loaded('stomp') ? 'y' : 'n';"], capture_output=True)
    return r.stdout == b"y"


@pytest.mark.skipif(not _php_has_stomp(), reason="php-stomp (Debian's PECL stomp extension) is not installed")
def test_php_pecl_stomp(server: StompProc) -> None:
    r = subprocess.run(["php", str(HERE / "stomp_pecl.php"), "127.0.0.1", str(server.port)], capture_output=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    assert r.stdout.decode().strip().splitlines()[-1] == "ok"
    with Spool(server.spool_dir) as s:
        assert [m.body for m in s.peek("pecl-tx")] == [b"in tx"]


@pytest.mark.skipif(shutil.which("php") is None, reason="php-cli is not installed")
def test_php_client(server: StompProc) -> None:
    r = subprocess.run(["php", str(PHP_CLIENT), "127.0.0.1", str(server.port)], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    assert r.stdout.decode().strip().splitlines()[-1] == "ok"


NODE_CONFIG = """
[node]
listen = "127.0.0.1:0"
[stomp]
listen = "127.0.0.1:0"
[tokens.app]
token = "app-secret-0123456789"
scopes = ["send"]
[tokens.ops]
token = "ops-secret-0123456789"
scopes = ["admin"]
"""


def test_node_stomp_tokens_and_websocket(tmp_path: Path) -> None:
    import asyncio
    import json

    import aiohttp

    from spoolq.stomp.wire import Frame, Parser, encode

    from .nodes import NodeProc
    from .stomp_helpers import Raw

    with NodeProc(tmp_path / "spool", config=NODE_CONFIG) as node:
        port = int(json.loads((tmp_path / "spool" / "node.json").read_text())["stomp"].rsplit(":", 1)[1])
        c = Raw(port)  # tokens configured: a passcode is needed
        c.send(Frame("CONNECT", (("accept-version", "1.2"), ("host", "x"))))
        assert c.frame().command == "ERROR" and c.closed()
        c = Raw(port)
        c.connect(login="app", passcode="app-secret-0123456789")
        c.send(Frame("SEND", (("destination", "/queue/ws"), ("receipt", "1")), b"from tcp"))
        assert c.frame().get("receipt-id") == "1"
        c.send(Frame("SUBSCRIBE", (("destination", "/queue/ws"), ("id", "1"))))  # no consume scope
        e = c.frame()
        assert e.command == "ERROR" and "consume" in (e.get("message") or "")

        async def over_websocket() -> Frame:
            async with aiohttp.ClientSession() as http, \
                    http.ws_connect(f"{node.url}/stomp", protocols=("v12.stomp",)) as ws:
                assert ws.protocol == "v12.stomp"
                p = Parser(commands=frozenset({"CONNECTED", "MESSAGE", "RECEIPT", "ERROR"}))
                await ws.send_str(encode(Frame("CONNECT", (("accept-version", "1.2"), ("host", "x"),
                                                           ("passcode", "ops-secret-0123456789")))).decode())
                await ws.send_str(encode(Frame("SUBSCRIBE", (("destination", "/queue/ws"), ("id", "0"),
                                                             ("ack", "client-individual")))).decode())
                frames: list[Frame] = []
                while len(frames) < 2:
                    msg = await asyncio.wait_for(ws.receive(), 10)
                    frames += [f for f in p.feed(msg.data.encode() if isinstance(msg.data, str) else msg.data)
                               if isinstance(f, Frame)]
                assert frames[0].command == "CONNECTED"
                m = frames[1]
                await ws.send_str(encode(Frame("ACK", (("id", m.get("ack") or ""), ("receipt", "a")))).decode())
                while True:
                    msg = await asyncio.wait_for(ws.receive(), 10)
                    r = [f for f in p.feed(msg.data.encode()) if isinstance(f, Frame)]
                    if r:
                        assert r[0].get("receipt-id") == "a"
                        return m

        m = asyncio.run(over_websocket())
        assert m.body == b"from tcp"
