"""The sans-I/O trackers on crafted conversations: StreamAssembler (Follow-TCP-Stream semantics),
tcp.stream / udp.stream numbering like Wireshark (port reuse, ICMP quotes), handshake checks, every
teardown kind, roles without a SYN, and sequence numbers that wrap around 2^32."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pcapbuild as pb
import pytest
from conftest import need_tshark

from analyzers.analysis import Analysis, AnalysisOptions, analyze_file, analyze_records
from analyzers.decode import Decoder, IcmpError, TcpSegment, UdpDatagram
from analyzers.reassembly import Gap, StreamAssembler, seq_ge, seq_gt, seq_lt
from analyzers.tcp import PREVIEW_BYTES, TcpTracker
from analyzers.udp import UdpTracker

M32 = 0xFFFFFFFF

# ---------------------------------------------------------------------------------------------
# helpers


def analyze(packets: list[bytes], *, server_ports: tuple[int, ...] = (), keep: bool = True) -> Analysis:
    return analyze_records(pb.as_records(packets),
                           AnalysisOptions(server_ports=frozenset(server_ports), keep_payload=keep))


def one_tcp(packets: list[bytes], **kw: Any) -> dict[str, Any]:
    doc = analyze(packets, **kw).to_dict()
    assert len(doc["tcp"]) == 1, doc["tcp"]
    conn: dict[str, Any] = doc["tcp"][0]
    return conn


def stream_of_frames(packets: list[bytes]) -> dict[int, int]:
    """frame -> tcp.stream or udp.stream, as loopcap numbers them (ICMP frames left out)."""
    dec = Decoder()
    tcp, udp = TcpTracker(), UdpTracker()
    out: dict[int, int] = {}
    for r in pb.as_records(packets):
        x = dec.decode(r.frame, r.ts_ns, r.linktype, r.data, r.wirelen)
        if isinstance(x, TcpSegment):
            out[r.frame] = tcp.feed(x).stream
        elif isinstance(x, UdpDatagram):
            out[r.frame] = udp.feed(x).stream
        elif isinstance(x, IcmpError) and x.quoted is not None:
            if isinstance(x.quoted, TcpSegment):
                tcp.feed_quoted(x.quoted)
            else:
                udp.feed_quoted(x.quoted)
    return out


def tshark_streams(tmp_path: Path, packets: list[bytes], name: str) -> dict[int, int]:
    tshark = need_tshark()
    path = tmp_path / name
    path.write_bytes(pb.pcap_file([pb.Frame(pb.START_NS + i * pb.STEP_NS, pb.ethernet(p))
                                   for i, p in enumerate(packets)]))
    out = subprocess.run([tshark, "-n", "-r", str(path), "-T", "fields", "-E", "separator=|", "-e", "frame.number",
                          "-e", "icmp.type", "-e", "icmpv6.type", "-e", "tcp.stream", "-e", "udp.stream"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    streams: dict[int, int] = {}
    for line in out.splitlines():
        frame, icmp, icmp6, tcp, udp = line.split("|")
        if icmp or icmp6:
            continue
        if tcp or udp:
            streams[int(frame)] = int(tcp or udp)
    return streams


# ---------------------------------------------------------------------------------------------
# sequence arithmetic


def test_sequence_comparisons_wrap() -> None:
    assert seq_lt(0xFFFFFFF0, 5) and seq_gt(5, 0xFFFFFFF0) and seq_ge(5, 0xFFFFFFF0) and seq_ge(7, 7)
    assert not seq_lt(7, 7) and not seq_gt(7, 7)
    assert seq_lt(1, 0x7FFFFFFF) and seq_gt(0x7FFFFFFF, 0) and seq_lt(0x80000001, 0)


# ---------------------------------------------------------------------------------------------
# StreamAssembler


def asm_text(a: StreamAssembler) -> bytes:
    return bytes(a.kept)


def new_asm(start: int = 1) -> StreamAssembler:
    a = StreamAssembler(keep_limit=1 << 20)
    a.start(start)
    return a


def test_in_order_segments_are_appended() -> None:
    a = new_asm()
    a.add(1, 5, b"hello", 1)
    a.add(6, 6, b" world", 2)
    a.add(12, 0, b"", 3)  # a pure ACK
    assert asm_text(a) == b"hello world" and a.bytes_out == 11 and a.next_seq == 12
    assert a.chunks == [(1, 5), (2, 6)] and a.gaps == [] and a.truncated_bytes == 0
    assert a.sha256 == hashlib.sha256(b"hello world").hexdigest()


def test_the_first_segment_sets_the_expected_sequence_number() -> None:
    a = StreamAssembler(keep_limit=100)
    assert (a.started, a.next_seq) == (False, 0)
    a.add(1000, 3, b"abc", 1)
    assert (a.started, a.next_seq, asm_text(a)) == (True, 1003, b"abc")
    a.start(5)  # bytes were written: no reset
    assert a.next_seq == 1003


def test_retransmissions_and_overlaps_first_copy_wins() -> None:
    a = new_asm()
    a.add(1, 5, b"hello", 1)
    a.add(1, 5, b"HELLO", 2)  # full retransmission with other bytes: ignored
    a.add(3, 6, b"LLOxyz", 3)  # overlaps the end: only the new part counts
    a.add(2, 2, b"EL", 4)  # entirely old
    a.add(7, 5, b"YZ!!!", 5)  # starts inside, extends
    assert asm_text(a) == b"helloxyz!!!"
    assert a.chunks == [(1, 5), (3, 3), (5, 3)]


def test_out_of_order_segments_are_held_then_placed() -> None:
    a = new_asm()
    a.add(11, 5, b"world", 1)
    a.add(6, 5, b"there", 2)
    assert a.held_segments == 2 and a.bytes_out == 0
    a.add(1, 5, b"hi yo", 3)
    assert asm_text(a) == b"hi yothereworld" and a.held_segments == 0 and a.next_seq == 16
    # frames of the contributions are the frames that carried them
    assert a.chunks == [(3, 5), (2, 5), (1, 5)]


def test_held_segments_overlapping_each_other() -> None:
    a = new_asm()
    a.add(6, 6, b"AAAAAA", 1)  # 6..11
    a.add(6, 6, b"BBBBBB", 2)  # same range, later: loses
    a.add(9, 6, b"CCCCCC", 3)  # 9..14 overlaps the held one
    a.add(1, 5, b"01234", 4)
    assert asm_text(a) == b"01234AAAAAACCC" and a.held_segments == 0


def test_acked_gap_is_recorded_and_skipped() -> None:
    a = new_asm()
    a.add(1, 5, b"first", 1)
    a.add(11, 5, b"third", 3)  # 6..10 never captured
    a.peer_ack(6, 4)  # acks only what we have
    a.peer_ack(11, 5)  # == the held segment's start: Wireshark needs the ack strictly beyond it
    assert a.gaps == [] and a.held_segments == 1
    a.peer_ack(12, 6)
    assert a.gaps == [Gap(offset=5, length=5, frame=6, reason="acked")]
    assert asm_text(a) == b"firstthird" and a.next_seq == 16 and a.held_segments == 0
    assert a.gaps[0].to_dict() == {"offset": 5, "length": 5, "frame": 6, "reason": "acked"}
    a.add(6, 5, b"LATE!", 7)  # the missing bytes after all: too late, never zero-filled or inserted
    assert asm_text(a) == b"firstthird"


def test_acked_gap_with_several_holes() -> None:
    a = new_asm()
    a.add(1, 2, b"aa", 1)
    a.add(5, 2, b"cc", 2)
    a.add(9, 2, b"ee", 3)
    a.peer_ack(11, 4)
    assert asm_text(a) == b"aaccee"
    assert [(g.offset, g.length, g.reason) for g in a.gaps] == [(2, 2, "acked"), (4, 2, "acked")]


def test_unfilled_gap_is_reported_at_finish() -> None:
    a = new_asm()
    a.add(1, 4, b"have", 1)
    a.add(9, 4, b"late", 2)
    a.add(13, 2, b"!!", 3)
    a.finish(9)
    assert asm_text(a) == b"have" and a.held_segments == 0
    assert a.gaps == [Gap(offset=4, length=4 + 6, frame=9, reason="unfilled")]
    b = new_asm()
    b.add(1, 4, b"have", 1)
    b.finish(2)
    assert b.gaps == []


def test_held_segments_overflow_declares_the_oldest_gap_lost() -> None:
    a = StreamAssembler(keep_limit=100, max_held_segments=2)
    a.start(1)
    a.add(1, 1, b"a", 1)
    a.add(4, 1, b"d", 2)
    a.add(5, 1, b"e", 3)
    assert a.gaps == []
    a.add(7, 1, b"g", 4)  # a third held segment: skip to the lowest
    assert asm_text(a) == b"ade"
    assert [(g.offset, g.length, g.reason) for g in a.gaps] == [(1, 2, "overflow")]
    assert a.held_segments == 1
    b = StreamAssembler(keep_limit=100, max_held_bytes=3)
    b.start(1)
    b.add(5, 4, b"wxyz", 1)
    assert [(g.length, g.reason) for g in b.gaps] == [(4, "overflow")] and bytes(b.kept) == b"wxyz"


def test_truncated_frames_advance_by_their_wire_length() -> None:
    a = new_asm()
    a.add(1, 10, b"0123", 1)  # 4 of 10 bytes captured
    a.add(11, 3, b"abc", 2)
    assert asm_text(a) == b"0123abc" and a.next_seq == 14 and a.truncated_bytes == 6 and a.gaps == []


def test_truncated_frame_with_no_captured_payload_counts_as_missing() -> None:
    """As Wireshark's Follow TCP Stream: a frame cut right after its TCP header contributes nothing,
    so what follows it waits as out of order; the peer's ACK then turns its bytes into an acked gap
    (where Wireshark writes "[100 bytes missing in capture file]"); never acked, the rest is dropped."""
    a = new_asm()
    a.add(1, 3, b"abc", 1)
    a.add(4, 100, b"", 2)
    a.add(104, 3, b"def", 3)
    assert a.held_segments == 1
    a.peer_ack(107, 4)
    assert asm_text(a) == b"abcdef" and a.next_seq == 107
    assert a.gaps == [Gap(3, 100, 4, "acked")] and a.truncated_bytes == 0
    b = new_asm()
    b.add(1, 3, b"abc", 1)
    b.add(4, 100, b"", 2)
    b.add(104, 3, b"def", 3)
    b.finish(3)
    assert asm_text(b) == b"abc" and b.gaps == [Gap(3, 100 + 3, 3, "unfilled")]


def test_truncated_frame_held_out_of_order_fills_only_its_captured_bytes() -> None:
    """A held-back truncated segment is put in place with its captured bytes only (as Wireshark)."""
    a = new_asm()
    a.add(11, 10, b"abc", 1)  # out of order and truncated: 3 of 10 bytes
    a.add(1, 10, b"0123456789", 2)
    assert asm_text(a) == b"0123456789abc" and a.next_seq == 14
    a.add(21, 2, b"zz", 3)
    a.peer_ack(23, 4)
    assert asm_text(a) == b"0123456789abczz" and a.gaps == [Gap(13, 7, 4, "acked")]


def test_sink_and_keep_limit() -> None:
    got: list[tuple[bytes, int]] = []
    a = StreamAssembler(keep_limit=4)
    a.sink = lambda data, frame: got.append((data, frame))
    a.start(1)
    a.add(1, 3, b"abc", 1)
    a.add(4, 3, b"def", 2)
    assert bytes(a.kept) == b"abcd" and a.bytes_out == 6
    assert a.sha256 == hashlib.sha256(b"abcdef").hexdigest()
    assert got == [(b"abc", 1), (b"def", 2)]


ISN_NEAR_WRAP = 0xFFFFFFF8


def test_reassembly_across_the_sequence_wrap() -> None:
    # the stream "0123456789abcd" starts at 0xFFFFFFF8: "8" sits on sequence number 0
    a = new_asm(ISN_NEAR_WRAP)
    a.add(ISN_NEAR_WRAP, 6, b"012345", 1)  # up to 0xFFFFFFFD
    a.add(0x00000002, 4, b"abcd", 2)  # out of order, after the wrap: held
    assert a.held_segments == 1
    a.add(0xFFFFFFFE, 6, b"6789ab", 3)  # crosses 2^32 and overlaps the held segment by 2
    assert asm_text(a) == b"0123456789abcd" and a.next_seq == 6 and a.held_segments == 0
    assert a.chunks == [(1, 6), (3, 6), (2, 2)]
    a.add(0xFFFFFFFA, 4, b"XXXX", 4)  # old data from before the wrap: ignored
    a.add(0x00000004, 4, b"YYYY", 5)  # overlaps the end: only the new part
    assert asm_text(a) == b"0123456789abcdYY" and a.next_seq == 8
    a.add(12, 2, b"zz", 6)
    a.peer_ack(13, 7)
    assert asm_text(a) == b"0123456789abcdYYzz" and a.gaps == [Gap(16, 4, 7, "acked")]


def test_acked_gap_across_the_sequence_wrap() -> None:
    a = new_asm(0xFFFFFFF0)
    a.add(0xFFFFFFF0, 8, b"before!!", 1)  # up to 0xFFFFFFF7
    a.add(0x00000004, 5, b"after", 2)
    a.peer_ack(0x00000004, 3)  # not beyond the held segment's start
    assert a.gaps == []
    a.peer_ack(0x00000005, 4)  # the ack has wrapped too
    assert asm_text(a) == b"before!!after" and a.next_seq == 9
    assert a.gaps == [Gap(offset=8, length=12, frame=4, reason="acked")]


# ---------------------------------------------------------------------------------------------
# tcp.stream numbering


def _closed_connection(flow: pb.TcpFlow) -> list[bytes]:
    return [*flow.handshake(), flow.c("PA", b"ping"), flow.s("PA", b"pong"), flow.c("FA"), flow.s("FA"), flow.c("A")]


def test_streams_are_numbered_in_order_of_first_packet() -> None:
    a = pb.TcpFlow(cport=40001)
    b = pb.TcpFlow(cport=40002)
    c = pb.TcpFlow("fd00::1", 40003, "fd00::2", 80)
    pkts = [a.c("S"), b.c("S"), a.s("SA"), c.c("S"), b.s("SA"), a.c("A"), c.s("SA"), b.c("A"), c.c("A")]
    assert stream_of_frames(pkts) == {1: 0, 2: 1, 3: 0, 4: 2, 5: 1, 6: 0, 7: 2, 8: 1, 9: 2}
    res = analyze(pkts)
    assert [(t.stream, t.ep[0][1], t.version) for t in res.tcp] == [(0, 40001, 4), (1, 40002, 4), (2, 40003, 6)]


def _port_reuse_packets() -> list[bytes]:
    f = pb.TcpFlow(cisn=1000, sisn=5000)
    pkts = _closed_connection(f)  # stream 0: frames 1-8
    g = pb.TcpFlow(cisn=90000, sisn=70000)  # same 4-tuple, new ISN
    pkts += [g.c("S"), g.c("S", seq=90000), g.s("SA"), g.s("SA", seq=71111), g.c("A"), g.c("PA", b"again")]  # 9-14
    # a pure SYN reusing the base sequence number: Wireshark 4.0 keeps the stream (15)
    pkts.append(g.c("S", seq=90000))
    # the server side reuses the pair to connect back with a new ISN: a new stream (16-18)
    h = pb.TcpFlow("10.0.0.2", 8080, "10.0.0.1", 40000, cisn=123456, sisn=654321)
    pkts += h.handshake()
    return pkts


def test_port_reuse_with_a_new_isn_starts_a_new_stream() -> None:
    got = stream_of_frames(_port_reuse_packets())
    assert [got[i] for i in range(1, 9)] == [0] * 8
    assert [got[i] for i in range(9, 16)] == [1] * 7  # SYN rtx, SYN-ACK with a new seq: same stream
    assert [got[i] for i in range(16, 19)] == [2] * 3
    res = analyze(_port_reuse_packets())
    s0, s1, s2 = res.tcp_summaries
    assert s0["teardown"]["kind"] == "three-way" and s0["payload"]["client"]["bytes"] == 4
    assert s1["handshake"]["syn_retransmissions"] == [10, 15] and s1["handshake"]["syn_ack_count"] == 2
    assert s1["payload"]["client"]["bytes"] == 5
    assert s2["client"]["port"] == 8080 and s2["handshake"]["complete"]


@pytest.mark.tshark
def test_tshark_agrees_on_tcp_stream_numbers(tmp_path: Path) -> None:
    pkts = _port_reuse_packets()
    # interleave another connection and an ICMP error quoting an unseen TCP tuple (it takes a number)
    other = pb.TcpFlow(cport=41000)
    quote = pb.tcp_packet("10.0.0.1", 42000, "10.0.0.2", 9, 777, 0, "S")
    icmp = pb.ipv4_packet("10.0.0.2", "10.0.0.1", pb.PROTO_ICMP, pb.icmp_error(3, 3, quote[:40]))
    pkts = [*pkts[:3], other.c("S"), icmp, *pkts[3:], other.s("SA"), other.c("A"), quote]
    ours = stream_of_frames(pkts)
    theirs = tshark_streams(tmp_path, pkts, "tcp-streams.pcap")
    assert ours == theirs
    assert ours[4] == 1 and ours[len(pkts)] == 2  # the quoted tuple took stream 2 at frame 5
    res = analyze(pkts)
    assert [c.stream for c in res.tcp] == [0, 1, 2, 3, 4]  # no packet of its own until the end


def test_icmp_quote_only_tcp_tuple_consumes_a_number_but_is_not_reported() -> None:
    a = pb.TcpFlow(cport=40001)
    quote = pb.tcp_packet("10.0.0.1", 42000, "10.0.0.2", 9, 777, 0, "S")
    icmp = pb.ipv4_packet("10.0.0.2", "10.0.0.1", pb.PROTO_ICMP, pb.icmp_error(3, 3, quote[:40]))
    b = pb.TcpFlow(cport=40002)
    res = analyze([a.c("S"), icmp, b.c("S")])
    assert [c.stream for c in res.tcp] == [0, 2]
    assert len(res.icmp_errors) == 1 and res.to_dict()["icmp_errors"][0]["type"] == 3


# ---------------------------------------------------------------------------------------------
# udp.stream numbering


def _udp_packets() -> list[bytes]:
    dns_c, dns_s = ("10.0.0.1", 5353), ("10.0.0.2", 53)
    quoted = pb.udp_packet("10.0.0.1", 40404, "10.0.0.2", 9999, b"knock")
    unreachable = pb.ipv4_packet("10.0.0.2", "10.0.0.1", pb.PROTO_ICMP, pb.icmp_error(3, 3, quoted))
    seen = pb.udp_packet(dns_c[0], dns_c[1], dns_s[0], dns_s[1], b"q2")
    unreachable_seen = pb.ipv4_packet("10.0.0.2", "10.0.0.1", pb.PROTO_ICMP, pb.icmp_error(3, 3, seen))
    return [
        pb.udp_packet(dns_s[0], dns_s[1], dns_c[0], dns_c[1], b"server speaks first"),  # 1: stream 0
        pb.udp_packet(dns_c[0], dns_c[1], dns_s[0], dns_s[1], b"q"),  # 2: stream 0
        unreachable,  # 3: the quoted, unseen tuple takes stream 1
        pb.udp_packet("fd00::1", 7000, "fd00::2", 7001, b"v6"),  # 4: stream 2
        unreachable_seen,  # 5: a known tuple: no new number
        quoted,  # 6: the quoted tuple for real: stream 1
        pb.udp_packet("10.0.0.2", 9999, "10.0.0.1", 40404, b"late answer"),  # 7: stream 1
    ]


def test_udp_streams_clients_and_icmp_quotes() -> None:
    assert stream_of_frames(_udp_packets()) == {1: 0, 2: 0, 4: 2, 6: 1, 7: 1}
    res = analyze(_udp_packets())
    assert [u.stream for u in res.udp] == [0, 1, 2]
    u0, u1, u2 = res.udp_summaries
    # the first sender is the client, even from port 53
    assert (u0["client"]["port"], u0["server"]["port"]) == (53, 5353)
    assert u0["packets"] == {"client": 1, "server": 1}
    assert u0["payload_bytes"] == {"client": 19, "server": 1}
    # the ICMP quote created stream 1, the first real datagram decides its client and first time
    assert (u1["client"]["port"], u1["server"]["port"]) == (40404, 9999)
    assert u1["packets"] == {"client": 1, "server": 1}
    assert u1["time"]["first"] == (pb.START_NS + 5 * pb.STEP_NS) / 1e9
    assert [d["from"] for d in u1["datagrams"]] == ["client", "server"]
    assert u2["ip_version"] == 6 and u2["client"]["ip"] == "fd00::1"
    assert len(res.icmp_errors) == 2


def test_udp_quote_only_conversation_is_not_reported() -> None:
    quoted = pb.udp_packet("10.0.0.1", 40404, "10.0.0.2", 9999, b"knock")
    icmp = pb.ipv4_packet("10.0.0.2", "10.0.0.1", pb.PROTO_ICMP, pb.icmp_error(3, 3, quoted))
    res = analyze([icmp, pb.udp_packet("10.0.0.1", 1, "10.0.0.2", 2, b"x")])
    assert [u.stream for u in res.udp] == [1]


def test_udp_tracker_bounds_records_and_keeps_every_datagram_of_a_kept_conversation() -> None:
    t = UdpTracker(keep_payload=lambda stream: stream == 0, max_records_per_conversation=2)
    dec = Decoder()
    for i in range(8):
        x = dec.decode(i + 1, i, 101, pb.udp_packet("10.0.0.1", 1 + i % 2, "10.0.0.2", 2, b"p%d" % i), 31)
        assert isinstance(x, UdpDatagram)
        t.feed(x)
    kept, other = t.finish()
    assert [d.payload for d in kept.datagrams] == [b"p0", b"p2", b"p4", b"p6"] and kept.dropped_records == 0
    assert len(other.datagrams) == 2 and other.dropped_records == 2 and other.packets == [4, 0]
    assert other.payload_bytes == [8, 0] and other.datagrams[1].preview == b"p3" and other.datagrams[1].payload is None
    assert other.datagrams[0].sha256 == hashlib.sha256(b"p1").hexdigest()


def test_a_long_udp_conversation_keeps_a_bounded_number_of_records_and_exact_counts(tmp_path: Path) -> None:
    """A conversation of 5,000 datagrams lists the first MAX_DATAGRAM_RECORDS and counts the rest
    (its packets and bytes are exact); --max-datagrams changes the bound, 0 lifts it."""
    import sys

    from analyzers.udp import MAX_DATAGRAM_RECORDS

    frames = [pb.Frame(1_000_000_000 + i * 1000, pb.ethernet(pb.udp_packet("127.0.0.1", 5004, "127.0.0.1", 5006,
                                                                      b"rtp %05d" % i))) for i in range(5000)]
    path = tmp_path / "long-udp.pcap"
    path.write_bytes(pb.pcap_file(frames))
    (u,) = analyze_file(path).to_dict()["udp"]
    assert len(u["datagrams"]) == MAX_DATAGRAM_RECORDS and u["datagrams_omitted"] == 5000 - MAX_DATAGRAM_RECORDS
    assert u["packets"] == {"client": 5000, "server": 0} and u["payload_bytes"] == {"client": 45000, "server": 0}
    for flag, listed in (("7", 7), ("0", 5000)):
        done = subprocess.run([sys.executable, "-m", "loopcap", "analyze", "--json", "-q", "--max-datagrams", flag,
                               str(path)], capture_output=True, text=True, check=True)
        (u,) = json.loads(done.stdout)["udp"]
        assert len(u["datagrams"]) == listed and u["datagrams_omitted"] == 5000 - listed
    text = subprocess.run([sys.executable, "-m", "loopcap", "analyze", "-q", "--udp-stream", "0", str(path)],
                          capture_output=True, text=True, check=True).stdout
    assert "rtp 04999" in text  # --udp-stream lists them all


@pytest.mark.tshark
def test_tshark_agrees_on_udp_stream_numbers(tmp_path: Path) -> None:
    pkts = _udp_packets()
    assert stream_of_frames(pkts) == tshark_streams(tmp_path, pkts, "udp-streams.pcap")


# ---------------------------------------------------------------------------------------------
# handshake


def test_valid_handshake_with_options() -> None:
    f = pb.TcpFlow()
    copts = pb.opt_mss(1460) + pb.opt_sack_permitted() + pb.opt_timestamps(100, 0) + pb.NOP + pb.opt_wscale(7)
    sopts = pb.opt_mss(1400) + pb.opt_sack_permitted() + pb.opt_timestamps(200, 100) + pb.NOP + pb.opt_wscale(9)
    conn = one_tcp([*f.handshake(client_options=copts, server_options=sopts), f.c("PA", b"x")])
    hs = conn["handshake"]
    assert hs["complete"] and hs["valid"] and not conn["roles_inferred"] and conn["roles_by"] == "syn"
    assert hs["checks"] == {"synack_ack_is_syn_seq_plus_1": True, "synack_ack_covers_syn_data": False,
                            "ack_ack_is_synack_seq_plus_1": True, "ack_seq_is_synack_ack": True}
    assert (hs["syn"]["frame"], hs["syn_ack"]["frame"], hs["ack"]["frame"]) == (1, 2, 3)
    assert (hs["syn"]["seq"], hs["syn_ack"]["seq"], hs["syn_ack"]["ack"], hs["ack"]["ack"]) == (1000, 5000, 1001, 5001)
    assert hs["syn"]["relative_seq"] == 0 and hs["ack"]["relative_ack"] == 1
    assert hs["client_options"]["timestamps"] == {"tsval": 100, "tsecr": 0}
    assert hs["server_options"]["window_scale"] == 9
    assert hs["negotiated"] == {"mss": {"client": 1460, "server": 1400}, "window_scale": True,
                                "sack_permitted": True, "timestamps": True}
    assert hs["rtt"] == pytest.approx(2 * pb.STEP_NS / 1e9)
    assert hs["ecn"] == {"syn_ece_cwr": False, "syn_ack_ece": False, "negotiated": False, "ece_or_cwr_later": False}


@pytest.mark.parametrize(("bad", "check"), [
    ("synack_ack", "synack_ack_is_syn_seq_plus_1"),
    ("ack_ack", "ack_ack_is_synack_seq_plus_1"),
    ("ack_seq", "ack_seq_is_synack_ack"),
])
def test_handshake_with_bad_numbers_is_not_valid(bad: str, check: str) -> None:
    f = pb.TcpFlow()
    syn = f.c("S")
    synack = f.s("SA", ack=1000 + 2) if bad == "synack_ack" else f.s("SA")
    if bad == "ack_ack":
        ack = f.c("A", ack=5000 + 7)
    elif bad == "ack_seq":
        ack = f.c("A", seq=1000 + 9)
    else:
        ack = f.c("A")
    hs = one_tcp([syn, synack, ack])["handshake"]
    assert hs["complete"] and not hs["valid"]
    assert hs["checks"][check] is False
    if bad != "synack_ack":  # (a bad SYN-ACK ack also makes the client's ACK seq differ from it)
        assert sum(1 for k, v in hs["checks"].items() if v is False and k != "synack_ack_covers_syn_data") == 1


def test_handshake_across_the_sequence_wrap_is_valid() -> None:
    f = pb.TcpFlow(cisn=0xFFFFFFFF, sisn=0xFFFFFFFF)
    hs = one_tcp(f.handshake())["handshake"]
    assert hs["valid"] and hs["syn_ack"]["ack"] == 0 and hs["ack"]["ack"] == 0 and hs["ack"]["seq"] == 0


def test_incomplete_handshakes() -> None:
    f = pb.TcpFlow()
    hs = one_tcp([f.c("S"), f.c("S", seq=1000), f.c("S", seq=1000)])["handshake"]
    assert not hs["complete"] and not hs["valid"] and hs["syn_retransmissions"] == [2, 3] and hs["syn_ack"] is None
    g = pb.TcpFlow()
    conn = one_tcp([g.c("S"), g.s("RA", seq=0, ack=1001)])
    assert conn["handshake"]["refused"] and conn["handshake"]["refused_frame"] == 2
    assert conn["teardown"]["kind"] == "reset" and conn["teardown"]["reset_by"] == "server"


def test_fast_open_data_in_the_syn() -> None:
    f = pb.TcpFlow()
    syn = f.c("S", b"GET /", options=pb.opt_mss(1460) + pb.opt_fast_open(b"\xaa" * 8))
    pkts = [syn, f.s("SA", options=pb.opt_mss(1460) + pb.opt_fast_open(b"")), f.c("A"), f.c("PA", b" HTTP/1.1")]
    conn = one_tcp(pkts)
    hs = conn["handshake"]
    assert hs["tfo_data_in_syn"] == 5 and hs["valid"]
    assert hs["checks"]["synack_ack_covers_syn_data"] and not hs["checks"]["synack_ack_is_syn_seq_plus_1"]
    assert hs["client_options"]["fast_open_cookie"] == "aa" * 8 and hs["server_options"]["fast_open_cookie"] == ""
    assert conn["payload"]["client"]["bytes"] == 14 and conn["payload"]["client"]["preview"] == "GET / HTTP/1.1"
    # the server may refuse the SYN's data: it acknowledges the SYN only, and the data is resent
    g = pb.TcpFlow()
    pkts = [g.c("S", b"GET /", options=pb.opt_fast_open(b"\xbb" * 8)), g.s("SA", ack=1001), g.c("A", seq=1001),
            g.c("PA", b"GET /", seq=1001)]
    conn = one_tcp(pkts)
    assert conn["handshake"]["valid"] and conn["handshake"]["checks"]["synack_ack_is_syn_seq_plus_1"]
    assert conn["payload"]["client"]["preview"] == "GET /"


def test_ecn_flags_on_syns() -> None:
    f = pb.TcpFlow()
    pkts = [f.c("SEC"), f.s("SAE"), f.c("A"), f.c("PAC", b"x"), f.s("AE")]
    conn = one_tcp(pkts)
    hs = conn["handshake"]
    assert hs["complete"] and hs["valid"]
    assert hs["syn"]["flags"] == "CWR,ECE,SYN" and hs["syn_ack"]["flags"] == "ECE,ACK,SYN"
    assert hs["ecn"] == {"syn_ece_cwr": True, "syn_ack_ece": True, "negotiated": True, "ece_or_cwr_later": True}
    g = pb.TcpFlow()
    hs = one_tcp([g.c("SE"), g.s("SAEC"), g.c("A")])["handshake"]  # not the ECN setup patterns
    assert hs["complete"] and hs["ecn"]["syn_ece_cwr"] is False and hs["ecn"]["syn_ack_ece"] is False
    assert hs["ecn"]["negotiated"] is False


# ---------------------------------------------------------------------------------------------
# roles without a SYN


def _midstream(cport: int, sport: int, *, server_first: bool = False) -> list[bytes]:
    f = pb.TcpFlow(cport=cport, sport=sport)
    pkts = [f.c("PA", b"request"), f.s("PA", b"response"), f.c("A")]
    return [pkts[1], pkts[0], pkts[2]] if server_first else pkts


@pytest.mark.parametrize("server_first", [False, True])
def test_roles_guessed_from_the_lower_port(server_first: bool) -> None:
    conn = one_tcp(_midstream(50000, 8080, server_first=server_first))
    assert conn["roles_inferred"] and conn["roles_by"] == "lower_port_is_server"
    assert (conn["client"]["port"], conn["server"]["port"]) == (50000, 8080)
    assert conn["handshake"]["syn"] is None and not conn["handshake"]["complete"]
    assert conn["states"]["initial"].startswith("ESTABLISHED")
    assert conn["payload"]["client"]["preview"] == "request" and conn["payload"]["server"]["preview"] == "response"


def test_roles_from_known_server_ports() -> None:
    pkts = _midstream(3000, 45000)  # the client uses the lower port...
    conn = one_tcp(pkts, server_ports=(45000,))  # ...but 45000 is a known server port
    assert conn["roles_by"] == "known_server_port" and conn["server"]["port"] == 45000
    conn = one_tcp(_midstream(3000, 45000, server_first=True), server_ports=(45000, 9))
    assert conn["roles_by"] == "known_server_port" and conn["client"]["port"] == 3000
    conn = one_tcp(pkts, server_ports=(3000, 45000))  # both known: fall back to the lower port
    assert conn["roles_by"] == "lower_port_is_server" and conn["server"]["port"] == 3000


def test_roles_with_equal_ports_and_from_a_lone_syn_ack() -> None:
    conn = one_tcp(_midstream(7000, 7000))
    assert conn["roles_by"] == "first_packet" and conn["client"]["ip"] == "10.0.0.1"
    f = pb.TcpFlow(cport=50000, sport=80)
    conn = one_tcp([f.s("SA", ack=1001), f.c("A"), f.c("PA", b"x")])
    assert conn["roles_by"] == "syn_ack" and conn["roles_inferred"] and conn["client"]["port"] == 50000
    assert conn["handshake"]["syn_ack"]["frame"] == 1 and conn["handshake"]["ack"]["frame"] == 2


# ---------------------------------------------------------------------------------------------
# teardown


def _established(**kw: int) -> tuple[pb.TcpFlow, list[bytes]]:
    f = pb.TcpFlow(**kw)  # type: ignore[arg-type]
    return f, [*f.handshake(), f.c("PA", b"request"), f.s("PA", b"response")]


def teardown_of(packets: list[bytes]) -> dict[str, Any]:
    td: dict[str, Any] = one_tcp(packets)["teardown"]
    return td


# the client sends 7 bytes of data, the server 8: with these ISNs the data crosses 2^32, or each FIN sits
# on 0xFFFFFFFF (its ACK is 0), or the SYNs do
ISNS = [{"cisn": 1000, "sisn": 5000}, {"cisn": 0xFFFFFFFC, "sisn": 0xFFFFFFFA},
        {"cisn": 0xFFFFFFF7, "sisn": 0xFFFFFFF6}, {"cisn": 0xFFFFFFFF, "sisn": 0xFFFFFFFF}]
ISN_IDS = ["plain", "wrap-in-data", "fin-at-ffffffff", "syn-at-ffffffff"]


@pytest.mark.parametrize("isns", ISNS, ids=ISN_IDS)
def test_four_way_close(isns: dict[str, int]) -> None:
    f, pkts = _established(**isns)
    pkts += [f.c("FA"), f.s("A"), f.s("FA"), f.c("A")]  # frames 6-9
    td = teardown_of(pkts)
    assert td["kind"] == "four-way" and td["fin_ack_pattern"] == "four-way"
    assert td["initiator"] == "client" and td["first_fin_by"] == "client" and td["time_wait"] == ["client"]
    assert td["fin"]["client"]["acked_by_frame"] == 7 and td["fin"]["server"]["acked_by_frame"] == 9
    assert td["final_ack_frame"] == 9 and td["reset_by"] is None
    assert [p["frame"] for p in td["packets"]] == [6, 7, 8, 9]


@pytest.mark.parametrize("isns", ISNS, ids=ISN_IDS)
def test_three_way_close(isns: dict[str, int]) -> None:
    f, pkts = _established(**isns)
    pkts += [f.s("FA"), f.c("FA"), f.s("A")]  # the server closes first
    td = teardown_of(pkts)
    assert td["kind"] == "three-way" and td["initiator"] == "server" and td["time_wait"] == ["server"]
    assert td["fin"]["server"]["acked_by_frame"] == 7 and td["final_ack_frame"] == 8


@pytest.mark.parametrize("isns", ISNS, ids=ISN_IDS)
def test_simultaneous_close(isns: dict[str, int]) -> None:
    f, pkts = _established(**isns)
    before = f.next_seq[True]
    pkts += [f.c("FA"), f.s("FA", ack=before), f.c("A"), f.s("A")]
    td = teardown_of(pkts)
    assert td["kind"] == "simultaneous" and td["initiator"] == "client"
    assert td["time_wait"] == ["client", "server"]
    assert td["fin"]["client"]["acked_by_frame"] == 9 and td["fin"]["server"]["acked_by_frame"] == 8


@pytest.mark.parametrize("isns", ISNS, ids=ISN_IDS)
def test_half_close(isns: dict[str, int]) -> None:
    f, pkts = _established(**isns)
    pkts += [f.c("FA"), f.s("A"), f.s("PA", b"more data"), f.c("A"), f.s("PA", b"and more"), f.c("A"),
             f.s("FA"), f.c("A")]
    conn = one_tcp(pkts)
    td = conn["teardown"]
    assert td["kind"] == "half-close" and td["initiator"] == "client" and td["time_wait"] == ["client"]
    assert td["data_after_first_fin"] == {"frames": [8, 10], "bytes": 17}
    assert conn["payload"]["server"]["preview"] == "responsemore dataand more"


def test_one_sided_and_none() -> None:
    f, pkts = _established()
    td = teardown_of([*pkts, f.c("FA"), f.s("A")])
    assert td["kind"] == "one-sided" and td["initiator"] == "client" and td["time_wait"] == []
    assert td["fin"]["server"] is None and td["fin"]["client"]["acked_by_frame"] == 7
    _, pkts = _established()
    td = teardown_of(pkts)
    assert td["kind"] == "none" and td["initiator"] is None and td["packets"] == []


@pytest.mark.parametrize(("who", "expected_by"), [("client", "client"), ("server", "server"), ("both", "both")])
def test_resets(who: str, expected_by: str) -> None:
    f, pkts = _established()
    if who in ("client", "both"):
        pkts.append(f.c("RA"))
    if who in ("server", "both"):
        pkts.append(f.s("R", ack=0))
    td = teardown_of(pkts)
    assert td["kind"] == "reset" and td["reset_by"] == expected_by
    assert td["initiator"] == ("server" if who == "server" else "client")
    assert td["rst"]["first_frame"] == 6 and td["rst"]["count"] == (2 if who == "both" else 1)
    assert td["time_wait"] == []


def test_reset_during_the_close_and_after_it() -> None:
    f, pkts = _established()
    td = teardown_of([*pkts, f.c("FA"), f.s("RA")])  # the server resets instead of closing
    assert td["kind"] == "reset" and td["initiator"] == "client" and td["reset_by"] == "server"
    assert td["rst"]["after_fin"] and not td["rst"]["after_close"]
    g, pkts = _established()
    td = teardown_of([*pkts, g.c("FA"), g.s("FA"), g.c("A"), g.c("R", ack=0)])  # a stray RST after a full close
    assert td["kind"] == "three-way" and td["rst"]["after_close"] and td["reset_by"] == "client"


def test_fin_retransmissions_are_listed() -> None:
    f, pkts = _established()
    fin = f.c("FA")
    pkts += [fin, fin, f.s("A"), f.s("FA"), f.c("A")]
    td = teardown_of(pkts)
    assert td["kind"] == "four-way" and td["fin"]["client"]["frames"] == [6, 7]
    assert td["fin"]["client"]["acked_by_frame"] == 8


def test_fin_ack_matching_needs_the_ack_past_the_fin() -> None:
    f, pkts = _established(cisn=0xFFFFFFF7)  # the client's FIN sits on 0xFFFFFFFF
    fin = f.c("FA")
    assert int.from_bytes(fin[24:28], "big") == 0xFFFFFFFF
    not_yet = f.s("A", ack=0xFFFFFFFF)  # acknowledges the data, not the FIN
    pkts += [fin, not_yet, f.s("A"), f.s("FA"), f.c("A")]
    td = teardown_of(pkts)
    assert td["fin"]["client"]["acked_by_frame"] == 8 and td["kind"] == "four-way"


# ---------------------------------------------------------------------------------------------
# payload through the tracker


def test_payload_with_retransmission_out_of_order_and_an_acked_gap() -> None:
    f, pkts = _established(cisn=0xFFFFFFF0)
    c0 = f.next_seq[True]
    seg_a = f.c("PA", b"AAAA")  # 6
    f.c("PA", b"BBBB")  # never captured
    seg_c = f.c("PA", b"CCCC")
    seg_d = f.c("PA", b"DDDD")
    pkts += [seg_a, seg_a, seg_d, seg_c]  # 6, 7 (retransmission), 8 (out of order), 9
    pkts.append(f.s("A"))  # 10: acknowledges everything, B included: the gap is acked
    pkts.append(f.c("PA", b"EEEE"))  # 11
    conn = one_tcp(pkts)
    p = conn["payload"]["client"]
    assert p["preview"] == "requestAAAACCCCDDDDEEEE" and p["bytes"] == 23
    assert p["gaps"] == [{"offset": 11, "length": 4, "frame": 10, "reason": "acked"}]
    assert not p["complete"] and p["wire_bytes"] == 27 and p["segments"] == 6
    assert (c0 + 4) & M32 == (0xFFFFFFF0 + 1 + 7 + 4) & M32


def test_payload_of_frames_cut_by_the_snap_length() -> None:
    f, pkts = _established()
    big = f.c("PA", b"x" * 200)
    cut = f.c("PA", b"y" * 50)
    records = pb.as_records([*pkts, big, cut, f.c("PA", b"zz"), f.s("A")])
    records[5] = records[5]._replace(data=records[5].data[:40 + 20])  # 20 of 200 payload bytes
    records[6] = records[6]._replace(data=records[6].data[:40])  # headers only
    res = analyze_records(records, AnalysisOptions(keep_payload=True))
    p = res.tcp_summaries[0]["payload"]["client"]
    assert p["truncated_frames"] == [6, 7] and p["truncated_bytes"] == 180
    # the headers-only frame is missing data, noticed when the server acknowledges past it
    assert p["gaps"] == [{"offset": 27, "length": 50, "frame": 9, "reason": "acked"}]
    assert p["bytes"] == 7 + 20 + 2 and not p["complete"]
    assert bytes(res.tcp[0].assembler[0].kept) == b"request" + b"x" * 20 + b"zz"
    assert any("truncated by the capture's snap length" in w for w in res.warnings)


def test_unfilled_gap_at_the_end_of_the_capture() -> None:
    f, pkts = _established()
    f.c("PA", b"lost")
    pkts.append(f.c("PA", b"held"))
    p = one_tcp(pkts)["payload"]["client"]
    assert p["preview"] == "request" and p["gaps"] == [{"offset": 7, "length": 8, "frame": 6, "reason": "unfilled"}]


def test_tracker_is_sans_io_and_bounded() -> None:
    t = TcpTracker(keep_payload=False, http=False)
    f = pb.TcpFlow()
    dec = Decoder()
    pkts = [*f.handshake(), *(f.c("PA", b"z" * 1000) for _ in range(10))]
    for i, p in enumerate(pkts):
        x = dec.decode(i + 1, i, 101, p, len(p))
        assert isinstance(x, TcpSegment)
        assert t.feed(x).stream == 0
    (conn,) = t.finish()
    assert conn.assembler[0].bytes_out == 10_000 and len(conn.assembler[0].kept) == PREVIEW_BYTES == 64
    assert conn.packets == [12, 1] and conn.payload_segments == [10, 0]


# ---------------------------------------------------------------------------------------------
# tshark agrees on Follow TCP Stream and on stream numbers in odd reuse cases

MISSING_MARK = b" bytes missing in capture file]\x00"


def _follow_capture() -> list[pb.Frame]:
    """One connection whose client data has every kind of trouble; server data too."""
    f = pb.TcpFlow(cisn=0xFFFFFF00, sisn=0x7FFFFFF0)
    pkts: list[tuple[bytes, int | None]] = [(p, None) for p in f.handshake()]

    def full(p: bytes) -> None:
        pkts.append((p, None))

    a = f.c("PA", b"AAAAAAAAAA")
    full(a)
    full(a)  # retransmission
    b = f.c("PA", b"BBBBBBBBBB")
    c = f.c("PA", b"CCCCCCCCCC")
    full(c)  # out of order
    full(b)
    full(f.c("PA", b"XXXXX", seq=(0xFFFFFF00 + 1 + 25) & M32, advance=False))  # overlap, other bytes
    big = f.c("PA", b"D" * 300)
    pkts.append((big[:40 + 30], len(big)))  # 30 of 300 captured, in order
    empty = f.c("PA", b"E" * 40)
    pkts.append((empty[:40], len(empty)))  # headers only
    full(f.c("PA", b"FFFF"))
    full(f.s("A"))  # acknowledges past the headers-only frame
    f.c("PA", b"lost!")  # never captured
    full(f.c("PA", b"GGGG"))
    full(f.s("PA", b"server says hi"))  # acknowledges past the lost segment
    g2 = f.c("PA", b"gg")
    h = f.c("PA", b"H" * 20)
    i = f.c("PA", b"IIII")
    pkts.append((h[:40 + 5], len(h)))  # truncated and out of order: held, placed with 5 bytes only
    full(g2)
    full(i)
    full(f.s("A"))
    j = f.c("PA", b"JJJJ")
    full(f.c("PA", b"KKKK"))
    full(j)
    full(f.s("FA"))
    full(f.c("FA"))
    full(f.s("A"))
    return [pb.Frame(pb.START_NS + n * pb.STEP_NS, p, w) for n, (p, w) in enumerate(pkts)]


def _parse_follow(text: str) -> dict[str, tuple[bytes, list[tuple[int, int]]]]:
    """tshark -z follow,tcp,raw output -> per node: (bytes without markers, [(offset, missing)])."""
    out: dict[str, tuple[bytearray, list[tuple[int, int]]]] = {"0": (bytearray(), []), "1": (bytearray(), [])}
    body = text.split("Node 1: ", 1)[1].split("\n", 1)[1]
    for line in body.splitlines():
        if not line.strip() or line.startswith("==="):
            continue
        node = "1" if line.startswith("\t") else "0"
        chunk = bytes.fromhex(line.strip())
        data, gaps = out[node]
        if chunk.startswith(b"[") and chunk.endswith(MISSING_MARK):
            gaps.append((len(data), int(chunk[1:-len(MISSING_MARK)])))
        else:
            data += chunk
    return {k: (bytes(v[0]), v[1]) for k, v in out.items()}


def test_follow_capture_reassembly() -> None:
    frames = _follow_capture()
    res = analyze_records([pb.as_records([fr.data])[0]._replace(frame=n + 1, ts_ns=fr.ts_ns, wirelen=fr.wirelen or
                                                                len(fr.data)) for n, fr in enumerate(frames)],
                          AnalysisOptions(keep_payload=True))
    (conn,) = res.tcp
    client, server = conn.assembler
    assert bytes(client.kept) == (b"A" * 10 + b"B" * 10 + b"C" * 10 + b"D" * 30 + b"FFFF" + b"GGGG" + b"gg"
                                  + b"HHHHH" + b"IIII" + b"JJJJ" + b"KKKK")
    # the headers-only frame, the lost segment, the rest of the held truncated one: all acked gaps
    assert [(g.offset, g.length, g.reason) for g in client.gaps] == [
        (60, 40, "acked"), (64, 5, "acked"), (75, 15, "acked")]
    assert client.truncated_bytes == 270  # the in-order truncated frame only
    assert bytes(server.kept) == b"server says hi"


@pytest.mark.tshark
def test_tshark_follow_agrees(tmp_path: Path) -> None:
    tshark = need_tshark()
    frames = _follow_capture()
    path = tmp_path / "follow.pcap"
    path.write_bytes(pb.pcap_file(frames, 101))
    text = subprocess.run([tshark, "-n", "-r", str(path), "-q", "-z", "follow,tcp,raw,0"], capture_output=True,
                          text=True, check=True, timeout=60).stdout
    theirs = _parse_follow(text)
    res = analyze_records([pb.as_records([fr.data])[0]._replace(frame=n + 1, ts_ns=fr.ts_ns, wirelen=fr.wirelen or
                                                                len(fr.data)) for n, fr in enumerate(frames)],
                          AnalysisOptions(keep_payload=True))
    (conn,) = res.tcp
    for node, asm in zip("01", conn.assembler, strict=True):
        data, marks = theirs[node]
        assert bytes(asm.kept) == data, node
        assert [(g.offset, g.length) for g in asm.gaps if g.reason == "acked"] == marks, node


def _odd_reuse_packets() -> list[bytes]:
    f = pb.TcpFlow(cisn=100, sisn=200)
    pkts = [f.c("PA", b"x"), f.s("A"), f.c("S", seq=999)]  # mid-stream, then a SYN with a new ISN
    g = pb.TcpFlow(cport=40001, cisn=100)
    pkts += [g.c("S"), g.s("RA", seq=0, ack=101), g.c("S", seq=100), g.c("S", seq=555)]  # refused, retried
    h = pb.TcpFlow(cport=40002, cisn=100, sisn=200)
    pkts += [*h.handshake(), h.s("S", seq=200), h.s("S", seq=201)]  # the server's side sends pure SYNs
    k = pb.TcpFlow(cport=40003, cisn=100, sisn=200)
    pkts += [*k.handshake(), k.c("SEC", seq=7777)]  # an ECN SYN is a SYN
    m = pb.TcpFlow("fd00::1", 40004, "fd00::2", 80, cisn=100, sisn=200)
    pkts += [m.s("SA", ack=101), m.c("S", seq=100), m.c("S", seq=300)]  # only the SYN-ACK was seen
    return pkts


def test_odd_port_reuse_numbering() -> None:
    assert list(stream_of_frames(_odd_reuse_packets()).values()) == [
        0, 0, 1, 2, 2, 2, 3, 4, 4, 4, 4, 5, 6, 6, 6, 7, 8, 8, 9]


@pytest.mark.tshark
def test_tshark_agrees_on_odd_port_reuse(tmp_path: Path) -> None:
    pkts = _odd_reuse_packets()
    assert stream_of_frames(pkts) == tshark_streams(tmp_path, pkts, "odd-reuse.pcap")
