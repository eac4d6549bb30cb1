"""The pcap / pcapng reader on synthetic captures: every byte order, timestamp resolution and link type
gives the same packets with exact nanosecond timestamps; damage after the header becomes a
:class:`ReadWarning` at the right offset with every record before it delivered; a file that is not a
capture is a :class:`CaptureFormatError` with an offset; no length read from the file makes the reader
ask for a huge buffer."""

from __future__ import annotations

import gzip
import io
import random
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pcapbuild as pb
import pytest
from conftest import need_tshark

from analyzers.analysis import analyze_file, analyze_records
from analyzers.decode import LINK_LAYERS, Decoder, Malformed, TcpSegment, UdpDatagram
from analyzers.errors import CaptureFormatError
from analyzers.pcapfile import (
    MAX_BLOCK_BYTES,
    MAX_RECORD_BYTES,
    CaptureReader,
    PacketRecord,
    ReadWarning,
    open_capture_bytes,
)

# ---------------------------------------------------------------------------------------------
# reference content: the same packets whatever the file format / link type

#: timestamps with nanosecond detail, so that each resolution has to round them its own way
TIMES = [pb.START_NS + d for d in (0, 999, 1_000_001, 2_500_000_123, 3_000_000_000, 61_999_999_999)]


def ip_packets(v6: bool) -> list[bytes]:
    c, s = ("fd00::1", "fd00::2") if v6 else ("192.0.2.1", "192.0.2.2")
    flow = pb.TcpFlow(c, 43210, s, 80, cisn=0xFFFFFFF0, sisn=7)
    return [
        flow.c("S", options=pb.opt_mss(1460) + pb.opt_sack_permitted() + pb.opt_timestamps(1, 0)
               + pb.NOP + pb.opt_wscale(7)),
        flow.s("SA", options=pb.opt_mss(1400)),
        flow.c("A"),
        flow.c("PA", b"GET / HTTP/1.0\r\n\r\n"),
        pb.udp_packet(c, 5353, s, 53, b"\x12\x34 a datagram"),
        flow.s("FA", b"bye"),
    ]


Content = tuple[object, ...]


def content(records: Sequence[PacketRecord]) -> list[Content]:
    """What the decoder makes of each record (everything but the frame's own link header)."""
    dec = Decoder()
    out: list[Content] = []
    for r in records:
        x = dec.decode(r.frame, r.ts_ns, r.linktype, r.data, r.wirelen)
        if isinstance(x, TcpSegment):
            out.append(("tcp", x.version, x.src, x.dst, x.sport, x.dport, x.seq, x.ack, x.flags, x.options,
                        x.payload, x.paylen, x.window))
        elif isinstance(x, UdpDatagram):
            out.append(("udp", x.version, x.src, x.dst, x.sport, x.dport, x.length, x.payload))
        else:
            out.append(("other", repr(x)))
    return out


def reference(v6: bool) -> list[Content]:
    return content(pb.as_records(ip_packets(v6)))


def read_all(data: bytes) -> tuple[list[PacketRecord], CaptureReader]:
    reader = open_capture_bytes(data)
    return list(reader), reader


def test_reference_content_is_what_was_built() -> None:
    ref = reference(False)
    assert [c[0] for c in ref] == ["tcp", "tcp", "tcp", "tcp", "udp", "tcp"]
    assert ref[0][6] == 0xFFFFFFF0 and ref[3][10] == b"GET / HTTP/1.0\r\n\r\n"
    assert ref[4][7] == b"\x12\x34 a datagram"
    assert [c[1] for c in reference(True)] == [6] * 6


# ---------------------------------------------------------------------------------------------
# classic pcap


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("nanosecond", [False, True], ids=["usec", "nsec"])
@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_classic_pcap_byte_orders_and_resolutions(endian: pb.Endian, nanosecond: bool, v6: bool) -> None:
    frames = [pb.Frame(t, pb.ethernet(p)) for t, p in zip(TIMES, ip_packets(v6), strict=False)]
    recs, reader = read_all(pb.pcap_file(frames, endian=endian, nanosecond=nanosecond))
    assert reader.file_format == ("nsecpcap" if nanosecond else "pcap")
    assert reader.linktypes == [1] and reader.version == (2, 4) and reader.snaplen == 262144
    assert not reader.warnings
    assert [r.frame for r in recs] == list(range(1, len(frames) + 1))
    assert [r.ts_ns for r in recs] == [t if nanosecond else t // 1000 * 1000 for t in TIMES]
    assert [r.data for r in recs] == [f.data for f in frames]
    assert all(r.interface == 0 and r.linktype == 1 and r.wirelen == len(r.data) for r in recs)
    assert content(recs) == reference(v6)
    assert reader.frames == len(frames) and reader.offset == 24 + sum(16 + len(f.data) for f in frames)


def test_classic_pcap_header_fields() -> None:
    # upper bits of the link-type field carry FCS information, not the link type
    data = bytearray(pb.pcap_file([pb.Frame(TIMES[0], pb.ethernet(ip_packets(False)[0]))]))
    data[20:24] = (0xD0000001).to_bytes(4, "little")
    recs, reader = read_all(bytes(data))
    assert reader.linktypes == [1] and recs[0].linktype == 1
    # a record whose original length is below its captured length reports the captured length
    rec = pb.pcap_header(101) + pb.pcap_record(TIMES[0], b"\x45" + b"\x00" * 39, wirelen=10)
    recs, _ = read_all(rec)
    assert recs[0].wirelen == 40
    # snap length: the wire length is kept
    rec = pb.pcap_header(101) + pb.pcap_record(TIMES[0], b"\x45" + b"\x00" * 39, wirelen=1500)
    assert read_all(rec)[0][0].wirelen == 1500


def test_empty_pcap_has_no_records_and_no_warning() -> None:
    recs, reader = read_all(pb.pcap_header(1))
    assert recs == [] and reader.warnings == [] and reader.frames == 0 and reader.offset == 24


# ---------------------------------------------------------------------------------------------
# pcapng

RESOLUTIONS = [None, 6, 9, 3, 0, 12, 0x80 | 10, 0x80 | 20, 0x80 | 30, 0x80 | 0]


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("tsresol", RESOLUTIONS, ids=lambda r: "default" if r is None else f"0x{r:02x}")
def test_pcapng_resolutions_and_byte_orders(endian: pb.Endian, tsresol: int | None) -> None:
    # 64 bits of picoseconds last 213 days: such an interface cannot carry today's epoch times
    times = TIMES if pb.ts_units_per_second(tsresol) <= 10**9 else [t - pb.START_NS + 12345 for t in TIMES]
    frames = [pb.Frame(t, pb.ethernet(p)) for t, p in zip(times, ip_packets(False), strict=False)]
    raws = [pb.ts_to_units(f.ts_ns, tsresol) for f in frames]
    assert all(raw < 1 << 64 for raw in raws)
    data = pb.shb(endian) + pb.idb(1, endian, tsresol=tsresol, name="lo")
    data += b"".join(pb.epb(0, raw, f.data, endian) for raw, f in zip(raws, frames, strict=True))
    recs, reader = read_all(data)
    assert reader.file_format == "pcapng" and not reader.warnings
    assert reader.interfaces[0].name == "lo"
    assert [r.ts_ns for r in recs] == [pb.units_to_ns(raw, tsresol) for raw in raws]
    if tsresol in (None, 6):
        assert [r.ts_ns for r in recs] == [t // 1000 * 1000 for t in TIMES]
    if tsresol in (9, 12):
        assert [r.ts_ns for r in recs] == times
    assert content(recs) == reference(False)


@pytest.mark.parametrize("tsoffset", [0, 3600, -86400, 1 << 40])
@pytest.mark.parametrize("tsresol", [None, 9, 0x80 | 16])
def test_pcapng_if_tsoffset_is_added(tsoffset: int, tsresol: int | None) -> None:
    raw = pb.ts_to_units(TIMES[3], tsresol)
    data = pb.shb() + pb.idb(101, tsresol=tsresol, tsoffset=tsoffset) + pb.epb(0, raw, ip_packets(False)[0])
    recs, _ = read_all(data)
    assert recs[0].ts_ns == pb.units_to_ns(raw, tsresol) + tsoffset * 1_000_000_000


def test_pcapng_obsolete_packet_block_uses_resolution_and_tsoffset() -> None:
    """The obsolete Packet Block is read like an EPB (Wireshark reads both with the same code,
    interface resolution and if_tsoffset included)."""
    pkt = ip_packets(False)[3]
    raw = pb.ts_to_units(TIMES[2], 9)
    data = pb.shb() + pb.idb(101, tsresol=9, tsoffset=100) + pb.pb(0, raw, pkt, wirelen=len(pkt) + 10)
    recs, reader = read_all(data)
    assert not reader.warnings
    assert len(recs) == 1
    r = recs[0]
    assert (r.data, r.wirelen, r.interface, r.linktype) == (pkt, len(pkt) + 10, 0, 101)
    assert r.ts_ns == TIMES[2] + 100 * 1_000_000_000


def test_pcapng_simple_packet_block() -> None:
    pkts = ip_packets(False)
    data = pb.shb() + pb.idb(101, snaplen=30) + pb.spb(pkts[0][:30], wirelen=len(pkts[0]))
    data += pb.spb(pkts[2][:20], wirelen=20)
    recs, reader = read_all(data)
    assert not reader.warnings
    assert [(r.frame, r.ts_ns, r.interface, r.linktype) for r in recs] == [(1, 0, 0, 101), (2, 0, 0, 101)]
    assert recs[0].data == pkts[0][:30] and recs[0].wirelen == len(pkts[0])
    assert recs[1].data == pkts[2][:20] and recs[1].wirelen == 20
    # an SPB never yields more than its packet length even though the block is padded
    data = pb.shb() + pb.idb(101) + pb.spb(b"\x45\x00\x00", wirelen=3)
    assert read_all(data)[0][0].data == b"\x45\x00\x00"


def test_pcapng_several_interfaces_and_sections() -> None:
    v4, v6 = ip_packets(False), ip_packets(True)
    t = TIMES
    # section 1, little-endian: Ethernet in microseconds and NULL in nanoseconds with an offset
    s1 = pb.shb("<") + pb.idb(1, "<") + pb.idb(0, "<", tsresol=9, tsoffset=-10)
    s1 += pb.epb(0, pb.ts_to_units(t[0], None), pb.ethernet(v4[0]), "<")
    s1 += pb.epb(1, pb.ts_to_units(t[1], 9), pb.null_frame(v4[1], 2, "<"), "<")
    s1 += pb.nrb("<") + pb.isb(1, "<")
    # section 2, big-endian: SLL2 at 2^-16 s and LOOP in milliseconds; interface numbers restart
    s2 = pb.shb(">") + pb.idb(276, ">", tsresol=0x80 | 16, tsoffset=7) + pb.idb(108, ">", tsresol=3)
    s2 += pb.epb(1, pb.ts_to_units(t[2], 3), pb.loop_frame(v6[2], 24), ">")
    s2 += pb.epb(0, pb.ts_to_units(t[3], 0x80 | 16), pb.sll2_frame(v6[3]), ">")
    s2 += pb.custom_block(">")
    # section 3, little-endian again: raw IPv4
    s3 = pb.shb("<") + pb.idb(228, "<", tsresol=9) + pb.epb(0, t[4], v4[4], "<")
    recs, reader = read_all(s1 + s2 + s3)
    assert not reader.warnings
    assert [(r.frame, r.linktype, r.interface) for r in recs] == [
        (1, 1, 0), (2, 0, 1), (3, 108, 1), (4, 276, 0), (6, 228, 0)]  # the custom block is frame 5
    assert [r.ts_ns for r in recs] == [
        t[0] // 1000 * 1000,
        t[1] - 10 * 1_000_000_000,
        t[2] // 1_000_000 * 1_000_000,
        pb.units_to_ns(pb.ts_to_units(t[3], 0x80 | 16), 0x80 | 16, 7),
        t[4],
    ]
    ref4, ref6 = reference(False), reference(True)
    assert content(recs) == [ref4[0], ref4[1], ref6[2], ref6[3], ref4[4]]


def test_linktypes_cover_every_section() -> None:
    """``linktypes`` names the link types of the whole file, not only of the last section."""
    data = pb.shb() + pb.idb(1) + pb.epb(0, 0, pb.ethernet(ip_packets(False)[0]))
    data += pb.shb(">") + pb.idb(276, ">") + pb.epb(0, 0, pb.sll2_frame(ip_packets(False)[1]), ">")
    recs, reader = read_all(data)
    assert len(recs) == 2
    assert reader.linktypes == [1, 276]


@pytest.mark.parametrize("block", [
    pb.nrb(), pb.isb(0), pb.pcapng_block(pb.BT_DSB, b"\x00" * 12), pb.pcapng_block(0x7777, b"?" * 13),
    pb.pcapng_block(0x80000001, b""), pb.pcapng_block(0x208, b"\x00" * 40),
], ids=["NRB", "ISB", "DSB", "unknown", "local-use", "sysdig-evf"])
def test_pcapng_unknown_blocks_are_skipped(block: bytes) -> None:
    pkts = ip_packets(False)
    data = pb.shb() + block + pb.idb(101) + block + pb.epb(0, 1, pkts[0]) + block + pb.epb(0, 2, pkts[1]) + block
    recs, reader = read_all(data)
    assert not reader.warnings
    assert [r.data for r in recs] == pkts[:2] and [r.frame for r in recs] == [1, 2]


#: blocks Wireshark 4.0 shows as frames of their own (checked with tshark below)
RECORD_BLOCKS = [pb.custom_block(), pb.custom_block(copyable=False),
                 pb.pcapng_block(9, b"__REALTIME_TIMESTAMP=1700000000000000\nMESSAGE=hi\n"),
                 pb.pcapng_block(0x204, b"\x00" * 40)]


@pytest.mark.parametrize("block", RECORD_BLOCKS, ids=["custom", "custom-nocopy", "systemd-journal", "sysdig"])
def test_pcapng_custom_blocks_are_skipped_but_take_a_frame_number(block: bytes) -> None:
    """Custom (and journal / sysdig) blocks carry no packet, but Wireshark numbers them as frames:
    the packets after them keep Wireshark's frame numbers."""
    pkts = ip_packets(False)
    data = pb.shb() + pb.idb(101) + pb.epb(0, 1, pkts[0]) + block + pb.epb(0, 2, pkts[1]) + block + block
    data += pb.epb(0, 3, pkts[2])
    recs, reader = read_all(data)
    assert not reader.warnings
    assert [r.data for r in recs] == pkts[:3] and [r.frame for r in recs] == [1, 3, 6]
    assert reader.frames == 6


def test_pcapng_epb_options_and_lengths() -> None:
    pkt = ip_packets(False)[3]
    data = pb.shb() + pb.idb(101)
    data += pb.epb(0, 5, pkt, options=[(1, b"a comment"), (2, b"\x00\x00\x00\x01")])
    data += pb.epb(0, 6, pkt[:40], wirelen=len(pkt))  # snapped
    data += pb.epb(0, 7, pkt, wirelen=3)  # original length below the captured length
    recs, reader = read_all(data)
    assert not reader.warnings
    assert [(r.data, r.wirelen) for r in recs] == [(pkt, len(pkt)), (pkt[:40], len(pkt)), (pkt, len(pkt))]


def test_pcapng_high_timestamp_word() -> None:
    raw = (0x12345 << 32) | 0x6789ABCD
    data = pb.shb() + pb.idb(101, tsresol=9) + pb.epb(0, raw, ip_packets(False)[0])
    assert read_all(data)[0][0].ts_ns == raw


# ---------------------------------------------------------------------------------------------
# link types: every row of LINK_LAYERS gives the same packets

V4, V6 = "v4", "v6"
LINK_VARIANTS: list[tuple[str, int, dict[str, object], tuple[str, ...]]] = [
    ("ethernet", 1, {}, (V4, V6)),
    ("802.1Q", 1, {"vlans": [(0x8100, 10)]}, (V4, V6)),
    ("QinQ-88a8", 1, {"vlans": [(0x88A8, 100), (0x8100, 200)]}, (V4, V6)),
    ("QinQ-9100", 1, {"vlans": [(0x9100, 1), (0x8100, 2)]}, (V4, V6)),
    ("null-le-af2", 0, {"af": 2, "endian": "<"}, (V4,)),
    ("null-be-af2", 0, {"af": 2, "endian": ">"}, (V4,)),
    ("null-le-af24", 0, {"af": 24, "endian": "<"}, (V6,)),
    ("null-be-af24", 0, {"af": 24, "endian": ">"}, (V6,)),
    ("null-le-af28", 0, {"af": 28, "endian": "<"}, (V6,)),
    ("null-be-af28", 0, {"af": 28, "endian": ">"}, (V6,)),
    ("null-le-af30", 0, {"af": 30, "endian": "<"}, (V6,)),
    ("null-be-af30", 0, {"af": 30, "endian": ">"}, (V6,)),
    ("null-le-af10-linux", 0, {"af": 10, "endian": "<"}, (V6,)),
    ("loop-af2", 108, {"af": 2}, (V4,)),
    ("loop-af24", 108, {"af": 24}, (V6,)),
    ("loop-af28", 108, {"af": 28}, (V6,)),
    ("loop-af30", 108, {"af": 30}, (V6,)),
    ("raw-12", 12, {}, (V4, V6)),
    ("raw-14", 14, {}, (V4, V6)),
    ("raw-101", 101, {}, (V4, V6)),
    ("ipv4-228", 228, {}, (V4,)),
    ("ipv6-229", 229, {}, (V6,)),
    ("sll-113", 113, {}, (V4, V6)),
    ("sll2-276", 276, {}, (V4, V6)),
    ("ppp-9", 9, {}, (V4, V6)),
]


def _wrap(linktype: int, ip: bytes, kw: dict[str, object]) -> bytes:
    vlans = kw.get("vlans", [])
    af = kw.get("af")
    endian = kw.get("endian", "<")
    assert isinstance(vlans, list) and (af is None or isinstance(af, int)) and endian in ("<", ">")
    return pb.link_frame(linktype, ip, vlans=vlans, af=af, endian="<" if endian == "<" else ">")


def test_link_variants_cover_every_link_layer() -> None:
    assert {lt for _, lt, _, _ in LINK_VARIANTS} == set(LINK_LAYERS)


@pytest.mark.parametrize(("name", "linktype", "kw", "families"), LINK_VARIANTS, ids=[v[0] for v in LINK_VARIANTS])
@pytest.mark.parametrize("container", ["pcap", "pcapng"])
def test_every_link_type_gives_the_same_packets(name: str, linktype: int, kw: dict[str, object],
                                                families: tuple[str, ...], container: str) -> None:
    for fam in families:
        frames = [pb.Frame(t, _wrap(linktype, p, kw)) for t, p in zip(TIMES, ip_packets(fam == V6), strict=False)]
        if container == "pcap":
            data = pb.pcap_file(frames, linktype, nanosecond=True)
        else:
            data = pb.shb() + pb.idb(linktype, tsresol=9) + b"".join(pb.epb(0, f.ts_ns, f.data) for f in frames)
        recs, reader = read_all(data)
        assert not reader.warnings and reader.linktypes == [linktype]
        assert [r.ts_ns for r in recs] == TIMES
        assert content(recs) == reference(fam == V6), (name, fam)
        # and the whole analysis agrees, frame for frame
        doc = analyze_records(recs).to_dict()
        ref = analyze_records(pb.as_records(ip_packets(fam == V6))).to_dict()
        assert doc["malformed"]["count"] == 0
        assert [c["payload"]["client"]["sha256"] for c in doc["tcp"]] == [
            c["payload"]["client"]["sha256"] for c in ref["tcp"]]
        assert [d["datagrams"][0]["sha256"] for d in doc["udp"]] == [d["datagrams"][0]["sha256"] for d in ref["udp"]]


# ---------------------------------------------------------------------------------------------
# not a capture


@pytest.mark.parametrize("data", [
    b"", b"\xd4", b"\xd4\xc3\xb2", b"hello, this is not a capture file at all\n",
    b"\x00" * 64, b"PK\x03\x04" + b"\x00" * 40,
], ids=["empty", "1-byte", "3-bytes", "text", "zeros", "zip"])
def test_not_a_capture_is_a_format_error_at_offset_0(data: bytes) -> None:
    with pytest.raises(CaptureFormatError) as ei:
        open_capture_bytes(data, name="x.pcap")
    assert ei.value.offset == 0 and ei.value.path == "x.pcap"
    assert "byte offset 0" in str(ei.value)


def test_gzip_capture_is_a_format_error_with_a_hint() -> None:
    data = gzip.compress(pb.pcap_file([pb.Frame(TIMES[0], pb.ethernet(ip_packets(False)[0]))]))
    with pytest.raises(CaptureFormatError) as ei:
        open_capture_bytes(data)
    assert ei.value.offset == 0
    assert ei.value.hint is not None and "gzip" in ei.value.hint


@pytest.mark.parametrize("cut", [4, 5, 10, 23])
@pytest.mark.parametrize("endian", ["<", ">"])
def test_truncated_pcap_header_is_a_format_error(cut: int, endian: pb.Endian) -> None:
    with pytest.raises(CaptureFormatError) as ei:
        open_capture_bytes(pb.pcap_header(1, endian=endian)[:cut])
    assert ei.value.offset == cut


def test_pcapng_bad_first_section_header_is_a_format_error() -> None:
    good = pb.shb() + pb.idb(1)
    bad_bom = pb.shb(bom=0x11223344) + pb.idb(1)
    with pytest.raises(CaptureFormatError) as ei:
        list(open_capture_bytes(bad_bom))
    assert ei.value.offset == 8
    for length in (20, 30, MAX_BLOCK_BYTES + 4):
        data = pb.shb(length=length) + pb.idb(1)
        with pytest.raises(CaptureFormatError) as ei:
            list(open_capture_bytes(data))
        assert ei.value.offset == 4
    assert read_all(good)[1].warnings == []


def test_open_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(CaptureFormatError, match="no such file"):
        CaptureReader.open(tmp_path / "nope.pcap")
    with pytest.raises(CaptureFormatError):
        CaptureReader.open(tmp_path)
    with pytest.raises(CaptureFormatError, match="no such file"):
        analyze_file(tmp_path / "nope.pcap")
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a capture")
    with pytest.raises(CaptureFormatError) as ei:
        analyze_file(bad)
    assert ei.value.offset == 0 and ei.value.path == str(bad)


# ---------------------------------------------------------------------------------------------
# truncation at every offset


def _pcap_with_boundaries() -> tuple[bytes, list[int], list[bytes]]:
    frames = [pb.Frame(t, pb.ethernet(p)) for t, p in zip(TIMES, ip_packets(False), strict=False)]
    data = pb.pcap_file(frames)
    bounds = [24]
    for f in frames:
        bounds.append(bounds[-1] + 16 + len(f.data))
    assert bounds[-1] == len(data)
    return data, bounds, [f.data for f in frames]


def test_pcap_truncated_at_every_offset() -> None:
    data, bounds, frames = _pcap_with_boundaries()
    for cut in range(len(data) + 1):
        if cut < 24:
            with pytest.raises(CaptureFormatError):
                open_capture_bytes(data[:cut])
            continue
        recs, reader = read_all(data[:cut])
        n = sum(1 for b in bounds[1:] if b <= cut)
        assert [r.data for r in recs] == frames[:n], cut
        assert reader.frames == n
        if cut in bounds:
            assert reader.warnings == [], cut
        else:
            assert len(reader.warnings) == 1, cut
            w = reader.warnings[0]
            assert w.offset == bounds[n], cut
            assert w.frame == n + 1
            assert "cut short" in w.message


def _pcapng_with_boundaries() -> tuple[bytes, list[int], list[int]]:
    """The file, the offsets where blocks start (and its end), the end offsets of packet blocks."""
    pkts = [pb.ethernet(p) for p in ip_packets(False)]
    blocks = [(pb.shb(), False), (pb.idb(1, tsresol=9), False), (pb.epb(0, TIMES[0], pkts[0]), True),
              (pb.epb(0, TIMES[1], pkts[1]), True), (pb.isb(0), False), (pb.epb(0, TIMES[2], pkts[2]), True),
              (pb.shb(">"), False), (pb.idb(1, ">"), False), (pb.epb(0, TIMES[3] // 1000, pkts[3], ">"), True)]
    bounds = [0]
    packet_ends = []
    for b, is_packet in blocks:
        bounds.append(bounds[-1] + len(b))
        if is_packet:
            packet_ends.append(bounds[-1])
    return b"".join(b for b, _ in blocks), bounds, packet_ends


def test_pcapng_truncated_at_every_offset() -> None:
    data, bounds, packet_ends = _pcapng_with_boundaries()
    full, _ = read_all(data)
    assert len(full) == 4
    for cut in range(len(data) + 1):
        if cut < 4:
            with pytest.raises(CaptureFormatError):
                open_capture_bytes(data[:cut])
            continue
        recs, reader = read_all(data[:cut])
        n = sum(1 for end in packet_ends if end <= cut)
        assert recs == full[:n], cut
        if cut in bounds:
            assert reader.warnings == [], cut
        else:
            assert len(reader.warnings) == 1, cut
            start = max(b for b in bounds if b <= cut)
            assert reader.warnings[0].offset == start, cut
            assert reader.warnings[0].frame == n + 1, cut


def test_truncated_file_through_analyze_file(tmp_path: Path) -> None:
    data, bounds, _ = _pcap_with_boundaries()
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[:bounds[4] + 20])
    res = analyze_file(path)
    assert res.packets == 4 and res.file_format == "pcap" and res.linktypes == [1]
    assert len(res.read_warnings) == 1 and res.read_warnings[0].offset == bounds[4]
    doc = res.to_dict()
    assert doc["damaged"] is True
    assert any(f"byte offset {bounds[4]}" in w for w in doc["warnings"])
    assert str(res.read_warnings[0]).startswith(f"byte offset {bounds[4]} (after frame 4): ")


def test_read_warning_text() -> None:
    assert str(ReadWarning(10, "boom", 1)) == "byte offset 10 (before the first frame): boom"
    assert str(ReadWarning(10, "boom", 3)) == "byte offset 10 (after frame 2): boom"
    assert str(ReadWarning(10, "boom")) == "byte offset 10: boom"


# ---------------------------------------------------------------------------------------------
# lengths that lie: warnings, never a huge buffer


class GuardedStream(io.BytesIO):
    """A stream that fails the test if the reader asks for more than ``limit`` bytes at once."""

    def __init__(self, data: bytes, limit: int) -> None:
        super().__init__(data)
        self.limit = limit
        self.largest = 0

    def read(self, n: int | None = -1, /) -> bytes:
        assert n is not None and 0 <= n <= self.limit, f"reader asked for {n} bytes"
        self.largest = max(self.largest, n)
        return super().read(n)


def guarded_read(data: bytes, limit: int = MAX_BLOCK_BYTES) -> tuple[list[PacketRecord], CaptureReader]:
    reader = CaptureReader(GuardedStream(data, limit), name="guarded", size=len(data))
    return list(reader), reader


@pytest.mark.parametrize("snaplen", [65535, 262144, 0, 0x3FFFFFFF, 0xFFFFFFFF])
@pytest.mark.parametrize("caplen", [MAX_RECORD_BYTES + 1, 0x3FFFFFF0, 0xFFFFFFFF])
def test_pcap_absurd_caplen_is_a_warning_without_allocation(snaplen: int, caplen: int) -> None:
    pkts = [pb.ethernet(p) for p in ip_packets(False)]
    data = pb.pcap_header(1, snaplen=snaplen)
    data += pb.pcap_record(TIMES[0], pkts[0]) + pb.pcap_record(TIMES[1], pkts[1])
    bad_at = len(data)
    data += pb.pcap_record(TIMES[2], pkts[2], caplen=caplen) + b"\x00" * 100
    recs, reader = guarded_read(data, limit=MAX_RECORD_BYTES)
    assert [r.data for r in recs] == pkts[:2]
    assert len(reader.warnings) == 1
    w = reader.warnings[0]
    assert w.offset == bad_at and w.frame == 3 and str(caplen) in w.message


def test_pcap_record_of_exactly_the_limit_is_read() -> None:
    big = b"\x00" * MAX_RECORD_BYTES
    data = pb.pcap_header(1) + pb.pcap_record(TIMES[0], big)
    recs, reader = guarded_read(data, limit=MAX_RECORD_BYTES)
    assert len(recs) == 1 and len(recs[0].data) == MAX_RECORD_BYTES and not reader.warnings


def _ng_prefix() -> tuple[bytes, list[bytes]]:
    pkts = ip_packets(False)
    return pb.shb() + pb.idb(101) + pb.epb(0, 1, pkts[0]) + pb.epb(0, 2, pkts[1]), pkts


@pytest.mark.parametrize(("length", "trailer", "what"), [
    (8, None, "invalid length 8"),
    (0, None, "invalid length 0"),
    (30, None, "invalid length 30"),
    (MAX_BLOCK_BYTES + 4, None, "limit"),
    (0xFFFFFFFC, None, "limit"),
    (None, 1234, "trailing length 1234"),
    (4096, None, "file ends inside a block"),
], ids=["too-small", "zero", "not-multiple-of-4", "over-limit", "huge", "mismatched-trailer", "past-eof"])
def test_pcapng_block_length_lies(length: int | None, trailer: int | None, what: str) -> None:
    prefix, pkts = _ng_prefix()
    bad = pb.pcapng_block(pb.BT_EPB, b"\x00" * 20 + pkts[2], length=length, trailer=trailer)
    data = prefix + bad + pb.epb(0, 3, pkts[3])
    recs, reader = guarded_read(data)
    assert [r.data for r in recs] == pkts[:2]
    assert len(reader.warnings) == 1
    w = reader.warnings[0]
    assert w.offset == len(prefix) and what in w.message and w.frame == 3


def test_pcapng_later_section_header_lies() -> None:
    prefix, pkts = _ng_prefix()
    for bad in (pb.shb(">", bom=0x01020304), pb.shb(length=16), pb.shb(length=0xFFFFFFF0)):
        recs, reader = guarded_read(prefix + bad + pb.idb(101) + pb.epb(0, 3, pkts[3]))
        assert [r.data for r in recs] == pkts[:2]
        assert len(reader.warnings) == 1 and reader.warnings[0].offset == len(prefix)
    recs, reader = read_all(prefix + pb.shb()[:10])
    assert len(recs) == 2 and reader.warnings[0].offset == len(prefix)
    recs, reader = read_all(prefix + pb.shb()[:20])
    assert len(recs) == 2 and reader.warnings[0].offset == len(prefix)


def test_pcapng_packet_for_an_undefined_interface_is_skipped() -> None:
    prefix, pkts = _ng_prefix()
    bad_at = len(prefix)
    data = prefix + pb.epb(1, 3, pkts[2]) + pb.epb(0, 4, pkts[3])
    data += pb.pb(5, 5, pkts[4]) + pb.epb(0, 6, pkts[5])
    recs, reader = read_all(data)
    assert [r.data for r in recs] == [pkts[0], pkts[1], pkts[3], pkts[5]]
    assert [r.frame for r in recs] == [1, 2, 3, 4]
    assert len(reader.warnings) == 2
    w = reader.warnings[0]
    assert w.offset == bad_at and "interface 1" in w.message
    # the warning says where it happened in frame terms too: after frame 2
    assert w.frame == 3 and "(after frame 2)" in str(w)
    assert reader.warnings[1].frame == 4


def test_pcapng_interface_of_a_previous_section_is_undefined() -> None:
    pkts = ip_packets(False)
    data = pb.shb() + pb.idb(101) + pb.idb(101) + pb.epb(1, 1, pkts[0])
    data += pb.shb() + pb.idb(101) + pb.epb(1, 2, pkts[1]) + pb.epb(0, 3, pkts[2])
    recs, reader = read_all(data)
    assert [r.data for r in recs] == [pkts[0], pkts[2]]
    assert len(reader.warnings) == 1 and "interface 1" in reader.warnings[0].message


def test_pcapng_damaged_packet_blocks_are_skipped_with_warnings() -> None:
    prefix, pkts = _ng_prefix()
    epb_short = pb.pcapng_block(pb.BT_EPB, b"\x00" * 12)
    epb_caplen_lies = pb.epb(0, 3, pkts[2], caplen=len(pkts[2]) + 100)
    pb_short = pb.pcapng_block(pb.BT_PB, b"\x00" * 8)
    idb_short = pb.pcapng_block(pb.BT_IDB, b"\x01\x00")
    data = prefix + epb_short + epb_caplen_lies + pb_short + idb_short + pb.epb(0, 4, pkts[3])
    data += pb.epb(1, 5, pkts[4])  # interface 1 is the damaged IDB: it is unusable but counted
    recs, reader = read_all(data)
    assert [r.data for r in recs] == [pkts[0], pkts[1], pkts[3], pkts[4]]
    msgs = [w.message for w in reader.warnings]
    assert len(msgs) == 4
    assert "too short" in msgs[0] and "claims" in msgs[1] and "too short" in msgs[2] and "too short" in msgs[3]
    assert reader.linktypes == [101]


def test_pcapng_simple_packet_block_before_any_interface() -> None:
    pkts = ip_packets(False)
    data = pb.shb() + pb.spb(pkts[0]) + pb.idb(101) + pb.spb(pkts[1]) + pb.pcapng_block(pb.BT_SPB, b"")
    recs, reader = read_all(data)
    assert [r.data for r in recs] == [pkts[1]]
    assert len(reader.warnings) == 2 and "before any Interface" in reader.warnings[0].message


# ---------------------------------------------------------------------------------------------
# fuzz: any damage is a warning (or, in the file header, a CaptureFormatError); nothing else escapes


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_random_damage_never_raises_anything_else(fmt: str) -> None:
    data = _pcap_with_boundaries()[0] if fmt == "pcap" else _pcapng_with_boundaries()[0]
    rng = random.Random(1234)
    for _ in range(400):
        buf = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(buf))
            buf[pos] = rng.randrange(256) if rng.random() < 0.7 else 0xFF
        if rng.random() < 0.3:
            del buf[rng.randrange(len(buf)):]
        try:
            reader = CaptureReader(GuardedStream(bytes(buf), MAX_BLOCK_BYTES), name="fuzz")
            res = analyze_records(reader)
            res.to_dict()
        except CaptureFormatError as exc:
            assert exc.offset is not None and exc.offset <= 24
            continue
        for m in res.malformed:
            assert isinstance(m, Malformed)


# ---------------------------------------------------------------------------------------------
# tshark agrees on timestamps and content across formats


def _tshark_fields(path: Path, fields: Sequence[str]) -> list[list[str]]:
    tshark = need_tshark()
    cmd = [tshark, "-n", "-r", str(path), "-T", "fields", "-E", "separator=|"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout
    return [line.split("|") for line in out.splitlines()]


@pytest.mark.tshark
def test_tshark_reads_the_same_timestamps_and_packets(tmp_path: Path) -> None:
    v4, v6 = ip_packets(False), ip_packets(True)
    t = TIMES
    data = pb.shb("<") + pb.idb(1, "<") + pb.idb(0, "<", tsresol=9, tsoffset=-10)
    data += pb.epb(0, pb.ts_to_units(t[0], None), pb.ethernet(v4[0], vlans=[(0x88A8, 3), (0x8100, 4)]), "<")
    data += pb.epb(1, pb.ts_to_units(t[1], 9), pb.null_frame(v4[1], 2, ">"), "<")
    data += RECORD_BLOCKS[0] + pb.nrb("<") + pb.isb(0, "<")
    data += pb.shb(">") + pb.idb(276, ">", tsresol=0x80 | 20, tsoffset=7) + pb.idb(108, ">", tsresol=3, tsoffset=-5)
    data += pb.epb(1, pb.ts_to_units(t[2], 3), pb.loop_frame(v6[2], 30), ">")
    data += pb.epb(0, pb.ts_to_units(t[3], 0x80 | 20), pb.sll2_frame(v6[3]), ">")
    data += pb.pb(1, pb.ts_to_units(t[4], 3), pb.loop_frame(v6[4], 28), ">")  # obsolete PB: tsoffset too
    data += pb.pcapng_block(9, b"__REALTIME_TIMESTAMP=1700000000000000\nMESSAGE=hi\n", ">")
    data += pb.shb("<") + pb.idb(113, "<", tsresol=0x80 | 30) + pb.idb(101, "<", tsresol=0x80 | 24, tsoffset=3)
    data += pb.epb(0, pb.ts_to_units(t[5], 0x80 | 30), pb.sll_frame(v4[5]), "<")
    # (not picoseconds: tshark 4.0 overflows 64 bits converting sub-nanosecond units)
    data += pb.epb(1, pb.ts_to_units(t[0], 0x80 | 24), v6[0], "<")
    data += RECORD_BLOCKS[1]
    data += pb.epb(0, pb.ts_to_units(t[1], 0x80 | 30), pb.sll_frame(v4[1], pkttype=4), "<")
    path = tmp_path / "mixed.pcapng"
    path.write_bytes(data)
    recs, reader = read_all(data)
    assert not reader.warnings
    assert reader.linktypes == [0, 1, 101, 108, 113, 276]
    rows = _tshark_fields(path, ["frame.number", "frame.time_epoch", "tcp.seq_raw", "udp.length", "frame.len",
                                 "frame.cap_len", "frame.interface_id"])
    assert len(rows) == reader.frames == 11
    by_frame = {int(row[0]): row for row in rows}
    ours = content(recs)
    for r, c in zip(recs, ours, strict=True):
        row = by_frame.pop(r.frame)
        secs, _, frac = row[1].partition(".")
        assert int(secs) * 1_000_000_000 + int(frac.ljust(9, "0")[:9]) == r.ts_ns, (r.frame, row)
        assert int(row[4]) == r.wirelen and int(row[5]) == len(r.data) and int(row[6]) == r.interface
        assert int(row[2] if c[0] == "tcp" else row[3]) == c[6], (r.frame, row)
    # what is left: the frames Wireshark made of the custom and journal blocks
    assert sorted(by_frame) == [3, 7, 10] and all(row[2] == row[3] == "" for row in by_frame.values())
