"""The forwarder's HTTP/1.1 client: one POST per batch on kept-alive connections (issue 15).

Why not aiohttp's client, which the daemon uses for everything else (probes, hellos): a POST through
``ClientSession`` cost 100-170 us of CPU on this kind of machine (its request and response objects,
header merging, cookies, tracing hooks), a POST written and read here about 10 us. At 1,000 batches a
second that was a sixth of the sending daemon's CPU, and the time a batch waited on a busy core
before its bytes left.

What it speaks is small, because the other end is a spoolq node (or a proxy in front of one). The
answers are parsed by ``httptools`` (llhttp, the parser of Node.js and uvicorn); this module only
holds connections, frames requests and bounds what an answer may make it hold:

* requests: ``POST`` with ``Content-Length``, never chunked, never ``Expect``;
* responses: a status line and headers (at most ``MAX_HEAD`` bytes), interim ``1xx`` answers
  skipped, a body framed by ``Content-Length``, by ``Transfer-Encoding: chunked``, or by the end of
  the connection, at most ``MAX_BODY`` bytes;
* connections: kept for the next batch unless the answer says ``Connection: close``, is HTTP/1.0 or
  is framed by the end of the connection. A kept connection the peer closed meanwhile, or on which
  it sent anything after its answer, is found before it is used when possible and not reused; if
  it fails before any byte of an answer came back, the batch is sent once more on a new connection
  (a batch is idempotent: the receiver drops ids it has seen). Bytes that come after the next
  request was written cannot be told from its answer: a peer must not send them (spoolq never does).

Every wait is bounded by ``TOTAL_TIMEOUT`` (and connecting by ``CONNECT_TIMEOUT``), every read by
the limits above. Errors: :class:`NoAnswer` (nothing came back: refused, reset, timed out, closed;
the peer may be down) and :class:`BadAnswer` (something came back that is not a readable answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_module
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import httptools

__all__ = ["AnswerParser", "BadAnswer", "HttpPool", "NoAnswer", "Reply"]

MAX_HEAD: Final = 64 << 10  # status line and headers of an answer (also a chunk-size line, the trailers)
MAX_BODY: Final = 16 << 20  # an answer's body: a reply to the largest batch is far smaller
CONNECT_TIMEOUT: Final = 10.0
TOTAL_TIMEOUT: Final = 60.0
MAX_IDLE: Final = 16  # kept-alive connections per peer URL (one per batch in flight is what is used)


class NoAnswer(OSError):
    """Nothing came back: the connection was refused, reset, closed or timed out before an answer."""


class BadAnswer(Exception):
    """What came back is not an HTTP/1.x answer this client can read, or is over a limit."""


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # names lower-cased; a repeated name keeps its last value
    body: bytes


class AnswerParser:
    """One answer read from bytes as they come (no I/O): :meth:`feed` until it says complete, or
    :meth:`eof` when the connection ends first. ``httptools`` parses; this class bounds and collects.

    Raises :class:`BadAnswer` for anything that is not an HTTP/1.x answer, or over a limit.
    """

    __slots__ = ("_body", "_close_framed", "_fed", "_head", "_parser", "_started", "complete", "headers",
                 "keep", "status")

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._fed = 0  # bytes fed before the final answer's headers were complete
        self._head = 0  # bytes of status lines and headers (interim answers included)
        self._body = bytearray()
        self._started = False  # the final answer's headers are complete
        self._close_framed = False
        self.status = 0
        self.headers: dict[str, str] = {}  # names lower-cased; a repeated name keeps its last value
        self.keep = False
        self.complete = False

    def feed(self, data: bytes) -> bool:
        """Parse ``data``; whether the answer is complete (bytes after it are refused)."""
        if self.complete:
            raise BadAnswer("bytes after the end of the answer")
        if not self._started:  # what the parser may buffer before it calls back is bounded too
            if self._fed > MAX_HEAD:
                raise BadAnswer(f"answer head over {MAX_HEAD} bytes")
            self._fed += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            raise BadAnswer("the answer asks to switch protocols") from e
        except httptools.HttpParserCallbackError as e:
            if isinstance(e.__context__, _Beyond):  # the peer sent more than one answer: keep the first
                self.keep = False
                return True
            if isinstance(e.__context__, BadAnswer):
                raise e.__context__ from None
            raise BadAnswer(f"unreadable answer: {e}") from e
        except httptools.HttpParserError as e:
            raise BadAnswer(f"not an HTTP/1.x answer: {e}") from e
        return self.complete

    def eof(self) -> None:
        """The connection ended: fine for an answer framed by the end of the connection only."""
        if self.complete:
            return
        if self._started and self._close_framed:
            self.complete = True
            self.keep = False
            return
        raise BadAnswer("the answer was cut off")

    @property
    def body(self) -> bytes:
        return bytes(self._body)

    # -- httptools callbacks (an exception raised here comes back as HttpParserCallbackError) ---

    def on_message_begin(self) -> None:
        if self.complete:
            raise _Beyond
        self.headers = {}

    def on_status(self, status: bytes) -> None:
        self._count(len(status) + 16)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1").strip()

    def _count(self, n: int) -> None:
        self._head += n
        if self._head > MAX_HEAD:
            raise BadAnswer(f"answer head over {MAX_HEAD} bytes")

    def on_headers_complete(self) -> None:
        if self._parser.get_http_version() not in ("1.1", "1.0"):
            raise BadAnswer(f"HTTP/{self._parser.get_http_version()} answers are not read here")
        self.status = self._parser.get_status_code()
        if self.status >= 200:
            self._started = True
            self._close_framed = ("content-length" not in self.headers and "transfer-encoding" not in self.headers
                                  and self.status not in (204, 304))
            self.keep = self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        if len(self._body) + len(body) > MAX_BODY:
            raise BadAnswer(f"answer body over {MAX_BODY} bytes")
        self._body += body

    def on_message_complete(self) -> None:
        if self.status < 200:  # an interim answer (100 Continue): the real one follows
            return
        self.keep = self.keep and self._parser.should_keep_alive()
        self.complete = True


class _Beyond(Exception):
    """Bytes after the end of an answer (the connection is then not kept)."""


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class _Stale(Exception):
    """A connection failed before any byte of the answer came back."""


class HttpPool:
    """POSTs to one peer URL over kept-alive connections (see the module docstring)."""

    def __init__(self, url: str, ssl: ssl_module.SSLContext | None, user_agent: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.url = url
        self.ssl = ssl
        self._tls: ssl_module.SSLContext | None = None
        if parts.scheme == "https":
            self._tls = ssl if ssl is not None else ssl_module.create_default_context()
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._authority = parts.netloc.rpartition("@")[2]
        self._prefix = parts.path.rstrip("/")
        self._user_agent = user_agent
        self._idle: list[_Conn] = []
        self._closed = False

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> Reply:
        """POST ``body`` to the URL's path + ``path``; the answer, whatever its status.

        Raises:
            NoAnswer: nothing came back (the peer may be down).
            BadAnswer: an answer that cannot be read, or over a limit.
        """
        head = [f"POST {self._prefix}{path} HTTP/1.1", f"Host: {self._authority}",
                f"User-Agent: {self._user_agent}", f"Content-Length: {len(body)}"]
        for name, value in headers.items():
            if any(c in value for c in "\r\n\0") or any(c in name for c in "\r\n\0: "):
                raise ValueError(f"header {name!r} has a character that cannot go in a header")
            head.append(f"{name}: {value}")
        request = ("\r\n".join(head) + "\r\n\r\n").encode("utf-8") + body
        try:
            async with asyncio.timeout(TOTAL_TIMEOUT):
                for _ in range(2):
                    conn, reused = self._take()
                    if conn is None:
                        conn = await self._connect()
                    try:
                        reply, keep = await self._exchange(conn, request)
                    except _Stale as e:
                        conn.close()
                        if reused:  # the peer closed it meanwhile: once more, on a new connection
                            continue
                        raise NoAnswer(f"the connection closed before an answer ({e.__cause__ or e})") from e
                    except BaseException:
                        conn.close()
                        raise
                    if keep and not self._closed and len(self._idle) < MAX_IDLE:
                        self._idle.append(conn)
                    else:
                        conn.close()
                    return reply
                raise NoAnswer("the connection closed before an answer")  # pragma: no cover - loop returns
        except TimeoutError as e:
            raise NoAnswer(f"no answer within {TOTAL_TIMEOUT:g} s") from e

    def _take(self) -> tuple[_Conn | None, bool]:
        while self._idle:
            conn = self._idle.pop()
            # closed by the peer while idle, or it sent more after its answer: those bytes would be read
            # as the answer to the next batch (StreamReader has no public count of what it holds)
            if conn.reader.at_eof() or conn.writer.is_closing() or conn.reader._buffer:  # type: ignore[attr-defined]
                conn.close()
                continue
            return conn, True
        return None, False

    async def _connect(self) -> _Conn:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                reader, writer = await asyncio.open_connection(
                    self._host, self._port, ssl=self._tls, limit=MAX_HEAD,
                    server_hostname=self._host if self._tls is not None else None)
        except TimeoutError as e:
            raise NoAnswer(f"cannot connect within {CONNECT_TIMEOUT:g} s") from e
        except OSError as e:
            raise NoAnswer(f"cannot connect: {e}") from e
        return _Conn(reader, writer)

    async def _exchange(self, conn: _Conn, request: bytes) -> tuple[Reply, bool]:
        reader = conn.reader
        answer = AnswerParser()
        try:
            conn.writer.write(request)
            await conn.writer.drain()
            data = await reader.read(1 << 16)
        except (OSError, RuntimeError) as e:  # reset, or a transport closed under us
            raise _Stale(str(e)) from e
        if not data:
            raise _Stale("closed")
        try:
            while not answer.feed(data):
                data = await reader.read(1 << 16)
                if not data:
                    answer.eof()
                    break
        except OSError as e:
            raise BadAnswer(f"the connection failed while reading the answer: {e}") from e
        return Reply(answer.status, answer.headers, answer.body), answer.keep

    def close(self) -> None:
        """Close the kept connections; later posts open new ones."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
