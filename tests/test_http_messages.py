"""HttpSplitter message boundaries, above all ``Transfer-Encoding: chunked`` (RFC 9112 section 7.1):
a chunked message ends right after the last chunk, its trailer section (possibly empty) and the final
CRLF, so the next message of a keep-alive connection starts there, however the bytes are cut into
segments.  Hostile chunk framing never raises, never hangs and keeps the buffer bounded.  The other
body framings (Content-Length, no body, until close) are pinned so that the fix does not move them."""

from __future__ import annotations

import itertools
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pcapbuild as pb
import pytest
from conftest import need_tshark
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzers.analysis import analyze_file
from analyzers.http import MAX_CHUNK_LINE_BYTES, MAX_HEADER_BYTES, HttpSplitter

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
#: two keep-alive responses: "hello world" in two chunks, empty trailer section; then 26 bytes with a trailer
RESP_EMPTY_TRAILER = CHUNKED_HEAD + b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
RESP_WITH_TRAILER = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum, X-Count\r\n\r\n"
                     b"1A\r\n" + b"a" * 26 + b"\r\n0\r\nX-Checksum: abc\r\nX-Count: 26\r\n\r\n")
RESP_CONTENT_LENGTH = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nxyz"

Summary = tuple[str, int | None, int, int, int, str, bool]


def summary(h: HttpSplitter) -> list[Summary]:
    """What a message looks like from outside: kind, status, frame, header/body sizes, framing, complete."""
    return [(m.kind, m.status, m.frame, m.header_bytes, m.body_bytes, m.body_framing, m.complete)
            for m in h.messages]


def feed_pieces(pieces: Iterable[bytes], frame: int = 1) -> HttpSplitter:
    h = HttpSplitter()
    for p in pieces:
        h.feed(p, frame)
    return h


def cut(data: bytes, points: Iterable[int]) -> list[bytes]:
    """``data`` cut at the given offsets (sorted, deduplicated)."""
    bounds = [0, *sorted(set(p for p in points if 0 < p < len(data))), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def chunked(pieces: Sequence[bytes], *, trailer: bytes = b"", last_ext: bytes = b"") -> bytes:
    """A chunked response carrying ``pieces`` (one chunk each), lower-case hex sizes."""
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p)
    return CHUNKED_HEAD + body + b"0" + last_ext + b"\r\n" + trailer + b"\r\n"


# ---------------------------------------------------------------------------------------------
# where a chunked message ends


def test_chunked_response_with_empty_trailer_ends_before_the_next_keep_alive_response() -> None:
    h = feed_pieces([RESP_EMPTY_TRAILER + RESP_EMPTY_TRAILER])
    assert [(m.status, m.body_bytes, m.body_framing, m.complete) for m in h.messages] == [
        (200, 11, "chunked", True), (200, 11, "chunked", True)]
    assert h.state == "headers" and h.active


def test_two_keep_alive_chunked_responses_back_to_back_are_two_messages_with_their_own_bodies() -> None:
    h = feed_pieces([RESP_EMPTY_TRAILER + RESP_WITH_TRAILER + RESP_CONTENT_LENGTH])
    assert summary(h) == [
        ("response", 200, 1, len(CHUNKED_HEAD), 11, "chunked", True),
        ("response", 200, 1, RESP_WITH_TRAILER.index(b"\r\n\r\n") + 4, 26, "chunked", True),
        ("response", 200, 1, len(RESP_CONTENT_LENGTH) - 3, 3, "content-length", True),
    ]


def test_chunked_response_with_trailer_fields_ends_after_the_blank_line_that_closes_the_trailers() -> None:
    h = feed_pieces([RESP_WITH_TRAILER])
    assert summary(h) == [("response", 200, 1, RESP_WITH_TRAILER.index(b"\r\n\r\n") + 4, 26, "chunked", True)]
    assert h.state == "headers"
    # and not one byte earlier: the final CRLF is still awaited
    h = feed_pieces([RESP_WITH_TRAILER[:-2]])
    assert (h.state, [m.complete for m in h.messages]) == ("trailers", [False])
    h.feed(b"\r\n", 2)
    assert (h.state, [m.complete for m in h.messages]) == ("headers", [True])


def test_chunked_message_is_incomplete_until_the_final_crlf_of_an_empty_trailer_section() -> None:
    h = feed_pieces([RESP_EMPTY_TRAILER[:-2]])
    assert (h.state, [m.complete for m in h.messages]) == ("trailers", [False])
    h.feed(b"\r", 2)
    assert (h.state, [m.complete for m in h.messages]) == ("trailers", [False])
    h.feed(b"\n", 3)
    assert (h.state, [m.complete for m in h.messages]) == ("headers", [True])


def test_message_after_a_chunked_one_is_numbered_with_the_frame_of_its_first_byte() -> None:
    h = HttpSplitter()
    h.feed(RESP_EMPTY_TRAILER, 5)
    h.feed(RESP_WITH_TRAILER[:10], 7)
    h.feed(RESP_WITH_TRAILER[10:], 8)
    h.feed(RESP_CONTENT_LENGTH, 9)
    assert [m.frame for m in h.messages] == [5, 7, 9]


def test_chunk_extensions_are_skipped_on_data_chunks_and_on_the_last_chunk() -> None:
    data = (CHUNKED_HEAD + b"5;name=value\r\nhello\r\n6 ; a=1;b=\"x;y\"\r\n world\r\n"
            b"0;last=yes\r\n\r\n" + RESP_CONTENT_LENGTH)
    h = feed_pieces([data])
    assert [(m.body_bytes, m.body_framing, m.complete) for m in h.messages] == [
        (11, "chunked", True), (3, "content-length", True)]


@pytest.mark.parametrize("size", [b"1a", b"1A", b"01A", b"001a"])
def test_hex_chunk_sizes_are_read_in_either_case_and_with_leading_zeros(size: bytes) -> None:
    h = feed_pieces([CHUNKED_HEAD + size + b"\r\n" + b"z" * 26 + b"\r\n0\r\n\r\n" + RESP_CONTENT_LENGTH])
    assert [(m.body_bytes, m.complete) for m in h.messages] == [(26, True), (3, True)]


def test_bare_lf_line_ends_in_a_chunked_body_are_tolerated() -> None:
    data = CHUNKED_HEAD + b"5\nhello\n0\nX-A: 1\n\n" + RESP_CONTENT_LENGTH
    h = feed_pieces([data])
    assert [(m.body_bytes, m.complete) for m in h.messages] == [(5, True), (3, True)]


def test_chunked_request_body_ends_before_the_next_pipelined_request() -> None:
    post = b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    get = b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"
    h = feed_pieces([post + get])
    assert [(m.method, m.target, m.body_bytes, m.body_framing, m.complete) for m in h.messages] == [
        ("POST", "/up", 3, "chunked", True), ("GET", "/next", 0, "none", True)]


def test_chunked_response_to_json_keeps_the_public_fields() -> None:
    d = feed_pieces([RESP_WITH_TRAILER]).messages[0].to_dict()
    assert d == {"kind": "response", "frame": 1, "start_line": "HTTP/1.1 200 OK", "version": "HTTP/1.1",
                 "status": 200, "reason": "OK", "header_bytes": RESP_WITH_TRAILER.index(b"\r\n\r\n") + 4,
                 "body_bytes": 26, "body_framing": "chunked", "complete": True, "content_type": None,
                 "host": None}


# ---------------------------------------------------------------------------------------------
# however the bytes are cut

STREAM = RESP_EMPTY_TRAILER + RESP_WITH_TRAILER + chunked([b"x" * 300], last_ext=b";e=1") + RESP_CONTENT_LENGTH


def test_byte_at_a_time_feeding_gives_the_same_messages_as_one_shot_feeding() -> None:
    one_shot = feed_pieces([STREAM])
    assert len(one_shot.messages) == 4 and all(m.complete for m in one_shot.messages)
    byte_by_byte = feed_pieces([STREAM[i:i + 1] for i in range(len(STREAM))])
    assert summary(byte_by_byte) == summary(one_shot)
    assert byte_by_byte.state == one_shot.state == "headers"


def test_a_cut_at_every_byte_boundary_gives_the_same_messages() -> None:
    expected = summary(feed_pieces([STREAM]))
    for i in range(1, len(STREAM)):
        assert summary(feed_pieces(cut(STREAM, [i]))) == expected, i


@st.composite
def chunked_messages(draw: st.DrawFn) -> tuple[bytes, int]:
    """A chunked response with random chunk sizes (any hex case, leading zeros, extensions) and a random
    trailer section; returns the bytes and the body length."""
    sizes = draw(st.lists(st.integers(1, 70), max_size=6))
    out = [CHUNKED_HEAD]
    for n in sizes:
        size = draw(st.sampled_from([b"%x", b"%X", b"0%x"])) % n
        ext = draw(st.sampled_from([b"", b";a", b";name=value", b" ; q=\"1;2\""]))
        eol = draw(st.sampled_from([b"\r\n", b"\n"]))
        out.append(size + ext + eol + bytes(draw(st.binary(min_size=n, max_size=n))) + eol)
    out.append(b"0" + draw(st.sampled_from([b"", b";end"])) + b"\r\n")
    for name in draw(st.lists(st.sampled_from([b"X-A", b"Expires", b"Server-Timing"]), max_size=3)):
        out.append(name + b": " + draw(st.sampled_from([b"1", b"", b"a, b; c"])) + b"\r\n")
    out.append(b"\r\n")
    return b"".join(out), sum(sizes)


@SETTINGS
@given(st.lists(chunked_messages(), min_size=1, max_size=4), st.lists(st.integers(1, 2000), max_size=12))
def test_keep_alive_chunked_messages_split_anywhere_are_each_delimited_exactly(
        messages: list[tuple[bytes, int]], points: list[int]) -> None:
    data = b"".join(m for m, _ in messages) + RESP_CONTENT_LENGTH
    expected = [(n, "chunked", True) for _, n in messages] + [(3, "content-length", True)]
    for pieces in ([data], cut(data, points)):
        h = feed_pieces(pieces)
        assert [(m.body_bytes, m.body_framing, m.complete) for m in h.messages] == expected
        assert h.state == "headers"


# ---------------------------------------------------------------------------------------------
# hostile chunk framing: never raises, never hangs, bounded memory, nothing invented


def test_huge_hex_chunk_size_counts_the_bytes_it_gets_and_stays_in_the_chunk() -> None:
    h = HttpSplitter()
    t0 = time.perf_counter()
    h.feed(CHUNKED_HEAD + b"f" * 1000 + b"\r\n", 1)
    for i in range(100):
        h.feed(b"A" * 10_000, 2 + i)
    assert time.perf_counter() - t0 < 1
    assert h.state == "chunk-data" and h.messages[0].body_bytes == 1_000_000 and not h.messages[0].complete
    assert len(h.messages) == 1


def test_chunk_size_line_longer_than_the_limit_turns_the_splitter_off_with_a_bounded_buffer() -> None:
    h = feed_pieces([CHUNKED_HEAD, b"1" * 100])
    for _ in range(100):
        h.feed(b";" + b"e" * 99, 2)
        assert len(h._buf) <= MAX_CHUNK_LINE_BYTES
    assert h.state == "off" and not h.messages[0].complete
    # a complete line that long in one piece is refused too
    h = feed_pieces([CHUNKED_HEAD + b"5;" + b"e" * MAX_CHUNK_LINE_BYTES + b"\r\nhello\r\n0\r\n\r\n"])
    assert h.state == "off"


def test_endless_trailer_lines_turn_the_splitter_off_once_past_the_header_limit() -> None:
    h = feed_pieces([CHUNKED_HEAD + b"1\r\nx\r\n0\r\n"])
    t0 = time.perf_counter()
    for _ in range(10_000):
        h.feed(b"X-Pad: " + b"p" * 30 + b"\r\n", 2)
        assert len(h._buf) <= MAX_HEADER_BYTES
        if h.state == "off":
            break
    assert h.state == "off" and not h.messages[0].complete
    assert time.perf_counter() - t0 < 1
    # one trailer line that never ends
    h = feed_pieces([CHUNKED_HEAD + b"0\r\nX-Long: "])
    for _ in range(100):
        h.feed(b"v" * 1000, 2)
    assert h.state == "off" and len(h._buf) <= MAX_HEADER_BYTES


@pytest.mark.parametrize("after_data", [b"XY\r\n", b"\r\r\n", b"0\r\n\r\n", b"\rX"])
def test_chunk_data_not_followed_by_a_line_end_stops_the_splitter(after_data: bytes) -> None:
    h = feed_pieces([CHUNKED_HEAD + b"5\r\nhello" + after_data + RESP_CONTENT_LENGTH])
    assert h.state == "off" and len(h.messages) == 1 and not h.messages[0].complete


@pytest.mark.parametrize("size", [b"-5", b"+5", b"0x5", b"5_0", b"", b" ", b"g", b"5 5", b"\xff", b";ext"])
def test_negative_or_non_hex_chunk_sizes_stop_the_splitter(size: bytes) -> None:
    h = HttpSplitter()
    t0 = time.perf_counter()
    h.feed(CHUNKED_HEAD + size + b"\r\n" + b"hello\r\n" * 200 + RESP_CONTENT_LENGTH, 1)
    assert time.perf_counter() - t0 < 0.1
    assert h.state == "off" and len(h.messages) == 1 and not h.messages[0].complete


def test_a_status_line_where_the_trailer_section_should_end_is_not_taken_for_a_trailer() -> None:
    """A server that forgets the final CRLF: the next status line is no field line, so stop rather
    than swallow the next response's header block as trailers."""
    h = feed_pieces([CHUNKED_HEAD + b"0\r\n" + RESP_CONTENT_LENGTH + RESP_CONTENT_LENGTH])
    assert h.state == "off" and len(h.messages) == 1 and not h.messages[0].complete


@SETTINGS
@given(st.binary(max_size=4096), st.lists(st.integers(1, 4096), max_size=8))
def test_arbitrary_bytes_after_a_chunked_header_never_raise_and_keep_the_buffer_bounded(
        data: bytes, points: list[int]) -> None:
    h = feed_pieces([CHUNKED_HEAD, *cut(data, points)])
    assert len(h._buf) <= MAX_HEADER_BYTES + 8
    assert len(h.messages) >= 1 and h.messages[0].body_framing == "chunked"
    h.finish()


@SETTINGS
@given(st.binary(max_size=4096), st.lists(st.integers(1, 4096), max_size=8))
def test_arbitrary_bytes_never_raise(data: bytes, points: list[int]) -> None:
    req, resp = HttpSplitter(), HttpSplitter()
    req.peer, resp.peer = resp, req
    for i, piece in enumerate(cut(data, points)):
        req.feed(piece, i + 1)
        resp.feed(b"HTTP/1.1 200 OK\r\n" + piece, i + 1)
    for h in (req, resp):
        h.finish()
        assert len(h._buf) <= MAX_HEADER_BYTES + 8192


def test_many_tiny_chunks_are_linear_time() -> None:
    body = b"1\r\nx\r\n" * 50_000
    t0 = time.perf_counter()
    h = feed_pieces([CHUNKED_HEAD + body + b"0\r\n\r\n"])
    assert time.perf_counter() - t0 < 2
    assert h.messages[0].body_bytes == 50_000 and h.messages[0].complete


# ---------------------------------------------------------------------------------------------
# the other framings do not move


def test_content_length_keep_alive_responses_are_unchanged() -> None:
    h = feed_pieces([RESP_CONTENT_LENGTH * 3])
    assert summary(h) == [("response", 200, 1, len(RESP_CONTENT_LENGTH) - 3, 3, "content-length", True)] * 3


def test_responses_without_body_do_not_wait_for_chunks() -> None:
    """HEAD responses, 1xx, 204 and 304 have no body even with Transfer-Encoding: chunked."""
    req, resp = HttpSplitter(), HttpSplitter()
    req.peer, resp.peer = resp, req
    req.feed(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 1)
    resp.feed(CHUNKED_HEAD  # answers the HEAD: no body although chunked
              + b"HTTP/1.1 100 Continue\r\n\r\n"
              + b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n"
              + b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"
              + RESP_EMPTY_TRAILER, 2)
    assert [(m.status, m.body_bytes, m.body_framing, m.complete) for m in resp.messages] == [
        (200, 0, "none", True), (100, 0, "none", True), (204, 0, "none", True), (304, 0, "none", True),
        (200, 11, "chunked", True)]


def test_close_delimited_response_is_complete_only_at_the_end_of_the_stream() -> None:
    h = feed_pieces([b"HTTP/1.0 200 OK\r\n\r\nsome body", RESP_EMPTY_TRAILER])
    m = h.messages[0]
    assert (m.body_framing, m.body_bytes, m.complete, len(h.messages)) == (
        "until-close", 9 + len(RESP_EMPTY_TRAILER), False, 1)
    h.finish()
    assert m.complete


# ---------------------------------------------------------------------------------------------
# end to end against tshark


def keep_alive_chunked_capture(path: Path) -> None:
    f = pb.TcpFlow(sport=80)
    packets = [*f.handshake(),
               f.c("PA", b"GET /1 HTTP/1.1\r\nHost: example\r\n\r\n"), f.s("PA", RESP_EMPTY_TRAILER),
               f.c("PA", b"GET /2 HTTP/1.1\r\nHost: example\r\n\r\n"), f.s("PA", RESP_WITH_TRAILER),
               f.c("FA"), f.s("FA"), f.c("A")]
    path.write_bytes(pb.pcap_file([pb.Frame(pb.START_NS + i * pb.STEP_NS, pb.ethernet(p))
                                   for i, p in enumerate(packets)]))


@pytest.mark.tshark
def test_keep_alive_chunked_responses_are_counted_like_tshark(tmp_path: Path) -> None:
    tshark = need_tshark()  # skips, with the reason in the -ra summary, when tshark is not installed
    path = tmp_path / "chunked-keep-alive.pcap"
    keep_alive_chunked_capture(path)
    out = subprocess.run([tshark, "-n", "-r", str(path), "-Y", "http.response", "-T", "fields",
                          "-e", "frame.number"], capture_output=True, text=True, check=True, timeout=60).stdout
    tshark_frames = [int(x) for x in out.split()]
    doc: dict[str, Any] = analyze_file(path).to_dict()
    (conn,) = doc["tcp"]
    responses = conn["payload"]["server"]["http"]
    assert len(responses) == len(tshark_frames) == 2
    # one response per segment: the frame where it starts is the frame tshark shows it in
    assert [m["frame"] for m in responses] == tshark_frames
    assert [(m["body_bytes"], m["body_framing"], m["complete"]) for m in responses] == [
        (11, "chunked", True), (26, "chunked", True)]


def _looks_like_http_as_first_written(probe: bytes) -> bool:
    """The detection test as it was first written (one startswith per method and per prefix)."""
    from analyzers.http import METHODS

    return (probe.startswith(b"HTTP/1.") or b"HTTP/1."[:len(probe)] == probe[:7]
            or any(probe.startswith(m + b" ") or (m + b" ").startswith(probe[:len(m) + 1]) for m in METHODS))


@given(st.sampled_from([b"HTTP/1.", b"GET ", b"POST ", b"OPTIONS ", b"CONNECT ", b"TRACE ", b"HTTP/2", b"GETX",
                        b"get ", b""]).flatmap(
    lambda s: st.tuples(st.integers(0, len(s)), st.binary(max_size=12)).map(lambda t: s[:t[0]] + t[1])))
def test_http_detection_agrees_with_its_first_definition(probe: bytes) -> None:
    from analyzers.http import looks_like_http

    assert looks_like_http(probe) == _looks_like_http_as_first_written(probe)
