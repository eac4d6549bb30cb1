"""The block-at-a-time reader and analysis loop (analyzers.blockloop): the same records, warnings and
documents as the record-at-a-time reader and loops, whatever the block boundaries cut."""

from __future__ import annotations

import io
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, corpus_dir, fixture_pcaps
from pcapbuild import Frame, ethernet, pcap_file, tcp_packet, udp_packet

import analyzers.pcapfile as pcapfile
from analyzers import blockloop
from analyzers.analysis import AnalysisOptions, analyze_file, analyze_records
from analyzers.decode import Decoder
from analyzers.errors import LoopcapError
from analyzers.parallel import _raw_shard, flow_shard
from analyzers.pcapfile import CaptureReader, PacketRecord, RecordBlock
from analyzers.tcp import TcpConnection

sys.path.insert(0, str(REPO / "tests" / "malformed"))
from make_corpus import build_cases

pytestmark = pytest.mark.skipif(not blockloop.HAVE_NUMPY, reason="numpy is not installed: the block loop is off")


def classic_captures(suffix: str = ".pcap") -> Iterator[Path]:
    for p in fixture_pcaps():
        if p.suffix == suffix:
            yield p
    for root in (corpus_dir(), REPO.parent / "shared" / "zeek-conformance" / "traces"):
        if root.is_dir():
            for p in sorted(root.rglob("*" + suffix)):
                if p.is_file() and p.stat().st_size < 8_000_000:
                    yield p


def all_captures() -> Iterator[Path]:
    yield from classic_captures(".pcap")
    yield from classic_captures(".pcapng")


def unblock(items: Iterator[RecordBlock | PacketRecord]) -> Iterator[tuple[object, ...]]:
    """The records a block stream stands for, parsed here with struct (not numpy)."""
    for item in items:
        if isinstance(item, PacketRecord):
            yield tuple(item[:5])
            continue
        e = ">" if item.big_endian else "<"
        for i, h in enumerate(item.starts):
            if item.pcapng:
                _t, _n, _i, hi, lo, cap, wire = struct.unpack_from(e + "IIIIIII", item.buf, h)
                ts = ((hi << 32) | lo) * item.ts_mul // item.ts_div + item.ts_offset_ns
                data = h + 28
            else:
                sec, frac, cap, wire = struct.unpack_from(e + "IIII", item.buf, h)
                ts = sec * 1_000_000_000 + frac * item.ts_mul
                data = h + 16
            yield (item.frame0 + i + 1, ts, item.linktype, item.buf[data:data + cap], max(wire, cap))


def read_both(data: bytes, chunk: int) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]], CaptureReader,
                                                 CaptureReader]:
    one = CaptureReader(io.BytesIO(data))
    many = CaptureReader(io.BytesIO(data))
    blocks = many.pcapng_blocks(chunk) if many.file_format == "pcapng" else many.pcap_blocks(chunk)
    return [tuple(r[:5]) for r in one], list(unblock(blocks)), one, many


CHUNKS = [16, 17, 100, 1000, 4096, 1 << 20]


@pytest.mark.parametrize("chunk", CHUNKS)
def test_block_reader_gives_the_records_of_the_record_reader(chunk: int) -> None:
    checked = 0
    for p in all_captures():
        data = p.read_bytes()
        try:
            one, many, r1, r2 = read_both(data, chunk)
        except LoopcapError:
            continue
        assert many == one, p
        assert (r2.offset, r2.frames, r2.warnings) == (r1.offset, r1.frames, r1.warnings), p
        checked += 1
    assert checked >= 40


@pytest.mark.parametrize("chunk", [64, 1000, 1 << 20])
def test_block_reader_warns_like_the_record_reader_on_damaged_files(chunk: int) -> None:
    """Cut inside a record header, inside a record, a length over the limit, big-endian and
    nanosecond files: the blocks stop where the record reader stops, with its warning."""
    frames = [Frame(1_000_000_000 + i, ethernet(udp_packet("127.0.0.1", 1000 + i, "127.0.0.1", 53, b"x" * i)))
              for i in range(60)]
    for endian in ("<", ">"):
        for ns in (False, True):
            whole = pcap_file(frames, endian=endian, nanosecond=ns)
            huge = struct.pack(endian + "IIII", 1, 0, pcapfile.MAX_RECORD_BYTES + 1, 60)
            cases = [whole, whole + b"\0" * 5, whole[:-7], whole[:24 + 16 + 3], whole + huge + b"\0" * 100]
            for data in cases:
                one, many, r1, r2 = read_both(data, chunk)
                assert many == one
                assert (r2.offset, r2.frames, r2.warnings) == (r1.offset, r1.frames, r1.warnings)
                assert bool(r2.warnings) == (data is not whole)


def reference(**kw: object) -> AnalysisOptions:
    return AnalysisOptions(decoder_factory=Decoder, **kw)  # type: ignore[arg-type]


def test_block_loop_documents_equal_the_reference_with_blocks_cut_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small blocks put records on both sides of every kind of boundary (the real captures and the
    malformed corpus; the full-size blocks are checked in tests/test_fast_path.py)."""
    paths = list(classic_captures())[:30] + list(classic_captures(".pcapng"))
    for chunk in (333, 5000):
        monkeypatch.setattr(pcapfile, "BLOCK_READ_BYTES", chunk)
        for p in paths:
            try:
                ref = analyze_file(p, reference()).to_dict()
            except LoopcapError:
                continue
            assert analyze_file(p).to_dict() == ref, (p, chunk)


def test_block_loop_documents_equal_the_reference_on_damaged_captures(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    monkeypatch.setattr(pcapfile, "BLOCK_READ_BYTES", 2000)
    checked = 0
    for case in build_cases(10):
        f = tmp_path / "c.pcap"
        f.write_bytes(case.data)
        try:
            ref = analyze_file(f, reference()).to_dict()
        except LoopcapError:
            continue
        with CaptureReader.open(f) as r:
            if not blockloop.available(r):
                continue
        assert analyze_file(f).to_dict() == ref, case.name
        checked += 1
    assert checked > 100


def test_without_numpy_the_record_loop_gives_the_same_document(monkeypatch: pytest.MonkeyPatch) -> None:
    p = next(p for p in fixture_pcaps() if p.suffix == ".pcap")
    blocks = analyze_file(p).to_dict()
    monkeypatch.setenv("LOOPCAP_NO_NUMPY", "1")
    with CaptureReader.open(p) as r:
        assert not blockloop.available(r)
    assert analyze_file(p).to_dict() == blocks


def test_block_loop_reads_seekable_files_only() -> None:
    class Pipe(io.BytesIO):
        def seekable(self) -> bool:
            return False

    blob = pcap_file([Frame(1, ethernet(udp_packet("127.0.0.1", 1, "127.0.0.1", 2, b"hi")))])
    assert not blockloop.available(CaptureReader(Pipe(blob)))
    assert blockloop.available(CaptureReader(io.BytesIO(blob)))


def _flow(port: int, isn: int, t0: int, *, rst_then_late: bool, v6: bool = False) -> list[Frame]:
    """A connection with data both ways; optionally a RST, then an in-order ACK 61 s later."""
    h = "::1" if v6 else "127.0.0.1"
    a, b = (h, port), (h, 80)

    def seg(fwd: bool, seq: int, ack: int, flags: str, data: bytes = b"") -> bytes:
        s, d = (a, b) if fwd else (b, a)
        return ethernet(tcp_packet(s[0], s[1], d[0], d[1], seq, ack, flags, payload=data))

    pkts = [seg(True, isn, 0, "S"), seg(False, 9000, isn + 1, "SA"), seg(True, isn + 1, 9001, "A"),
            seg(True, isn + 1, 9001, "PA", b"hello"), seg(False, 9001, isn + 6, "PA", b"world!"),
            seg(True, isn + 6, 9007, "A")]
    out = [Frame(t0 + i * 1000, f) for i, f in enumerate(pkts)]
    if rst_then_late:
        out.append(Frame(t0 + 10_000, seg(False, 9007, isn + 6, "RA")))
        out.append(Frame(t0 + 61 * 1_000_000_000, seg(True, isn + 6, 9007, "PA", b"late")))
    return out


def test_streamed_fast_paths_end_a_reset_connection_after_its_linger_like_the_reference() -> None:
    """A RST'd connection is no longer steady: an in-order segment 61 s later goes the full way,
    which hands the old connection out (its linger is over) and starts a new stream."""
    frames = _flow(40000, 100, 1_000_000_000, rst_then_late=True)
    blob = pcap_file(frames)

    def run(options: AnalysisOptions, blocks: bool) -> list[tuple[int, int, list[int]]]:
        got: list[TcpConnection] = []
        options.on_tcp_done = got.append
        options.on_udp_done = lambda c: None
        r = CaptureReader(io.BytesIO(blob))
        analyze_records(r, options, blocks=r if blocks else None)
        return sorted((c.stream, c.first_frame, c.packets) for c in got)

    ref = run(reference(), False)
    assert ref == [(0, 1, [4, 3]), (1, 8, [1, 0])]
    assert run(AnalysisOptions(), False) == ref
    assert run(AnalysisOptions(), True) == ref


def test_block_loop_shards_take_the_flows_of_the_record_loop_shards() -> None:
    frames: list[Frame] = []
    for i in range(40):
        frames += _flow(41000 + i, 1000 * i, 1_000_000_000 + i * 50_000, rst_then_late=False, v6=i % 2 == 1)
    frames.sort(key=lambda f: f.ts_ns)
    blob = pcap_file(frames)
    for k in range(3):
        opts = AnalysisOptions(shard=(k, 3, _raw_shard, flow_shard))
        one = analyze_records(CaptureReader(io.BytesIO(blob)), opts).to_dict()
        r = CaptureReader(io.BytesIO(blob))
        many = analyze_records(r, opts, blocks=r).to_dict()
        assert many == one
        assert 0 < len(many["tcp"]) < 40


@pytest.mark.parametrize("seed", range(6))
def test_block_loop_classifies_boundary_headers_like_the_record_loop(seed: int) -> None:
    """Established IPv4 and IPv6 connections whose segments get lying lengths (IP total/payload
    length, TCP data offset, IPv4 header length and fragment bits) and cut frames: every test the
    fast path makes, on both sides of its boundary, in the three loops."""
    import random

    rng = random.Random(seed)
    frames: list[bytes] = []
    for c in range(4):
        v6 = c % 2 == 1
        h = "::1" if v6 else "127.0.0.1"
        a, b = 42000 + c, 8080
        isn_a, isn_b = rng.randrange(2**32), rng.randrange(2**32)
        frames += [ethernet(tcp_packet(h, a, h, b, isn_a, 0, "S")),
                   ethernet(tcp_packet(h, b, h, a, isn_b, isn_a + 1, "SA")),
                   ethernet(tcp_packet(h, a, h, b, isn_a + 1, isn_b + 1, "A"))]
        off = 1
        for _ in range(60):
            data = rng.randbytes(rng.choice([0, 1, 7, 40]))
            f = bytearray(ethernet(tcp_packet(h, a, h, b, isn_a + off, isn_b + 1, rng.choice(["A", "PA"]),
                                              payload=data)))
            off += len(data)
            what = rng.randrange(6)
            if what == 0:  # IP length field
                at = 18 if v6 else 16
                true = (f[at] << 8) | f[at + 1]
                f[at:at + 2] = struct.pack("!H", max(0, true + rng.randint(-30, 30)))
            elif what == 1:  # TCP data offset
                at = 66 if v6 else 46
                f[at] = (rng.randrange(16) << 4) | (f[at] & 0x0F)
            elif what == 2:  # cut by a snap length
                f = f[:rng.randrange(40, len(f) + 1)]
            elif what == 3 and not v6:  # IPv4 header length and fragment bits
                if rng.random() < 0.5:
                    f[14] = 0x40 | rng.randrange(16)
                else:
                    f[20], f[21] = rng.choice([0x20, 0x40, 0x01, 0x00]), rng.choice([0, 1])
            frames.append(bytes(f))
    rng.shuffle(frames[12:])
    blob = pcap_file(Frame(1_000_000_000 + i * 1000, f, None) for i, f in enumerate(frames))
    ref = analyze_records(CaptureReader(io.BytesIO(blob)), reference()).to_dict()
    one = analyze_records(CaptureReader(io.BytesIO(blob))).to_dict()
    r = CaptureReader(io.BytesIO(blob))
    many = analyze_records(r, blocks=r).to_dict()
    assert one == ref
    assert many == ref
    assert len(ref["tcp"]) >= 4


@pytest.mark.parametrize("chunk", [64, 1 << 20])
def test_block_readers_give_the_records_and_warnings_of_the_record_reader_on_the_malformed_corpus(
        chunk: int) -> None:
    """pcap and pcapng cut, overwritten and spliced every way make_corpus.py knows (custom blocks that
    count as frames, sections that change byte order, interfaces described late...)."""
    kinds = set()
    for case in build_cases(10):
        try:
            one, many, r1, r2 = read_both(case.data, chunk)
        except LoopcapError:
            continue
        assert many == one, case.name
        assert (r2.offset, r2.frames, r2.warnings) == (r1.offset, r1.frames, r1.warnings), case.name
        kinds.add(r1.file_format)
    assert kinds >= {"pcap", "pcapng"}


def test_pcapng_blocks_alternating_with_other_blocks_are_not_read_again_and_again() -> None:
    """A run of EPBs is read a chunk ahead; where every EPB is followed by another kind of block
    (here a Name Resolution Block) each run is one record, and reading a chunk ahead per run would
    read the file thousands of times over.  The reader falls back to one block at a time instead:
    the same records, and the bytes read stay a small multiple of the file."""
    from pcapbuild import epb, idb, nrb, shb

    frames = [ethernet(udp_packet("127.0.0.1", 1000 + i % 50, "127.0.0.1", 53, b"q" * (i % 30)))
              for i in range(3000)]
    parts = [shb(), idb(1)]
    for i, f in enumerate(frames):
        parts.append(epb(0, 1_000_000_000 + i, f))
        parts.append(nrb())
    data = b"".join(parts)

    class Counting(io.BytesIO):
        served = 0

        def read(self, n: int | None = -1) -> bytes:
            out = super().read(n)
            Counting.served += len(out)
            return out

    one = [tuple(r[:5]) for r in CaptureReader(io.BytesIO(data))]
    many = CaptureReader(Counting(data))
    got = list(unblock(many.pcapng_blocks(64 * 1024)))
    assert got == one and len(one) == 3000
    assert Counting.served < 6 * len(data) + 4 * 64 * 1024


def test_a_reused_four_tuple_is_not_fed_to_the_replaced_connection_from_the_flow_cache() -> None:
    """Kept in memory (no streaming), a connection replaced on its 4-tuple by a new SYN stays in the
    list; the block loop's flow cache still points at it.  The new connection's ISN is chosen so its
    segments continue the old one's byte stream exactly: only the replaced connection losing its
    steady flag sends them to the new one, as the reference loop does."""
    h, cp, sp = "127.0.0.1", 43000, 80

    def seg(fwd: bool, seq: int, ack: int, flags: str, data: bytes = b"") -> bytes:
        s, d = ((h, cp), (h, sp)) if fwd else ((h, sp), (h, cp))
        return ethernet(tcp_packet(s[0], s[1], d[0], d[1], seq, ack, flags, payload=data))

    isn, srv = 5000, 9000
    frames = [seg(True, isn, 0, "S"), seg(False, srv, isn + 1, "SA"), seg(True, isn + 1, srv + 1, "A"),
              seg(True, isn + 1, srv + 1, "PA", b"abcd"), seg(False, srv + 1, isn + 5, "A")]
    new = isn + 4  # the new SYN's ISN: its data starts at isn + 5, where the old stream goes on
    frames += [seg(True, new, 0, "S"), seg(False, 7000, new + 1, "SA"), seg(True, new + 1, 7001, "A"),
               seg(True, new + 1, 7001, "PA", b"efgh"), seg(False, 7001, new + 5, "A")]
    blob = pcap_file(Frame(1_000_000_000 + i * 1000, f) for i, f in enumerate(frames))
    ref = analyze_records(CaptureReader(io.BytesIO(blob)), reference()).to_dict()
    r = CaptureReader(io.BytesIO(blob))
    assert analyze_records(r, blocks=r).to_dict() == ref
    assert [c["frames"]["count"] for c in ref["tcp"]] == [5, 5]


def _observed(path: Path, checksums: str, blocks: bool) -> tuple[dict[str, object], dict[str, int]]:
    """The document with the peers' views (and the checksum counts of their decoder), from the block
    loop with observers or from the record-at-a-time reference loop."""
    from loopcap.cli import _options

    opts = _options((), peers=True, checksums=checksums)
    with CaptureReader.open(path) as r:
        res = analyze_records(r, opts, file=str(path), blocks=r if blocks else None)
        res.file_format, res.linktypes, res.read_warnings = r.file_format, r.linktypes, list(r.warnings)
    zeek = opts.observers[0]
    return res.to_dict(), dict(zeek.decoder.counts)  # type: ignore[attr-defined]


@pytest.mark.parametrize("checksums", ["auto", "verify", "ignore"])
def test_block_loop_with_observers_gives_the_record_loops_documents_and_checksum_counts(
        checksums: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The peers' views read by blocks (segments built from the parsed fields, checksums classified
    in numpy) see what they see record by record, on every capture, with blocks cut small too."""
    checked = 0
    for chunk in (None, 3000):
        if chunk is not None:
            monkeypatch.setattr(blockloop, "OBSERVED_BLOCK_BYTES", chunk)
        for p in all_captures():
            try:
                want = _observed(p, checksums, blocks=False)
            except LoopcapError:
                continue
            assert _observed(p, checksums, blocks=True) == want, (p, chunk)
            checked += 1
    assert checked > 150


@pytest.mark.parametrize("chunk", [None, 4099])
@pytest.mark.parametrize("seed", range(4))
def test_block_loop_classifies_checksums_like_the_verifying_decoder(seed: int, chunk: int | None, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Segments with good, bad, offloaded (partial) and zero checksums, a bad IPv4 header checksum,
    odd lengths, cut by the snap length, IPv4 and IPv6, at every alignment in the block; in one
    block, and in many blocks of other sizes (the prefix sums' arrays are reused from block to block)."""
    import random

    if chunk is not None:
        monkeypatch.setattr(blockloop, "OBSERVED_BLOCK_BYTES", chunk)

    from analyzers.checksum import ChecksumDecoder, pseudo_header_sum
    from analyzers.decode import TcpSegment as Seg

    rng = random.Random(seed)
    frames = []
    for i in range(300):
        v6 = rng.random() < 0.4
        h = "::1" if v6 else "127.0.0.1"
        f = bytearray(ethernet(tcp_packet(h, 40000 + i % 7, h, 80, rng.randrange(2**32), rng.randrange(2**32),
                                          rng.choice(["A", "PA", "S", "FA"]),
                                          payload=rng.randbytes(rng.choice([0, 1, 2, 3, 57, 1000])))))
        l4 = 54 if v6 else 34
        r = rng.random()
        if r < 0.2:
            f[l4 + 16] ^= 0x5A  # a bad TCP checksum
        elif r < 0.3:  # offloaded: the field holds the pseudo-header sum (Linux on loopback)
            src, dst = (bytes(f[22:38]), bytes(f[38:54])) if v6 else (bytes(f[26:30]), bytes(f[30:34]))
            f[l4 + 16:l4 + 18] = pseudo_header_sum(src, dst, 6, len(f) - l4).to_bytes(2, "big")
        elif r < 0.4 and not v6:
            f[24] ^= 0x01  # a bad IPv4 header checksum
        elif r < 0.5:
            f[-1] ^= 0xFF  # the payload changed after the sum
        cut = len(f) - rng.choice([0, 0, 0, 1, 5]) if len(f) > l4 + 25 else len(f)
        frames.append(Frame(1_000_000_000 + i * 1000, bytes(f[:cut]), len(f)))
    blob = pcap_file(frames)
    dec = ChecksumDecoder()
    want = []
    for i, fr in enumerate(frames):
        x = dec.decode(i + 1, fr.ts_ns, 1, fr.data, fr.wirelen or len(fr.data))
        want.append(x.checksum if isinstance(x, Seg) else None)
    got: list[str | None] = [None] * len(frames)

    class Seen:
        def on_tcp(self, conn: TcpConnection, seg: Seg) -> None:
            got[seg.frame - 1] = seg.checksum

        def on_udp(self, conv: object, dg: object) -> None:
            pass

        def on_other(self, frame: int, ts_ns: int, result: object) -> None:
            pass

        def contribute(self, analysis: object, doc: dict[str, object]) -> None:
            pass

    reader = CaptureReader(io.BytesIO(blob))
    analyze_records(reader, AnalysisOptions(observers=[Seen()], decoder_factory=ChecksumDecoder), blocks=reader)
    assert got == want
    assert {"ok", "partial", "bad", "bad_ip", "unverified"} <= set(want)


@pytest.mark.parametrize("seed", range(4))
def test_word_sums_of_many_ranges_equal_rfc1071_sums_taken_one_range_at_a_time(seed: int) -> None:
    """The checksums' word sums (numpy, many ranges of one block at once) against the sum of each
    range on its own: ranges at odd and even offsets, of odd and even lengths, empty, overlapping,
    nested, out of order, and ending where the block does (its padding follows)."""
    import random

    import numpy as np

    from analyzers.blockloop import _PAD, _WordSums

    rng = random.Random(seed)
    block = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 5000)))
    a = np.frombuffer(block + _PAD, dtype=np.uint8)
    ranges = [(s, rng.randrange(0, min(1600, len(block) - s) + 1))
              for s in (rng.randrange(len(block)) for _ in range(300))]
    ranges += [(0, len(block)), (len(block) - 1, 1), (len(block), 0), (3 % len(block), 0)]

    def one(start: int, length: int) -> int:
        data = block[start:start + length] + b"\0" * (length & 1)  # RFC 1071 pads an odd last byte
        return sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))

    starts = np.array([s for s, _ in ranges], dtype=np.int64)
    lengths = np.array([n for _, n in ranges], dtype=np.int64)
    sums = _WordSums()
    for _ in range(2):  # one instance serves every block of a loop
        got = sums.load(a)(starts, lengths)
        assert got.tolist() == [one(s, n) for s, n in ranges]
