"""The beanstalkd wire protocol, sans I/O: bytes are fed to the decoder, replies compared as bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spoolq.beanstalk import wire
from spoolq.beanstalk.wire import (
    BadFormat,
    Bury,
    Decoder,
    Delete,
    Event,
    ExpectedCrlf,
    Ignore,
    JobTooBig,
    Kick,
    KickJob,
    ListTubes,
    ListTubesWatched,
    ListTubeUsed,
    PauseTube,
    Peek,
    PeekBuried,
    PeekDelayed,
    PeekReady,
    Put,
    PutStart,
    Quit,
    Release,
    Reserve,
    ReserveJob,
    ReserveWithTimeout,
    Stats,
    StatsJob,
    StatsTube,
    Touch,
    UnknownCommand,
    Use,
    Watch,
    WireError,
)


def events(data: bytes, *, max_job_size: int = wire.DEFAULT_MAX_JOB_SIZE) -> list[Event]:
    d = Decoder(max_job_size)
    d.receive_data(data)
    out = []
    while (ev := d.next_event()) is not None:
        out.append(ev)
    return out


# (bytes on the wire, the events they decode to)
SIMPLE_CASES: list[tuple[bytes, list[Event]]] = [
    (b"put 1 2 3 4\r\nabcd\r\n", [PutStart(4, False), Put(1, 2, 3, b"abcd")]),
    (b"put 0 0 0 0\r\n\r\n", [PutStart(0, False), Put(0, 0, 1, b"")]),  # ttr 0 is read as 1
    (b"put 4294967295 0 60 2\r\n\r\n\r\n", [PutStart(2, False), Put(4294967295, 0, 60, b"\r\n")]),
    (b"use foo\r\n", [Use("foo")]),
    (b"use a+b/c;d$e(f)\r\n", [Use("a+b/c;d$e(f)")]),
    (b"reserve\r\n", [Reserve()]),
    (b"reserve-with-timeout 5\r\n", [ReserveWithTimeout(5)]),
    (b"reserve-job 7\r\n", [ReserveJob(7)]),
    (b"delete 9\r\n", [Delete(9)]),
    (b"delete 18446744073709551615\r\n", [Delete(0)]),  # beyond what the spool holds: no job
    (b"release 3 10 20\r\n", [Release(3, 10, 20)]),
    (b"bury 3 10\r\n", [Bury(3, 10)]),
    (b"touch 3\r\n", [Touch(3)]),
    (b"watch t\r\n", [Watch("t")]),
    (b"ignore t\r\n", [Ignore("t")]),
    (b"peek 1\r\n", [Peek(1)]),
    (b"peek-ready\r\n", [PeekReady()]),
    (b"peek-delayed\r\n", [PeekDelayed()]),
    (b"peek-buried\r\n", [PeekBuried()]),
    (b"kick 10\r\n", [Kick(10)]),
    (b"kick 1.5\r\n", [Kick(1)]),  # numbers of kick and reserve-with-timeout read as strtoul does
    (b"kick -1\r\n", [Kick(4294967295)]),
    (b"kick 99999999999\r\n", [Kick(99999999999 % (1 << 32))]),
    (b"reserve-with-timeout 0 \r\n", [ReserveWithTimeout(0)]),
    (b"reserve-with-timeout -1\r\n", [ReserveWithTimeout(-1)]),
    (b"kick-job 4\r\n", [KickJob(4)]),
    (b"stats-job 4\r\n", [StatsJob(4)]),
    (b"stats-tube default\r\n", [StatsTube("default")]),
    (b"stats\r\n", [Stats()]),
    (b"list-tubes\r\n", [ListTubes()]),
    (b"list-tube-used\r\n", [ListTubeUsed()]),
    (b"list-tubes-watched\r\n", [ListTubesWatched()]),
    (b"pause-tube t 30\r\n", [PauseTube("t", 30)]),
    (b"quit\r\n", [Quit()]),
    (b"quit now\r\n", [Quit()]),  # beanstalkd checks nothing after "quit"
    (b"quitx\r\n", [Quit()]),
]

# every error reply the decoder gives, with the bytes that cause it
ERROR_CASES: list[tuple[bytes, list[Event], bytes]] = [
    (b"frobnicate\r\n", [UnknownCommand()], b"UNKNOWN_COMMAND\r\n"),
    (b"stats \r\n", [BadFormat()], b"BAD_FORMAT\r\n"),
    (b"use  x\r\n", [BadFormat()], b"BAD_FORMAT\r\n"),
    (b"use -x\r\n", [BadFormat()], b"BAD_FORMAT\r\n"),
    (b"delete x\r\n", [BadFormat()], b"BAD_FORMAT\r\n"),
    (b"stats\0\r\n", [BadFormat()], b"BAD_FORMAT\r\n"),
    (b"reserve-with-timeout x\r\n", [BadFormat()], b"BAD_FORMAT\r\n"),
    (b"kick 18446744073709551616\r\n", [BadFormat()], b"BAD_FORMAT\r\n"),
    (b"put 0 0 60 1 x\r\n", [BadFormat("put")], b"BAD_FORMAT\r\n"),
    (b"x" * 300 + b"\r\n", [BadFormat()], b"BAD_FORMAT\r\n"),
    (b"put 0 0 60 2\r\nabXY", [PutStart(2, False), ExpectedCrlf()], b"EXPECTED_CRLF\r\n"),
    (b"put 0 0 60 70000\r\n" + b"z" * 70002, [PutStart(70000, True), JobTooBig()], b"JOB_TOO_BIG\r\n"),
]


@pytest.mark.parametrize(("data", "expected"), SIMPLE_CASES)
def test_decode(data: bytes, expected: list[Event]) -> None:
    assert events(data) == expected


@pytest.mark.parametrize(("data", "expected", "reply"), ERROR_CASES)
def test_error_events_and_replies(data: bytes, expected: list[Event], reply: bytes) -> None:
    got = events(data)
    assert got == expected
    assert wire.ERROR_REPLIES[type(got[-1])] == reply


@pytest.mark.parametrize(("data", "expected"), SIMPLE_CASES)
def test_decode_byte_by_byte(data: bytes, expected: list[Event]) -> None:
    d = Decoder()
    out = []
    for i in range(len(data)):
        d.receive_data(data[i:i + 1])
        while (ev := d.next_event()) is not None:
            out.append(ev)
    assert out == expected
    assert d.buffered == 0


def test_pipelined_commands_decode_in_order() -> None:
    data = b"".join(x for x, _ in SIMPLE_CASES)
    assert events(data) == [e for _, evs in SIMPLE_CASES for e in evs]


def test_overlong_line_keeps_its_tail_until_crlf() -> None:
    d = Decoder()
    d.receive_data(b"y" * 500)
    assert d.next_event() is None
    assert d.buffered <= 1
    d.receive_data(b"\r")
    assert d.next_event() is None
    d.receive_data(b"\nstats\r\n")
    assert d.next_event() == BadFormat()
    assert d.next_event() == Stats()


def test_buffer_cap_raises_the_wire_error() -> None:
    d = Decoder(max_buffer=1000)
    d.receive_data(b"reserve\r\n")
    with pytest.raises(WireError):
        d.receive_data(b"x" * 2000)


REPLY_CASES: list[tuple[bytes, bytes]] = [
    (wire.inserted(12), b"INSERTED 12\r\n"),
    (wire.reserved(3, b"ab\r\n"), b"RESERVED 3 4\r\nab\r\n\r\n"),
    (wire.found(3, b""), b"FOUND 3 0\r\n\r\n"),
    (wire.kicked(2), b"KICKED 2\r\n"),
    (wire.using("t"), b"USING t\r\n"),
    (wire.watching(2), b"WATCHING 2\r\n"),
    (wire.ok(b"---\n"), b"OK 4\r\n---\n\r\n"),
    (wire.yaml_dict([("a", 1), ("name", wire.yaml_str('x"y'))]), b'---\na: 1\nname: "x\\"y"\n'),
    (wire.yaml_list(["default", "t"]), b"---\n- default\n- t\n"),
]


@pytest.mark.parametrize(("got", "expected"), REPLY_CASES)
def test_replies(got: bytes, expected: bytes) -> None:
    assert got == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_garbage_only_raises_the_wire_error(chunks: list[bytes]) -> None:
    d = Decoder(max_job_size=100, max_buffer=4096)
    for chunk in chunks:
        try:
            d.receive_data(chunk)
        except WireError:
            return
        while (ev := d.next_event()) is not None:
            assert isinstance(ev, Event)  # type: ignore[misc,arg-type]


def test_the_fast_path_decodes_what_the_decoder_decodes_or_leaves_it() -> None:
    """wire.fast_command (the server's shortcut for one whole put, reserve or delete per read) gives the
    decoder's event for the frames it takes, and None for everything else."""
    samples = [
        b"put 1024 0 60 3\r\nabc\r\n", b"put 0 5 0 0\r\n\r\n", b"put 4294967295 0 1 1\r\nx\r\n",
        b"put 1 0 60 3\r\nabcd\r\n", b"put 1 0 60 3\r\nab\r\n", b"put  1 0 60 3\r\nabc\r\n",
        b"put 1 0 60 70000\r\n" + b"x" * 70000 + b"\r\n", b"put 1 0 60 3\r\nabcXY",
        b"put 1 0 60 3\r\nabc\r\nreserve\r\n",
        b"reserve\r\n", b"reserve \r\n", b"reserve\r\nreserve\r\n", b"reserve-with-timeout 0\r\n",
        b"delete 17\r\n", b"delete 0\r\n", b"delete 007\r\n", b"delete 99999999999999999999\r\n", b"delete -1\r\n",
        b"delete 1 \r\n", b"delete 12\r\ndelete 13\r\n", b"deletex 1\r\n",
    ]
    taken = 0
    for data in samples:
        fast = wire.fast_command(data)
        d = wire.Decoder()
        d.receive_data(data)
        events = []
        while (ev := d.next_event()) is not None:
            events.append(ev)
        if fast is not None:
            taken += 1
            assert [e for e in events if not isinstance(e, wire.PutStart)] == [fast], data
    assert taken == 6
