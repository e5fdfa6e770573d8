"""The forwarder's HTTP/1.1 client: one POST per batch on kept-alive connections (issue 15).

Why not aiohttp's client, which the daemon uses for everything else (probes, hellos): a POST through
``ClientSession`` cost 100-170 us of CPU on this kind of machine (its request and response objects,
header merging, cookies, tracing hooks), a POST written and read here about 10 us. At 1,000 batches a
second that was a sixth of the sending daemon's CPU, and the time a batch waited on a busy core
before its bytes left.

What it speaks is small, because the other end is a spoolq node (or a proxy in front of one):

* requests: ``POST`` with ``Content-Length``, never chunked, never ``Expect``;
* responses: a status line and headers (at most ``MAX_HEAD`` bytes), interim ``1xx`` answers
  skipped, a body framed by ``Content-Length``, by ``Transfer-Encoding: chunked``, or by the end of
  the connection, at most ``MAX_BODY`` bytes;
* connections: kept for the next batch unless the answer says ``Connection: close``, is HTTP/1.0 or
  is framed by the end of the connection. A kept connection the peer closed meanwhile is found
  before it is used when possible; if it fails before any byte of an answer came back, the batch is
  sent once more on a new connection (a batch is idempotent: the receiver drops ids it has seen).

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

__all__ = ["BadAnswer", "HttpPool", "NoAnswer", "Reply", "parse_head"]

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


def parse_head(head: bytes) -> tuple[int, bool, dict[str, str]]:
    """The status line and headers of an answer, up to and including the empty line (no I/O).

    ::

        HTTP/1.1 200 OK\\r\\n            version, status (3 digits), reason (ignored)
        Content-Length: 12\\r\\n         name ":" value, once per header (no folded lines)
        \\r\\n

    Returns:
        ``(status, keep_alive_allowed, headers)``: keep-alive is allowed for HTTP/1.1 without
        ``Connection: close``.

    Raises:
        BadAnswer: anything else.
    """
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError as e:  # pragma: no cover - latin-1 decodes every byte
        raise BadAnswer("undecodable answer head") from e
    lines = text.split("\r\n")
    if len(lines) < 3 or lines[-1] != "" or lines[-2] != "":
        raise BadAnswer("answer head does not end with an empty line")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not code.isdigit() or rest[3:4] not in ("", " "):
        raise BadAnswer(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:-2]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or line[:1] in (" ", "\t"):
            raise BadAnswer(f"bad header line: {line[:80]!r}")
        headers[name.lower()] = value.strip()
    keep = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
    return int(code), keep, headers


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
            if conn.reader.at_eof() or conn.writer.is_closing():  # closed by the peer while idle
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
        try:
            conn.writer.write(request)
            await conn.writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as e:
            if e.partial:
                raise BadAnswer("the answer's head was cut off") from e
            raise _Stale("closed") from e
        except (OSError, RuntimeError) as e:  # reset, or a transport closed under us
            raise _Stale(str(e)) from e
        except asyncio.LimitOverrunError as e:
            raise BadAnswer(f"answer head over {MAX_HEAD} bytes") from e
        try:
            status, keep, headers = parse_head(head)
            while 100 <= status < 200:  # an interim answer: the real one follows
                head = await reader.readuntil(b"\r\n\r\n")
                status, keep, headers = parse_head(head)
            body, framed = await self._body(reader, status, headers)
        except asyncio.IncompleteReadError as e:
            raise BadAnswer("the answer was cut off") from e
        except asyncio.LimitOverrunError as e:
            raise BadAnswer(f"a line of the answer is over {MAX_HEAD} bytes") from e
        except OSError as e:
            raise BadAnswer(f"the connection failed while reading the answer: {e}") from e
        return Reply(status, headers, body), keep and framed

    @staticmethod
    async def _body(reader: asyncio.StreamReader, status: int, headers: dict[str, str]) -> tuple[bytes, bool]:
        """The answer's body, and whether its end was framed (the connection may be kept)."""
        te = headers.get("transfer-encoding")
        if te is not None:
            if te.lower() != "chunked":
                raise BadAnswer(f"unsupported transfer-encoding {te[:40]!r}")
            return await _chunked(reader), True
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit() or len(length) > 12:
                raise BadAnswer(f"bad content-length {length[:40]!r}")
            n = int(length)
            if n > MAX_BODY:
                raise BadAnswer(f"answer body of {n} bytes is over {MAX_BODY}")
            return await reader.readexactly(n), True
        if status in (204, 304):
            return b"", True
        body = bytearray()
        while chunk := await reader.read(1 << 16):  # framed by the end of the connection
            body += chunk
            if len(body) > MAX_BODY:
                raise BadAnswer(f"answer body over {MAX_BODY} bytes")
        return bytes(body), False

    def close(self) -> None:
        """Close the kept connections; later posts open new ones."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    """A ``Transfer-Encoding: chunked`` body: hex size line, data, CRLF ... a 0 size, trailers, CRLF."""
    body = bytearray()
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line.split(b";", 1)[0].strip()
        if not size_text or len(size_text) > 8 or any(c not in b"0123456789abcdefABCDEF" for c in size_text):
            raise BadAnswer(f"bad chunk size line {line[:40]!r}")
        size = int(size_text, 16)
        if size == 0:
            trailers = 0
            while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                trailers += len(line)
                if trailers > MAX_HEAD:
                    raise BadAnswer(f"trailers over {MAX_HEAD} bytes")
            return bytes(body)
        if len(body) + size > MAX_BODY:
            raise BadAnswer(f"answer body over {MAX_BODY} bytes")
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise BadAnswer("a chunk does not end with CRLF")
