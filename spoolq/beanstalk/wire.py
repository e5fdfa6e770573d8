"""The beanstalkd protocol without I/O: bytes in, command events out; replies to bytes.

Theory of operation
===================

A :class:`Decoder` is fed what a connection received (:meth:`Decoder.receive_data`)
and hands back one event at a time (:meth:`Decoder.next_event`), ``None`` while
the next one is incomplete. It never touches a socket, a clock or the spool: the
server decides what a command means. Malformed input is not an exception but an
event (:class:`BadFormat`, :class:`UnknownCommand`, :class:`ExpectedCrlf`,
:class:`JobTooBig`) carrying the reply beanstalkd gives, because beanstalkd
answers it and goes on. The one exception, :class:`WireError`, means the caller
broke the decoder's contract (fed more than :attr:`Decoder.max_buffer` bytes
without taking events out).

Replies are plain functions and constants returning bytes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from msgspec import Struct  # events as Structs: defining 30 frozen dataclasses costs ~20 ms at start-up

from ..errors import SpoolqError
from .names import tube_channel, valid_tube

__all__ = [
    "LINE_MAX", "WireError", "Decoder", "Event", "parse_command", "fast_command",
    "PutStart", "Put", "Use", "Reserve", "ReserveWithTimeout", "ReserveJob", "Delete", "Release", "Bury", "Touch",
    "Watch", "Ignore", "Peek", "PeekReady", "PeekDelayed", "PeekBuried", "Kick", "KickJob", "StatsJob",
    "StatsTube", "Stats", "ListTubes", "ListTubeUsed", "ListTubesWatched", "PauseTube", "Quit",
    "BadFormat", "UnknownCommand", "ExpectedCrlf", "JobTooBig",
]

LINE_MAX: Final = 224  # beanstalkd's command buffer, "\r\n" included
U32: Final = (1 << 32) - 1
U64: Final = (1 << 64) - 1
I64: Final = (1 << 63) - 1  # the largest job number SQLite can hold
INT_MAX: Final = (1 << 31) - 1
DEFAULT_MAX_JOB_SIZE: Final = (1 << 16) - 1
READ_SLACK: Final = 1 << 20  # what may arrive beyond the frame being decoded before the caller stops reading


class WireError(SpoolqError):
    """The decoder was fed more than it may hold (its caller should have stopped reading)."""


# -- events ---------------------------------------------------------------------------------------


class PutStart(Struct, frozen=True):
    """A put's command line was read; its body follows (then :class:`Put`, :class:`ExpectedCrlf`
    or, when ``too_big``, :class:`JobTooBig`). beanstalkd counts the command at this point."""

    size: int
    too_big: bool


class Put(Struct, frozen=True):
    pri: int
    delay: int
    ttr: int  # at least 1, as beanstalkd makes it
    body: bytes


class Use(Struct, frozen=True):
    tube: str


class Reserve(Struct, frozen=True):
    pass


class ReserveWithTimeout(Struct, frozen=True):
    timeout: int  # seconds; negative: no timeout (as beanstalkd treats it)


class ReserveJob(Struct, frozen=True):
    job: int


class Delete(Struct, frozen=True):
    job: int


class Release(Struct, frozen=True):
    job: int
    pri: int
    delay: int


class Bury(Struct, frozen=True):
    job: int
    pri: int


class Touch(Struct, frozen=True):
    job: int


class Watch(Struct, frozen=True):
    tube: str


class Ignore(Struct, frozen=True):
    tube: str


class Peek(Struct, frozen=True):
    job: int


class PeekReady(Struct, frozen=True):
    pass


class PeekDelayed(Struct, frozen=True):
    pass


class PeekBuried(Struct, frozen=True):
    pass


class Kick(Struct, frozen=True):
    bound: int


class KickJob(Struct, frozen=True):
    job: int


class StatsJob(Struct, frozen=True):
    job: int


class StatsTube(Struct, frozen=True):
    tube: str


class Stats(Struct, frozen=True):
    pass


class ListTubes(Struct, frozen=True):
    pass


class ListTubeUsed(Struct, frozen=True):
    pass


class ListTubesWatched(Struct, frozen=True):
    pass


class PauseTube(Struct, frozen=True):
    tube: str
    delay: int


class Quit(Struct, frozen=True):
    pass


class BadFormat(Struct, frozen=True):
    """A known command with bad arguments, an overlong line, or a NUL byte: ``BAD_FORMAT``.

    ``counted``: the command beanstalkd counts anyway (a put whose four numbers read well
    but with garbage after them), else empty.
    """

    counted: str = ""


class UnknownCommand(Struct, frozen=True):
    pass


class ExpectedCrlf(Struct, frozen=True):
    """A put whose body was not followed by CRLF (the body is dropped): ``EXPECTED_CRLF``."""


class JobTooBig(Struct, frozen=True):
    """A put larger than the maximum job size; its body was read and thrown away: ``JOB_TOO_BIG``."""


Event = (PutStart | Put | Use | Reserve | ReserveWithTimeout | ReserveJob | Delete | Release | Bury | Touch | Watch
         | Ignore | Peek | PeekReady | PeekDelayed | PeekBuried | Kick | KickJob | StatsJob | StatsTube | Stats
         | ListTubes | ListTubeUsed | ListTubesWatched | PauseTube | Quit | BadFormat | UnknownCommand
         | ExpectedCrlf | JobTooBig)

# what the server must count as a command of that name (beanstalkd's cmd-* counters)
COMMAND_NAMES: Final[dict[type, str]] = {
    PutStart: "put", Use: "use", Reserve: "reserve",
    ReserveWithTimeout: "reserve-with-timeout", ReserveJob: "reserve-job", Delete: "delete", Release: "release",
    Bury: "bury", Touch: "touch", Watch: "watch", Ignore: "ignore", Peek: "peek", PeekReady: "peek-ready",
    PeekDelayed: "peek-delayed", PeekBuried: "peek-buried", Kick: "kick", KickJob: "kick-job",
    StatsJob: "stats-job", StatsTube: "stats-tube", Stats: "stats", ListTubes: "list-tubes",
    ListTubeUsed: "list-tube-used", ListTubesWatched: "list-tubes-watched", PauseTube: "pause-tube",
}


# -- numbers, the way beanstalkd reads them ------------------------------------------------


def _num(s: str, limit: int, *, last: bool) -> tuple[int, str]:
    """Read a decimal after optional spaces. ``last``: nothing may follow. Raises ValueError."""
    i = 0
    while i < len(s) and s[i] == " ":
        i += 1
    j = i
    while j < len(s) and "0" <= s[j] <= "9":
        j += 1
    if j == i:
        raise ValueError
    v = int(s[i:j])
    if v > limit or (last and j != len(s)):
        raise ValueError
    return v, s[j:]


def _strtoul(s: str, bits: int, *, signed: bool = False) -> int:
    """Read a number as C's ``strtoul``/``strtol`` do (beanstalkd's ``kick`` and ``reserve-with-timeout``):
    leading white space, an optional sign, then digits; whatever follows is ignored. No digits, or a
    value beyond 64 bits: ValueError (beanstalkd: BAD_FORMAT). The unsigned result wraps to ``bits``
    bits (``-1`` is the largest value), as the C cast does."""
    m = _STRTOL.match(s)
    if m is None:
        raise ValueError
    v = int(m.group(0))
    if signed:
        if not -(1 << 63) <= v < (1 << 63):
            raise ValueError
        return v
    if abs(v) > U64:
        raise ValueError
    return (v % (1 << 64)) % (1 << bits)


_STRTOL = re.compile(r"[ \t\n\v\f\r]*[+-]?[0-9]+")


def _job_id(s: str, *, last: bool) -> tuple[int, str]:
    """A job id (u64). Ids beyond what the spool can store belong to no job: they read as 0 (never a job)."""
    job, rest = _num(s, U64, last=last)
    return (job if job <= I64 else 0), rest


def _name(rest: str) -> str:
    """A tube name right after the command's one space ("use  x" is BAD_FORMAT, as in beanstalkd)."""
    if not valid_tube(rest) or tube_channel(rest) is None:
        raise ValueError
    return rest


def _nothing(rest: str) -> None:
    if rest:
        raise ValueError


_PUT = re.compile(r" *([0-9]+) +([0-9]+) +([0-9]+) +([0-9]+)")


class _PutHeader:
    """A parsed put line, waiting for its body (not an event)."""

    __slots__ = ("delay", "pri", "size", "too_big", "ttr")

    def __init__(self, pri: int, delay: int, ttr: int, size: int, too_big: bool) -> None:
        self.pri, self.delay, self.ttr, self.size, self.too_big = pri, delay, ttr, size, too_big


def _put(rest: str, max_job_size: int) -> _PutHeader | BadFormat:
    m = _PUT.fullmatch(rest)  # the common, well-formed case; anything else takes the careful path
    if m is not None and all(len(g) < 10 for g in m.groups()):
        pri, delay, ttr, size = map(int, m.groups())
        rest = ""
    else:
        pri, rest = _num(rest, U32, last=False)
        delay, rest = _num(rest, U32, last=False)
        ttr, rest = _num(rest, U32, last=False)
        size, rest = _num(rest, U32, last=False)
    if size > max_job_size:  # checked before the rest of the line, as beanstalkd does
        return _PutHeader(pri, delay, ttr, size, True)
    if rest:
        return BadFormat("put")
    return _PutHeader(pri, delay, max(1, ttr), size, False)


def _pause(rest: str) -> PauseTube:
    if not rest.startswith(" "):
        raise ValueError
    name, _, num = rest.lstrip(" ").partition(" ")
    if not valid_tube(name) or tube_channel(name) is None:
        raise ValueError
    delay, _ = _num(num, U32, last=True)
    return PauseTube(name, delay)


def _rwt(rest: str) -> ReserveWithTimeout:
    # beanstalkd reads it with strtol: "1.5" is 1, "0 " is 0; a negative timeout waits like reserve
    return ReserveWithTimeout(_strtoul(rest, 64, signed=True))


def _release(rest: str) -> Release:
    job, rest = _job_id(rest, last=False)
    pri, rest = _num(rest, U32, last=False)
    delay, _ = _num(rest, U32, last=True)
    return Release(job, pri, delay)


def _bury(rest: str) -> Bury:
    job, rest = _job_id(rest, last=False)
    pri, _ = _num(rest, U32, last=True)
    return Bury(job, pri)


def _jid(rest: str) -> int:
    return _job_id(rest, last=True)[0]


def _simple(inst: Event) -> Callable[[str], Event]:
    """A command without arguments: anything after its name is BAD_FORMAT."""

    def parse(rest: str) -> Event:
        _nothing(rest)
        return inst

    return parse


# Checked in this order, as beanstalkd does: longer names that share a prefix come first.
_COMMANDS: Final[list[tuple[str, Callable[[str], Event] | None]]] = [
    ("put ", None),  # handled by the decoder (a body follows)
    ("peek ", lambda r: Peek(_jid(r))),
    ("peek-ready", _simple(PeekReady())),
    ("peek-delayed", _simple(PeekDelayed())),
    ("peek-buried", _simple(PeekBuried())),
    ("reserve-with-timeout ", _rwt),
    ("reserve-job ", lambda r: ReserveJob(_jid(r))),
    ("reserve", _simple(Reserve())),
    ("delete ", lambda r: Delete(_jid(r))),
    ("release ", _release),
    ("bury ", _bury),
    ("kick ", lambda r: Kick(_strtoul(r, 32))),
    ("kick-job ", lambda r: KickJob(_jid(r))),
    ("touch ", lambda r: Touch(_jid(r))),
    ("stats-job ", lambda r: StatsJob(_jid(r))),
    ("stats-tube ", lambda r: StatsTube(_name(r))),
    ("stats", _simple(Stats())),
    ("use ", lambda r: Use(_name(r))),
    ("watch ", lambda r: Watch(_name(r))),
    ("ignore ", lambda r: Ignore(_name(r))),
    ("list-tubes-watched", _simple(ListTubesWatched())),
    ("list-tube-used", _simple(ListTubeUsed())),
    ("list-tubes", _simple(ListTubes())),
    ("quit", lambda _r: Quit()),  # beanstalkd checks nothing after it: "quit now" and "quitx" close too
    ("pause-tube", _pause),
]


def parse_command(line: bytes, max_job_size: int = DEFAULT_MAX_JOB_SIZE) -> Event | _PutHeader:
    """One command line (without its CRLF) as an event; a put's header as a :class:`_PutHeader`."""
    if b"\0" in line:
        return BadFormat()
    text = line.decode("latin-1")
    for prefix, parse in _COMMANDS:
        if text.startswith(prefix):
            rest = text[len(prefix):]
            try:
                if parse is None:
                    return _put(rest, max_job_size)
                return parse(rest)
            except ValueError:
                return BadFormat()
    return UnknownCommand()


# -- the fast path: one whole command in one read ---------------------------------------------

# a put line as clients write it: numbers of at most 9 digits (below 2**32), single spaces
FAST_PUT: Final = re.compile(rb"put ([0-9]{1,9}) ([0-9]{1,9}) ([0-9]{1,9}) ([0-9]{1,9})\r\n")
_RESERVE: Final = Reserve()


def fast_command(data: bytes, max_job_size: int = DEFAULT_MAX_JOB_SIZE) -> Put | Reserve | Delete | None:
    """``data`` if it is exactly one plainly written ``put`` (with its body), ``reserve`` or ``delete``, as a
    client that waits for each answer sends them; else None (the :class:`Decoder` takes it). For these
    frames it gives what the decoder gives (a put's :class:`PutStart` is left to the caller)."""
    if data.startswith(b"put "):
        m = FAST_PUT.match(data)
        if m is None:
            return None
        start = m.end()
        size = int(m[4])
        if size > max_job_size or len(data) != start + size + 2 or not data.endswith(b"\r\n"):
            return None
        return Put(int(m[1]), int(m[2]), max(1, int(m[3])), data[start:start + size])
    if data == b"reserve\r\n":
        return _RESERVE
    if data.startswith(b"delete ") and data.endswith(b"\r\n") and 9 < len(data) < 28 and data[7:-2].isdigit():
        return Delete(int(data[7:-2]))  # at most 18 digits: a job number the spool can hold
    return None


# -- the decoder ------------------------------------------------------------------------------

# Frames, as beanstalkd reads them (a line is at most LINE_MAX = 224 bytes, CRLF included):
#
#   command:  <name>[ <arg>]*\r\n                    e.g. "delete 17\r\n"
#             |<------------- <= 224 ------------->|
#
#   put:      put <pri> <delay> <ttr> <bytes>\r\n<body: exactly <bytes> bytes>\r\n
#             |<----------- <= 224 ----------->| |<------- bytes ------->|<2>|
#
# - A line longer than 224 bytes is thrown away up to its CRLF and answered BAD_FORMAT
#   (once its end arrives; a trailing "\r" is kept in case the "\n" comes next).
# - A put with <bytes> > max_job_size: the body and its CRLF are read and thrown away,
#   then JOB_TOO_BIG.
# - A body not followed by "\r\n": EXPECTED_CRLF (those two bytes are consumed).


class Decoder:
    """Turns the bytes of one connection into events, in order.

    Args:
        max_job_size: puts with a larger body are answered ``JOB_TOO_BIG``.
        max_buffer: bytes held beyond the frame being decoded; feeding more raises
            :class:`WireError` (a server stops reading while it holds unanswered commands).
    """

    def __init__(self, max_job_size: int = DEFAULT_MAX_JOB_SIZE, *, max_buffer: int = READ_SLACK) -> None:
        self.max_job_size = max_job_size
        self.max_buffer = max_buffer
        self._buf = bytearray()
        self._put: _PutHeader | None = None  # a put whose body is being read
        self._skip = 0  # body bytes still to throw away (JOB_TOO_BIG)
        self._discard_line = False

    @property
    def buffered(self) -> int:
        """Bytes received and not decoded yet."""
        return len(self._buf)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Add received bytes. Raises :class:`WireError` past the buffer cap."""
        need = (self._put.size + 2) if self._put is not None and not self._put.too_big else LINE_MAX
        if len(self._buf) + len(data) > need + self.max_buffer:
            raise WireError(f"more than {need + self.max_buffer} bytes buffered",
                            hint="stop reading until the events already decoded are handled")
        self._buf += data

    def next_event(self) -> Event | None:
        """The next complete event, or ``None`` until more bytes arrive."""
        buf = self._buf
        while True:
            if self._skip:
                n = min(self._skip, len(buf))
                del buf[:n]
                self._skip -= n
                if self._skip:
                    return None
                return JobTooBig()
            if self._put is not None:
                h = self._put
                if len(buf) < h.size + 2:
                    return None
                body = bytes(buf[:h.size])
                crlf = bytes(buf[h.size:h.size + 2])
                del buf[:h.size + 2]
                self._put = None
                if crlf != b"\r\n":
                    return ExpectedCrlf()
                return Put(h.pri, h.delay, h.ttr, body)
            end = buf.find(b"\r\n")
            if self._discard_line:
                if end < 0:
                    if len(buf) > 1:
                        del buf[:-1]  # keep a trailing "\r"
                    return None
                del buf[:end + 2]
                self._discard_line = False
                return BadFormat()
            if end < 0 or end + 2 > LINE_MAX:
                if end < 0 and len(buf) < LINE_MAX:
                    return None  # wait for the rest of the line
                self._discard_line = True  # overlong: throw it away up to its end
                if end >= 0:
                    continue
                del buf[:-1]
                return None
            line = bytes(buf[:end])
            del buf[:end + 2]
            ev = parse_command(line, self.max_job_size)
            if isinstance(ev, _PutHeader):
                if ev.too_big:
                    self._skip = ev.size + 2
                else:
                    self._put = ev
                return PutStart(ev.size, ev.too_big)
            return ev

    @property
    def idle(self) -> bool:
        """Nothing buffered and no frame under way: the next bytes start a command."""
        return not self._buf and self._put is None and not self._skip and not self._discard_line

    @property
    def in_put(self) -> bool:
        """A put's line was read and its body (or the skipping of it) is under way."""
        return self._put is not None or self._skip > 0


# -- replies ---------------------------------------------------------------------------------

OUT_OF_MEMORY: Final = b"OUT_OF_MEMORY\r\n"
INTERNAL_ERROR: Final = b"INTERNAL_ERROR\r\n"
BAD_FORMAT: Final = b"BAD_FORMAT\r\n"
UNKNOWN_COMMAND: Final = b"UNKNOWN_COMMAND\r\n"
EXPECTED_CRLF: Final = b"EXPECTED_CRLF\r\n"
JOB_TOO_BIG: Final = b"JOB_TOO_BIG\r\n"
DRAINING: Final = b"DRAINING\r\n"
NOT_FOUND: Final = b"NOT_FOUND\r\n"
DELETED: Final = b"DELETED\r\n"
RELEASED: Final = b"RELEASED\r\n"
BURIED: Final = b"BURIED\r\n"
TOUCHED: Final = b"TOUCHED\r\n"
KICKED: Final = b"KICKED\r\n"
PAUSED: Final = b"PAUSED\r\n"
TIMED_OUT: Final = b"TIMED_OUT\r\n"
DEADLINE_SOON: Final = b"DEADLINE_SOON\r\n"
NOT_IGNORED: Final = b"NOT_IGNORED\r\n"

ERROR_REPLIES: Final[dict[type, bytes]] = {
    BadFormat: BAD_FORMAT, UnknownCommand: UNKNOWN_COMMAND, ExpectedCrlf: EXPECTED_CRLF, JobTooBig: JOB_TOO_BIG,
}


def inserted(job: int) -> bytes:
    return b"INSERTED %d\r\n" % job


def buried_id(job: int) -> bytes:
    """``BURIED <id>``: a put the server could not queue (beanstalkd: out of memory for the heap)."""
    return b"BURIED %d\r\n" % job


def reserved(job: int, body: bytes) -> bytes:
    return b"RESERVED %d %d\r\n%s\r\n" % (job, len(body), body)


def found(job: int, body: bytes) -> bytes:
    return b"FOUND %d %d\r\n%s\r\n" % (job, len(body), body)


def kicked(n: int) -> bytes:
    return b"KICKED %d\r\n" % n


def using(tube: str) -> bytes:
    return f"USING {tube}\r\n".encode()


def watching(n: int) -> bytes:
    return b"WATCHING %d\r\n" % n


def ok(data: bytes) -> bytes:
    return b"OK %d\r\n%s\r\n" % (len(data), data)


def yaml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def yaml_dict(pairs: list[tuple[str, object]]) -> bytes:
    """beanstalkd's YAML mapping: ``---`` then ``key: value`` lines (strings already quoted)."""
    return ("---\n" + "".join(f"{k}: {v}\n" for k, v in pairs)).encode()


def yaml_list(items: list[str]) -> bytes:
    return ("---\n" + "".join(f"- {x}\n" for x in items)).encode()
