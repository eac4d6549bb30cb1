"""analyzers.checksum: RFC 1071 sums, the classification of TCP/UDP/ICMP checksums (ok, partial
offloaded, bad, zero, unverified, bad IPv4 header) and the verifying decoder."""

from __future__ import annotations

import pytest
from conftest import fixture_pcaps
from pcapbuild import (
    LINKTYPE_RAW,
    addr,
    as_records,
    inet_checksum,
    ipv4_packet,
    ipv6_packet,
    tcp_packet,
    tcp_segment,
    udp_datagram,
    udp_packet,
)

from analyzers.checksum import (
    BAD,
    BAD_IP,
    OK,
    PARTIAL,
    UNVERIFIED,
    ZERO,
    ChecksumDecoder,
    checksum_of,
    classify_l4,
    internet_checksum,
    ipv4_header_ok,
    ones_sum,
    pseudo_header_sum,
)
from analyzers.decode import Decoder, TcpSegment, UdpDatagram
from analyzers.pcapfile import CaptureReader


def test_rfc1071_example() -> None:
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert ones_sum(data) == 0xDDF2
    assert internet_checksum(data) == 0x220D
    assert ones_sum(b"\x01") == 0x0100  # an odd byte is padded with zero
    assert internet_checksum(b"hello world") == inet_checksum(b"hello world")


def _l4(packet: bytes) -> tuple[int, bytes, bytes, int, bytes]:
    if packet[0] >> 4 == 4:
        ihl = (packet[0] & 0xF) * 4
        return 4, packet[12:16], packet[16:20], packet[9], packet[ihl:]
    return 6, packet[8:24], packet[24:40], packet[6], packet[40:]


def _with_field(packet: bytes, value: int) -> bytes:
    _, _, _, proto, seg = _l4(packet)
    off = len(packet) - len(seg) + (16 if proto == 6 else 6)
    return packet[:off] + value.to_bytes(2, "big") + packet[off + 2:]


@pytest.mark.parametrize("src,dst", [("10.0.0.1", "10.0.0.2"), ("fd00::1", "fd00::2")])
def test_classification_of_tcp_and_udp(src: str, dst: str) -> None:
    for packet in (tcp_packet(src, 1234, dst, 80, 1000, 5, "PA", payload=b"hello"),
                   udp_packet(src, 5000, dst, 53, b"query!")):
        version, s, d, proto, seg = _l4(packet)
        assert classify_l4(version, s, d, proto, seg, len(seg)) == OK
        partial = _with_field(packet, pseudo_header_sum(s, d, proto, len(seg)))
        assert classify_l4(version, s, d, proto, _l4(partial)[4], len(seg)) == PARTIAL
        bad = _with_field(packet, 0x1234)
        assert classify_l4(version, s, d, proto, _l4(bad)[4], len(seg)) == BAD
        assert classify_l4(version, s, d, proto, seg[:-2], len(seg)) == UNVERIFIED


def test_udp_zero_checksum_means_none_only_over_ipv4() -> None:
    v4 = ipv4_packet("10.0.0.1", "10.0.0.2", 17, udp_datagram(1, 2, b"x"))
    v6 = ipv6_packet("fd00::1", "fd00::2", 17, udp_datagram(1, 2, b"x"))
    assert classify_l4(*_l4(v4)[:4], _l4(v4)[4], 9) == ZERO
    assert classify_l4(*_l4(v6)[:4], _l4(v6)[4], 9) == BAD


def test_ipv4_header_checksum() -> None:
    packet = ipv4_packet("10.0.0.1", "10.0.0.2", 6, tcp_segment(1, 2, 0))
    assert ipv4_header_ok(packet[:20])
    broken = bytearray(packet)
    broken[8] ^= 1  # TTL
    assert not ipv4_header_ok(bytes(broken[:20]))


def test_checksum_decoder_marks_segments_and_counts() -> None:
    good = tcp_packet("10.0.0.1", 1, "10.0.0.2", 2, 7, 0, "S")
    partial = _with_field(good, pseudo_header_sum(addr("10.0.0.1"), addr("10.0.0.2"), 6, 20))
    bad_ip = bytearray(good)
    bad_ip[10] ^= 0x55
    dec = ChecksumDecoder()
    out = [dec.decode(r.frame, r.ts_ns, r.linktype, r.data, r.wirelen)
           for r in as_records([good, partial, bytes(bad_ip), udp_packet("10.0.0.1", 1, "10.0.0.2", 2, b"u")],
                               LINKTYPE_RAW)]
    assert [checksum_of(x) for x in out if isinstance(x, (TcpSegment, UdpDatagram))] == [OK, PARTIAL, BAD_IP, OK]
    assert dec.counts == {OK: 2, PARTIAL: 1, BAD_IP: 1}
    plain = Decoder().decode(1, 0, LINKTYPE_RAW, good, len(good))
    assert isinstance(plain, TcpSegment) and checksum_of(plain) is None  # the default decoder does not check


def test_linux_loopback_checksums_are_partial_not_bad() -> None:
    for path in fixture_pcaps():
        dec = ChecksumDecoder()
        with CaptureReader.open(path) as reader:
            for rec in reader:
                dec.decode(rec.frame, rec.ts_ns, rec.linktype, rec.data, rec.wirelen)
        assert set(dec.counts) <= {OK, PARTIAL}, (path.name, dec.counts)
        assert dec.counts.get(PARTIAL, 0) > 0, path.name
