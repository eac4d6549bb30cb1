"""What crosses processes (the process pools, Dask) pickles whole: the analysis options and their
observers, a shard's capture-wide facts with their malformed packets, ICMP errors and read warnings.
The compiled build (tests/test_compiled_build.py runs this file against it too) pickles its native
classes only through what analyzers/picklable.py gives them."""

from __future__ import annotations

import pickle
from dataclasses import fields, replace
from typing import Any

import pytest
from conftest import PCAPS

from analyzers.analysis import AnalysisOptions, analyze_file
from analyzers.decode import IcmpError, Malformed, TcpSegment, UdpDatagram
from analyzers.pcapfile import Interface, ReadWarning
from analyzers.tcpanalysis import TcpAnalysisObserver
from analyzers.zeek import ChecksumReport, ZeekObserver, ZeekOptions


def again(x: Any) -> Any:
    return pickle.loads(pickle.dumps(x, protocol=pickle.HIGHEST_PROTOCOL))


SEG_FIELDS = ("frame", "ts_ns", "version", "src", "dst", "sport", "dport", "seq", "ack", "flags", "window",
              "options", "payload", "paylen", "ip_bytes", "caplen_short")


def segment(checksum: str | None = None) -> TcpSegment:
    seg = TcpSegment(7, 1_000_000_123, 4, b"\x7f\0\0\1", b"\x7f\0\0\2", 40000, 80, 1000, 2000, 0x18, 512,
                     b"\x01\x01\x08\x0a" + bytes(8), b"GET", 5, 45)
    if checksum is not None:
        seg.checksum = checksum
    return seg


@pytest.mark.parametrize("checksum", [None, "partial"])
def test_a_segment_pickles_with_every_field_and_its_checksum_status_when_set(checksum: str | None) -> None:
    seg = segment(checksum)
    back = again(seg)
    assert [getattr(back, f) for f in SEG_FIELDS] == [getattr(seg, f) for f in SEG_FIELDS]
    assert back.caplen_short  # 3 of 5 payload bytes captured
    assert hasattr(back, "checksum") == (checksum is not None)
    if checksum is not None:
        assert back.checksum == checksum


def test_a_datagram_pickles_with_its_fragments_and_checksum() -> None:
    dg = UdpDatagram(3, 5, 6, bytes(15) + b"\1", bytes(15) + b"\1", 5353, 53, 12, b"abcd", 52, (1, 2))
    dg.checksum = "ok"
    back = again(dg)
    names = ("frame", "ts_ns", "version", "src", "dst", "sport", "dport", "length", "payload", "ip_bytes",
             "fragment_frames", "checksum")
    assert [getattr(back, n) for n in names] == [getattr(dg, n) for n in names]


def test_frozen_records_pickle_equal_with_the_packets_they_quote() -> None:
    bad = Malformed(9, "tcp", "data offset 3 < 5", partial=segment("bad"))
    icmp = IcmpError(11, "ipv4", 3, 3, quoted=UdpDatagram(2, 0, 4, b"\1" * 4, b"\2" * 4, 1, 2, 8, b"", 28))
    for rec in (bad, icmp, ReadWarning(24, "truncated record", frame=2), ZeekOptions()):
        back = again(rec)
        assert type(back) is type(rec)
        for f in fields(rec):
            value, got = getattr(rec, f.name), getattr(back, f.name)
            if isinstance(value, (TcpSegment, UdpDatagram)):
                assert got.frame == value.frame and got.payload == value.payload
            else:
                assert got == value, f.name
    assert again(bad).partial.checksum == "bad"


def test_analysis_options_pickle_with_their_observers_configuration() -> None:
    zeek_options = ZeekOptions(tcp_inactivity_timeout=7.0)
    opts = AnalysisOptions(server_ports=frozenset({8080}), http=False, max_datagrams=3,
                           observers=[ZeekObserver(zeek_options), TcpAnalysisObserver(record_completeness=True)])
    back = again(opts)
    assert (back.server_ports, back.http, back.max_datagrams) == (frozenset({8080}), False, 3)
    zeek, tcpa = back.observers
    assert isinstance(zeek, ZeekObserver) and zeek.tracker.options == zeek_options
    assert zeek.rows_path is None
    assert isinstance(tcpa, TcpAnalysisObserver) and tcpa.analyzer.record_completeness


def test_observers_that_have_seen_packets_refuse_to_be_pickled() -> None:
    zeek = ZeekObserver()
    tcpa = TcpAnalysisObserver()
    analyze_file(PCAPS / "tcp-echo-ipv4.pcap", AnalysisOptions(observers=[zeek, tcpa],
                                                               decoder_factory=zeek.make_decoder))
    for ob in (zeek, tcpa):
        with pytest.raises(TypeError, match="seen packets"):
            pickle.dumps(ob)


def test_a_shards_capture_wide_facts_pickle_whole() -> None:
    """What a shard sends back: an Analysis without its connections (counts, warnings, records)."""
    res = analyze_file(PCAPS / "udp-echo-lossy-ipv4.pcap")
    base = replace(res, tcp=[], udp=[], observers=[], read_warnings=[ReadWarning(100, "truncated", frame=4)],
                   malformed=[Malformed(4, "ipv4", "total length 9 < 20")], malformed_count=1)
    back = again(base)
    assert back.to_dict() == base.to_dict()
    assert (back.read_warnings, back.malformed) == (base.read_warnings, base.malformed)
    assert again(Interface(1, 262144, (1000, 1))) == Interface(1, 262144, (1000, 1))
    report = ChecksumReport("auto", verified=True, accepted_partial=12)
    assert again(report) == report
