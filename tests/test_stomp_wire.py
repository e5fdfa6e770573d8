"""STOMP framing: table tests both ways, partial reads, pipelining, limits, fuzz."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spoolq.stomp.wire import HEARTBEAT, Frame, Parser, StompWireError, encode, escape, unescape

CASES: list[tuple[Frame, bytes]] = [
    (Frame("SEND", (("destination", "/queue/a"),), b"hi"),
     b"SEND\ndestination:/queue/a\ncontent-length:2\n\nhi\0"),
    (Frame("SEND", (("destination", "/queue/a"), ("content-length", "3")), b"a\0b"),
     b"SEND\ndestination:/queue/a\ncontent-length:3\n\na\0b\0"),
    (Frame("SUBSCRIBE", (("id", "0"), ("k", "a:b\nc\\d\re"))),
     b"SUBSCRIBE\nid:0\nk:a\\cb\\nc\\\\d\\re\n\n\0"),
    (Frame("CONNECT", (("login", "a:b"),)), b"CONNECT\nlogin:a:b\n\n\0"),
    (Frame("DISCONNECT"), b"DISCONNECT\n\n\0"),
]


@pytest.mark.parametrize(("frame", "raw"), CASES)
def test_encode(frame: Frame, raw: bytes) -> None:
    assert encode(frame) == raw


@pytest.mark.parametrize(("frame", "raw"), CASES)
def test_decode(frame: Frame, raw: bytes) -> None:
    assert Parser().feed(raw) == [frame if "content-length" in frame or not frame.body else
                                  Frame(frame.command, (*frame.headers, ("content-length", str(len(frame.body)))),
                                        frame.body)]


def test_crlf_and_heartbeats_and_first_header_wins() -> None:
    evs = Parser().feed(b"\n\r\nSEND\r\ndestination:/queue/x\r\ndestination:/queue/y\r\n\r\nbody\0\n")
    assert evs[:2] == [HEARTBEAT, HEARTBEAT]
    f = evs[2]
    assert isinstance(f, Frame) and f.get("destination") == "/queue/x" and f.body == b"body"
    assert evs[3] == HEARTBEAT


def test_partial_reads_byte_by_byte_and_pipelining() -> None:
    raw = b"".join(r for _, r in CASES) * 3
    p = Parser()
    got = []
    for i in range(len(raw)):
        got += p.feed(raw[i:i + 1])
    assert len(got) == 3 * len(CASES)
    assert Parser().feed(raw) == got


def test_versions_escaping() -> None:
    assert escape("a\nb:c", "1.0") == "a b:c"
    assert unescape("a\\nb", "1.0") == "a\\nb"
    assert unescape("a\\cb\\n", "1.1") == "a:b\n"
    with pytest.raises(StompWireError):
        unescape("a\\rb", "1.1")  # \r is 1.2 only
    with pytest.raises(StompWireError):
        unescape("a\\tb")
    with pytest.raises(StompWireError):
        unescape("trailing\\")
    p = Parser(version="1.0")
    [f] = p.feed(b"SEND\nk:a\\nb\n\n\0")
    assert isinstance(f, Frame) and f.get("k") == "a\\nb"


@pytest.mark.parametrize("raw", [
    b"BOGUS\n\n\0",
    b"SEND\nno-colon\n\n\0",
    b"SEND\nk:\\x\n\n\0",
    b"SEND\ncontent-length:-1\n\n\0",
    b"SEND\ncontent-length:2\n\nabc\0",
    b"SEND\n\xff:1\n\n\0",
    b"\rX",
])
def test_garbage(raw: bytes) -> None:
    with pytest.raises(StompWireError):
        Parser().feed(raw)


def test_limits() -> None:
    with pytest.raises(StompWireError, match="limit"):
        Parser(max_frame_size=100).feed(b"SEND\n\n" + b"x" * 200)
    with pytest.raises(StompWireError, match="limit"):
        Parser(max_frame_size=100).feed(b"SEND\ncontent-length:500\n\n")
    with pytest.raises(StompWireError, match="headers"):
        Parser(max_headers=3).feed(b"SEND\n" + b"a:b\n" * 5)
    with pytest.raises(StompWireError, match="headers"):
        Parser(max_headers=3).feed(b"SEND\n" + b"a:b\n" * 5 + b"\n\0")
    with pytest.raises(StompWireError, match="longer"):
        Parser(max_header_length=10).feed(b"SEND\nk:" + b"v" * 20)
    with pytest.raises(StompWireError, match="longer"):
        Parser(max_header_length=10).feed(b"SEND\nk:" + b"v" * 20 + b"\n\n\0")


header_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=20)


# content-length is encode()'s own header (its callers leave it out), not one a frame is given
header_name = header_text.filter(lambda k: bool(k) and k != "content-length")


@given(st.lists(st.tuples(header_name, header_text), max_size=5), st.binary(max_size=50))
@settings(max_examples=200, deadline=None)
def test_roundtrip(headers: list[tuple[str, str]], body: bytes) -> None:
    f = Frame("SEND", tuple(headers), body)
    [g] = Parser().feed(encode(f))
    assert isinstance(g, Frame)
    assert g.body == body
    assert g.headers[:len(headers)] == tuple(headers)


@given(st.binary(max_size=300))
@settings(max_examples=500, deadline=None)
def test_fuzz_only_own_error(data: bytes) -> None:
    p = Parser(max_frame_size=200, max_headers=5, max_header_length=50)
    try:
        p.feed(data)
        p.feed(data)
    except StompWireError:
        pass


def test_good_frames_before_garbage_come_first() -> None:
    p = Parser()
    evs = p.feed(b"SEND\ndestination:/queue/a\n\nx\0BOGUS\n\n\0")
    assert len(evs) == 1 and isinstance(p.error, StompWireError)
    with pytest.raises(StompWireError):
        p.feed(b"SEND\n\n\0")
