"""The peer wire format (codec.py): tables both ways, whole-batch errors, per-message rules, then fuzz.

The expected bytes are written out by hand from the MessagePack spec, so a change
of the wire format breaks these tests instead of passing silently.
"""

from __future__ import annotations

import struct

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spoolq.codec import (
    ACCEPTED,
    DUPLICATE,
    MAX_ID_AGE_MS,
    MAX_ID_AHEAD_MS,
    REJECTED,
    VERSION,
    Batch,
    Reply,
    Result,
    WireMessage,
    check_message,
    check_messages,
    decode_batch,
    decode_reply,
    encode_batch,
    encode_reply,
)
from spoolq.errors import CodecError
from spoolq.message import MAX_HEADER_NAME, MAX_HEADERS, MAX_PRIORITY

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ID = bytes(range(16))
ID_BIN = b"\xc4\x10" + ID  # bin8 of 16 bytes
ID2 = bytes(range(16, 32))
T1 = 1_700_000_000_000  # Unix ms: over 2**32, so a uint64
T2 = 1_700_000_060_000

MINIMAL = WireMessage(ID, "orders.eu", b"hello", 0)
MINIMAL_BYTES = (
    b"\x98"  # fixarray(8)
    + ID_BIN
    + b"\xa9orders.eu"  # fixstr(9)
    + b"\xc4\x05hello"  # bin8(5)
    + b"\x00"  # positive fixint 0
    + b"\xc0\xc0\xc0\xc0"  # headers, deliver_at, expires, origin: nil
)

FULL = WireMessage(ID2, "a", b"", MAX_PRIORITY, {"k": "v", "trace": "x1"}, T1, T2, "n1")
FULL_BYTES = (
    b"\x98"
    + b"\xc4\x10" + ID2
    + b"\xa1a"
    + b"\xc4\x00"  # empty bin8
    + b"\xce\xff\xff\xff\xff"  # uint32
    + b"\x82\xa1k\xa1v\xa5trace\xa2x1"  # fixmap(2), in insertion order
    + b"\xcf" + struct.pack(">Q", T1)
    + b"\xcf" + struct.pack(">Q", T2)
    + b"\xa2n1"
)

BIG_BODY = WireMessage(ID, "b", b"x" * 300, 1024, {}, 0, None, None)
BIG_BODY_BYTES = (
    b"\x98" + ID_BIN + b"\xa1b"
    + b"\xc5\x01\x2c" + b"x" * 300  # bin16(300)
    + b"\xcd\x04\x00"  # uint16 1024 (the default priority)
    + b"\x80"  # empty fixmap
    + b"\x00\xc0\xc0"
)

BATCH_CASES: list[tuple[str, list[WireMessage], bytes]] = [
    ("node", [], b"\x93\x01\xa4node\x90"),
    ("node", [MINIMAL], b"\x93\x01\xa4node\x91" + MINIMAL_BYTES),
    ("node", [FULL], b"\x93\x01\xa4node\x91" + FULL_BYTES),
    ("dc-2", [MINIMAL, FULL, BIG_BODY], b"\x93\x01\xa4dc-2\x93" + MINIMAL_BYTES + FULL_BYTES + BIG_BODY_BYTES),
]

REPLY_CASES: list[tuple[list[Result], bytes]] = [
    ([], b"\x92\x01\x90"),
    ([Result(ACCEPTED)], b"\x92\x01\x91\x93\x00\xc0\xc2"),
    (
        [Result(DUPLICATE), Result(REJECTED, "bad channel", True), Result(REJECTED, "busy", False)],
        b"\x92\x01\x93" b"\x93\x01\xc0\xc2" b"\x93\x02\xabbad channel\xc3" b"\x93\x02\xa4busy\xc2",
    ),
]


# -- tables, both ways -----------------------------------------------------------------------


@pytest.mark.parametrize(("sender", "messages", "raw"), BATCH_CASES)
def test_encode_batch(sender: str, messages: list[WireMessage], raw: bytes) -> None:
    assert encode_batch(sender, messages) == raw


@pytest.mark.parametrize(("sender", "messages", "raw"), BATCH_CASES)
def test_decode_batch(sender: str, messages: list[WireMessage], raw: bytes) -> None:
    batch = decode_batch(raw)
    assert batch == Batch(VERSION, sender, messages)
    assert all(type(m) is WireMessage for m in batch.messages)


@pytest.mark.parametrize(("results", "raw"), REPLY_CASES)
def test_encode_reply(results: list[Result], raw: bytes) -> None:
    assert encode_reply(results) == raw


@pytest.mark.parametrize(("results", "raw"), REPLY_CASES)
def test_decode_reply(results: list[Result], raw: bytes) -> None:
    reply = decode_reply(raw, expected=len(results))
    assert reply == Reply(VERSION, results)
    assert all(type(r) is Result for r in reply.results)


def test_decode_accepts_any_bytes_like() -> None:
    raw = BATCH_CASES[1][2]
    assert decode_batch(bytearray(raw)) == decode_batch(memoryview(raw)) == Batch(VERSION, "node", [MINIMAL])


# -- faults of the whole batch ---------------------------------------------------------------


def _code(raw: bytes, **kw: int) -> str:
    with pytest.raises(CodecError) as ei:
        decode_batch(raw, **kw)
    return ei.value.code


def test_too_large_is_refused_before_looking() -> None:
    raw = BATCH_CASES[3][2]
    assert decode_batch(raw, max_bytes=len(raw)).sender == "dc-2"
    assert _code(raw, max_bytes=len(raw) - 1) == "too_large"
    assert _code(b"\xc1" * 100, max_bytes=99) == "too_large"  # garbage, but too large comes first


def _m(*fields: object) -> bytes:
    """A batch of one message given as a raw array (any shape)."""
    return msgspec.msgpack.encode([1, "n", [list(fields)]])


GOOD = (ID, "c", b"x", 1, None, None, None, None)

MALFORMED: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("never-used byte", b"\xc1"),
    ("an int", b"\x01"),
    ("empty array", b"\x90"),
    ("a map", msgspec.msgpack.encode({"v": 1, "sender": "n", "messages": []})),
    ("version only", b"\x91\x01"),
    ("no messages", b"\x92\x01\xa1n"),
    ("extra batch field", b"\x94\x01\xa1n\x90\xc0"),
    ("trailing byte", b"\x93\x01\xa1n\x90\x00"),
    ("version a str", b"\x93\xa11\xa1n\x90"),
    ("version a float", b"\x93\xcb" + struct.pack(">d", 1.0) + b"\xa1n\x90"),
    ("sender nil", b"\x93\x01\xc0\x90"),
    ("sender not UTF-8", b"\x93\x01\xa1\xff\x90"),
    ("messages a map", b"\x93\x01\xa1n\x80"),
    ("message fields missing", _m(ID, "c", b"x")),
    ("message field extra", _m(*GOOD, "extra")),
    ("message a map", msgspec.msgpack.encode([1, "n", [{"id": ID}]])),
    ("id a str", _m("0123456789abcdef", *GOOD[1:])),
    ("channel bin", _m(ID, b"c", *GOOD[2:])),
    ("channel not UTF-8", b"\x93\x01\xa1n\x91\x98" + ID_BIN + b"\xa1\xff\xc4\x00\x01\xc0\xc0\xc0\xc0"),
    ("body a str", _m(ID, "c", "x", *GOOD[3:])),
    ("priority a bool", _m(ID, "c", b"x", True, *GOOD[4:])),
    ("priority a float", _m(ID, "c", b"x", 1.0, *GOOD[4:])),
    ("priority nil", _m(ID, "c", b"x", None, *GOOD[4:])),
    ("headers a list", _m(*GOOD[:4], ["k", "v"], *GOOD[5:])),
    ("header value an int", _m(*GOOD[:4], {"k": 1}, *GOOD[5:])),
    ("header key an int", _m(*GOOD[:4], {1: "v"}, *GOOD[5:])),
    ("deliver_at a float", _m(*GOOD[:5], 1.5, None, None)),
    ("expires a str", _m(*GOOD[:6], "soon", None)),
    ("origin bin", _m(*GOOD[:7], b"n1")),
    ("an ext", b"\xd4\x01\x01"),
    ("deeply nested after the version", b"\x92\x01" + b"\x91" * 5000 + b"\x01"),
    (
        "deeply nested in a header",
        b"\x93\x01\xa1n\x91\x98" + ID_BIN + b"\xa1c\xc4\x01x\x01\x81\xa1k" + b"\x91" * 5000 + b"\x01\xc0\xc0\xc0",
    ),
    ("array longer than the data", b"\x93\x01\xa1n\xdd\xff\xff\xff\xff"),
    ("bin longer than the data", b"\x93\x01\xa1n\x91\x98\xc6\xff\xff\xff\xff"),
]


@pytest.mark.parametrize("raw", [r for _, r in MALFORMED], ids=[n for n, _ in MALFORMED])
def test_malformed_batch(raw: bytes) -> None:
    assert _code(raw) == "malformed"


def test_the_good_raw_message_decodes() -> None:
    """The base of the MALFORMED table is itself valid, so each row breaks one thing only."""
    assert decode_batch(_m(*GOOD)).messages == [WireMessage(ID, "c", b"x", 1)]


@pytest.mark.parametrize(("sender", "messages", "raw"), BATCH_CASES)
def test_every_truncation_is_malformed(sender: str, messages: list[WireMessage], raw: bytes) -> None:
    for n in range(len(raw)):
        with pytest.raises(CodecError) as ei:
            decode_batch(raw[:n])
        assert ei.value.code == "malformed", n


@pytest.mark.parametrize(("results", "raw"), REPLY_CASES)
def test_every_truncated_reply_is_malformed(results: list[Result], raw: bytes) -> None:
    for n in range(len(raw)):
        with pytest.raises(CodecError) as ei:
            decode_reply(raw[:n], expected=len(results))
        assert ei.value.code == "malformed", n


@pytest.mark.parametrize("v", [0, 2, 255, 2**64 - 1])
def test_batch_of_another_version(v: int) -> None:
    raw = msgspec.msgpack.encode([v, "n", []])
    assert _code(raw) == "unsupported_version"
    # another version may have another shape: the version is what is reported
    assert _code(msgspec.msgpack.encode([v, {"new": "shape"}])) == "unsupported_version"


@pytest.mark.parametrize("v", [0, 2, 255])
def test_reply_of_another_version(v: int) -> None:
    with pytest.raises(CodecError) as ei:
        decode_reply(msgspec.msgpack.encode([v, []]), expected=0)
    assert ei.value.code == "unsupported_version"
    assert str(v) in ei.value.message


def test_too_many_messages() -> None:
    raw = encode_batch("n", [MINIMAL, FULL, BIG_BODY])
    assert len(decode_batch(raw, max_messages=3).messages) == 3
    assert _code(raw, max_messages=2) == "too_many_messages"
    assert _code(raw, max_messages=0) == "too_many_messages"


def _reply_code(raw: bytes, expected: int) -> str:
    with pytest.raises(CodecError) as ei:
        decode_reply(raw, expected=expected)
    return ei.value.code


@pytest.mark.parametrize(
    ("results", "expected"),
    [([], 1), ([Result(ACCEPTED)], 0), ([Result(ACCEPTED)], 2), ([Result(ACCEPTED)] * 3, 2)],
)
def test_reply_with_wrong_number_of_results(results: list[Result], expected: int) -> None:
    assert _reply_code(encode_reply(results), expected) == "malformed"


@pytest.mark.parametrize("status", [3, 4, 255, -1])
def test_reply_with_unknown_status(status: int) -> None:
    raw = msgspec.msgpack.encode([1, [[ACCEPTED, None, False], [status, None, False]]])
    assert _reply_code(raw, 2) == "malformed"


@pytest.mark.parametrize(
    "result",
    [[0], [0, None], [0, None, False, None], [None, None, False], [0, 1, False], [0, None, 0], {"status": 0}],
    ids=["1 field", "2 fields", "4 fields", "status nil", "reason an int", "permanent an int", "a map"],
)
def test_malformed_reply(result: object) -> None:
    assert _reply_code(msgspec.msgpack.encode([1, [result]]), 1) == "malformed"


@pytest.mark.parametrize("raw", [b"", b"\xc1", b"\x92\x01", b"\x93\x01\x90\xc0", b"\x92\x01\x90\x00", b"\x92\x01\x80"])
def test_malformed_reply_bytes(raw: bytes) -> None:
    assert _reply_code(raw, 0) == "malformed"


# -- rules of one message (rejected in the reply, not a decoding error) ----------------------

LIMIT = 1000
OK = WireMessage(ID, "c", b"", 1024)


def _with(**changes: object) -> WireMessage:
    return msgspec.structs.replace(OK, **changes)


# {"k": "v"} is 5 bytes of MessagePack: fixmap(1), fixstr(1) "k", fixstr(1) "v"
MESSAGE_RULES: list[tuple[str, WireMessage, str | None]] = [
    ("minimal", OK, None),
    ("all fields set", FULL, None),
    ("id 15 bytes", _with(id=ID[:15]), "id must be 16 bytes"),
    ("id 17 bytes", _with(id=ID + b"\x00"), "id must be 16 bytes"),
    ("id empty", _with(id=b""), "id must be 16 bytes"),
    ("channel empty", _with(channel=""), "bad channel name"),
    ("channel with a space", _with(channel="a b"), "bad channel name"),
    ("channel with a slash", _with(channel="orders/eu"), "bad channel name"),
    ("channel not ASCII", _with(channel="caf\u00e9"), "bad channel name"),
    ("channel with a newline at the end", _with(channel="a\n"), "bad channel name"),
    ("channel 201 chars", _with(channel="x" * 201), "bad channel name"),
    ("channel 200 chars", _with(channel="x" * 200), None),
    ("channel all the allowed characters", _with(channel="AZaz09._-"), None),
    ("priority -1", _with(priority=-1), "priority -1 out of range"),
    ("priority 2**32", _with(priority=MAX_PRIORITY + 1), "out of range"),
    ("priority 2**64-1", _with(priority=2**64 - 1), "out of range"),
    ("priority 0", _with(priority=0), None),
    ("priority max", _with(priority=MAX_PRIORITY), None),
    ("body at the limit", _with(body=b"x" * LIMIT), None),
    ("body over the limit", _with(body=b"x" * (LIMIT + 1)), "over max_message_size"),
    ("body and headers at the limit", _with(body=b"x" * (LIMIT - 5), headers={"k": "v"}), None),
    ("body and headers over the limit", _with(body=b"x" * (LIMIT - 4), headers={"k": "v"}), "over max_message_size"),
    # 961 characters but 1025 bytes: the limit is in bytes
    ("headers over the limit in bytes", _with(body=b"x" * 900, headers={"k": "\u00e9" * 60}), "over max_message_size"),
    ("empty headers", _with(body=b"x" * LIMIT, headers={}), None),
    ("too many headers", _with(headers={f"h{i}": "" for i in range(MAX_HEADERS + 1)}), "over the limit of"),
    ("as many headers as allowed", _with(headers={f"h{i}": "" for i in range(MAX_HEADERS)}), None),
    ("empty header name", _with(headers={"": "v"}), "header name"),
    ("header name too long", _with(headers={"h" * (MAX_HEADER_NAME + 1): "v"}), "header name"),
    ("header name as long as allowed", _with(headers={"h" * MAX_HEADER_NAME: ""}), None),
    ("deliver_at negative", _with(deliver_at=-1), "timestamps"),
    ("expires negative", _with(expires=-1), "timestamps"),
    ("deliver_at 2**53", _with(deliver_at=1 << 53), "timestamps"),
    ("expires 2**63", _with(expires=1 << 63), "timestamps"),
    ("timestamps 0 and 2**53-1", _with(deliver_at=0, expires=(1 << 53) - 1), None),
    ("origin empty", _with(origin=""), "origin"),
    ("origin 201 chars", _with(origin="n" * 201), "origin"),
    ("origin 200 chars", _with(origin="n" * 200), None),
]


@pytest.mark.parametrize(("m", "reason"), [(m, r) for _, m, r in MESSAGE_RULES], ids=[n for n, _, _ in MESSAGE_RULES])
def test_check_message(m: WireMessage, reason: str | None) -> None:
    got = check_message(m, LIMIT)
    if reason is None:
        assert got is None
    else:
        assert got is not None and reason in got


def test_check_message_counts_headers_as_the_spool_does() -> None:
    """A message the spool took in locally must pass a peer with the same limit, and no more."""
    from spoolq.message import encode_headers

    headers = {"trace": "\u00e9t\u00e9", "k": "v" * 20}
    size = len(b"body") + len(encode_headers(headers) or b"")
    m = _with(body=b"body", headers=headers)
    assert check_message(m, size) is None
    assert check_message(m, size - 1) is not None


def _at(ms: int) -> WireMessage:
    return _with(id=ms.to_bytes(6, "big") + ID[6:])


def test_check_messages_agrees_with_check_message() -> None:
    """The batch check (inline for plain messages of a channel already seen good) says what
    check_message says, message by message, including the id time bounds at their edges."""
    now = 1_700_000_000_000
    edges = [_at(now - MAX_ID_AGE_MS), _at(now - MAX_ID_AGE_MS - 1), _at(now + MAX_ID_AHEAD_MS),
             _at(now + MAX_ID_AHEAD_MS + 1)]
    rules = [msgspec.structs.replace(m, id=_at(now).id) if len(m.id) == 16 else m for _, m, _ in MESSAGE_RULES]
    batch = [_at(now), *rules, *edges, _at(now)]
    expected = [check_message(m, LIMIT, now) for m in batch]
    assert check_messages(batch, LIMIT, now) == expected
    assert [r is None for r in expected[-5:]] == [True, False, True, False, True]


# -- fuzz -------------------------------------------------------------------------------------

ids = st.one_of(st.binary(min_size=16, max_size=16), st.binary(max_size=20))
channels = st.one_of(st.from_regex(r"[A-Za-z0-9._-]{1,20}", fullmatch=True), st.text(max_size=5))
messages = st.builds(
    WireMessage,
    id=ids,
    channel=channels,
    body=st.binary(max_size=40),
    priority=st.integers(min_value=-(2**63), max_value=2**64 - 1),
    headers=st.none() | st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
    deliver_at=st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1),
    expires=st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1),
    origin=st.none() | st.text(max_size=5),
)
batches = st.builds(encode_batch, st.text(max_size=8), st.lists(messages, max_size=4))
replies = st.lists(
    st.builds(Result, st.sampled_from([ACCEPTED, DUPLICATE, REJECTED]), st.none() | st.text(max_size=8), st.booleans()),
    max_size=4,
)


def _decode_batch_or_codec_error(raw: bytes) -> None:
    try:
        batch = decode_batch(raw, max_messages=50)
    except CodecError as e:
        assert e.code in ("malformed", "unsupported_version", "too_many_messages")
        return
    assert batch.v == VERSION
    assert len(batch.messages) <= 50
    assert all(type(m) is WireMessage for m in batch.messages)
    # whatever decodes is a batch: it survives the trip again, and check_message only ever returns
    assert decode_batch(encode_batch(batch.sender, batch.messages)) == batch
    for m in batch.messages:
        reason = check_message(m, 1 << 20)
        assert reason is None or isinstance(reason, str)


def _decode_reply_or_codec_error(raw: bytes, expected: int) -> None:
    try:
        reply = decode_reply(raw, expected=expected)
    except CodecError as e:
        assert e.code in ("malformed", "unsupported_version")
        return
    assert reply.v == VERSION
    assert len(reply.results) == expected
    assert all(type(r) is Result and r.status in (ACCEPTED, DUPLICATE, REJECTED) for r in reply.results)


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_batch_random_bytes(raw: bytes) -> None:
    _decode_batch_or_codec_error(raw)


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_batch_random_bytes_after_a_good_header(tail: bytes) -> None:
    _decode_batch_or_codec_error(b"\x93\x01" + tail)
    _decode_batch_or_codec_error(b"\x93\x01\xa1n\x91\x98" + tail)


@FUZZ
@given(st.binary(max_size=100), st.integers(min_value=0, max_value=3))
def test_fuzz_reply_random_bytes(raw: bytes, expected: int) -> None:
    _decode_reply_or_codec_error(raw, expected)
    _decode_reply_or_codec_error(b"\x92\x01" + raw, expected)


@FUZZ
@given(st.text(min_size=1, max_size=8), st.lists(messages, max_size=4))
def test_fuzz_roundtrip(sender: str, msgs: list[WireMessage]) -> None:
    assert decode_batch(encode_batch(sender, msgs)) == Batch(VERSION, sender, msgs)


@FUZZ
@given(replies)
def test_fuzz_reply_roundtrip(results: list[Result]) -> None:
    assert decode_reply(encode_reply(results), expected=len(results)) == Reply(VERSION, results)


def _mutate(data: st.DataObject, raw: bytes) -> bytes:
    b = bytearray(raw)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4), label="mutations")):
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]), label="op")
        if op == "insert" or not b:
            b.insert(data.draw(st.integers(0, len(b))), data.draw(st.integers(0, 255)))
        elif op == "flip":
            i = data.draw(st.integers(0, len(b) - 1))
            b[i] ^= data.draw(st.integers(1, 255))
        else:
            del b[data.draw(st.integers(0, len(b) - 1))]
    return bytes(b)


@FUZZ
@given(batches, st.data())
def test_fuzz_mutated_batches(raw: bytes, data: st.DataObject) -> None:
    _decode_batch_or_codec_error(_mutate(data, raw))


@FUZZ
@given(replies, st.data())
def test_fuzz_mutated_replies(results: list[Result], data: st.DataObject) -> None:
    _decode_reply_or_codec_error(_mutate(data, encode_reply(results)), len(results))


@pytest.mark.parametrize("sender", ["", "n" * 201, "n" * (5 << 20)])
def test_a_batch_from_an_empty_or_huge_sender_is_refused(sender: str) -> None:
    with pytest.raises(CodecError, match="sender") as ei:
        decode_batch(encode_batch(sender, [MINIMAL]), max_bytes=16 << 20)
    assert ei.value.code == "malformed"


def test_a_batch_sender_of_200_characters_is_fine() -> None:
    assert decode_batch(encode_batch("n" * 200, [MINIMAL])).sender == "n" * 200


def _id_at(ms: int) -> bytes:
    return ms.to_bytes(6, "big") + bytes(10)


@pytest.mark.parametrize(("offset", "ok"), [
    (0, True),
    (86_400_000, True),  # a day of clock skew ahead
    (86_400_001, False),
    (-365 * 86_400_000, True),
    (-365 * 86_400_000 - 1, False),
    (-T1, False),  # the epoch: "56 years old"
])
def test_ids_must_be_made_near_the_receivers_clock(offset: int, ok: bool) -> None:
    m = _with(id=_id_at(T1 + offset))
    reason = check_message(m, LIMIT, T1)
    assert (reason is None) is ok
    assert check_message(m, LIMIT) is None  # without a clock, only the shape is checked


@FUZZ
@given(st.lists(messages, max_size=6), st.integers(0, 2**48))
def test_fuzz_check_messages(msgs: list[WireMessage], now: int) -> None:
    twice = msgs + msgs  # the second time round, each good channel is known
    assert check_messages(twice, LIMIT, now) == [check_message(m, LIMIT, now) for m in twice]
