"""The fast paths of analyzers/summary.py and analyzers/states.py give exactly what the plain code gave.

``preview_text`` escapes with the ``unicode_escape`` codec instead of a per-byte loop, the timeline is
replayed by ``replay_to_dicts`` instead of ``EndpointStates.apply`` + ``StateChange.to_dict``, and
flag / address texts are memoized: each is compared here with the straightforward version, so a
change of either side (or of CPython's codec) fails a test instead of changing output bytes.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from conftest import fixture_pcaps
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzers import summary
from analyzers.analysis import analyze_file
from analyzers.decode import flags_str, format_ip
from analyzers.states import EndpointStates, Event, State, replay_to_dicts
from analyzers.summary import preview_text, summarize_tcp, summarize_udp

SETTINGS = settings(max_examples=400, deadline=None)


def reference_preview(data: bytes, limit: int = 60) -> str:
    """The per-byte loop preview_text replaced (the definition of the preview format)."""
    out = []
    for b in data[:limit]:
        if b == 0x0A:
            out.append("\\n")
        elif b == 0x0D:
            out.append("\\r")
        elif b == 0x09:
            out.append("\\t")
        elif 0x20 <= b < 0x7F and b != 0x5C:
            out.append(chr(b))
        elif b == 0x5C:
            out.append("\\\\")
        else:
            out.append(f"\\x{b:02x}")
    s = "".join(out)
    if len(data) > limit:
        s += "..."
    return s


def test_preview_of_every_byte_value() -> None:
    for b in range(256):
        assert preview_text(bytes([b])) == reference_preview(bytes([b])), b
    every = bytes(range(256))
    assert preview_text(every, 300) == reference_preview(every, 300)
    assert preview_text(every) == reference_preview(every)  # cut at 60 and "..."


@SETTINGS
@given(st.binary(max_size=200), st.integers(min_value=-3, max_value=120))
def test_preview_equals_the_reference(data: bytes, limit: int) -> None:
    assert preview_text(data, limit) == reference_preview(data, limit)
    assert preview_text(bytearray(data), limit) == reference_preview(data, limit)


@SETTINGS
@given(st.binary(max_size=80))
def test_preview_default_limit(data: bytes) -> None:
    assert preview_text(data) == reference_preview(data)


STATES = st.sampled_from(list(State))
SIDES = st.sampled_from(["client", "server"])
STEPS = st.lists(st.tuples(st.integers(min_value=1, max_value=10**6), SIDES, st.sampled_from(list(Event))),
                 max_size=30)


@SETTINGS
@given(STATES, STATES, STEPS)
def test_replay_equals_endpoint_states(client: State, server: State,
                                       steps: list[tuple[int, str, Event]]) -> None:
    es = EndpointStates(client, server)
    for frame, side, event in steps:
        es.apply(frame, side, event)
    timeline, final = replay_to_dicts(client, server, steps)
    assert timeline == [ch.to_dict() for ch in es.timeline]
    assert [list(d) for d in timeline] == [list(ch.to_dict()) for ch in es.timeline]  # key order too
    assert all(type(d[k]) is type(ch.to_dict()[k]) for d, ch in zip(timeline, es.timeline, strict=True)
               for k in d)
    assert final == es.state


def test_replay_of_a_normal_connection() -> None:
    # a hand-checked case, so that replay and apply cannot both be wrong the same way unnoticed
    steps = [(1, "client", Event.SEND_SYN), (1, "server", Event.RECV_SYN),
             (2, "server", Event.SEND_SYNACK),  # SYN_RECEIVED stays: nothing recorded
             (2, "client", Event.RECV_SYNACK), (3, "server", Event.RECV_ACK_OF_SYN),
             (3, "server", Event.RECV_FIN), (4, "client", Event.RECV_ACK_OF_SYN)]  # last: unexpected
    timeline, final = replay_to_dicts(State.CLOSED, State.LISTEN, steps)
    assert [(d["frame"], d["side"], d["from"], d["to"], d["expected"]) for d in timeline] == [
        (1, "client", "CLOSED", "SYN_SENT", True), (1, "server", "LISTEN", "SYN_RECEIVED", True),
        (2, "client", "SYN_SENT", "ESTABLISHED", True), (3, "server", "SYN_RECEIVED", "ESTABLISHED", True),
        (3, "server", "ESTABLISHED", "CLOSE_WAIT", True), (4, "client", "ESTABLISHED", "ESTABLISHED", False)]
    assert final == {"client": State.ESTABLISHED, "server": State.CLOSE_WAIT}
    assert all(type(d["from"]) is str and type(d["event"]) is str for d in timeline)  # plain str, not enums


def test_flag_and_address_memos_equal_the_formatters() -> None:
    for flags in range(512):
        assert summary._FLAGS[flags] == flags_str(flags)
    addrs = [bytes([10, 0, i // 256, i % 256]) for i in range(5000)] + [bytes(range(16))]
    for addr in addrs:  # more than the memo keeps: it is emptied and refilled, never wrong
        assert summary._IP_TEXT[addr] == format_ip(addr)
    assert len(summary._IP_TEXT) <= 4096


def _containers(o: Any, acc: list[int]) -> None:
    if isinstance(o, (dict, list)):
        acc.append(id(o))
        for v in o.values() if isinstance(o, dict) else o:
            _containers(v, acc)


def _fixture_summaries(path: Path) -> list[dict[str, Any]]:
    a = analyze_file(path)
    return [summarize_tcp(c) for c in a.tcp] + [summarize_udp(u) for u in a.udp]


def test_summaries_share_no_mutable_container_and_are_repeatable() -> None:
    # constants and memoized texts are immutable; every dict and list must be the document's own,
    # so that a caller editing one summary cannot change another (or the next call's)
    for path in fixture_pcaps():
        first = _fixture_summaries(path)
        pristine = copy.deepcopy(first)
        ids: list[int] = []
        _containers(first, ids)
        assert len(ids) == len(set(ids)), path.name
        for doc in first:  # vandalize the first set; a second one must not notice
            for v in doc.values():
                if isinstance(v, dict):
                    v.clear()
                elif isinstance(v, list):
                    v.append("x")
        second = _fixture_summaries(path)
        assert second == pristine, path.name
        assert repr(second) == repr(pristine), path.name  # key order included
