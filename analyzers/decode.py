"""Decode captured frames into TCP segments and UDP datagrams.

One small function per layer: link layers (Ethernet, 802.1Q/QinQ, NULL/LOOP, raw IP, Linux SLL and
SLL2), IPv4 (fragments reassembled) and IPv6 (extension headers walked, Fragment header
reassembled), then TCP and UDP.  A frame that cannot be decoded becomes a :class:`Malformed` result
with the layer and the reason; nothing here raises on bad bytes.

Link-layer layouts are data (:data:`LINK_LAYERS`), so adding a link type is one table row.
"""

from __future__ import annotations

import socket
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from analyzers.picklable import fields_reduce, rebuild, set_only

# ---------------------------------------------------------------------------------------------
# results


class TcpSegment:
    """One decoded TCP segment (payload is what was captured; ``paylen`` what was on the wire)."""

    __slots__ = ("ack", "caplen_short", "checksum", "dport", "dst", "flags", "frame", "ip_bytes", "options",
                 "paylen", "payload", "seq", "sport", "src", "ts_ns", "version", "window")
    #: set only by a verifying decoder (analyzers.checksum.ChecksumDecoder); read with checksum_of()
    checksum: str

    def __init__(self, frame: int, ts_ns: int, version: int, src: bytes, dst: bytes, sport: int, dport: int,
                 seq: int, ack: int, flags: int, window: int, options: bytes, payload: bytes, paylen: int,
                 ip_bytes: int) -> None:
        self.frame = frame
        self.ts_ns = ts_ns
        self.version = version
        self.src = src
        self.dst = dst
        self.sport = sport
        self.dport = dport
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.window = window
        self.options = options
        self.payload = payload
        self.paylen = paylen
        self.ip_bytes = ip_bytes
        self.caplen_short = len(payload) < paylen

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its constructor's arguments (and the checksum status, when set)."""
        args = (self.frame, self.ts_ns, self.version, self.src, self.dst, self.sport, self.dport, self.seq, self.ack,
                self.flags, self.window, self.options, self.payload, self.paylen, self.ip_bytes)
        return rebuild, (TcpSegment, args, set_only(self, "checksum"))


class UdpDatagram:
    """One decoded UDP datagram (after IP reassembly when it was fragmented)."""

    __slots__ = ("checksum", "dport", "dst", "fragment_frames", "frame", "ip_bytes", "length", "payload", "sport",
                 "src", "ts_ns", "version")
    #: set only by a verifying decoder (analyzers.checksum.ChecksumDecoder); read with checksum_of()
    checksum: str

    def __init__(self, frame: int, ts_ns: int, version: int, src: bytes, dst: bytes, sport: int, dport: int,
                 length: int, payload: bytes, ip_bytes: int, fragment_frames: tuple[int, ...] = ()) -> None:
        self.frame = frame
        self.ts_ns = ts_ns
        self.version = version
        self.src = src
        self.dst = dst
        self.sport = sport
        self.dport = dport
        self.length = length
        self.payload = payload
        self.ip_bytes = ip_bytes
        self.fragment_frames = fragment_frames

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its constructor's arguments (and the checksum status, when set)."""
        args = (self.frame, self.ts_ns, self.version, self.src, self.dst, self.sport, self.dport, self.length,
                self.payload, self.ip_bytes, self.fragment_frames)
        return rebuild, (UdpDatagram, args, set_only(self, "checksum"))

    @property
    def truncated(self) -> bool:
        return len(self.payload) < max(self.length - 8, 0)


@dataclass(frozen=True)
class Malformed:
    """A frame that could not be decoded: which layer, and why."""

    frame: int
    layer: str
    reason: str
    #: the transport header fields that could be read: Wireshark still looks the conversation up
    #: for such a segment/datagram, so it takes part in stream numbering (and nothing else)
    partial: TcpSegment | UdpDatagram | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return f"frame {self.frame}: {self.layer}: {self.reason}"

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return fields_reduce(self)  # pickled by its fields (see analyzers/picklable.py)


@dataclass(frozen=True)
class IcmpError:
    """An ICMP/ICMPv6 error (unreachable, time exceeded...) and the TCP/UDP header it quotes, if any.

    Quoted headers are not segments or datagrams of their own, but Wireshark looks their
    conversation up, so they take part in ``tcp.stream`` / ``udp.stream`` numbering."""

    frame: int
    family: str  # "icmp" or "icmpv6"
    type: int
    code: int
    quoted: TcpSegment | UdpDatagram | None

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return fields_reduce(self)  # pickled by its fields (see analyzers/picklable.py)


# what decode() may return besides a segment/datagram
OTHER: Final = "other"  # not TCP/UDP (ARP, ICMP, another protocol) - nothing to analyze
FRAGMENT: Final = "fragment"  # an IP fragment whose datagram is not complete yet


class IcmpPacket:
    """An ICMP / ICMPv6 message as Zeek's ICMP analyzer sees it (ports = type and counterpart): what
    :class:`analyzers.zeek.ZeekDecoder` returns for ICMP (this module's :class:`Decoder` never does)."""

    __slots__ = ("checksum", "code", "dst", "frame", "ip_bytes", "length", "src", "ts_ns", "type", "version",
                 "whole")

    def __init__(self, frame: int, ts_ns: int, version: int, src: bytes, dst: bytes, itype: int, code: int,
                 length: int, ip_bytes: int, whole: bool, checksum: str) -> None:
        self.frame = frame
        self.ts_ns = ts_ns
        self.version = version
        self.src = src
        self.dst = dst
        self.type = itype
        self.code = code
        self.length = length  # ICMP message length (header included)
        self.ip_bytes = ip_bytes
        self.whole = whole  # fully captured
        self.checksum = checksum


Decoded = TcpSegment | UdpDatagram | IcmpError | Malformed | IcmpPacket | str


def format_ip(addr: bytes) -> str:
    if len(addr) == 4:
        return socket.inet_ntop(socket.AF_INET, addr)
    return socket.inet_ntop(socket.AF_INET6, addr)


# ---------------------------------------------------------------------------------------------
# link layers: each returns (ethertype, offset) or raises _Bad

ETH_IPV4: Final = 0x0800
ETH_IPV6: Final = 0x86DD
VLAN_TYPES: Final = frozenset((0x8100, 0x88A8, 0x9100, 0x9200))


class _Bad(Exception):
    def __init__(self, layer: str, reason: str) -> None:
        self.layer = layer
        self.reason = reason


#: PPP protocol numbers of IPv4 and IPv6
_PPP_IP: Final = {0x0021: ETH_IPV4, 0x0057: ETH_IPV6}
ETH_PPPOE_SESSION: Final = 0x8864
ETH_MPLS: Final = frozenset((0x8847, 0x8848))


def _ppp(data: bytes, off: int) -> tuple[int, int]:
    """The IP packet after a PPP header at ``off`` (address and control bytes optional); etype 0
    (nothing to analyze) when it carries something else or is cut short."""
    if data[off:off + 2] == b"\xff\x03":
        off += 2
    if len(data) < off + 2:
        return 0, off
    proto = (data[off] << 8) | data[off + 1]
    return _PPP_IP.get(proto, 0), off + 2


def _ether_type_walk(data: bytes, etype: int, off: int) -> tuple[int, int]:
    """After an EtherType at ``off``: VLAN tags, then a PPPoE session's PPP frame or an MPLS label
    stack, down to the IP packet (as Wireshark and Zeek open them)."""
    depth = 0
    while etype in VLAN_TYPES:
        if len(data) < off + 4:
            raise _Bad("802.1Q", "VLAN tag truncated")
        depth += 1
        if depth > 8:
            raise _Bad("802.1Q", "more than 8 stacked VLAN tags")
        etype = (data[off + 2] << 8) | data[off + 3]
        off += 4
    if etype == ETH_PPPOE_SESSION:
        if len(data) < off + 8:
            return 0, off
        return _ppp(data, off + 6)
    if etype in ETH_MPLS:
        while len(data) >= off + 4:
            bottom = data[off + 2] & 1
            off += 4
            if bottom:
                if len(data) > off and data[off] >> 4 in (4, 6):
                    return (ETH_IPV4 if data[off] >> 4 == 4 else ETH_IPV6), off
                break
        return 0, off
    return etype, off


def _link_ethernet(data: bytes) -> tuple[int, int]:
    if len(data) < 14:
        raise _Bad("Ethernet", f"frame shorter than the 14-byte Ethernet header ({len(data)} bytes)")
    return _ether_type_walk(data, (data[12] << 8) | data[13], 14)


_AF_TO_ETHERTYPE: Final = {2: ETH_IPV4, 24: ETH_IPV6, 28: ETH_IPV6, 30: ETH_IPV6, 10: ETH_IPV6}


def _link_null(data: bytes) -> tuple[int, int]:
    if len(data) < 4:
        raise _Bad("Null/Loopback", "frame shorter than the 4-byte family header")
    # host byte order of the capturing machine: try both
    le = struct.unpack("<I", data[:4])[0]
    be = struct.unpack(">I", data[:4])[0]
    for af in (le, be):
        if af in _AF_TO_ETHERTYPE:
            return _AF_TO_ETHERTYPE[af], 4
    return 0, 4


def _link_loop(data: bytes) -> tuple[int, int]:
    if len(data) < 4:
        raise _Bad("Loop", "frame shorter than the 4-byte family header")
    af = struct.unpack(">I", data[:4])[0]
    return _AF_TO_ETHERTYPE.get(af, 0), 4


def _link_raw(data: bytes) -> tuple[int, int]:
    if not data:
        raise _Bad("Raw IP", "empty frame")
    v = data[0] >> 4
    return (ETH_IPV4 if v == 4 else ETH_IPV6 if v == 6 else 0), 0


def _link_ipv4(data: bytes) -> tuple[int, int]:
    return ETH_IPV4, 0


def _link_ipv6(data: bytes) -> tuple[int, int]:
    return ETH_IPV6, 0


def _link_ppp(data: bytes) -> tuple[int, int]:
    return _ppp(data, 0)


def _link_sll(data: bytes) -> tuple[int, int]:
    if len(data) < 16:
        raise _Bad("Linux SLL", f"frame shorter than the 16-byte cooked header ({len(data)} bytes)")
    return _ether_type_walk(data, (data[14] << 8) | data[15], 16)


def _link_sll2(data: bytes) -> tuple[int, int]:
    if len(data) < 20:
        raise _Bad("Linux SLL2", f"frame shorter than the 20-byte cooked header ({len(data)} bytes)")
    return _ether_type_walk(data, (data[0] << 8) | data[1], 20)


@dataclass(frozen=True)
class LinkLayer:
    linktype: int
    name: str
    decode: Callable[[bytes], tuple[int, int]]


#: LINKTYPE_* value -> link layer.  See https://www.tcpdump.org/linktypes.html
LINK_LAYERS: Final[dict[int, LinkLayer]] = {lt.linktype: lt for lt in (
    LinkLayer(0, "NULL (BSD loopback)", _link_null),
    LinkLayer(1, "Ethernet", _link_ethernet),
    LinkLayer(9, "PPP", _link_ppp),
    LinkLayer(12, "raw IP", _link_raw),
    LinkLayer(14, "raw IP", _link_raw),
    LinkLayer(101, "raw IP", _link_raw),
    LinkLayer(108, "LOOP (OpenBSD loopback)", _link_loop),
    LinkLayer(113, "Linux cooked (SLL)", _link_sll),
    LinkLayer(228, "raw IPv4", _link_ipv4),
    LinkLayer(229, "raw IPv6", _link_ipv6),
    LinkLayer(276, "Linux cooked v2 (SLL2)", _link_sll2),
)}


def linktype_name(linktype: int) -> str:
    lt = LINK_LAYERS.get(linktype)
    return lt.name if lt else f"unknown link type {linktype}"


# ---------------------------------------------------------------------------------------------
# IP reassembly (bounded)

@dataclass
class _FragSet:
    first_frame: int
    parts: dict[int, bytes] = field(default_factory=dict)  # offset -> bytes
    frames: list[int] = field(default_factory=list)
    total: int | None = None  # payload length once the last fragment is seen
    header: tuple[int, bytes, bytes, int] | None = None  # (version, src, dst, proto) of the datagram
    size: int = 0


#: per incomplete datagram: fragment bytes held (two datagrams' worth) and fragments seen
MAX_FRAGMENT_BYTES: Final = 2 * 65535
MAX_FRAGMENTS: Final = 2 * 8192


class Reassembler:
    """IPv4 / IPv6 fragment reassembly with bounded memory (oldest incomplete datagrams evicted).

    Overlaps are resolved as Wireshark does (``fragment_defragment_and_free``): fragments are laid
    down in offset order (arrival order for equal offsets) and each contributes only the bytes past
    those already laid, so the lower-offset, earlier copy wins."""

    def __init__(self, max_datagrams: int = 1024, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._sets: OrderedDict[tuple[object, ...], _FragSet] = OrderedDict()
        self.max_datagrams = max_datagrams
        self.max_bytes = max_bytes
        self.bytes_held = 0
        self.evicted = 0

    def add(self, key: tuple[object, ...], frame: int, offset: int, more: bool, data: bytes,
            header: tuple[int, bytes, bytes, int]
            ) -> tuple[bytes, tuple[int, ...], tuple[int, bytes, bytes, int]] | None:
        """Add a fragment; when the datagram is complete, return its payload, the frames of its fragments
        and the ``header`` given with its offset-0 fragment."""
        fs = self._sets.get(key)
        if fs is None:
            fs = _FragSet(frame)
            self._sets[key] = fs
            while len(self._sets) > self.max_datagrams or self.bytes_held > self.max_bytes:
                _, old = self._sets.popitem(last=False)
                self.bytes_held -= old.size
                self.evicted += 1
        if offset + len(data) > 65535 + 65535:
            return None
        before = (fs.size, len(fs.parts), fs.total, fs.header is None)
        prev = fs.parts.get(offset)
        if prev is None:
            fs.parts[offset] = data
            fs.size += len(data)
            self.bytes_held += len(data)
        elif len(data) > len(prev):  # same offset, longer: the first copy wins, the rest extends it
            fs.parts[offset] = prev + data[len(prev):]
            fs.size += len(data) - len(prev)
            self.bytes_held += len(data) - len(prev)
        fs.frames.append(frame)
        if offset == 0:
            fs.header = header
        if not more:
            fs.total = offset + len(data)
        # hostile captures: one datagram never holds more than two datagrams' worth of fragment bytes
        # (each distinct offset keeps its own copy, so 8192 overlapping 64 KiB fragments would
        # otherwise hold 512 MiB) nor more fragments than a datagram can have, and the total stays
        # under max_bytes; past that the oldest incomplete datagrams (maybe this one) are dropped
        if fs.size > MAX_FRAGMENT_BYTES or len(fs.frames) > MAX_FRAGMENTS:
            del self._sets[key]
            self.bytes_held -= fs.size
            self.evicted += 1
            return None
        while self.bytes_held > self.max_bytes and self._sets:
            old_key, old = self._sets.popitem(last=False)
            self.bytes_held -= old.size
            self.evicted += 1
            if old_key == key:
                return None
        if fs.total is None or fs.header is None:
            return None
        if before == (fs.size, len(fs.parts), fs.total, fs.header is None):
            return None  # a duplicate that adds nothing cannot complete the datagram
        # complete?
        pos = 0
        for off in sorted(fs.parts):
            if off > pos:
                return None
            pos = max(pos, off + len(fs.parts[off]))
        if pos < fs.total:
            return None
        buf = bytearray(fs.total)
        pos = 0
        for off in sorted(fs.parts):
            chunk = fs.parts[off][: max(0, fs.total - off)]
            if off + len(chunk) > pos:  # only the bytes past those already laid down
                skip = max(0, pos - off)
                buf[off + skip:off + len(chunk)] = chunk[skip:]
                pos = off + len(chunk)
        del self._sets[key]
        self.bytes_held -= fs.size
        return bytes(buf), tuple(fs.frames), fs.header


# ---------------------------------------------------------------------------------------------
# the decoder

_IPV6_EXT: Final = frozenset((0, 43, 60, 135, 139, 140, 253, 254))  # hop-by-hop, routing, dest opts, mobility, HIP...
PROTO_TCP: Final = 6
PROTO_UDP: Final = 17
PROTO_ICMP: Final = 1
PROTO_ICMPV6: Final = 58
ICMP_ERRORS: Final = frozenset((3, 4, 5, 11, 12))
ICMPV6_ERRORS: Final = frozenset((1, 2, 3, 4))


def _quoted_l4(frame: int, ts_ns: int, version: int, src: bytes, dst: bytes, proto: int,
               l4: bytes) -> TcpSegment | UdpDatagram | None:
    if proto == PROTO_TCP and len(l4) >= 16:
        sport, dport, seq, ack, offflags, window = struct.unpack(">HHIIHH", l4[:16])
        return TcpSegment(frame, ts_ns, version, src, dst, sport, dport, seq, ack, offflags & 0x1FF, window,
                          b"", b"", 0, 0)
    if proto == PROTO_UDP and len(l4) >= 8:
        sport, dport, ulen = struct.unpack(">HHH", l4[:6])
        return UdpDatagram(frame, ts_ns, version, src, dst, sport, dport, max(ulen, 8), b"", 0)
    return None


def _icmp_quote(frame: int, ts_ns: int, body: bytes, v6: bool) -> TcpSegment | UdpDatagram | None:
    """The TCP/UDP header quoted after an ICMP error's 8-byte header, if it can be read."""
    inner = body[8:]
    if not v6:
        if len(inner) < 20 or inner[0] >> 4 != 4:
            return None
        ihl = (inner[0] & 0x0F) * 4
        if ihl < 20 or len(inner) < ihl:
            return None
        if (((inner[6] << 8) | inner[7]) & 0x1FFF) != 0:  # a non-first fragment quotes no L4 header
            return None
        return _quoted_l4(frame, ts_ns, 4, inner[12:16], inner[16:20], inner[9], inner[ihl:])
    if len(inner) < 40 or inner[0] >> 4 != 6:
        return None
    return _quoted_l4(frame, ts_ns, 6, inner[8:24], inner[24:40], inner[6], inner[40:])


def _ipv6_ext_walk(data: bytes, pos: int, end: int, nxt: int) -> tuple[int, int, tuple[int, bool, int] | None]:
    """Walk IPv6 extension headers from ``pos``: (upper-layer protocol, its offset, the Fragment header's
    (offset, more, identification) if one was met).  The walk stops after the Fragment header of a real
    (non-atomic) fragment: what follows is fragment data, to be walked after reassembly."""
    frag: tuple[int, bool, int] | None = None
    hops = 0
    while nxt in _IPV6_EXT or nxt == 44 or nxt == 51:
        hops += 1
        if hops > 16:
            raise _Bad("IPv6", "more than 16 extension headers")
        if pos + 8 > end:
            raise _Bad("IPv6", f"extension header {nxt} truncated")
        if nxt == 44:  # Fragment
            fo = (data[pos + 2] << 8) | data[pos + 3]
            ident = struct.unpack(">I", data[pos + 4:pos + 8])[0]
            frag = ((fo & 0xFFF8), bool(fo & 1), ident)
            nxt = data[pos]
            pos += 8
            if frag[0] or frag[1]:
                break
            continue
        hlen = (data[pos + 1] + 2) * 4 if nxt == 51 else (data[pos + 1] + 1) * 8
        nxt = data[pos]
        pos += hlen
        if pos > end:
            raise _Bad("IPv6", "extension header length points past the packet")
    return nxt, pos, frag


class Decoder:
    """Stateful frame decoder (state = IP fragments awaiting reassembly)."""

    def __init__(self) -> None:
        self.reassembler = Reassembler()
        self.unknown_linktypes: dict[int, int] = {}

    def decode(self, frame: int, ts_ns: int, linktype: int, data: bytes, wirelen: int) -> Decoded:
        link = LINK_LAYERS.get(linktype)
        if link is None:
            self.unknown_linktypes[linktype] = self.unknown_linktypes.get(linktype, 0) + 1
            return OTHER
        try:
            etype, off = link.decode(data)
            if etype == ETH_IPV4:
                return self._ipv4(frame, ts_ns, data, off)
            if etype == ETH_IPV6:
                return self._ipv6(frame, ts_ns, data, off)
            return OTHER
        except _Bad as bad:
            return Malformed(frame, bad.layer, bad.reason)

    # -- IP ---------------------------------------------------------------------------------
    def _ipv4(self, frame: int, ts_ns: int, data: bytes, off: int) -> Decoded:
        avail = len(data) - off
        if avail < 20:
            raise _Bad("IPv4", f"header truncated ({avail} of 20 bytes captured)")
        vihl = data[off]
        if vihl >> 4 != 4:
            raise _Bad("IPv4", f"version field is {vihl >> 4}, not 4")
        ihl = (vihl & 0x0F) * 4
        if ihl < 20:
            raise _Bad("IPv4", f"header length {ihl} is below the minimum of 20")
        if ihl > avail:
            raise _Bad("IPv4", f"header length {ihl} points past the captured data ({avail} bytes)")
        total = (data[off + 2] << 8) | data[off + 3]
        if total == 0:  # TSO: the capturing host did not fill it in; use what was captured
            total = avail
        if total < ihl:
            raise _Bad("IPv4", f"total length {total} is smaller than the header length {ihl}")
        ident = (data[off + 4] << 8) | data[off + 5]
        fl = (data[off + 6] << 8) | data[off + 7]
        proto = data[off + 9]
        src = data[off + 12:off + 16]
        dst = data[off + 16:off + 20]
        end = off + min(total, avail)
        payload = data[off + ihl:end]
        more = bool(fl & 0x2000)
        frag_off = (fl & 0x1FFF) * 8
        if more or frag_off:
            if total > avail:
                return Malformed(frame, "IPv4", "fragment truncated by the capture: cannot reassemble")
            res = self.reassembler.add((4, src, dst, ident, proto), frame, frag_off, more, payload,
                                       (4, src, dst, proto))
            if res is None:
                return FRAGMENT
            whole, frames, _ = res
            return self._l4(frame, ts_ns, 4, src, dst, proto, whole, len(whole), ihl + len(whole), frames)
        return self._l4(frame, ts_ns, 4, src, dst, proto, payload, total - ihl, total, ())

    def _ipv6(self, frame: int, ts_ns: int, data: bytes, off: int) -> Decoded:
        avail = len(data) - off
        if avail < 40:
            raise _Bad("IPv6", f"header truncated ({avail} of 40 bytes captured)")
        if data[off] >> 4 != 6:
            raise _Bad("IPv6", f"version field is {data[off] >> 4}, not 6")
        plen = (data[off + 4] << 8) | data[off + 5]
        if plen == 0:  # jumbogram or TSO: use what was captured
            plen = avail - 40
        nxt = data[off + 6]
        src = data[off + 8:off + 24]
        dst = data[off + 24:off + 40]
        pos = off + 40
        end_wire = pos + plen
        end = min(end_wire, len(data))
        nxt, pos, frag = _ipv6_ext_walk(data, pos, end, nxt)
        if nxt == 59:  # no next header
            return OTHER
        payload = data[pos:end]
        wire_len = end_wire - pos
        if frag is not None:
            fo, more, ident = frag
            if fo == 0 and not more:  # atomic fragment
                return self._l4(frame, ts_ns, 6, src, dst, nxt, payload, wire_len, 40 + plen, ())
            if end_wire > len(data):
                return Malformed(frame, "IPv6", "fragment truncated by the capture: cannot reassemble")
            res = self.reassembler.add((6, src, dst, ident), frame, fo, more, payload, (6, src, dst, nxt))
            if res is None:
                return FRAGMENT
            whole, frames, header = res
            # the fragmentable part may start with more extension headers (destination options...);
            # its first header type is the one the offset-0 fragment announced
            upper, upos, _ = _ipv6_ext_walk(whole, 0, len(whole), header[3])
            if upper == 59:
                return OTHER
            return self._l4(frame, ts_ns, 6, src, dst, upper, whole[upos:], len(whole) - upos, 40 + len(whole),
                            frames)
        return self._l4(frame, ts_ns, 6, src, dst, nxt, payload, wire_len, 40 + plen, ())

    # -- transport ----------------------------------------------------------------------------
    def _l4(self, frame: int, ts_ns: int, version: int, src: bytes, dst: bytes, proto: int, seg: bytes,
            wire_len: int, ip_bytes: int, frag_frames: tuple[int, ...]) -> Decoded:
        if proto == PROTO_TCP:
            n = len(seg)
            if n < 20:
                if wire_len >= 20:
                    return Malformed(frame, "TCP", f"header truncated by the capture ({n} of 20 bytes)")
                return Malformed(frame, "TCP", f"segment shorter than the 20-byte TCP header ({wire_len} bytes)")
            sport, dport, seq, ack, offflags, window = struct.unpack(">HHIIHH", seg[:16])
            hlen = (offflags >> 12) * 4
            if hlen < 20 or hlen > wire_len or hlen > n:
                partial = TcpSegment(frame, ts_ns, version, src, dst, sport, dport, seq, ack, offflags & 0x1FF,
                                     window, b"", b"", 0, 0)
                if hlen < 20:
                    return Malformed(frame, "TCP", f"header length {hlen} is below the minimum of 20", partial)
                if hlen > wire_len:
                    return Malformed(frame, "TCP", f"header length {hlen} points past the segment ({wire_len} bytes)",
                                     partial)
                return Malformed(frame, "TCP", f"header truncated by the capture ({n} of {hlen} bytes)", partial)
            return TcpSegment(frame, ts_ns, version, src, dst, sport, dport, seq, ack, offflags & 0x1FF, window,
                              seg[20:hlen], seg[hlen:wire_len], wire_len - hlen, ip_bytes)
        if proto == PROTO_UDP:
            n = len(seg)
            if n < 8:
                return Malformed(frame, "UDP", f"header truncated ({n} of 8 bytes)")
            sport, dport, ulen = struct.unpack(">HHH", seg[:6])
            if ulen == 0 and version == 6:  # jumbogram
                ulen = wire_len
            if ulen < 8:
                return Malformed(frame, "UDP", f"length field {ulen} is below the 8-byte header")
            if ulen > wire_len:
                return Malformed(frame, "UDP", f"length field {ulen} exceeds the IP payload ({wire_len} bytes)",
                                 UdpDatagram(frame, ts_ns, version, src, dst, sport, dport, 8, b"", 0))
            return UdpDatagram(frame, ts_ns, version, src, dst, sport, dport, ulen, seg[8:ulen], ip_bytes,
                               frag_frames)
        if ((proto == PROTO_ICMP and version == 4) or (proto == PROTO_ICMPV6 and version == 6)) and len(seg) >= 8:
            itype, icode = seg[0], seg[1]
            if itype in (ICMP_ERRORS if version == 4 else ICMPV6_ERRORS):
                return IcmpError(frame, "icmp" if version == 4 else "icmpv6", itype, icode,
                                 _quoted_l4_or_none(frame, ts_ns, seg, version == 6))
        return OTHER


def _quoted_l4_or_none(frame: int, ts_ns: int, seg: bytes, v6: bool) -> TcpSegment | UdpDatagram | None:
    try:
        return _icmp_quote(frame, ts_ns, seg, v6)
    except (IndexError, struct.error):  # pragma: no cover - lengths are checked above
        return None


# ---------------------------------------------------------------------------------------------
# TCP options

TCP_FIN: Final = 0x001
TCP_SYN: Final = 0x002
TCP_RST: Final = 0x004
TCP_PSH: Final = 0x008
TCP_ACK: Final = 0x010
TCP_URG: Final = 0x020
TCP_ECE: Final = 0x040
TCP_CWR: Final = 0x080
TCP_NS: Final = 0x100

_FLAG_NAMES: Final = ((TCP_NS, "NS"), (TCP_CWR, "CWR"), (TCP_ECE, "ECE"), (TCP_URG, "URG"), (TCP_ACK, "ACK"),
                      (TCP_PSH, "PSH"), (TCP_RST, "RST"), (TCP_SYN, "SYN"), (TCP_FIN, "FIN"))


def flags_str(flags: int) -> str:
    """Flags in Wireshark's order, comma separated: ``ACK,FIN``."""
    return ",".join(n for bit, n in _FLAG_NAMES if flags & bit)


@dataclass
class TcpOptions:
    mss: int | None = None
    window_scale: int | None = None
    sack_permitted: bool = False
    timestamps: tuple[int, int] | None = None
    sack_blocks: list[tuple[int, int]] = field(default_factory=list)
    fast_open_cookie: bytes | None = None
    malformed: str | None = None
    kinds: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "mss": self.mss,
            "window_scale": self.window_scale,
            "sack_permitted": self.sack_permitted,
            "timestamps": ({"tsval": self.timestamps[0], "tsecr": self.timestamps[1]}
                           if self.timestamps else None),
            "fast_open_cookie": self.fast_open_cookie.hex() if self.fast_open_cookie is not None else None,
            "malformed": self.malformed,
        }


def parse_tcp_options(raw: bytes) -> TcpOptions:
    """Parse TCP options; a bad option length stops parsing and is reported, never raised."""
    opts = TcpOptions()
    pos = 0
    n = len(raw)
    while pos < n:
        kind = raw[pos]
        if kind == 0:
            break
        if kind == 1:
            pos += 1
            continue
        if pos + 1 >= n:
            opts.malformed = f"option {kind} has no length byte"
            break
        olen = raw[pos + 1]
        if olen < 2 or pos + olen > n:
            opts.malformed = f"option {kind} has an invalid length {olen}"
            break
        val = raw[pos + 2:pos + olen]
        opts.kinds.append(kind)
        if kind == 2 and olen == 4:
            opts.mss = struct.unpack(">H", val)[0]
        elif kind == 3 and olen == 3:
            opts.window_scale = val[0]
        elif kind == 4 and olen == 2:
            opts.sack_permitted = True
        elif kind == 5 and (olen - 2) % 8 == 0:
            opts.sack_blocks = [struct.unpack(">II", val[i:i + 8]) for i in range(0, len(val), 8)]
        elif kind == 8 and olen == 10:
            opts.timestamps = struct.unpack(">II", val)
        elif kind == 34:
            opts.fast_open_cookie = bytes(val)
        pos += olen
    return opts
