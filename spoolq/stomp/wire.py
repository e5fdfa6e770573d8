"""STOMP 1.0/1.1/1.2 framing without I/O: bytes in -> frames, frames -> bytes.

Draw the bytes
==============

::

    COMMAND EOL                      EOL   = "\\n" or "\\r\\n" (the "\\r" only in 1.2)
    name:value EOL                   one line per header; repeated names: the FIRST wins
    ...                              values escaped (1.1/1.2, not in CONNECT/CONNECTED):
    EOL                                  "\\\\r"->CR (1.2)  "\\\\n"->LF  "\\\\c"->":"  "\\\\\\\\"->"\\\\"
    body bytes ... NUL               with content-length: exactly that many bytes (NULs
                                     allowed), then NUL; without: up to the first NUL
    EOL*                             EOLs between frames are heart-beats

Rules
-----

* Hard limits: a frame (headers + body) larger than ``max_frame_size``, more
  than ``max_headers`` headers, or a header line longer than
  ``max_header_length`` raises :class:`StompWireError` as soon as the buffer
  shows it, so memory stays bounded whatever a peer sends.
* Every malformed input raises :class:`StompWireError` and nothing else.
* 1.0 has no escaping at all; 1.1 has ``\\n \\c \\\\``; 1.2 adds ``\\r``. An
  undefined escape is an error in 1.1 and 1.2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from ..errors import CodecError

__all__ = [
    "HEARTBEAT",
    "Frame",
    "Heartbeat",
    "Parser",
    "StompWireError",
    "encode",
    "escape",
    "unescape",
]

MAX_FRAME_SIZE: Final = 2 * 1024 * 1024
MAX_HEADERS: Final = 100
MAX_HEADER_LENGTH: Final = 8 * 1024

CLIENT_COMMANDS: Final = frozenset({
    "CONNECT", "STOMP", "SEND", "SUBSCRIBE", "UNSUBSCRIBE", "ACK", "NACK",
    "BEGIN", "COMMIT", "ABORT", "DISCONNECT",
})
SERVER_COMMANDS: Final = frozenset({"CONNECTED", "MESSAGE", "RECEIPT", "ERROR"})
_UNESCAPED: Final = frozenset({"CONNECT", "CONNECTED"})  # STOMP 1.2: these frames do not escape


class StompWireError(CodecError):
    """Bytes that are not a valid STOMP frame, or a frame over a limit."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One STOMP frame. ``headers`` keep their order and repeats; :meth:`get` gives the first."""

    command: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    _index: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for k, v in self.headers:
            self._index.setdefault(k, v)

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._index.get(name, default)

    def __contains__(self, name: str) -> bool:
        return name in self._index


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """One EOL between frames."""


HEARTBEAT: Final = Heartbeat()

_ESC_12 = {"\\": "\\\\", "\r": "\\r", "\n": "\\n", ":": "\\c"}
_UNESC_12 = {"\\": "\\", "r": "\r", "n": "\n", "c": ":"}
_UNESC_11 = {"\\": "\\", "n": "\n", "c": ":"}


def escape(value: str, version: str = "1.2") -> str:
    """Escape a header name or value for ``version`` (1.0: no escaping; newlines become spaces)."""
    if version == "1.0":
        return value.replace("\r", " ").replace("\n", " ")
    if not any(c in value for c in "\\\r\n:"):
        return value
    if version == "1.1":
        value = value.replace("\r", " ")
    return "".join(_ESC_12.get(c, c) for c in value)


def unescape(value: str, version: str = "1.2") -> str:
    """Undo :func:`escape`; raises :class:`StompWireError` on an undefined escape (1.1/1.2)."""
    if version == "1.0" or "\\" not in value:
        return value
    table = _UNESC_12 if version == "1.2" else _UNESC_11
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c == "\\":
            if i + 1 >= n or value[i + 1] not in table:
                raise StompWireError(f"undefined escape sequence in header {value[:40]!r}", code="bad_escape")
            out.append(table[value[i + 1]])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def encode(frame: Frame, version: str = "1.2", *, content_length: bool = True) -> bytes:
    """Frame -> bytes. Adds ``content-length`` for a non-empty body unless the frame has one."""
    esc = frame.command not in _UNESCAPED
    parts = [frame.command, "\n"]
    for k, v in frame.headers:
        if esc:
            k, v = escape(k, version), escape(v, version)
        parts += [k, ":", v, "\n"]
    if content_length and frame.body and "content-length" not in frame:
        parts += ["content-length:", str(len(frame.body)), "\n"]
    parts.append("\n")
    return "".join(parts).encode() + frame.body + b"\0"


class Parser:
    """Incremental STOMP parser. Feed it bytes; it returns the complete frames and heart-beats.

    ``version`` sets the escaping rules and may change after CONNECT (the
    server sets it to the negotiated version).
    """

    def __init__(
        self,
        *,
        version: str = "1.2",
        max_frame_size: int = MAX_FRAME_SIZE,
        max_headers: int = MAX_HEADERS,
        max_header_length: int = MAX_HEADER_LENGTH,
        commands: frozenset[str] = CLIENT_COMMANDS,
    ) -> None:
        self.version = version
        self.max_frame_size = max_frame_size
        self.max_headers = max_headers
        self.max_header_length = max_header_length
        self.commands = commands
        self._buf = bytearray()
        #: set when bad bytes follow good frames in one feed; the next feed raises it
        self.error: StompWireError | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame | Heartbeat]:
        """Add bytes; return every frame and heart-beat now complete, in order.

        Raises:
            StompWireError: malformed input or a limit exceeded. The parser is
                then unusable (the connection must close). When good frames come
                before the bad bytes, they are returned and ``error`` is set.
        """
        if self.error is not None:
            raise self.error
        self._buf += data
        out: list[Frame | Heartbeat] = []
        while True:
            try:
                ev = self._next()
            except StompWireError as e:
                if not out:
                    raise
                self.error = e  # the frames before the bad bytes are good: return them first
                return out
            if ev is None:
                return out
            out.append(ev)

    def _next(self) -> Frame | Heartbeat | None:
        buf = self._buf
        if not buf:
            return None
        if buf[0] == 0x0A:
            del buf[:1]
            return HEARTBEAT
        if buf[0] == 0x0D:
            if len(buf) < 2:
                return None
            if buf[1] != 0x0A:
                raise StompWireError("a CR not followed by LF between frames", code="malformed")
            del buf[:2]
            return HEARTBEAT
        end = buf.find(b"\n\n")
        end2 = buf.find(b"\n\r\n")
        if end2 != -1 and (end == -1 or end2 < end):
            head_end, body_start = end2, end2 + 3
        elif end != -1:
            head_end, body_start = end, end + 2
        else:
            self._check_partial_head()
            return None
        if head_end + 1 > self.max_frame_size:
            raise StompWireError(f"frame headers over the limit of {self.max_frame_size} bytes", code="too_large")
        command, headers = self._head(bytes(buf[:head_end + 1]))
        clen = next((v for k, v in headers if k == "content-length"), None)
        if clen is not None:
            if not clen.isdigit() or len(clen) > 12:
                raise StompWireError(f"content-length {clen[:20]!r} is not a non-negative integer", code="malformed")
            n = int(clen)
            if body_start + n > self.max_frame_size:
                raise StompWireError(f"frame of {body_start + n} bytes is over the limit of "
                                     f"{self.max_frame_size}", code="too_large")
            if len(buf) < body_start + n + 1:
                return None
            if buf[body_start + n] != 0:
                raise StompWireError("frame body is not followed by NUL after content-length bytes",
                                     code="malformed")
            body = bytes(buf[body_start:body_start + n])
            del buf[:body_start + n + 1]
        else:
            nul = buf.find(b"\0", body_start)
            if nul == -1:
                if len(buf) > self.max_frame_size:
                    raise StompWireError(f"frame over the limit of {self.max_frame_size} bytes", code="too_large")
                return None
            if nul > self.max_frame_size:
                raise StompWireError(f"frame over the limit of {self.max_frame_size} bytes", code="too_large")
            body = bytes(buf[body_start:nul])
            del buf[:nul + 1]
        return Frame(command, tuple(headers), body)

    def _check_partial_head(self) -> None:
        buf = self._buf
        if len(buf) > self.max_frame_size:
            raise StompWireError(f"frame headers over the limit of {self.max_frame_size} bytes", code="too_large")
        if buf.count(b"\n") > self.max_headers + 1:
            raise StompWireError(f"more than {self.max_headers} headers", code="too_many_headers")
        last = buf.rfind(b"\n")
        if len(buf) - last - 1 > self.max_header_length:
            raise StompWireError(f"a header line is longer than {self.max_header_length} bytes",
                                 code="header_too_long")
        if b"\0" in buf:
            raise StompWireError("NUL inside frame headers", code="malformed")

    def _head(self, raw: bytes) -> tuple[str, list[tuple[str, str]]]:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise StompWireError("frame headers are not UTF-8", code="malformed") from e
        lines = text.split("\n")[:-1]
        lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
        command = lines[0]
        if command not in self.commands:
            raise StompWireError(f"unknown command {command[:40]!r}", code="unknown_command")
        if len(lines) - 1 > self.max_headers:
            raise StompWireError(f"{len(lines) - 1} headers is more than the limit of {self.max_headers}",
                                 code="too_many_headers")
        esc = command not in _UNESCAPED
        headers: list[tuple[str, str]] = []
        for ln in lines[1:]:
            if len(ln) > self.max_header_length:
                raise StompWireError(f"a header line is longer than {self.max_header_length} bytes",
                                     code="header_too_long")
            name, sep, value = ln.partition(":")
            if not sep:
                raise StompWireError(f"header line {ln[:40]!r} has no colon", code="malformed")
            if "\0" in ln:
                raise StompWireError("NUL inside frame headers", code="malformed")
            if esc:
                name, value = unescape(name, self.version), unescape(value, self.version)
            headers.append((name, value))
        return command, headers
