"""The analysis loop's fast path (in-place decoding of plain Ethernet/IP/TCP, ``add_steady``) gives
exactly the documents of the reference path, on every capture the project has."""

from __future__ import annotations

import io
import random
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, corpus_dir, fixture_pcaps
from pcapbuild import Frame, ethernet, pcap_file, tcp_packet

from analyzers.analysis import AnalysisOptions, analyze_file, analyze_records
from analyzers.decode import Decoder
from analyzers.errors import LoopcapError
from analyzers.pcapfile import CaptureReader

sys.path.insert(0, str(REPO / "tests" / "malformed"))
from make_corpus import build_cases


def reference(**kw: object) -> AnalysisOptions:
    """Options that force the reference loop: a decoder factory (even the default one) disables the
    fast path."""
    return AnalysisOptions(decoder_factory=Decoder, **kw)  # type: ignore[arg-type]


def both(path: Path) -> tuple[dict[str, object], dict[str, object]]:
    """The reference loop's document, and the fast loops' after checking that they agree: the
    block-at-a-time loop (analyze_file on a classic pcap) and the record-at-a-time one."""
    fast = analyze_file(path).to_dict()
    with CaptureReader.open(path) as r:
        res = analyze_records(r, file=str(path))  # no blocks=: one record at a time
        res.file_format, res.linktypes, res.read_warnings = r.file_format, r.linktypes, list(r.warnings)
    ref = analyze_file(path, reference()).to_dict()
    assert fast == res.to_dict(), path
    return fast, ref


def real_captures() -> Iterator[Path]:
    yield from fixture_pcaps()
    for root in (corpus_dir(), REPO.parent / "shared" / "zeek-conformance" / "traces", REPO / "bench" / "out"):
        if root.is_dir():
            for p in sorted(root.rglob("*")):
                if p.suffix in (".pcap", ".pcapng") and p.stat().st_size < 8_000_000:
                    yield p


def test_fast_and_reference_paths_agree_on_every_real_capture() -> None:
    paths = list(real_captures())
    assert len(paths) >= 17 + 17
    for p in paths:
        try:
            fast, ref = both(p)
        except LoopcapError:
            continue
        assert fast == ref, p


def test_fast_and_reference_paths_agree_on_the_malformed_corpus(tmp_path: Path) -> None:
    cases = build_cases(20)  # 20 truncations of the large capture: 400 held 1.5 GB at once
    checked = 0
    for case in cases:
        f = tmp_path / "c.bin"
        f.write_bytes(case.data)
        try:
            fast, ref = both(f)
        except LoopcapError:
            continue
        assert fast == ref, case.name
        checked += 1
    assert checked > 250


def test_fast_and_reference_paths_agree_on_the_fuzzers_corpus() -> None:
    checked = 0
    for p in sorted((REPO / "tests" / "fuzz" / "corpus" / "reader").iterdir()):
        try:
            fast, ref = both(p)
        except LoopcapError:
            continue
        assert fast == ref, p
        checked += 1
    assert checked > 50


@pytest.mark.parametrize("seed", range(40))
def test_fast_and_reference_paths_agree_on_shuffled_duplicated_and_cut_segments(seed: int) -> None:
    """Connections whose segments arrive out of order, twice, cut by the snap length, with assorted
    flags, IPv4 and IPv6, two connections interleaved: every branch between the fast path and the
    full one."""
    rng = random.Random(seed)
    frames: list[bytes] = []
    for c in range(2):
        v6 = rng.random() < 0.4
        ha, hb = ("::1", "::1") if v6 else ("127.0.0.1", "127.0.0.2")
        pa, pb = 40000 + seed * 2 + c, 80
        isn_a, isn_b = rng.randrange(2**32), rng.randrange(2**32)

        def seg(fwd: bool, seq: int, ack: int, flags: str, data: bytes = b"", ends: tuple[str, int, str, int] = (
                ha, pa, hb, pb)) -> bytes:
            src, sp, dst, dp = ends if fwd else (ends[2], ends[3], ends[0], ends[1])
            return ethernet(tcp_packet(src, sp, dst, dp, seq, ack, flags, payload=data))

        conn = [seg(True, isn_a, 0, "S"), seg(False, isn_b, isn_a + 1, "SA"), seg(True, isn_a + 1, isn_b + 1, "A")]
        off_a = off_b = 1
        for _ in range(30):
            data = rng.randbytes(rng.choice([0, 0, 1, 100, 700]))
            if rng.random() < 0.5:
                conn.append(seg(True, isn_a + off_a, isn_b + off_b, rng.choice(["A", "PA", "PA", "A", "EA"]), data))
                off_a += len(data)
            else:
                conn.append(seg(False, isn_b + off_b, isn_a + off_a, rng.choice(["A", "PA", "UA", "A"]), data))
                off_b += len(data)
        conn += [seg(True, isn_a + off_a, isn_b + off_b, "FA"), seg(False, isn_b + off_b, isn_a + off_a + 1, "FA"),
                 seg(True, isn_a + off_a + 1, isn_b + off_b + 1, "A")]
        for _ in range(rng.randrange(8)):  # disorder: swaps, duplicates (also after the close)
            i, j = rng.randrange(3, len(conn)), rng.randrange(3, len(conn))
            conn[i], conn[j] = conn[j], conn[i]
            conn.insert(rng.randrange(3, len(conn)), conn[rng.randrange(3, len(conn))])
        frames = conn if not frames else [f for pair in zip(frames, conn, strict=False) for f in pair] + \
            frames[len(conn):] + conn[len(frames):]
    snap = rng.choice([1 << 18, 1 << 18, 120])
    blob = pcap_file(Frame(1_000_000_000 + i * 1000, f[:snap], len(f)) for i, f in enumerate(frames))
    fast = analyze_records(CaptureReader(io.BytesIO(blob))).to_dict()
    ref = analyze_records(CaptureReader(io.BytesIO(blob)), reference()).to_dict()
    assert fast == ref
    r = CaptureReader(io.BytesIO(blob))
    assert analyze_records(r, blocks=r).to_dict() == ref  # many records at a time
    assert fast["tcp"] and len(fast["tcp"]) <= 2
