"""Connections taken while spoolq-beanstalkd starts (issue 10 item 2): what they send before the server
is ready is answered in order once it is, and a reserve-with-timeout among it counts from its arrival."""

from __future__ import annotations

import asyncio
import functools
import socket
import time
from pathlib import Path

from spoolq import Spool
from spoolq.beanstalk.early import EarlyAccept
from spoolq.beanstalk.server import Conn, Server

from .test_beanstalk_protocol import Beanstalkd, Wire


def test_a_timeout_read_before_the_server_was_ready_counts_from_its_arrival(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", durability="normal")

    async def scenario() -> tuple[bytes, float]:
        server = Server(spool)
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        arrived = time.monotonic() - 5.0  # as if it came in 5 s ago, while the server was starting
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        await loop.connect_accepted_socket(
            functools.partial(Conn, server, [(arrived, b"use early\r\nreserve-with-timeout 3\r\n")]), sock=ours)
        theirs.setblocking(False)
        got = b""
        while got.count(b"\r\n") < 2:
            got += await loop.sock_recv(theirs, 1024)
        took = time.monotonic() - t0
        theirs.close()
        await server.close()
        return got, took

    try:
        got, took = asyncio.run(scenario())
    finally:
        spool.close()
    assert got == b"USING early\r\nTIMED_OUT\r\n"
    assert took < 2.5, f"took {took:.2f} s: the 3 s timeout was counted from when the server read it"


def test_a_delay_read_before_the_server_was_ready_runs_from_its_arrival(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", durability="normal")

    async def scenario() -> bytes:
        server = Server(spool)
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        arrived = time.monotonic() - 5.0  # a put with a 3 s delay that came in 5 s ago: ready now
        loop = asyncio.get_running_loop()
        await loop.connect_accepted_socket(functools.partial(
            Conn, server, [(arrived, b"put 0 3 60 1\r\nx\r\nreserve-with-timeout 0\r\n")]), sock=ours)
        theirs.setblocking(False)
        got = b""
        while got.count(b"\r\n") < 3:
            got += await loop.sock_recv(theirs, 1024)
        theirs.close()
        await server.close()
        return got

    try:
        assert asyncio.run(scenario()) == b"INSERTED 1\r\nRESERVED 1 1\r\nx\r\n"
    finally:
        spool.close()


def test_early_accept_takes_connections_and_their_bytes_in_order() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    early = EarlyAccept(listener)
    clients = [socket.create_connection(listener.getsockname()) for _ in range(3)]
    for i, c in enumerate(clients):
        c.sendall(b"put 0 0 1 1\r\n%d\r\n" % i)
    deadline = time.monotonic() + 10
    while sum(x.size for x in early.conns.values()) < 3 * 16 and time.monotonic() < deadline:
        time.sleep(0.01)
    taken = early.finish()
    assert [b"".join(d for _, d in x.chunks) for x in taken] == [b"put 0 0 1 1\r\n%d\r\n" % i for i in range(3)]
    assert all(t <= time.monotonic() for x in taken for t, _ in x.chunks)
    for x in taken:
        x.sock.close()
    for c in clients:
        c.close()
    listener.close()


def test_commands_sent_right_after_exec_are_answered_in_order() -> None:
    bs = Beanstalkd()
    try:
        w: Wire = bs.connect()  # connects as soon as the socket is bound, likely before the server is ready
        t0 = time.monotonic()
        w.send(b"put 0 0 60 2\r\nhi\r\nreserve-with-timeout 0\r\nreserve-with-timeout 1\r\n")
        assert w.line() == b"INSERTED 1"
        assert w.job_reply() == (1, b"hi")
        assert w.line() == b"TIMED_OUT"
        assert time.monotonic() - t0 >= 1.0  # counted from its arrival, never from before it was sent
    finally:
        bs.cleanup()
