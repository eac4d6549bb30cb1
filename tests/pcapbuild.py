"""Craft captures byte by byte for the tests (``struct`` only: no scapy, no tshark).

Layers are plain functions returning ``bytes`` so that a test can build a perfectly valid frame and
then break exactly one field of it:

* transport: :func:`tcp_segment` (with option builders :func:`opt_mss`...), :func:`udp_datagram`,
  :func:`icmp_error`;
* network: :func:`ipv4_packet` (options, fragments: :func:`ipv4_fragments`), :func:`ipv6_packet` with
  extension headers (:func:`ext_header`, :func:`ipv6_chain`, :func:`ipv6_fragments`);
* link layers: :func:`ethernet` (802.1Q / QinQ tags), :func:`null_frame`, :func:`loop_frame`,
  :func:`sll_frame`, :func:`sll2_frame`, or :func:`link_frame` for any LINKTYPE_*;
* files: :func:`pcap_file` (both byte orders, micro- or nanosecond magic) and the pcapng blocks
  :func:`shb`, :func:`idb`, :func:`epb`, :func:`spb`, :func:`pb`, :func:`pcapng_block` (any type, any
  length lie);
* :class:`TcpFlow`: a client/server pair that keeps its own sequence numbers, for tracker tests.

Checksums are computed (tshark does not check them by default, but a valid frame should be valid).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from analyzers.pcapfile import PacketRecord

Endian = Literal["<", ">"]
M32 = 0xFFFFFFFF

# ---------------------------------------------------------------------------------------------
# addresses and checksums


def addr(text: str) -> bytes:
    """``"10.0.0.1"`` -> 4 bytes, ``"fd00::1"`` -> 16 bytes."""
    if ":" in text:
        return socket.inet_pton(socket.AF_INET6, text)
    return socket.inet_pton(socket.AF_INET, text)


def inet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = 0
    for (word,) in struct.iter_unpack("!H", data):
        total += word
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _pseudo_header(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    if len(src) == 4:
        return struct.pack("!4s4sBBH", src, dst, 0, proto, length)
    return struct.pack("!16s16sI3xB", src, dst, length, proto)


# ---------------------------------------------------------------------------------------------
# transport layer

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR, NS = 0x001, 0x002, 0x004, 0x008, 0x010, 0x020, 0x040, 0x080, 0x100
_FLAG_LETTERS = {"F": FIN, "S": SYN, "R": RST, "P": PSH, "A": ACK, "U": URG, "E": ECE, "C": CWR, "N": NS}


def tcp_flags(spec: str | int) -> int:
    """``"SA"`` -> SYN|ACK; letters F S R P A U E C N (an int passes through)."""
    if isinstance(spec, int):
        return spec
    value = 0
    for letter in spec:
        value |= _FLAG_LETTERS[letter]
    return value


NOP = b"\x01"
EOL = b"\x00"


def opt_mss(mss: int) -> bytes:
    return struct.pack("!BBH", 2, 4, mss)


def opt_wscale(shift: int) -> bytes:
    return struct.pack("!BBB", 3, 3, shift)


def opt_sack_permitted() -> bytes:
    return b"\x04\x02"


def opt_sack(blocks: Sequence[tuple[int, int]]) -> bytes:
    return struct.pack("!BB", 5, 2 + 8 * len(blocks)) + b"".join(struct.pack("!II", a, b) for a, b in blocks)


def opt_timestamps(tsval: int, tsecr: int) -> bytes:
    return struct.pack("!BBII", 8, 10, tsval, tsecr)


def opt_fast_open(cookie: bytes) -> bytes:
    return struct.pack("!BB", 34, 2 + len(cookie)) + cookie


def opt_raw(kind: int, length: int, value: bytes = b"") -> bytes:
    """An option with any (possibly lying) length byte."""
    return bytes((kind, length)) + value


def tcp_segment(sport: int, dport: int, seq: int, ack: int = 0, flags: str | int = "A", *,
                window: int = 65535, options: bytes = b"", payload: bytes = b"",
                data_offset: int | None = None, urgent: int = 0,
                src: bytes | None = None, dst: bytes | None = None) -> bytes:
    """A TCP header (+ payload).  Options are padded with EOL to a multiple of 4 unless
    ``data_offset`` (in 32-bit words, may lie) is given.  With ``src``/``dst`` the checksum is set."""
    opts = options
    if data_offset is None:
        opts = options + EOL * (-len(options) % 4)
        data_offset = (20 + len(opts)) // 4
    hdr = struct.pack("!HHIIHHHH", sport, dport, seq & M32, ack & M32,
                      ((data_offset & 0xF) << 12) | (tcp_flags(flags) & 0x1FF), window, 0, urgent) + opts
    if src is not None and dst is not None:
        csum = inet_checksum(_pseudo_header(src, dst, 6, len(hdr) + len(payload)) + hdr + payload)
        hdr = hdr[:16] + struct.pack("!H", csum) + hdr[18:]
    return hdr + payload


def udp_datagram(sport: int, dport: int, payload: bytes = b"", *, length: int | None = None,
                 src: bytes | None = None, dst: bytes | None = None) -> bytes:
    """A UDP header (+ payload); ``length`` may lie."""
    ulen = 8 + len(payload) if length is None else length
    hdr = struct.pack("!HHHH", sport, dport, ulen & 0xFFFF, 0)
    if src is not None and dst is not None and length is None:
        csum = inet_checksum(_pseudo_header(src, dst, 17, ulen) + hdr + payload) or 0xFFFF
        hdr = hdr[:6] + struct.pack("!H", csum)
    return hdr + payload


def icmp_error(icmp_type: int, code: int, quoted: bytes, *, v6: bool = False,
               src: bytes | None = None, dst: bytes | None = None) -> bytes:
    """An ICMP (or ICMPv6) error message quoting ``quoted`` (an IP packet, usually cut short)."""
    body = struct.pack("!BBHI", icmp_type, code, 0, 0) + quoted
    if v6:
        if src is not None and dst is not None:
            csum = inet_checksum(_pseudo_header(src, dst, 58, len(body)) + body)
            body = body[:2] + struct.pack("!H", csum) + body[4:]
        return body
    return body[:2] + struct.pack("!H", inet_checksum(body)) + body[4:]


# ---------------------------------------------------------------------------------------------
# IPv4

PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_ICMPV6 = 1, 6, 17, 58


def ipv4_packet(src: bytes | str, dst: bytes | str, proto: int, payload: bytes, *, ident: int = 0,
                df: bool = False, more_fragments: bool = False, frag_offset: int = 0, ttl: int = 64,
                options: bytes = b"", total_length: int | None = None, ihl: int | None = None,
                version: int = 4, tos: int = 0) -> bytes:
    """An IPv4 packet.  ``frag_offset`` is in bytes (a multiple of 8); ``options`` are padded with
    EOL unless ``ihl`` (32-bit words, may lie) is given; ``total_length`` may lie."""
    s = addr(src) if isinstance(src, str) else src
    d = addr(dst) if isinstance(dst, str) else dst
    opts = options
    if ihl is None:
        opts = options + EOL * (-len(options) % 4)
        ihl = (20 + len(opts)) // 4
    total = 20 + len(opts) + len(payload) if total_length is None else total_length
    fl = (0x4000 if df else 0) | (0x2000 if more_fragments else 0) | ((frag_offset // 8) & 0x1FFF)
    hdr = struct.pack("!BBHHHBBH4s4s", ((version & 0xF) << 4) | (ihl & 0xF), tos, total & 0xFFFF, ident, fl,
                      ttl, proto, 0, s, d) + opts
    hdr = hdr[:10] + struct.pack("!H", inet_checksum(hdr)) + hdr[12:]
    return hdr + payload


def ipv4_option_record_route(slots: int = 1) -> bytes:
    return bytes((7, 3 + 4 * slots, 4)) + b"\x00" * (4 * slots)


def ipv4_option_router_alert() -> bytes:
    return b"\x94\x04\x00\x00"


def split_offsets(length: int, chunk: int) -> list[tuple[int, int]]:
    """(offset, length) pieces of ``chunk`` bytes (a multiple of 8) covering ``length`` bytes."""
    assert chunk % 8 == 0 and chunk > 0
    return [(o, min(chunk, length - o)) for o in range(0, length, chunk)]


def ipv4_fragments(src: bytes | str, dst: bytes | str, proto: int, payload: bytes, *, ident: int,
                   pieces: Sequence[tuple[int, int]] | None = None, chunk: int = 16,
                   options: bytes = b"") -> list[bytes]:
    """The fragments of one datagram, in offset order (tests shuffle them).  ``pieces`` lists
    (offset, length) and may overlap; the last piece ending at ``len(payload)`` has MF clear."""
    parts = list(pieces) if pieces is not None else split_offsets(len(payload), chunk)
    out = []
    for off, ln in parts:
        more = off + ln < len(payload)
        out.append(ipv4_packet(src, dst, proto, payload[off:off + ln], ident=ident, more_fragments=more,
                               frag_offset=off, options=options))
    return out


# ---------------------------------------------------------------------------------------------
# IPv6 and its extension headers

EXT_HOP_BY_HOP, EXT_ROUTING, EXT_FRAGMENT, EXT_AH, EXT_DEST_OPTS, NO_NEXT_HEADER = 0, 43, 44, 51, 60, 59


def _pad_options(body: bytes, unit: int) -> bytes:
    """Pad an options area (after the 2-byte next/length) with Pad1 / PadN to a multiple of ``unit``."""
    need = -(2 + len(body)) % unit
    if need == 1:
        return body + b"\x00"
    if need >= 2:
        return body + bytes((1, need - 2)) + b"\x00" * (need - 2)
    return body


def ext_header(kind: int, nxt: int, body: bytes = b"", *, length: int | None = None) -> bytes:
    """One extension header: ``kind`` decides the length rule (Fragment: fixed 8 bytes, AH: 4-byte
    units, others: 8-byte units).  ``length`` overrides the length byte (to lie)."""
    if kind == EXT_FRAGMENT:
        assert len(body) == 6
        return bytes((nxt, 0)) + body
    if kind == EXT_AH:
        padded = body + b"\x00" * (-(2 + len(body)) % 4)
        hlen = (2 + len(padded)) // 4 - 2
    else:
        padded = _pad_options(body, 8)
        hlen = (2 + len(padded)) // 8 - 1
    return bytes((nxt, hlen if length is None else length)) + padded


def routing_body(addresses: Sequence[bytes], routing_type: int = 0, segments_left: int = 0) -> bytes:
    return bytes((routing_type, segments_left)) + b"\x00" * 4 + b"".join(addresses)


def fragment_body(offset: int, more: bool, ident: int) -> bytes:
    assert offset % 8 == 0
    return struct.pack("!HI", (offset & 0xFFF8) | (1 if more else 0), ident)


def ipv6_chain(headers: Sequence[tuple[int, bytes]], upper: int, payload: bytes) -> tuple[int, bytes]:
    """Chain extension headers ``(kind, body)`` in front of ``payload`` of protocol ``upper``:
    returns the IPv6 Next Header value and the bytes."""
    nxt = upper
    out = payload
    for kind, body in reversed(headers):
        out = ext_header(kind, nxt, body) + out
        nxt = kind
    return nxt, out


def ipv6_packet(src: bytes | str, dst: bytes | str, nxt: int, payload: bytes, *, hop_limit: int = 64,
                payload_length: int | None = None, version: int = 6, flow: int = 0) -> bytes:
    s = addr(src) if isinstance(src, str) else src
    d = addr(dst) if isinstance(dst, str) else dst
    plen = len(payload) if payload_length is None else payload_length
    return struct.pack("!IHBB16s16s", ((version & 0xF) << 28) | flow, plen, nxt, hop_limit, s, d) + payload


def ipv6_fragments(src: bytes | str, dst: bytes | str, upper: int, fragmentable: bytes, *, ident: int,
                   unfragmentable: Sequence[tuple[int, bytes]] = (),
                   pieces: Sequence[tuple[int, int]] | None = None, chunk: int = 16) -> list[bytes]:
    """The fragments of ``fragmentable`` (whose first header is ``upper``), each carrying the
    ``unfragmentable`` extension headers and then a Fragment header."""
    parts = list(pieces) if pieces is not None else split_offsets(len(fragmentable), chunk)
    out = []
    for off, ln in parts:
        more = off + ln < len(fragmentable)
        headers = [*unfragmentable, (EXT_FRAGMENT, fragment_body(off, more, ident))]
        nxt, body = ipv6_chain(headers, upper, fragmentable[off:off + ln])
        out.append(ipv6_packet(src, dst, nxt, body))
    return out


def ip_packet(src: str, dst: str, proto: int, l4: bytes) -> bytes:
    """IPv4 or IPv6 by the address family of ``src``."""
    if ":" in src:
        return ipv6_packet(src, dst, proto, l4)
    return ipv4_packet(src, dst, proto, l4)


def tcp_packet(src: str, sport: int, dst: str, dport: int, seq: int, ack: int = 0, flags: str | int = "A",
               *, payload: bytes = b"", options: bytes = b"", window: int = 65535) -> bytes:
    """A whole IP packet carrying a TCP segment with a valid checksum."""
    l4 = tcp_segment(sport, dport, seq, ack, flags, window=window, options=options, payload=payload,
                     src=addr(src), dst=addr(dst))
    return ip_packet(src, dst, PROTO_TCP, l4)


def udp_packet(src: str, sport: int, dst: str, dport: int, payload: bytes = b"") -> bytes:
    """A whole IP packet carrying a UDP datagram with a valid checksum."""
    return ip_packet(src, dst, PROTO_UDP, udp_datagram(sport, dport, payload, src=addr(src), dst=addr(dst)))


# ---------------------------------------------------------------------------------------------
# link layers

ETH_IPV4, ETH_IPV6, ETH_ARP, ETH_VLAN, ETH_QINQ = 0x0800, 0x86DD, 0x0806, 0x8100, 0x88A8
MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")


def ethertype_of(ip: bytes) -> int:
    return ETH_IPV6 if ip and ip[0] >> 4 == 6 else ETH_IPV4


def ethernet(payload: bytes, ethertype: int | None = None, *, vlans: Sequence[tuple[int, int]] = (),
             src: bytes = MAC_A, dst: bytes = MAC_B) -> bytes:
    """An Ethernet II frame: dst, src, then per tag (outermost first) TPID and TCI, then the
    EtherType.  QinQ: ``vlans=[(0x88a8, 100), (0x8100, 200)]``."""
    etype = ethertype_of(payload) if ethertype is None else ethertype
    out = dst + src
    for tpid, vid in vlans:
        out += struct.pack("!HH", tpid, vid & 0xFFF)
    return out + struct.pack("!H", etype) + payload


AF_INET, AF_INET6_BSD, AF_INET6_FREEBSD, AF_INET6_DARWIN, AF_INET6_LINUX = 2, 24, 28, 30, 10


def null_frame(payload: bytes, af: int, endian: Endian = "<") -> bytes:
    """LINKTYPE_NULL: a 4-byte address family in the capturing host's byte order."""
    return struct.pack(endian + "I", af) + payload


def loop_frame(payload: bytes, af: int) -> bytes:
    """LINKTYPE_LOOP: the address family in network byte order."""
    return struct.pack("!I", af) + payload


def sll_frame(payload: bytes, protocol: int | None = None, *, pkttype: int = 0) -> bytes:
    """LINKTYPE_LINUX_SLL: 16-byte cooked header."""
    proto = ethertype_of(payload) if protocol is None else protocol
    return struct.pack("!HHH8sH", pkttype, 772, 6, MAC_A + b"\x00\x00", proto) + payload


def sll2_frame(payload: bytes, protocol: int | None = None, *, ifindex: int = 1, pkttype: int = 0) -> bytes:
    """LINKTYPE_LINUX_SLL2: 20-byte cooked header, protocol first."""
    proto = ethertype_of(payload) if protocol is None else protocol
    return struct.pack("!HHIHBB8s", proto, 0, ifindex, 772, pkttype, 6, MAC_A + b"\x00\x00") + payload


LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LOOP = 0, 1, 101, 108
LINKTYPE_SLL, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_SLL2 = 113, 228, 229, 276
LINKTYPE_PPP = 9


def link_frame(linktype: int, ip: bytes, *, vlans: Sequence[tuple[int, int]] = (),
               af: int | None = None, endian: Endian = "<") -> bytes:
    """Wrap an IP packet for ``linktype`` (0, 1, 9, 12, 14, 101, 108, 113, 228, 229, 276)."""
    v6 = bool(ip) and ip[0] >> 4 == 6
    if linktype == LINKTYPE_ETHERNET:
        return ethernet(ip, vlans=vlans)
    if linktype == LINKTYPE_PPP:  # HDLC-like address and control, then the PPP protocol number
        return b"\xff\x03" + (b"\x00\x57" if v6 else b"\x00\x21") + ip
    if linktype == LINKTYPE_NULL:
        return null_frame(ip, af if af is not None else (AF_INET6_BSD if v6 else AF_INET), endian)
    if linktype == LINKTYPE_LOOP:
        return loop_frame(ip, af if af is not None else (AF_INET6_BSD if v6 else AF_INET))
    if linktype in (12, 14, LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        return ip
    if linktype == LINKTYPE_SLL:
        return sll_frame(ip)
    if linktype == LINKTYPE_SLL2:
        return sll2_frame(ip)
    raise ValueError(f"no builder for link type {linktype}")


# ---------------------------------------------------------------------------------------------
# classic pcap


@dataclass(frozen=True)
class Frame:
    ts_ns: int
    data: bytes
    wirelen: int | None = None  # default: len(data)


def pcap_header(linktype: int, *, endian: Endian = "<", nanosecond: bool = False, snaplen: int = 262144,
                version: tuple[int, int] = (2, 4)) -> bytes:
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    return struct.pack(endian + "IHHiIII", magic, version[0], version[1], 0, 0, snaplen, linktype)


def pcap_record(ts_ns: int, data: bytes, *, wirelen: int | None = None, caplen: int | None = None,
                endian: Endian = "<", nanosecond: bool = False) -> bytes:
    """A record header + data; ``caplen`` may lie.  Microsecond files keep ``ts_ns // 1000``."""
    sec, frac = divmod(ts_ns, 1_000_000_000)
    if not nanosecond:
        frac //= 1000
    cap = len(data) if caplen is None else caplen
    wire = len(data) if wirelen is None else wirelen
    return struct.pack(endian + "IIII", sec, frac, cap, wire) + data


def pcap_file(frames: Iterable[Frame], linktype: int = LINKTYPE_ETHERNET, *, endian: Endian = "<",
              nanosecond: bool = False, snaplen: int = 262144) -> bytes:
    out = [pcap_header(linktype, endian=endian, nanosecond=nanosecond, snaplen=snaplen)]
    for f in frames:
        out.append(pcap_record(f.ts_ns, f.data, wirelen=f.wirelen, endian=endian, nanosecond=nanosecond))
    return b"".join(out)


# ---------------------------------------------------------------------------------------------
# pcapng

BT_SHB, BT_IDB, BT_PB, BT_SPB, BT_NRB, BT_ISB, BT_EPB, BT_DSB = (
    0x0A0D0D0A, 0x00000001, 0x00000002, 0x00000003, 0x00000004, 0x00000005, 0x00000006, 0x0000000A)
BT_CUSTOM, BT_CUSTOM_NOCOPY = 0x00000BAD, 0x40000BAD


def pcapng_option(code: int, value: bytes, endian: Endian = "<") -> bytes:
    return struct.pack(endian + "HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)


def pcapng_options(options: Sequence[tuple[int, bytes]], endian: Endian = "<") -> bytes:
    if not options:
        return b""
    return b"".join(pcapng_option(c, v, endian) for c, v in options) + struct.pack(endian + "HH", 0, 0)


def pcapng_block(btype: int, body: bytes, endian: Endian = "<", *, length: int | None = None,
                 trailer: int | None = None) -> bytes:
    """A generic block: type, length, body padded to 4, trailing length.  ``length`` / ``trailer``
    override the leading / trailing length fields (to lie)."""
    padded = body + b"\x00" * (-len(body) % 4)
    total = 12 + len(padded)
    lead = total if length is None else length
    trail = lead if trailer is None else trailer
    return struct.pack(endian + "II", btype, lead & M32) + padded + struct.pack(endian + "I", trail & M32)


def shb(endian: Endian = "<", *, options: Sequence[tuple[int, bytes]] = (), section_length: int = -1,
        bom: int = 0x1A2B3C4D, length: int | None = None) -> bytes:
    body = struct.pack(endian + "IHHq", bom, 1, 0, section_length) + pcapng_options(options, endian)
    return pcapng_block(BT_SHB, body, endian, length=length)


def idb(linktype: int, endian: Endian = "<", *, snaplen: int = 0, tsresol: int | None = None,
        tsoffset: int | None = None, name: str | None = None) -> bytes:
    """Interface Description Block; ``tsresol`` is the raw if_tsresol byte (6: microseconds, 9:
    nanoseconds, 0x80 | n: 2^-n seconds); ``tsoffset`` is if_tsoffset in seconds."""
    opts: list[tuple[int, bytes]] = []
    if name is not None:
        opts.append((2, name.encode()))
    if tsresol is not None:
        opts.append((9, bytes((tsresol,))))
    if tsoffset is not None:
        opts.append((14, struct.pack(endian + "q", tsoffset)))
    body = struct.pack(endian + "HHI", linktype, 0, snaplen) + pcapng_options(opts, endian)
    return pcapng_block(BT_IDB, body, endian)


def ts_units_per_second(tsresol: int | None) -> int:
    if tsresol is None:
        return 1_000_000
    if tsresol & 0x80:
        return 1 << (tsresol & 0x7F)
    return int(10**tsresol)


def ts_to_units(ts_ns: int, tsresol: int | None) -> int:
    """The raw timestamp an interface of resolution ``tsresol`` stores for ``ts_ns`` (rounded down)."""
    return int(Fraction(ts_ns, 1_000_000_000) * ts_units_per_second(tsresol))


def units_to_ns(raw: int, tsresol: int | None, tsoffset: int = 0) -> int:
    """What a reader must report for a raw timestamp (nanoseconds, rounded down)."""
    return int(Fraction(raw, ts_units_per_second(tsresol)) * 1_000_000_000) + tsoffset * 1_000_000_000


def epb(interface: int, ts_raw: int, data: bytes, endian: Endian = "<", *, wirelen: int | None = None,
        caplen: int | None = None, options: Sequence[tuple[int, bytes]] = ()) -> bytes:
    cap = len(data) if caplen is None else caplen
    wire = len(data) if wirelen is None else wirelen
    body = struct.pack(endian + "IIIII", interface, (ts_raw >> 32) & M32, ts_raw & M32, cap, wire)
    body += data + b"\x00" * (-len(data) % 4) + pcapng_options(options, endian)
    return pcapng_block(BT_EPB, body, endian)


def spb(data: bytes, endian: Endian = "<", *, wirelen: int | None = None) -> bytes:
    wire = len(data) if wirelen is None else wirelen
    return pcapng_block(BT_SPB, struct.pack(endian + "I", wire) + data, endian)


def pb(interface: int, ts_raw: int, data: bytes, endian: Endian = "<", *, wirelen: int | None = None,
       drops: int = 0) -> bytes:
    """The obsolete Packet Block (type 2)."""
    wire = len(data) if wirelen is None else wirelen
    body = struct.pack(endian + "HHIIII", interface, drops, (ts_raw >> 32) & M32, ts_raw & M32, len(data), wire)
    return pcapng_block(BT_PB, body + data, endian)


def nrb(endian: Endian = "<") -> bytes:
    """A Name Resolution Block with one IPv4 record (readers skip it)."""
    rec = struct.pack("4s", addr("10.0.0.1")) + b"host.example\x00"
    body = struct.pack(endian + "HH", 1, len(rec)) + rec + b"\x00" * (-len(rec) % 4)
    return pcapng_block(BT_NRB, body + struct.pack(endian + "HH", 0, 0), endian)


def isb(interface: int, endian: Endian = "<") -> bytes:
    """An Interface Statistics Block (readers skip it)."""
    return pcapng_block(BT_ISB, struct.pack(endian + "III", interface, 0, 0), endian)


def custom_block(endian: Endian = "<", *, copyable: bool = True, pen: int = 32473) -> bytes:
    return pcapng_block(BT_CUSTOM if copyable else BT_CUSTOM_NOCOPY,
                        struct.pack(endian + "I", pen) + b"custom data!", endian)


# ---------------------------------------------------------------------------------------------
# records for analyze_records / the trackers

START_NS = 1_700_000_000_123_456_000
STEP_NS = 1_000_000


def as_records(packets: Sequence[bytes], linktype: int = LINKTYPE_RAW, *, start_ns: int = START_NS,
               step_ns: int = STEP_NS) -> list[PacketRecord]:
    """Frames numbered from 1, ``step_ns`` apart."""
    return [PacketRecord(i + 1, start_ns + i * step_ns, linktype, p, len(p)) for i, p in enumerate(packets)]


# ---------------------------------------------------------------------------------------------
# a TCP conversation that keeps its own sequence numbers


class TcpFlow:
    """A client and a server exchanging segments; each side remembers the next sequence number it
    sends, and ``ack`` defaults to everything the peer has sent so far (SYN and FIN count one).

    >>> f = TcpFlow()
    >>> packets = [f.c("S"), f.s("SA"), f.c("A"), f.c("PA", b"hello"), f.s("A")]
    """

    def __init__(self, client: str = "10.0.0.1", cport: int = 40000, server: str = "10.0.0.2",
                 sport: int = 8080, *, cisn: int = 1000, sisn: int = 5000) -> None:
        self.client = (client, cport)
        self.server = (server, sport)
        self.next_seq = {True: cisn & M32, False: sisn & M32}  # key: from the client?

    def seg(self, from_client: bool, flags: str | int, payload: bytes = b"", *, seq: int | None = None,
            ack: int | None = None, options: bytes = b"", window: int = 65535, advance: bool = True) -> bytes:
        fl = tcp_flags(flags)
        s = self.next_seq[from_client] if seq is None else seq & M32
        if ack is None:
            ack = self.next_seq[not from_client] if fl & ACK else 0
        if advance:
            self.next_seq[from_client] = (s + len(payload) + (1 if fl & SYN else 0) + (1 if fl & FIN else 0)) & M32
        (a, ap), (b, bp) = (self.client, self.server) if from_client else (self.server, self.client)
        return tcp_packet(a, ap, b, bp, s, ack, fl, payload=payload, options=options, window=window)

    def c(self, flags: str | int, payload: bytes = b"", *, seq: int | None = None, ack: int | None = None,
          options: bytes = b"", window: int = 65535, advance: bool = True) -> bytes:
        """A segment from the client."""
        return self.seg(True, flags, payload, seq=seq, ack=ack, options=options, window=window, advance=advance)

    def s(self, flags: str | int, payload: bytes = b"", *, seq: int | None = None, ack: int | None = None,
          options: bytes = b"", window: int = 65535, advance: bool = True) -> bytes:
        """A segment from the server."""
        return self.seg(False, flags, payload, seq=seq, ack=ack, options=options, window=window, advance=advance)

    def handshake(self, *, client_options: bytes = b"", server_options: bytes = b"") -> list[bytes]:
        return [self.c("S", options=client_options), self.s("SA", options=server_options), self.c("A")]
