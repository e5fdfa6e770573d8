"""The forwarder's HTTP/1.1 client (spoolq/node/peerhttp.py): reading answers by table and by fuzz,
and the client against raw servers that frame, close and misbehave."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spoolq.node import peerhttp
from spoolq.node.peerhttp import AnswerParser, BadAnswer, HttpPool, NoAnswer

ANSWERS = [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", (200, True, {"content-length": "0"}, b"")),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nRetry-After:  5 \r\n\r\nabc",
     (200, True, {"content-length": "3", "retry-after": "5"}, b"abc")),
    (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
     (503, False, {"connection": "close", "content-length": "0"}, b"")),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204\r\n\r\n", (204, True, {}, b"")),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
     (200, True, {"transfer-encoding": "chunked"}, b"ab")),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 200 OK\r\n\r\n",  # a second answer: not kept
     (200, False, {"content-length": "1"}, b"x")),
]

BAD_ANSWERS = [
    b"HTTP/2 200 OK\r\n\r\n",
    b"HTTP/1.1 20 OK\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
    b"SSH-2.0-OpenSSH\r\n\r\n",
]


@pytest.mark.parametrize(("data", "expected"), ANSWERS)
def test_answers_read_whole_or_byte_by_byte(data: bytes, expected: tuple[int, bool, dict[str, str], bytes]) -> None:
    status, _keep, headers, body = expected
    whole = AnswerParser()
    assert whole.feed(data) and (whole.status, whole.keep, whole.headers, whole.body) == expected
    a = AnswerParser()
    for i in range(len(data)):
        if a.feed(data[i:i + 1]):
            break
    assert a.complete and (a.status, a.headers, a.body) == (status, headers, body)


@pytest.mark.parametrize("data", BAD_ANSWERS)
def test_unreadable_answers_are_refused(data: bytes) -> None:
    with pytest.raises(BadAnswer):
        AnswerParser().feed(data)


def test_an_answer_framed_by_the_end_of_the_connection_and_one_cut_off() -> None:
    a = AnswerParser()
    assert not a.feed(b"HTTP/1.0 200 OK\r\n\r\nuntil the end")
    a.eof()
    assert (a.complete, a.keep, a.body) == (True, False, b"until the end")
    b = AnswerParser()
    assert not b.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort")
    with pytest.raises(BadAnswer):
        b.eof()


def test_what_an_answer_can_make_the_client_hold_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BadAnswer, match="head"):
        a = AnswerParser()
        for _ in range(100):  # a header that never ends
            a.feed(b"HTTP/1.1 200 OK\r\nX: " if a._fed == 0 else b"y" * 4096)
    monkeypatch.setattr(peerhttp, "MAX_BODY", 100)
    with pytest.raises(BadAnswer, match="body"):
        AnswerParser().feed(b"HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\n" + b"x" * 101)


@given(st.binary(max_size=300))
def test_any_bytes_are_an_answer_or_a_bad_answer(data: bytes) -> None:
    a = AnswerParser()
    try:
        if not a.feed(data):
            a.eof()
    except BadAnswer:
        return
    assert a.complete and 100 <= a.status <= 999


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length"))
    return await reader.readexactly(length)


def serve(handler: Handler, body: Callable[[HttpPool, list[int]], Awaitable[None]]) -> list[int]:
    """Run ``body(pool, connections)`` against a raw server on 127.0.0.1; returns the connections' count."""
    conns: list[int] = []

    async def main() -> None:
        async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            conns.append(1)
            try:
                await handler(r, w)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                w.close()

        server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = HttpPool(f"http://127.0.0.1:{port}/base/", None, "test")
        try:
            await asyncio.wait_for(body(pool, conns), 30)
        finally:
            pool.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())
    return conns


def test_answers_on_one_kept_connection_framed_by_length_and_by_chunks() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        assert (await read_request(r)) == b"one"
        w.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
        assert (await read_request(r)) == b"two"
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nsec\r\n3\r\nond\r\n0\r\nT: 1\r\n\r\n")
        await r.read()  # until the client closes

    async def body(pool: HttpPool, conns: list[int]) -> None:
        a = await pool.post("/v1/batches", b"one", {"Content-Type": "x"})
        b = await pool.post("/v1/batches", b"two", {})
        assert (a.status, a.body, b.status, b.body) == (200, b"first", 200, b"second")

    assert len(serve(handler, body)) == 1


def test_a_kept_connection_the_peer_closed_is_replaced_and_the_batch_sent_again() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()
        # keep-alive was not refused, but the server drops the connection once the next request comes:
        # the client cannot tell before it writes
        await r.read(1)

    async def body(pool: HttpPool, conns: list[int]) -> None:
        assert (await pool.post("/p", b"a", {})).body == b"ok"
        assert (await pool.post("/p", b"b", {})).body == b"ok"

    assert len(serve(handler, body)) == 2


def test_bytes_a_peer_sends_after_its_answer_are_never_read_as_the_next_answer() -> None:
    """A kept connection on which more came after the answer (in a later segment) is not reused: those
    bytes would be taken for the answer to the next batch (a reply of the right length says all accepted)."""
    first_conn = asyncio.Event()

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        body = await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await w.drain()
        if not first_conn.is_set():
            first_conn.set()
            await asyncio.sleep(0.05)  # after the client has read its answer, as a segment of its own
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")
            await w.drain()
        await r.read()

    async def body(pool: HttpPool, conns: list[int]) -> None:
        assert (await pool.post("/p", b"one", {})).body == b"one"
        conn = pool._idle[-1]
        async with asyncio.timeout(10):
            while not conn.reader._buffer:  # the stale answer is in the kept connection's buffer
                await asyncio.sleep(0.005)
        assert (await pool.post("/p", b"two", {})).body == b"two"

    assert len(serve(handler, body)) == 2


def test_close_framed_and_connection_close_answers_are_not_kept() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        first = await read_request(r)
        if first == b"a":
            w.write(b"HTTP/1.1 500 Oops\r\nConnection: close\r\nContent-Length: 4\r\n\r\nfail")
        else:
            w.write(b"HTTP/1.0 200 OK\r\n\r\nuntil the end")

    async def body(pool: HttpPool, conns: list[int]) -> None:
        assert (await pool.post("/p", b"a", {})).status == 500
        assert (await pool.post("/p", b"b", {})).body == b"until the end"

    assert len(serve(handler, body)) == 2


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"garbage\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: " + b"y" * (70 << 10) + b"\r\n\r\n",
])
def test_unreadable_answers_are_bad_answers(answer: bytes) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(answer)
        await w.drain()

    async def body(pool: HttpPool, conns: list[int]) -> None:
        with pytest.raises(BadAnswer):
            await pool.post("/p", b"a", {})

    serve(handler, body)


def test_a_body_over_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peerhttp, "MAX_BODY", 1000)

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"200\r\n" + b"x" * 512 + b"\r\n" * 2)
        w.write(b"200\r\n" + b"x" * 512 + b"\r\n0\r\n\r\n")
        await w.drain()

    async def body(pool: HttpPool, conns: list[int]) -> None:
        with pytest.raises(BadAnswer):
            await pool.post("/p", b"a", {})

    serve(handler, body)


def test_no_answer_when_the_peer_closes_at_once_or_nobody_listens() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)  # and close without a word

    async def body(pool: HttpPool, conns: list[int]) -> None:
        with pytest.raises(NoAnswer):
            await pool.post("/p", b"a", {})

    serve(handler, body)

    async def refused() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        with pytest.raises(NoAnswer):
            await HttpPool(f"http://127.0.0.1:{port}", None, "test").post("/p", b"a", {})

    asyncio.run(refused())


def test_the_request_carries_the_url_path_host_and_headers_and_refuses_injection() -> None:
    seen: list[bytes] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head = await r.readuntil(b"\r\n\r\n")
        seen.append(head)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await r.read()

    async def body(pool: HttpPool, conns: list[int]) -> None:
        await pool.post("/v1/batches", b"", {"Authorization": "Bearer t"})
        with pytest.raises(ValueError):
            await pool.post("/v1/batches", b"", {"Authorization": "Bearer t\r\nX-Evil: 1"})

    serve(handler, body)
    lines = seen[0].split(b"\r\n")
    assert lines[0] == b"POST /base/v1/batches HTTP/1.1"
    assert b"Authorization: Bearer t" in lines and any(x.startswith(b"Host: 127.0.0.1:") for x in lines)
