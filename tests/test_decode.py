"""The layer decoders on crafted frames: link layers, IPv4 options and fragments, IPv6 extension headers
and fragments, TCP (options included) and UDP, ICMP error quotes.  Bad bytes give a Malformed result
(counted by the analysis), never an exception."""

from __future__ import annotations

import itertools
import random
import subprocess
from pathlib import Path

import pcapbuild as pb
import pytest
from conftest import need_tshark

from analyzers.analysis import analyze_records
from analyzers.decode import (
    FRAGMENT,
    OTHER,
    TCP_ACK,
    TCP_CWR,
    TCP_ECE,
    TCP_FIN,
    TCP_NS,
    TCP_PSH,
    TCP_SYN,
    Decoded,
    Decoder,
    IcmpError,
    Malformed,
    Reassembler,
    TcpSegment,
    UdpDatagram,
    flags_str,
    format_ip,
    linktype_name,
    parse_tcp_options,
)

C4, S4 = "192.0.2.1", "192.0.2.2"
C6, S6 = "fd00::1", "fd00::2"


def dec(packet: bytes, linktype: int = 101, *, wirelen: int | None = None, frame: int = 1) -> Decoded:
    return Decoder().decode(frame, 123, linktype, packet, len(packet) if wirelen is None else wirelen)


def dec_all(packets: list[bytes], linktype: int = 101) -> list[Decoded]:
    d = Decoder()
    return [d.decode(i + 1, i, linktype, p, len(p)) for i, p in enumerate(packets)]


def tcp4(payload: bytes = b"data", *, options: bytes = b"", ip_options: bytes = b"", flags: str = "PA") -> bytes:
    l4 = pb.tcp_segment(1234, 80, 1000, 2000, flags, options=options, payload=payload,
                        src=pb.addr(C4), dst=pb.addr(S4))
    return pb.ipv4_packet(C4, S4, pb.PROTO_TCP, l4, options=ip_options)


def udp4(payload: bytes = b"datagram") -> bytes:
    return pb.ipv4_packet(C4, S4, pb.PROTO_UDP, pb.udp_datagram(5000, 53, payload))


def as_tcp(x: Decoded) -> TcpSegment:
    assert isinstance(x, TcpSegment), x
    return x


def as_udp(x: Decoded) -> UdpDatagram:
    assert isinstance(x, UdpDatagram), x
    return x


def as_malformed(x: Decoded) -> Malformed:
    assert isinstance(x, Malformed), x
    return x


# ---------------------------------------------------------------------------------------------
# small helpers


def test_names_and_formatting() -> None:
    assert format_ip(pb.addr("10.1.2.3")) == "10.1.2.3"
    assert format_ip(pb.addr("fd00::1")) == "fd00::1"
    assert linktype_name(1) == "Ethernet" and linktype_name(276) == "Linux cooked v2 (SLL2)"
    assert linktype_name(9999) == "unknown link type 9999"
    assert flags_str(TCP_SYN | TCP_ACK) == "ACK,SYN"
    assert flags_str(TCP_FIN | TCP_ACK | TCP_PSH) == "ACK,PSH,FIN"
    assert flags_str(TCP_SYN | TCP_ECE | TCP_CWR | TCP_NS) == "NS,CWR,ECE,SYN"
    assert flags_str(0) == ""


# ---------------------------------------------------------------------------------------------
# link layers


def test_tcp_fields_are_decoded() -> None:
    seg = as_tcp(dec(tcp4(b"hello", options=pb.opt_mss(1460))))
    assert (seg.version, seg.src, seg.dst, seg.sport, seg.dport) == (4, pb.addr(C4), pb.addr(S4), 1234, 80)
    assert (seg.seq, seg.ack, seg.flags, seg.window) == (1000, 2000, TCP_PSH | TCP_ACK, 65535)
    assert seg.options == pb.opt_mss(1460) and seg.payload == b"hello" and seg.paylen == 5
    assert seg.ip_bytes == 20 + 24 + 5 and not seg.caplen_short and seg.frame == 1 and seg.ts_ns == 123


@pytest.mark.parametrize(("linktype", "frame", "layer"), [
    (1, b"\x00" * 13, "Ethernet"),
    (1, pb.MAC_B + pb.MAC_A + b"\x81\x00\x00", "802.1Q"),
    (1, pb.MAC_B + pb.MAC_A + b"\x81\x00\x00\x01" * 9 + b"\x08\x00" + b"\x45" + b"\x00" * 19, "802.1Q"),
    (0, b"\x02\x00\x00", "Null/Loopback"),
    (108, b"\x00\x00", "Loop"),
    (101, b"", "Raw IP"),
    (113, b"\x00" * 15, "Linux SLL"),
    (276, b"\x00" * 19, "Linux SLL2"),
], ids=["eth-short", "vlan-truncated", "vlan-9-tags", "null-short", "loop-short", "raw-empty", "sll-short",
        "sll2-short"])
def test_link_layer_damage_is_malformed(linktype: int, frame: bytes, layer: str) -> None:
    assert as_malformed(dec(frame, linktype)).layer == layer


def test_eight_vlan_tags_are_fine() -> None:
    vlans = [(0x8100, i) for i in range(8)]
    assert as_tcp(dec(pb.ethernet(tcp4(), vlans=vlans), 1)).payload == b"data"


@pytest.mark.parametrize(("linktype", "frame"), [
    (1, pb.ethernet(b"\x00" * 28, pb.ETH_ARP)),
    (1, pb.ethernet(b"\x00" * 28, 0x88CC)),
    (0, pb.null_frame(tcp4(), 7)),
    (108, pb.loop_frame(tcp4(), 99)),
    (101, b"\x50" + tcp4()[1:]),
    (113, pb.sll_frame(b"\x00" * 30, 0x0004)),
    (276, pb.sll2_frame(b"\x00" * 30, pb.ETH_ARP)),
], ids=["arp", "lldp", "null-unknown-af", "loop-unknown-af", "raw-version-5", "sll-802.2", "sll2-arp"])
def test_non_ip_frames_are_other(linktype: int, frame: bytes) -> None:
    assert dec(frame, linktype) == OTHER


def _mpls(ip: bytes, labels: int = 2) -> bytes:
    stack = b"".join((16 + i).to_bytes(3, "big")[:2] + bytes([((16 + i) & 0xF) << 4 | (i == labels - 1), 64])
                     for i in range(labels))
    return stack + ip


@pytest.mark.parametrize(("linktype", "frame"), [
    (1, pb.ethernet(b"\x11\x00\x00\x01" + len(tcp4()).to_bytes(2, "big") + b"\x00\x21" + tcp4(), 0x8864)),
    (1, pb.ethernet(b"\x11\x00\x00\x01\x00\x00\xff\x03\x00\x21" + tcp4(), 0x8864, vlans=[(0x8100, 7)])),
    (1, pb.ethernet(_mpls(tcp4()), 0x8847)),
    (1, pb.ethernet(_mpls(tcp4(), labels=1), 0x8848, vlans=[(0x8100, 7)])),
    (9, b"\xff\x03\x00\x21" + tcp4()),
    (9, b"\x00\x21" + tcp4()),
], ids=["pppoe", "pppoe-vlan-address-control", "mpls-two-labels", "mpls-multicast-vlan", "ppp", "ppp-no-address"])
def test_pppoe_mpls_and_ppp_frames_are_opened_to_their_ip_packet(linktype: int, frame: bytes) -> None:
    """As Wireshark and Zeek do: the analysis does not depend on the peers' views' decoder."""
    seg = as_tcp(dec(frame, linktype))
    assert (seg.sport, seg.dport, seg.payload) == (1234, 80, b"data")
    assert linktype_name(linktype) != f"unknown link type {linktype}"


@pytest.mark.parametrize(("linktype", "frame"), [
    (1, pb.ethernet(b"\x11\x00\x00\x01\x00\x00\xc0\x21" + b"\x00" * 20, 0x8864)),  # LCP, not IP
    (1, pb.ethernet(b"\x11\x00\x00", 0x8864)),  # cut short
    (1, pb.ethernet(_mpls(b"\x00" * 20), 0x8847)),  # not IP after the stack
    (1, pb.ethernet(b"\x00\x10\x00\x40" * 3, 0x8847)),  # no bottom of stack
    (9, b"\xff\x03\xc0\x21" + b"\x00" * 8),
], ids=["pppoe-lcp", "pppoe-short", "mpls-not-ip", "mpls-no-bottom", "ppp-lcp"])
def test_pppoe_mpls_and_ppp_frames_without_ip_are_other(linktype: int, frame: bytes) -> None:
    assert dec(frame, linktype) == OTHER


def test_unknown_link_type_is_counted() -> None:
    d = Decoder()
    assert d.decode(1, 0, 147, b"\x00" * 40, 40) == OTHER
    assert d.decode(2, 0, 147, b"\x00" * 40, 40) == OTHER
    assert d.unknown_linktypes == {147: 2}
    res = analyze_records([pb.as_records([b"\x00" * 40])[0]._replace(linktype=147)])
    assert res.unknown_linktypes == {147: 1}
    assert any("not decoded" in w for w in res.warnings)


def test_ethernet_padding_is_not_payload() -> None:
    pkt = udp4(b"hi")  # 30 bytes of IP: the Ethernet frame is padded to 60
    frame = pb.ethernet(pkt) + b"\xee" * (60 - 14 - len(pkt))
    dg = as_udp(dec(frame, 1))
    assert dg.payload == b"hi" and dg.length == 10 and dg.ip_bytes == len(pkt)
    seg = as_tcp(dec(pb.ethernet(tcp4(b"")) + b"\xee" * 6, 1))
    assert seg.payload == b"" and seg.paylen == 0


# ---------------------------------------------------------------------------------------------
# IPv4


@pytest.mark.parametrize("ip_options", [
    b"", pb.NOP * 4, pb.ipv4_option_router_alert(), pb.ipv4_option_record_route(1),
    pb.ipv4_option_record_route(9), pb.NOP + pb.ipv4_option_record_route(2) + pb.ipv4_option_router_alert(),
], ids=["none", "nops", "router-alert", "rr-1", "rr-9-ihl-15", "mixed"])
def test_ipv4_options_are_skipped(ip_options: bytes) -> None:
    pkt = tcp4(b"payload!", ip_options=ip_options, options=pb.opt_timestamps(7, 8))
    seg = as_tcp(dec(pkt))
    assert seg.payload == b"payload!" and seg.options[:10] == pb.opt_timestamps(7, 8)
    assert seg.ip_bytes == len(pkt)


def test_ipv4_tso_total_length_zero_uses_the_captured_bytes() -> None:
    l4 = pb.tcp_segment(1, 2, 3, 4, "A", payload=b"x" * 3000)
    seg = as_tcp(dec(pb.ipv4_packet(C4, S4, 6, l4, total_length=0)))
    assert seg.paylen == 3000 and seg.payload == b"x" * 3000


def test_ipv4_snapped_frame_keeps_the_wire_length() -> None:
    pkt = tcp4(b"y" * 1000)
    seg = as_tcp(dec(pkt[:96], wirelen=len(pkt)))
    assert seg.paylen == 1000 and seg.payload == b"y" * (96 - 40) and seg.caplen_short
    assert seg.ip_bytes == len(pkt)
    dg = as_udp(dec(udp4(b"z" * 500)[:60], wirelen=20 + 8 + 500))
    assert dg.length == 508 and dg.payload == b"z" * 32 and dg.truncated


@pytest.mark.parametrize(("packet", "reason"), [
    (tcp4()[:19], "header truncated"),
    (b"\x65" + tcp4()[1:], "version field is 6"),
    (b"\x44" + tcp4()[1:], "below the minimum of 20"),
    (pb.ipv4_packet(C4, S4, 6, b"\x00" * 10, ihl=15), "points past the captured data"),
    (pb.ipv4_packet(C4, S4, 6, b"\x00" * 40, ihl=6, total_length=22), "smaller than the header length"),
], ids=["short", "version", "ihl-below-5", "ihl-past-data", "total-below-ihl"])
def test_ipv4_damage_is_malformed(packet: bytes, reason: str) -> None:
    m = as_malformed(dec(pb.ethernet(packet, pb.ETH_IPV4), 1))
    assert m == as_malformed(dec(packet, pb.LINKTYPE_IPV4))
    assert m.layer == "IPv4" and reason in m.reason and m.frame == 1
    assert reason in str(m) and str(m).startswith("frame 1: IPv4: ")


# ---------------------------------------------------------------------------------------------
# IPv6 and extension headers

HBH_OPTS = b"\x05\x02\x00\x00"  # router alert
CHAINS: list[tuple[str, list[tuple[int, bytes]]]] = [
    ("none", []),
    ("hop-by-hop", [(pb.EXT_HOP_BY_HOP, HBH_OPTS)]),
    ("hbh-dest-routing-dest", [(pb.EXT_HOP_BY_HOP, b""), (pb.EXT_DEST_OPTS, b"\x01\x04\x00\x00\x00\x00"),
                               (pb.EXT_ROUTING, pb.routing_body([pb.addr("fd00::9")], 2, 1)),
                               (pb.EXT_DEST_OPTS, b"\x01\x0c" + b"\x00" * 12)]),
    ("routing-type0-2-addresses", [(pb.EXT_ROUTING, pb.routing_body([pb.addr("fd00::8"), pb.addr("fd00::9")]))]),
    ("ah", [(pb.EXT_AH, b"\x00\x00" + b"\x00\x00\x01\x00" + b"\x00\x00\x00\x01" + b"\xaa" * 12)]),
    ("atomic-fragment", [(pb.EXT_HOP_BY_HOP, b""), (pb.EXT_FRAGMENT, pb.fragment_body(0, False, 77))]),
]


@pytest.mark.parametrize(("name", "chain"), CHAINS, ids=[c[0] for c in CHAINS])
@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_ipv6_extension_headers_are_walked(name: str, chain: list[tuple[int, bytes]], proto: str) -> None:
    src, dst = pb.addr(C6), pb.addr(S6)
    if proto == "tcp":
        l4 = pb.tcp_segment(1234, 80, 1, 2, "PA", payload=b"v6 data", options=pb.opt_mss(1220), src=src, dst=dst)
        nxt, body = pb.ipv6_chain(chain, pb.PROTO_TCP, l4)
    else:
        l4 = pb.udp_datagram(5000, 53, b"v6 datagram", src=src, dst=dst)
        nxt, body = pb.ipv6_chain(chain, pb.PROTO_UDP, l4)
    pkt = pb.ipv6_packet(C6, S6, nxt, body)
    x = dec(pkt)
    if proto == "tcp":
        seg = as_tcp(x)
        assert (seg.version, seg.sport, seg.dport, seg.payload, seg.paylen) == (6, 1234, 80, b"v6 data", 7)
        assert seg.src == src and seg.dst == dst and seg.ip_bytes == len(pkt)
    else:
        dg = as_udp(x)
        assert (dg.version, dg.sport, dg.dport, dg.payload, dg.length) == (6, 5000, 53, b"v6 datagram", 19)
        assert dg.fragment_frames == ()


def test_ipv6_no_next_header_is_other() -> None:
    assert dec(pb.ipv6_packet(C6, S6, pb.NO_NEXT_HEADER, b"")) == OTHER
    nxt, body = pb.ipv6_chain([(pb.EXT_DEST_OPTS, b"")], pb.NO_NEXT_HEADER, b"")
    assert dec(pb.ipv6_packet(C6, S6, nxt, body)) == OTHER
    assert dec(pb.ipv6_packet(C6, S6, 132, b"\x00" * 12)) == OTHER  # SCTP: not analyzed


def test_ipv6_jumbo_or_tso_payload_length_zero() -> None:
    l4 = pb.udp_datagram(5000, 53, b"j" * 100, length=0)
    dg = as_udp(dec(pb.ipv6_packet(C6, S6, pb.PROTO_UDP, l4, payload_length=0)))
    assert dg.length == 108 and dg.payload == b"j" * 100
    l4 = pb.tcp_segment(1, 2, 3, 4, "A", payload=b"t" * 70000)
    seg = as_tcp(dec(pb.ipv6_packet(C6, S6, pb.PROTO_TCP, l4, payload_length=0)))
    assert seg.paylen == 70000


def _chain_packet(chain: list[tuple[int, bytes]]) -> bytes:
    nxt, body = pb.ipv6_chain(chain, pb.PROTO_UDP, pb.udp_datagram(1, 2, b"x"))
    return pb.ipv6_packet(C6, S6, nxt, body)


@pytest.mark.parametrize(("packet", "reason"), [
    (pb.ipv6_packet(C6, S6, 6, b"")[:39], "header truncated"),
    (b"\x40" + pb.ipv6_packet(C6, S6, 6, b"\x00" * 20)[1:], "version field is 4"),
    (pb.ipv6_packet(C6, S6, pb.EXT_HOP_BY_HOP, b"\x11\x00\x00"), "extension header 0 truncated"),
    (pb.ipv6_packet(C6, S6, pb.EXT_DEST_OPTS, pb.ext_header(pb.EXT_DEST_OPTS, 17, length=5) + b"\x00" * 8),
     "points past the packet"),
    (_chain_packet([(pb.EXT_DEST_OPTS, b"")] * 17), "more than 16 extension headers"),
    (_chain_packet([(pb.EXT_HOP_BY_HOP, b"")])[:44], "extension header 0 truncated"),
], ids=["short", "version", "ext-truncated", "ext-length-lies", "17-headers", "ext-snapped"])
def test_ipv6_damage_is_malformed(packet: bytes, reason: str) -> None:
    m = as_malformed(dec(pb.ethernet(packet, pb.ETH_IPV6), 1))
    assert m == as_malformed(dec(packet, pb.LINKTYPE_IPV6))
    assert m.layer == "IPv6" and reason in m.reason


def test_sixteen_extension_headers_are_fine() -> None:
    assert as_udp(dec(_chain_packet([(pb.EXT_DEST_OPTS, b"")] * 16))).payload == b"x"


# ---------------------------------------------------------------------------------------------
# TCP and UDP damage


def _tcp_with(data_offset: int, payload: bytes = b"", options: bytes = b"") -> bytes:
    return pb.ipv4_packet(C4, S4, 6, pb.tcp_segment(1, 2, 3, 4, "A", data_offset=data_offset, options=options,
                                                    payload=payload))


@pytest.mark.parametrize(("packet", "reason"), [
    (_tcp_with(0), "header length 0 is below the minimum of 20"),
    (_tcp_with(4, b"x" * 40), "header length 16 is below the minimum of 20"),
    (_tcp_with(15, b"x" * 10), "header length 60 points past the segment (30 bytes)"),
    (_tcp_with(6), "header length 24 points past the segment (20 bytes)"),
    (pb.ipv4_packet(C4, S4, 6, b"\x00" * 12), "segment shorter than the 20-byte TCP header (12 bytes)"),
    (pb.ipv4_packet(C4, S4, 6, pb.tcp_segment(1, 2, 3, 4, "A"), total_length=30), "shorter than the 20-byte"),
], ids=["offset-0", "offset-4", "offset-past-segment", "options-missing", "short-segment", "ip-total-cuts-tcp"])
def test_tcp_damage_is_malformed(packet: bytes, reason: str) -> None:
    m = as_malformed(dec(packet))
    assert m.layer == "TCP" and reason in m.reason


def test_tcp_header_cut_by_the_snap_length_is_malformed() -> None:
    pkt = tcp4(b"x" * 100, options=pb.opt_timestamps(1, 2))
    m = as_malformed(dec(pkt[:30], wirelen=len(pkt)))
    assert m.layer == "TCP" and "truncated by the capture (10 of 20 bytes)" in m.reason
    m = as_malformed(dec(pkt[:50], wirelen=len(pkt)))
    assert "truncated by the capture (30 of 32 bytes)" in m.reason


@pytest.mark.parametrize(("length", "reason"), [
    (0, "length field 0 is below the 8-byte header"),
    (7, "length field 7 is below"),
    (100, "length field 100 exceeds the IP payload (11 bytes)"),
    (0xFFFF, "exceeds the IP payload"),
])
def test_udp_length_lies_are_malformed(length: int, reason: str) -> None:
    pkt = pb.ipv4_packet(C4, S4, 17, pb.udp_datagram(1, 2, b"abc", length=length))
    m = as_malformed(dec(pkt))
    assert m.layer == "UDP" and reason in m.reason


def test_udp_short_header_and_short_length() -> None:
    assert "header truncated (4 of 8 bytes)" in as_malformed(dec(pb.ipv4_packet(C4, S4, 17, b"\x00" * 4))).reason
    # a UDP length below the IP payload: the datagram ends where UDP says
    dg = as_udp(dec(pb.ipv4_packet(C4, S4, 17, pb.udp_datagram(1, 2, b"abcdef", length=11))))
    assert dg.payload == b"abc" and dg.length == 11 and not dg.truncated


def test_malformed_frames_are_counted_by_the_analysis() -> None:
    bad = [
        pb.ipv4_packet(C4, S4, 6, b"\x00" * 10, ihl=15),  # IP header length past the data
        _tcp_with(4, b"x" * 40),  # TCP data offset < 5
        _tcp_with(15, b"x" * 10),  # TCP data offset past the segment
        pb.ipv4_packet(C4, S4, 17, pb.udp_datagram(1, 2, b"abc", length=100)),  # UDP length lies
        pb.ipv4_packet(C4, S4, 17, pb.udp_datagram(1, 2, b"abc", length=3)),
        b"\x45",
    ]
    good = [udp4(), tcp4()]
    res = analyze_records(pb.as_records([good[0], *bad, good[1]]))
    assert res.malformed_count == len(bad) and [m.frame for m in res.malformed] == [2, 3, 4, 5, 6, 7]
    assert [m.layer for m in res.malformed] == ["IPv4", "TCP", "TCP", "UDP", "UDP", "IPv4"]
    doc = res.to_dict()
    assert doc["malformed"]["count"] == 6 and doc["malformed"]["packets"][1]["layer"] == "TCP"
    assert any("6 malformed packet(s) skipped" in w and "(and 1 more)" in w for w in doc["warnings"])
    assert len(doc["tcp"]) == 1 and len(doc["udp"]) == 1


def test_many_malformed_frames_are_counted_but_listed_boundedly() -> None:
    res = analyze_records(pb.as_records([b"\x45"] * 150))
    assert res.malformed_count == 150 and len(res.malformed) == 100


# ---------------------------------------------------------------------------------------------
# TCP options


def test_tcp_options_are_parsed() -> None:
    raw = (pb.opt_mss(1460) + pb.NOP + pb.opt_wscale(7) + pb.opt_sack_permitted() + pb.opt_timestamps(11, 22)
           + pb.opt_sack([(100, 200), (300, 400)]) + pb.opt_fast_open(b"\x01\x02\x03\x04\x05\x06\x07\x08")
           + pb.opt_raw(30, 4, b"\x00\x00") + pb.EOL + b"\x02\x04\xff\xff")
    o = parse_tcp_options(raw)
    assert (o.mss, o.window_scale, o.sack_permitted, o.timestamps) == (1460, 7, True, (11, 22))
    assert o.sack_blocks == [(100, 200), (300, 400)]
    assert o.fast_open_cookie == b"\x01\x02\x03\x04\x05\x06\x07\x08"
    assert o.kinds == [2, 3, 4, 8, 5, 34, 30] and o.malformed is None  # parsing stops at EOL
    assert o.to_dict() == {"mss": 1460, "window_scale": 7, "sack_permitted": True,
                           "timestamps": {"tsval": 11, "tsecr": 22}, "fast_open_cookie": "0102030405060708",
                           "malformed": None}


def test_tcp_fast_open_cookie_request_is_an_empty_cookie() -> None:
    o = parse_tcp_options(pb.opt_fast_open(b""))
    assert o.fast_open_cookie == b"" and o.to_dict()["fast_open_cookie"] == ""


def test_tcp_options_of_the_wrong_size_are_ignored() -> None:
    o = parse_tcp_options(pb.opt_raw(2, 3, b"\x05") + pb.opt_raw(3, 4, b"\x07\x00") + pb.opt_raw(8, 6, b"\x00" * 4))
    assert (o.mss, o.window_scale, o.timestamps, o.malformed) == (None, None, None, None)


@pytest.mark.parametrize(("raw", "reason"), [
    (pb.opt_mss(1460) + pb.opt_raw(8, 0), "option 8 has an invalid length 0"),
    (pb.opt_raw(2, 255, b"\x05\xb4"), "option 2 has an invalid length 255"),
    (pb.opt_raw(3, 1), "option 3 has an invalid length 1"),
    (pb.NOP * 3 + b"\x02", "option 2 has no length byte"),
    (pb.opt_raw(8, 10, b"\x00" * 4), "option 8 has an invalid length 10"),
], ids=["len-0", "len-255", "len-1", "no-length", "past-end"])
def test_tcp_option_damage_is_reported_not_raised(raw: bytes, reason: str) -> None:
    o = parse_tcp_options(raw)
    assert o.malformed == reason
    assert o.to_dict()["malformed"] == reason


def test_bad_tcp_options_do_not_drop_the_segment() -> None:
    """A SYN with an option of length 0 or 255 is still a TCP segment of its connection: Wireshark
    flags the option but keeps numbering the stream (see the tshark test below), so the decoder
    keeps the segment and the handshake reports the damaged options."""
    flow = pb.TcpFlow()
    pkts = [flow.c("S", options=pb.opt_mss(1460) + pb.opt_raw(8, 0)), flow.s("SA", options=pb.opt_raw(2, 255)),
            flow.c("A"), flow.c("PA", b"hi")]
    res = analyze_records(pb.as_records(pkts))
    assert res.malformed_count == 0
    (conn,) = res.to_dict()["tcp"]
    hs = conn["handshake"]
    assert hs["complete"] and hs["valid"]
    assert hs["client_options"]["mss"] == 1460
    assert hs["client_options"]["malformed"] == "option 8 has an invalid length 0"
    assert hs["server_options"]["malformed"] == "option 2 has an invalid length 255"
    assert conn["payload"]["client"]["bytes"] == 2


# ---------------------------------------------------------------------------------------------
# ICMP errors


def test_icmp_port_unreachable_quotes_the_udp_header() -> None:
    original = pb.udp_packet(C4, 40001, S4, 9999, b"anyone there?")
    err = pb.ipv4_packet(S4, C4, pb.PROTO_ICMP, pb.icmp_error(3, 3, original))
    x = dec(err)
    assert isinstance(x, IcmpError) and (x.family, x.type, x.code) == ("icmp", 3, 3)
    q = x.quoted
    assert isinstance(q, UdpDatagram)
    assert (q.src, q.sport, q.dst, q.dport, q.length, q.payload) == (pb.addr(C4), 40001, pb.addr(S4), 9999, 21, b"")


def test_icmp_error_quotes_with_ip_options_and_tcp() -> None:
    original = pb.ipv4_packet(C4, S4, 6, pb.tcp_segment(40001, 80, 77, 0, "S"),
                              options=pb.ipv4_option_router_alert())
    x = dec(pb.ipv4_packet(S4, C4, pb.PROTO_ICMP, pb.icmp_error(11, 0, original[:24 + 16])))
    assert isinstance(x, IcmpError) and x.type == 11
    q = x.quoted
    assert isinstance(q, TcpSegment) and (q.sport, q.dport, q.seq, q.flags) == (40001, 80, 77, TCP_SYN)


def test_icmpv6_errors() -> None:
    original = pb.udp_packet(C6, 40001, S6, 9999, b"?")
    x = dec(pb.ipv6_packet(S6, C6, pb.PROTO_ICMPV6, pb.icmp_error(1, 4, original, v6=True)))
    assert isinstance(x, IcmpError) and (x.family, x.type, x.code) == ("icmpv6", 1, 4)
    assert isinstance(x.quoted, UdpDatagram) and x.quoted.dport == 9999 and x.quoted.version == 6
    # packet too big (2) quoting TCP, behind a hop-by-hop header
    tcp = pb.tcp_packet(C6, 40002, S6, 80, 5, 6, "A", payload=b"x" * 100)
    nxt, body = pb.ipv6_chain([(pb.EXT_HOP_BY_HOP, b"")], pb.PROTO_ICMPV6, pb.icmp_error(2, 0, tcp, v6=True))
    x = dec(pb.ipv6_packet(S6, C6, nxt, body))
    assert isinstance(x, IcmpError) and isinstance(x.quoted, TcpSegment) and x.quoted.sport == 40002


@pytest.mark.parametrize(("packet", "expected"), [
    (pb.ipv4_packet(S4, C4, 1, pb.icmp_error(8, 0, b"ping")), OTHER),  # echo request: not an error
    (pb.ipv4_packet(S4, C4, 1, b"\x03\x03\x00"), OTHER),  # too short to be ICMP
    (pb.ipv6_packet(S6, C6, 58, pb.icmp_error(128, 0, b"ping", v6=True)), OTHER),
    (pb.ipv4_packet(S4, C4, 58, pb.icmp_error(1, 0, b"")), OTHER),  # ICMPv6 over IPv4: not analyzed
], ids=["echo", "short", "echo6", "icmpv6-over-ipv4"])
def test_other_icmp_is_other(packet: bytes, expected: str) -> None:
    assert dec(packet) == expected


@pytest.mark.parametrize("quoted", [
    b"",
    pb.udp_packet(C4, 1, S4, 2)[:20],  # IP header only
    pb.udp_packet(C4, 1, S4, 2)[:26],  # UDP header cut
    pb.ipv4_packet(C4, S4, 17, b"\x00" * 16, frag_offset=64),  # non-first fragment: no L4 header
    pb.tcp_packet(C4, 1, S4, 2, 3)[:20 + 12],  # TCP cut before its flags
    b"\x65" + pb.udp_packet(C4, 1, S4, 2)[1:],  # not IPv4
    b"\x43" + pb.udp_packet(C4, 1, S4, 2)[1:],  # bad IHL
    pb.ipv4_packet(C4, S4, 47, b"\x00" * 8),  # GRE
], ids=["nothing", "ip-only", "udp-cut", "fragment", "tcp-cut", "version", "ihl", "gre"])
def test_icmp_error_with_an_unreadable_quote(quoted: bytes) -> None:
    x = dec(pb.ipv4_packet(S4, C4, 1, pb.icmp_error(3, 1, quoted)))
    assert isinstance(x, IcmpError) and x.quoted is None


# ---------------------------------------------------------------------------------------------
# IPv4 fragments

DGRAM = bytes(range(256)) * 2 + b"tail"  # 516 bytes of UDP payload


def _udp_fragments4(ident: int = 0x1234, chunk: int = 64, payload: bytes = DGRAM,
                    options: bytes = b"") -> list[bytes]:
    l4 = pb.udp_datagram(5000, 6000, payload, src=pb.addr(C4), dst=pb.addr(S4))
    return pb.ipv4_fragments(C4, S4, pb.PROTO_UDP, l4, ident=ident, chunk=chunk, options=options)


def _orders(n: int) -> list[tuple[str, list[int]]]:
    rng = random.Random(n)
    shuffled = list(range(n))
    rng.shuffle(shuffled)
    return [("in-order", list(range(n))), ("reversed", list(range(n))[::-1]), ("shuffled", shuffled),
            ("last-first", [n - 1, *range(n - 1)]), ("first-last", [*range(1, n), 0]),
            ("with-duplicates", [0, 1, 1, *range(2, n), 0][: n + 2])]


@pytest.mark.parametrize(("name", "order"), _orders(9), ids=[o[0] for o in _orders(9)])
def test_ipv4_fragments_reassemble_in_any_order(name: str, order: list[int]) -> None:
    frags = _udp_fragments4()
    assert len(frags) == 9
    results = dec_all([frags[i] for i in order])
    # the datagram is delivered when its last missing piece arrives, once
    done = [r for r in results if isinstance(r, UdpDatagram)]
    assert len(done) == 1, results
    dg = done[0]
    assert (dg.sport, dg.dport, dg.length, dg.payload) == (5000, 6000, 8 + len(DGRAM), DGRAM)
    assert not dg.truncated
    seen = sorted(set(order[: results.index(dg) + 1]))
    assert seen == list(range(9))
    assert dg.fragment_frames == tuple(range(1, results.index(dg) + 2))
    assert all(r == FRAGMENT for r in results[: results.index(dg)])


def test_ipv4_fragments_with_ip_options_carry_tcp() -> None:
    l4 = pb.tcp_segment(1234, 80, 1, 2, "PA", payload=b"T" * 300, src=pb.addr(C4), dst=pb.addr(S4))
    frags = pb.ipv4_fragments(C4, S4, pb.PROTO_TCP, l4, ident=5, chunk=104, options=pb.ipv4_option_router_alert())
    results = dec_all(frags[::-1])
    seg = as_tcp(results[-1])
    assert seg.payload == b"T" * 300 and seg.paylen == 300 and seg.sport == 1234


def test_ipv4_overlapping_fragments_with_the_same_bytes() -> None:
    l4 = pb.udp_datagram(5000, 6000, DGRAM)
    pieces = [(0, 200), (96, 200), (160, 64), (256, 200), (400, len(l4) - 400)]
    frags = pb.ipv4_fragments(C4, S4, pb.PROTO_UDP, l4, ident=9, pieces=pieces)
    for perm in ([0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 4, 0, 3, 1]):
        assert as_udp(dec_all([frags[i] for i in perm])[-1]).payload == DGRAM


def _frag4(data: bytes, offset: int, more: bool, ident: int = 9) -> bytes:
    return pb.ipv4_packet(C4, S4, pb.PROTO_UDP, data, ident=ident, frag_offset=offset, more_fragments=more)


UHDR = pb.udp_datagram(5000, 6000, b"A" * 40)[:8]  # 8-byte UDP header announcing 40 payload bytes

#: conflicting overlaps; expectations checked against tshark 4.0 (test_tshark_agrees_on_fragments)
OVERLAPS: list[tuple[str, list[bytes], bytes]] = [
    ("lower-offset-wins", [_frag4(UHDR + b"A" * 16, 0, True), _frag4(b"B" * 32, 16, False)],
     b"A" * 16 + b"B" * 24),
    ("lower-offset-wins-reversed", [_frag4(b"B" * 32, 16, False), _frag4(UHDR + b"A" * 16, 0, True)],
     b"A" * 16 + b"B" * 24),
    ("same-offset-first-wins", [_frag4(UHDR + b"A" * 16, 0, True), _frag4(UHDR + b"C" * 16, 0, True),
                                _frag4(b"D" * 24, 24, False)], b"A" * 16 + b"D" * 24),
    ("three-way-overlap", [_frag4(UHDR + b"A" * 8, 0, True), _frag4(b"E" * 24, 8, True),
                           _frag4(b"F" * 32, 16, False)], b"A" * 8 + b"E" * 16 + b"F" * 16),
    ("contained", [_frag4(UHDR + b"A" * 32, 0, True), _frag4(b"G" * 8, 8, True), _frag4(b"H" * 8, 40, False)],
     b"A" * 32 + b"H" * 8),
    ("longer-retransmission-extends", [_frag4(UHDR + b"A" * 8, 0, True), _frag4(UHDR + b"I" * 24, 0, True),
                                       _frag4(b"J" * 16, 32, False)], b"A" * 8 + b"I" * 16 + b"J" * 16),
]


@pytest.mark.parametrize(("name", "frags", "payload"), OVERLAPS, ids=[o[0] for o in OVERLAPS])
def test_ipv4_conflicting_overlaps_resolve_like_wireshark(name: str, frags: list[bytes], payload: bytes) -> None:
    results = dec_all(frags)
    assert all(r == FRAGMENT for r in results[:-1])
    dg = as_udp(results[-1])
    assert dg.payload == payload and dg.fragment_frames == tuple(range(1, len(frags) + 1))


def test_ipv4_incomplete_and_interleaved_datagrams() -> None:
    a = _udp_fragments4(ident=1, payload=b"a" * 100, chunk=40)
    b = _udp_fragments4(ident=2, payload=b"b" * 100, chunk=40)
    c = _udp_fragments4(ident=3, payload=b"c" * 100, chunk=40)  # never completed
    # same ident, other protocol: another datagram
    tcp_l4 = pb.tcp_segment(1, 2, 3, 4, "A", payload=b"t" * 100)
    d = pb.ipv4_fragments(C4, S4, pb.PROTO_TCP, tcp_l4, ident=1, chunk=40)
    packets = [a[0], b[0], c[0], d[0], b[1], a[1], d[1], c[2], b[2], d[2], a[2]]
    res = analyze_records(pb.as_records(packets))
    assert res.fragments_pending == 2 and res.malformed_count == 0
    (conv,) = res.udp  # a and b share the 4-tuple: one conversation, b completed first
    assert [dg.preview[:1] for dg in conv.datagrams] == [b"b", b"a"]
    assert [dg.fragment_frames for dg in conv.datagrams] == [(2, 5, 9), (1, 6, 11)]
    assert [dg.frame for dg in conv.datagrams] == [9, 11]
    assert res.udp_summaries[0]["datagrams"][0]["ip_fragment_frames"] == [2, 5, 9]
    assert any("2 IP fragment(s) never completed" in w for w in res.warnings)
    assert len(res.tcp) == 1 and res.tcp[0].payload_wire_bytes == [100, 0]
    res2 = analyze_records(pb.as_records([*packets, c[1]]))
    assert res2.fragments_pending == 0
    assert [dg.preview[:1] for dg in res2.udp[0].datagrams] == [b"b", b"a", b"c"]


def test_ipv4_fragment_truncated_by_the_capture_is_malformed() -> None:
    frags = _udp_fragments4()
    m = as_malformed(dec(frags[1][:40], wirelen=len(frags[1])))
    assert m.layer == "IPv4" and "cannot reassemble" in m.reason


def test_reassembler_is_bounded() -> None:
    r = Reassembler(max_datagrams=2)
    hdr = (4, b"\x00" * 4, b"\x00" * 4, 17)
    for ident in range(5):
        assert r.add((ident,), ident, 0, True, b"x" * 8, hdr) is None
    assert len(r._sets) == 2 and r.evicted == 3 and r.bytes_held == 16
    # the survivors still complete; the evicted ones start afresh
    res = r.add((4,), 9, 8, False, b"y" * 8, hdr)
    assert res is not None and res[0] == b"x" * 8 + b"y" * 8 and res[1] == (4, 9) and res[2] == hdr
    assert r.add((0,), 10, 8, False, b"y" * 8, hdr) is None
    assert r.bytes_held == 16  # (3,)'s 8 bytes and (0,)'s new piece


# ---------------------------------------------------------------------------------------------
# IPv6 fragments

UNFRAGMENTABLE: list[tuple[str, list[tuple[int, bytes]]]] = [
    ("plain", []),
    ("hbh-routing", [(pb.EXT_HOP_BY_HOP, HBH_OPTS), (pb.EXT_ROUTING, pb.routing_body([pb.addr("fd00::7")], 2, 1))]),
    ("hbh-dest-routing", [(pb.EXT_HOP_BY_HOP, b""), (pb.EXT_DEST_OPTS, b""), (pb.EXT_ROUTING, pb.routing_body([]))]),
]


@pytest.mark.parametrize(("uname", "unfrag"), UNFRAGMENTABLE, ids=[u[0] for u in UNFRAGMENTABLE])
@pytest.mark.parametrize("dest_after", [False, True], ids=["udp-first", "dest-opts-in-fragmentable-part"])
@pytest.mark.parametrize(("name", "order"), _orders(6)[:4], ids=[o[0] for o in _orders(6)[:4]])
def test_ipv6_fragments_reassemble(uname: str, unfrag: list[tuple[int, bytes]], dest_after: bool, name: str,
                                   order: list[int]) -> None:
    """The Fragment header may be preceded by unfragmentable headers and followed (inside the
    fragmentable part, reassembled first) by a destination-options header."""
    payload = bytes(range(200))
    l4 = pb.udp_datagram(5000, 6000, payload, src=pb.addr(C6), dst=pb.addr(S6))
    chain = [(pb.EXT_DEST_OPTS, b"\x01\x0c" + b"\x00" * 12)] if dest_after else []
    first, fragmentable = pb.ipv6_chain(chain, pb.PROTO_UDP, l4)
    frags = pb.ipv6_fragments(C6, S6, first, fragmentable, ident=0xDEADBEEF, unfragmentable=unfrag, chunk=40)
    assert len(frags) == 6
    results = dec_all([frags[i] for i in order])
    assert all(r == FRAGMENT for r in results[:-1]), results
    dg = as_udp(results[-1])
    assert (dg.version, dg.sport, dg.dport, dg.payload) == (6, 5000, 6000, payload)
    assert dg.fragment_frames == tuple(range(1, 7))


def test_ipv6_fragmented_tcp_and_other_idents() -> None:
    l4 = pb.tcp_segment(1234, 80, 1, 2, "PA", payload=b"Q" * 150)
    a = pb.ipv6_fragments(C6, S6, pb.PROTO_TCP, l4, ident=1, chunk=64)
    b = pb.ipv6_fragments(C6, S6, pb.PROTO_TCP, l4, ident=2, chunk=64)
    results = dec_all([a[2], b[0], a[1], b[2], a[0], b[1]])
    assert as_tcp(results[4]).payload == b"Q" * 150
    assert as_tcp(results[5]).payload == b"Q" * 150


def test_ipv6_fragment_truncated_by_the_capture_is_malformed() -> None:
    frags = pb.ipv6_fragments(C6, S6, pb.PROTO_UDP, pb.udp_datagram(1, 2, b"u" * 100), ident=1, chunk=64)
    m = as_malformed(dec(frags[0][:60], wirelen=len(frags[0])))
    assert m.layer == "IPv6" and "cannot reassemble" in m.reason


def test_ipv6_reassembled_no_next_header_is_other() -> None:
    first, fragmentable = pb.ipv6_chain([(pb.EXT_DEST_OPTS, b"")], pb.NO_NEXT_HEADER, b"\x00" * 40)
    frags = pb.ipv6_fragments(C6, S6, first, fragmentable, ident=3, chunk=24)
    assert dec_all(frags)[-1] == OTHER


# ---------------------------------------------------------------------------------------------
# fuzz: any bytes through any link type: a result, never an exception


def test_random_bytes_never_raise() -> None:
    rng = random.Random(99)
    seeds: list[bytes] = [tcp4(b"x" * 30, options=pb.opt_mss(1)), udp4(), *(_udp_fragments4(chunk=128)),
                          _chain_packet([(pb.EXT_HOP_BY_HOP, b""), (pb.EXT_ROUTING, pb.routing_body([]))]),
                          pb.ipv4_packet(S4, C4, 1, pb.icmp_error(3, 3, udp4())),
                          pb.ipv6_packet(S6, C6, 58, pb.icmp_error(1, 4, pb.udp_packet(C6, 1, S6, 2), v6=True)),
                          *pb.ipv6_fragments(C6, S6, 17, pb.udp_datagram(1, 2, b"f" * 90), ident=4, chunk=32)]
    linktypes = [0, 1, 12, 101, 108, 113, 228, 229, 276]
    d = Decoder()
    allowed = (TcpSegment, UdpDatagram, IcmpError, Malformed, str)
    for i in range(3000):
        base = pb.link_frame(lt := rng.choice(linktypes), rng.choice(seeds)) if rng.random() < 0.8 else bytes(
            rng.randrange(256) for _ in range(rng.randrange(60)))
        buf = bytearray(base)
        for _ in range(rng.randint(0, 3)):
            if buf:
                buf[rng.randrange(len(buf))] = rng.randrange(256)
        if buf and rng.random() < 0.3:
            del buf[rng.randrange(len(buf)):]
        x = d.decode(i + 1, 0, lt if rng.random() < 0.9 else rng.choice(linktypes), bytes(buf),
                     len(buf) + rng.choice((0, 0, 10)))
        assert isinstance(x, allowed)
        if isinstance(x, TcpSegment):
            parse_tcp_options(x.options)


def test_every_option_byte_string_parses() -> None:
    for raw in itertools.product(range(0, 12), repeat=3):
        parse_tcp_options(bytes(raw))
    rng = random.Random(5)
    for _ in range(2000):
        parse_tcp_options(bytes(rng.randrange(256) for _ in range(rng.randrange(41))))


# ---------------------------------------------------------------------------------------------
# tshark agrees


def _tshark(path: Path, *fields: str) -> list[list[str]]:
    tshark = need_tshark()
    cmd = [tshark, "-n", "-r", str(path), "-T", "fields", "-E", "separator=|"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout
    return [line.split("|") for line in out.splitlines()]


@pytest.mark.tshark
def test_tshark_agrees_on_fragments(tmp_path: Path) -> None:
    """Each scenario in its own address pair; tshark's reassembled UDP payload must equal ours."""
    packets: list[bytes] = []
    expected: dict[int, bytes] = {}  # frame -> payload of the datagram completed there
    for k, (_, frags, payload) in enumerate(OVERLAPS):
        for f in frags:  # give each scenario its own source address
            packets.append(f[:12] + bytes((10, 9, 9, k + 1)) + f[16:])
        expected[len(packets)] = payload
    payload6 = bytes(range(120))
    for k, (_, unfrag) in enumerate(UNFRAGMENTABLE):
        src = f"fd00::{k + 10:x}"
        l4 = pb.udp_datagram(5000, 6000, payload6, src=pb.addr(src), dst=pb.addr(S6))
        first, fragmentable = pb.ipv6_chain([(pb.EXT_DEST_OPTS, b"")], pb.PROTO_UDP, l4)
        frags = pb.ipv6_fragments(src, S6, first, fragmentable, ident=k, unfragmentable=unfrag, chunk=48)
        packets += frags[::-1]
        expected[len(packets)] = payload6
    # fix the IPv4 header checksums of the re-addressed copies
    fixed = []
    for p in packets:
        if p[0] >> 4 == 4:
            hdr = p[:10] + b"\x00\x00" + p[12:20]
            p = hdr[:10] + pb.inet_checksum(hdr).to_bytes(2, "big") + p[12:]
        fixed.append(p)
    path = tmp_path / "frags.pcap"
    path.write_bytes(pb.pcap_file([pb.Frame(pb.START_NS + i, p) for i, p in enumerate(fixed)], 101))
    ours = {i + 1: x.payload for i, x in enumerate(dec_all(fixed)) if isinstance(x, UdpDatagram)}
    assert ours == expected
    theirs = {int(r[0]): bytes.fromhex(r[1]) for r in _tshark(path, "frame.number", "udp.payload") if r[1]}
    assert theirs == expected


@pytest.mark.tshark
def test_tshark_numbers_streams_with_damaged_tcp_options(tmp_path: Path) -> None:
    flow = pb.TcpFlow()
    pkts = [flow.c("S", options=pb.opt_mss(1460) + pb.opt_raw(8, 0)), flow.s("SA", options=pb.opt_raw(2, 255)),
            flow.c("A"), pb.tcp_packet(C4, 1, S4, 2, 3, 0, "S")]
    path = tmp_path / "opts.pcap"
    path.write_bytes(pb.pcap_file([pb.Frame(pb.START_NS + i, p) for i, p in enumerate(pkts)], 101))
    rows = _tshark(path, "tcp.stream", "_ws.expert.message")
    assert [r[0] for r in rows] == ["0", "0", "0", "1"]
    assert "option length" in rows[0][1] and "option length" in rows[1][1]
    res = analyze_records(pb.as_records(pkts))
    assert [c.stream for c in res.tcp] == [0, 1] and res.malformed_count == 0


@pytest.mark.tshark
def test_tshark_stream_numbers_survive_malformed_segments(tmp_path: Path) -> None:
    src, dst = pb.addr(C4), pb.addr(S4)
    pkts = [
        pb.ipv4_packet(src, dst, 6, pb.tcp_segment(1000, 2000, 1, 0, "S", data_offset=4, src=src, dst=dst)),
        pb.ipv4_packet(src, dst, 6, pb.tcp_segment(1001, 2000, 1, 0, "S", data_offset=15, src=src, dst=dst)),
        pb.ipv4_packet(src, dst, 17, pb.udp_datagram(1003, 2000, b"abc", length=200)),
        pb.tcp_packet(C4, 1002, S4, 2000, 1, 0, "S"),
        pb.udp_packet(C4, 1005, S4, 2000, b"abc"),
    ]
    path = tmp_path / "bogus.pcap"
    path.write_bytes(pb.pcap_file([pb.Frame(pb.START_NS + i, p) for i, p in enumerate(pkts)], 101))
    rows = _tshark(path, "tcp.stream", "udp.stream")
    assert rows == [["0", ""], ["1", ""], ["", "0"], ["2", ""], ["", "1"]]
    res = analyze_records(pb.as_records(pkts))
    assert res.malformed_count == 3
    assert [c.stream for c in res.tcp] == [2] and [u.stream for u in res.udp] == [1]
