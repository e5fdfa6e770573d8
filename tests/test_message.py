"""Ids and the field rules of the message model."""

from __future__ import annotations

import multiprocessing as mp
import time
import uuid

import pytest

import spoolq
from spoolq.message import (
    _IdGenerator,
    check_body,
    check_channel,
    check_headers,
    check_priority,
    check_seconds,
    id_bytes,
    id_text,
    id_text_from_bytes,
)


def test_new_id_is_uuid7_text() -> None:
    i = spoolq.new_id()
    u = uuid.UUID(i)
    assert str(u) == i
    assert u.version == 7
    assert u.variant == uuid.RFC_4122


def test_ids_sort_in_creation_order_as_text_and_bytes() -> None:
    ids = [spoolq.new_id() for _ in range(5000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 5000
    raw = [uuid.UUID(i).bytes for i in ids]
    assert raw == sorted(raw)


def test_id_text_is_the_uuid_text_whatever_id_came_before() -> None:
    # id_text keeps the text of the last id's high bits (issue 9): ids that share them, and ids that do not,
    # in any order, carry into the high bits, and the edges of the 48 low bits
    high = 0x0189_0A5D_AC96_774B_BCCE << 48
    ns = [high, high + 1, high + (1 << 48) - 1, high + (1 << 48), high, 0, (1 << 128) - 1, 1 << 48, (1 << 48) - 1, high]
    ns += [spoolq.message._take_ids(1) for _ in range(100)]
    for n in ns:
        assert id_text(n) == str(uuid.UUID(int=n))
        assert id_text(n) == id_text_from_bytes(n.to_bytes(16, "big"))


def test_id_time_is_creation_time() -> None:
    before = time.time()
    i = spoolq.new_id()
    after = time.time()
    assert before - 0.002 <= spoolq.id_time(i) <= after + 0.002


def test_block_of_ids_is_consecutive_and_increasing() -> None:
    g = _IdGenerator()
    a = g.take(1000)
    b = g.take(1)
    assert b >= a + 1000
    texts = [id_text(a + k) for k in range(1000)]
    assert texts == sorted(texts)
    assert all(uuid.UUID(t).version == 7 for t in texts[:10] + texts[-10:])


def test_counter_never_runs_into_the_variant_bits() -> None:
    g = _IdGenerator()
    first = g.take(1)
    g._next = (first | ((1 << 62) - 1)) - 5  # six ids left in this millisecond
    nxt = g.take(100)
    assert nxt > first
    for k in range(100):
        u = uuid.UUID(int=nxt + k)
        assert u.version == 7 and u.variant == uuid.RFC_4122


def _make_ids(n: int, q: mp.Queue) -> None:  # type: ignore[type-arg]
    q.put([spoolq.new_id() for _ in range(n)])


def test_ids_unique_across_processes() -> None:
    ctx = mp.get_context("fork")
    q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    spoolq.new_id()  # the parent's generator has state; forked children must not repeat it
    procs = [ctx.Process(target=_make_ids, args=(20000, q)) for _ in range(4)]
    for p in procs:
        p.start()
    got = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join()
    allids = [i for chunk in got for i in chunk] + [spoolq.new_id() for _ in range(20000)]
    assert len(set(allids)) == len(allids)


@pytest.mark.parametrize(
    "value",
    ["01890a5d-ac96-774b-bcce-b302099a8057", uuid.UUID("01890a5d-ac96-774b-bcce-b302099a8057"),
     bytes.fromhex("01890a5dac96774bbcceb302099a8057")],
)
def test_id_bytes_accepts_text_uuid_and_raw(value: object) -> None:
    b = id_bytes(value)
    assert id_text_from_bytes(b) == "01890a5d-ac96-774b-bcce-b302099a8057"


@pytest.mark.parametrize("value", ["not-an-id", "", "1234"])
def test_id_bytes_rejects_bad_text(value: str) -> None:
    with pytest.raises(spoolq.InvalidArgument, match="UUID"):
        id_bytes(value)


@pytest.mark.parametrize("value", [123, 1.5, None, b"short", ["x"]])
def test_id_bytes_rejects_bad_types(value: object) -> None:
    with pytest.raises(spoolq.InvalidType):
        id_bytes(value)


@pytest.mark.parametrize("name", ["a", "jobs", "sync.orders-2024_v1", ".", "..", "x" * 200, "A-Z.a_z-09"])
def test_good_channel_names(name: str) -> None:
    assert check_channel(name) == name


@pytest.mark.parametrize("name", ["", "x" * 201, "has space", "slash/no", "ümlaut", "tab\t", "new\nline", "semi;"])
def test_bad_channel_names(name: str) -> None:
    with pytest.raises(spoolq.InvalidChannel) as ei:
        check_channel(name)
    assert "A-Z a-z 0-9" in (ei.value.hint or "")


@pytest.mark.parametrize("value", [None, 5, b"bytes"])
def test_channel_must_be_str(value: object) -> None:
    with pytest.raises(spoolq.InvalidType):
        check_channel(value)


@pytest.mark.parametrize("p", [0, 1, 1024, 2**32 - 1])
def test_good_priorities(p: int) -> None:
    assert check_priority(p) == p


@pytest.mark.parametrize("p,exc", [(-1, spoolq.InvalidArgument), (2**32, spoolq.InvalidArgument),
                                   (1.0, spoolq.InvalidType), ("5", spoolq.InvalidType), (True, spoolq.InvalidType)])
def test_bad_priorities(p: object, exc: type) -> None:
    with pytest.raises(exc):
        check_priority(p)


def test_body_rules() -> None:
    assert check_body(b"abc", 10) == b"abc"
    assert check_body(bytearray(b"abc"), 10) == b"abc"
    assert check_body(memoryview(b"abc"), 10) == b"abc"
    with pytest.raises(spoolq.InvalidType, match="encode"):
        check_body("text", 10)
    with pytest.raises(spoolq.InvalidType):
        check_body({"a": 1}, 10)
    with pytest.raises(spoolq.MessageTooLarge) as ei:
        check_body(b"x" * 11, 10)
    assert ei.value.size == 11 and ei.value.limit == 10
    assert isinstance(ei.value, ValueError)


def test_seconds_rules() -> None:
    assert check_seconds("delay", 0) == 0.0
    assert check_seconds("delay", 1.5) == 1.5
    assert check_seconds("ttl", None, allow_none=True) is None
    with pytest.raises(spoolq.InvalidArgument, match=">= 0"):
        check_seconds("delay", -1)
    with pytest.raises(spoolq.InvalidArgument, match="> 0"):
        check_seconds("ttl", 0, allow_zero=False)
    with pytest.raises(spoolq.InvalidType):
        check_seconds("delay", "5")
    with pytest.raises(spoolq.InvalidArgument, match="finite"):
        check_seconds("delay", float("nan"))


def test_header_rules() -> None:
    assert check_headers(None) is None
    assert check_headers({}) is None
    assert check_headers({"a": "b"}) == {"a": "b"}
    with pytest.raises(spoolq.InvalidType):
        check_headers({"a": 1})
    with pytest.raises(spoolq.InvalidType):
        check_headers([("a", "b")])
    with pytest.raises(spoolq.InvalidArgument):
        check_headers({"": "x"})
    with pytest.raises(spoolq.InvalidArgument):
        check_headers({f"h{i}": "x" for i in range(65)})


def test_errors_carry_hints_and_print_them() -> None:
    e = spoolq.InvalidArgument("bad thing", hint="do this")
    assert str(e) == "bad thing (hint: do this)"
    assert isinstance(e, spoolq.SpoolqError) and isinstance(e, ValueError)
    nf = spoolq.NotFound("no such", hint="look")
    assert str(nf) == "no such (hint: look)"
