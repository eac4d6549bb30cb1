"""Hostile lengths never allocate what they claim, and hostile packet patterns cost bounded memory
and time: each test measures the Python memory an analysis allocates (tracemalloc peak) and its
duration.

The bounds asserted here are the ones SECURITY.md documents:

* a pcap record / pcapng block may claim up to 4 GB; the reader allocates at most what the file
  holds plus one 1 MiB read step (``READ_STEP``) and never trusts a length above 16 MiB
  (``MAX_RECORD_BYTES``);
* IP reassembly holds at most two datagrams' worth of fragment bytes (``MAX_FRAGMENT_BYTES``) and
  ``MAX_FRAGMENTS`` fragments per incomplete datagram, and ``max_bytes`` (64 MiB) in all;
* a TCP direction holds back at most 4096 out-of-order segments / 8 MiB; each held segment costs
  O(log n), not a scan of all of them;
* a connection costs a few KiB of state (not its bytes: previews are 4 KiB), an HTTP header block
  64 KiB at most.
"""

from __future__ import annotations

import gc
import io
import struct
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pcapbuild as pb

from analyzers.analysis import Analysis, analyze_file, analyze_records
from analyzers.decode import MAX_FRAGMENT_BYTES, Decoder, Reassembler, TcpSegment
from analyzers.pcapfile import MAX_BLOCK_BYTES, MAX_RECORD_BYTES, READ_STEP, CaptureReader, PacketRecord
from analyzers.reassembly import StreamAssembler
from analyzers.tcp import TcpTracker

T = TypeVar("T")
MiB = 1024 * 1024
C4, S4 = "10.0.0.1", "10.0.0.2"


def measure(fn: Callable[[], T]) -> tuple[T, int, float]:
    """(result, peak bytes allocated while it ran, seconds)."""
    gc.collect()
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        result = fn()
        seconds = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak, seconds


def syn_packet() -> bytes:
    return pb.ethernet(pb.tcp_packet(C4, 40000, S4, 80, 1000, flags="S"))


# ---------------------------------------------------------------------------------------------
# file formats: lengths that claim up to 4 GB


def test_a_pcap_record_claiming_up_to_4_gb_allocates_what_the_file_holds(tmp_path: Path) -> None:
    for caplen in (READ_STEP + 1, MAX_RECORD_BYTES, MAX_RECORD_BYTES + 1, 0x80000000, 0xFFFFFFFF):
        path = tmp_path / f"claims-{caplen}.pcap"
        path.write_bytes(pb.pcap_header(1) + pb.pcap_record(1, syn_packet())
                         + struct.pack("<IIII", 1, 0, caplen, caplen) + b"x" * 100)
        res, peak, seconds = measure(lambda p=path: analyze_file(p))  # type: ignore[misc]
        assert res.packets == 1 and len(res.read_warnings) == 1 and str(caplen) in res.read_warnings[0].message
        assert peak < 3 * MiB, f"caplen {caplen}: {peak / MiB:.1f} MiB allocated"  # 1 MiB file buffer + 1 step
        assert seconds < 1.0


def test_a_pcapng_block_claiming_up_to_2_32_minus_4_bytes_allocates_what_the_file_holds(tmp_path: Path) -> None:
    prefix = pb.shb() + pb.idb(1) + pb.epb(0, 1, syn_packet())
    for blen in (READ_STEP + 4, MAX_RECORD_BYTES, MAX_BLOCK_BYTES, MAX_BLOCK_BYTES + 4, 0xFFFFFFFC):
        for btype in (pb.BT_EPB, pb.BT_IDB, 0x0BADF00D):
            path = tmp_path / f"claims-{blen}-{btype}.pcapng"
            path.write_bytes(prefix + struct.pack("<II", btype, blen) + b"y" * 100)
            res, peak, _ = measure(lambda p=path: analyze_file(p))  # type: ignore[misc]
            assert res.packets == 1 and len(res.read_warnings) == 1
            assert res.read_warnings[0].offset == len(prefix)
            assert peak < 3 * MiB, f"block length {blen}: {peak / MiB:.1f} MiB allocated"
    # a first Section Header Block that claims it all is the file-header error, before any allocation
    path = tmp_path / "shb.pcapng"
    path.write_bytes(pb.shb(length=0xFFFFFFFC)[:28])
    try:
        analyze_file(path)
    except Exception as exc:
        assert type(exc).__name__ == "CaptureFormatError"
    else:
        raise AssertionError("no error")


def test_an_enhanced_packet_block_whose_caplen_claims_4_gb_is_skipped_without_allocating() -> None:
    pkt = syn_packet()
    data = pb.shb() + pb.idb(1) + pb.epb(0, 1, pkt, caplen=0xFFFFFFFF) + pb.epb(0, 2, pkt)
    res, peak, _ = measure(lambda: analyze_records(CaptureReader(io.BytesIO(data))))
    assert res.packets == 1 and peak < 1 * MiB


def test_a_record_claiming_16_mib_on_a_stream_of_unknown_size_reads_in_steps() -> None:
    """No file size to compare with (a pipe): the claimed length is read 1 MiB at a time."""
    asked: list[int] = []

    class Pipe(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.buf = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            asked.append(n)
            return self.buf.read(n)

    data = pb.pcap_header(1) + struct.pack("<IIII", 1, 0, MAX_RECORD_BYTES, MAX_RECORD_BYTES) + b"z" * 5000
    reader = CaptureReader(Pipe(data))  # type: ignore[arg-type]
    (_, peak, _) = measure(lambda: list(reader))
    assert max(asked) <= READ_STEP and peak < 2 * MiB
    assert "5000 of 16777216 bytes" in reader.warnings[0].message


# ---------------------------------------------------------------------------------------------
# IP fragments


def _fragment(ident: int, offset: int, payload: bytes, more: bool = True) -> bytes:
    return pb.ipv4_packet(C4, S4, 17, payload, ident=ident, more_fragments=more, frag_offset=offset)


def test_ipv4_fragments_claiming_64_kib_offsets_again_and_again_hold_at_most_two_datagrams() -> None:
    """One datagram's fragments at every 8-byte offset up to 64 KiB, each 60 KB long (overlapping):
    before the bound, every distinct offset kept its own copy (8192 x 60 KB = 480 MB)."""
    big = b"f" * 60_000
    dec = Decoder()

    def run() -> int:
        for i in range(1, 3000):
            pkt = _fragment(7, (i * 8 * 3) % 65528, big)
            dec.decode(i, 0, 101, pkt, len(pkt))
        return dec.reassembler.bytes_held

    held, peak, seconds = measure(run)
    assert held <= MAX_FRAGMENT_BYTES and dec.reassembler.evicted >= 1
    assert peak < 4 * MiB, f"{peak / MiB:.1f} MiB allocated for 3000 x 60 KB fragments"
    assert seconds < 10


def test_fragments_of_many_datagrams_stay_under_the_reassembler_byte_bound() -> None:
    r = Reassembler(max_datagrams=100_000, max_bytes=1 * MiB)
    chunk = b"g" * 60_000
    for ident in range(200):  # 200 datagrams x 120 KB each = 24 MB offered
        r.add((4, b"a", b"b", ident, 17), 2 * ident, 0, True, chunk, (4, b"a", b"b", 17))
        r.add((4, b"a", b"b", ident, 17), 2 * ident + 1, 8, True, chunk, (4, b"a", b"b", 17))
        assert r.bytes_held <= 1 * MiB
    assert r.evicted > 150


def test_duplicate_fragments_do_not_cost_a_completeness_check_each() -> None:
    """8192 distinct offsets of one datagram, then 30000 duplicates of one fragment: each duplicate
    adds nothing and must not sort the 8192 parts again."""
    dec = Decoder()
    pkts = [_fragment(9, 0, b"a" * 8), _fragment(9, 65528, b"b" * 7, more=False)]
    pkts += [_fragment(9, off, b"c" * 8) for off in range(16, 65528, 8)]  # offset 8 missing: never complete
    dup = _fragment(9, 16, b"c" * 8)
    for i, p in enumerate(pkts):
        dec.decode(i + 1, 0, 101, p, len(p))
    t0 = time.perf_counter()
    for i in range(30_000):
        dec.decode(len(pkts) + i, 0, 101, dup, len(dup))
    seconds = time.perf_counter() - t0
    assert seconds < 3, f"{seconds:.1f} s for 30000 duplicates (each used to sort 8192 parts: ~9 s)"
    assert len(dec.reassembler._sets) == 1


# ---------------------------------------------------------------------------------------------
# TCP: held-back segments, ranges, many connections


def _seg(frame: int, seq: int, payload: bytes, *, sport: int = 40000, flags: int = 0x018, ack: int = 0,
         src: bytes = b"\x0a\x00\x00\x01", dst: bytes = b"\x0a\x00\x00\x02") -> TcpSegment:
    fwd = sport != 80
    return TcpSegment(frame, frame * 1000, 4, src if fwd else dst, dst if fwd else src, sport, 80 if fwd else 40000,
                      seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags, 65535, b"", payload, len(payload), 40 + len(payload))


def test_thousands_of_out_of_order_segments_are_bounded_and_cost_log_time_each() -> None:
    """20000 segments each leaving a 1-byte hole (never filled): at most 4096 are held back; every
    one past the bound declares the oldest gap lost.  Before the fix each such segment scanned all
    4096 held ones twice (16000 segments: 14 s); now 20000 take well under a second."""
    t = TcpTracker(http=False)

    def run() -> TcpTracker:
        t.feed(_seg(1, 999, b"", flags=0x002))
        t.feed(_seg(2, 5000, b"", sport=80, flags=0x012, ack=1000))
        for i in range(20_000):
            t.feed(_seg(3 + i, 1002 + 2 * i, b"x"))
        return t

    _, peak, seconds = measure(run)
    asm = t.connections[0].assembler[0]
    assert asm.held_segments <= 4096
    assert seconds < 5, f"{seconds:.1f} s"
    assert peak < 32 * MiB


def test_peer_acks_while_segments_are_held_back_cost_constant_time() -> None:
    """4000 segments held behind a hole, then 50000 peer ACKs below the hole: each ACK used to scan
    every held segment (20000 ACKs: 14 s)."""
    asm = StreamAssembler()
    asm.start(1)
    for i in range(4000):
        asm.add(100 + 2 * i, 1, b"y", i)
    def acks() -> None:
        for j in range(50_000):
            asm.peer_ack(50, j)

    _, _, seconds = measure(acks)
    assert seconds < 2, f"{seconds:.1f} s"
    assert asm.held_segments == 4000


def test_a_new_lowest_held_segment_each_packet_is_found_without_a_python_scan() -> None:
    """4096 segments held far ahead, then one segment per packet that is the new lowest (so it is the
    one to place, and it was the last to arrive): each used to cost a scan of all the held segments
    in Python (~0.8 ms per packet); now binary searches and C-level list operations."""
    asm = StreamAssembler()
    asm.start(1)
    for k in range(4096):
        asm.add(10_000_000 + k * (1 << 19) % (1 << 31), 1, b"x", k)
    t0 = time.perf_counter()
    seq = 100
    for j in range(20_000):
        asm.add(seq, 1, b"y", 5000 + j)
        seq += 2
    seconds = time.perf_counter() - t0
    assert seconds < 5, f"{seconds:.1f} s for 20000 packets"
    assert asm.held_segments == 4096 and len(asm.gaps) == 10_000


def test_segments_in_descending_order_do_not_sort_every_range_per_segment() -> None:
    """Each segment below the previous one used to re-sort all 4096 byte ranges of the direction
    (20000 segments: 217 s); now they are inserted by binary search."""
    t = TcpTracker(http=False)

    def run() -> None:
        t.feed(_seg(1, 999, b"", flags=0x002))
        for i in range(20_000, 0, -1):
            t.feed(_seg(2 + 20_000 - i, 1000 + 2 * i, b"q"))

    _, _, seconds = measure(run)
    assert seconds < 5, f"{seconds:.1f} s"
    assert len(t.connections[0].ranges[0]) <= 4096


def test_many_half_open_connections_cost_a_few_kib_each() -> None:
    t = TcpTracker(http=True)
    n = 10_000
    segs = [_seg(i + 1, 1000, b"", sport=1024 + i, flags=0x002) for i in range(n)]

    def run() -> int:
        gc.disable()
        try:
            for s in segs:
                t.feed(s)
            return len(t.finish())
        finally:
            gc.enable()

    count, peak, seconds = measure(run)
    assert count == n
    per_connection = peak / n
    assert per_connection < 16 * 1024, f"{per_connection:.0f} bytes per half-open connection"
    assert seconds < 20


def test_an_http_header_that_never_ends_is_buffered_up_to_64_kib() -> None:
    t = TcpTracker(http=True)
    chunk = b"A" * 1400

    def run() -> int:
        t.feed(_seg(1, 999, b"", flags=0x002))
        t.feed(_seg(2, 1000, b"GET /" + chunk))
        seq = 1000 + 5 + len(chunk)
        for i in range(5000):  # 7 MB of header without an end
            t.feed(_seg(3 + i, seq, chunk))
            seq += len(chunk)
        (conn,) = t.finish()
        return conn.assembler[0].bytes_out

    out, peak, _ = measure(run)
    assert out > 7_000_000
    assert peak < 4 * MiB, f"{peak / MiB:.1f} MiB for a 7 MB header"


def test_a_capture_of_hostile_records_analyzes_in_bounded_memory_end_to_end() -> None:
    """All of it in one file: lying lengths inside honest blocks, fragments, held segments."""
    recs: list[PacketRecord] = []
    flow = pb.TcpFlow()
    for p in flow.handshake():
        recs.append(PacketRecord(len(recs) + 1, len(recs), 101, p, len(p)))
    for i in range(3000):
        p = flow.c("PA", b"h", seq=flow.next_seq[True] + 1 + 2 * i, advance=False)
        recs.append(PacketRecord(len(recs) + 1, len(recs), 101, p, len(p)))
    frag = _fragment(3, 64_000, b"z" * 1400)
    for _ in range(2000):
        recs.append(PacketRecord(len(recs) + 1, len(recs), 101, frag, 0xFFFFFFFF))
    res, peak, seconds = measure(lambda: analyze_records(recs))
    assert isinstance(res, Analysis) and res.packets == len(recs)
    assert peak < 16 * MiB and seconds < 10


# ---------------------------------------------------------------------------------------------
# HTTP header values come from the capture too


def test_http_lengths_that_are_not_plain_numbers_are_not_bodies() -> None:
    """Content-Length ``\\u00b9920`` (a digit to str.isdigit, not to int) and 5000 digits (more than int()
    converts) used to raise ValueError out of the analysis; a chunk size of ``-5`` moved the parser
    backwards over the same bytes until a 1M-iteration guard (~2 s per segment)."""
    from analyzers.http import HttpSplitter

    head = b"HTTP/1.1 200 OK\r\n"
    for cl in ("\u00b9920".encode("latin-1"), b"9" * 5000, b"-1", b"+5", b" 12 "):
        h = HttpSplitter()
        h.feed(head + b"Content-Length: " + cl + b"\r\n\r\nbody", 1)
        expected = "content-length" if cl.strip().isdigit() and cl.strip().isascii() and len(cl) < 100 else "until-close"
        assert h.messages[0].body_framing == expected, cl
    for size in (b"-5", b"+5", b"0x5", b"5_0", b" ", b"fffffffffffffffffffff"):
        h = HttpSplitter()
        t0 = time.perf_counter()
        h.feed(head + b"Transfer-Encoding: chunked\r\n\r\n" + size + b"\r\n" + b"hello\r\n" * 200, 1)
        assert time.perf_counter() - t0 < 0.1, size
        assert h.state in ("off", "chunk-data"), (size, h.state)
