"""Internet checksums (RFC 1071) of IPv4 headers and TCP/UDP/ICMP segments, and a verifying decoder.

Linux writes *partial* checksums on loopback (and on any interface with transmit offload, for the
packets the capturing host sends): the stack leaves in the checksum field only the folded sum of
the pseudo-header (``CHECKSUM_PARTIAL``) and counts on the NIC to finish the job, which on ``lo``
never happens.  Such a packet is not corrupt, so it is classified apart:

* ``ok``: the checksum verifies;
* ``partial``: the field holds the pseudo-header sum (an offloaded checksum not filled in);
* ``bad``: neither: the segment (or its checksum) was damaged;
* ``bad_ip``: the IPv4 *header* checksum is wrong (Zeek drops such packets before any session);
* ``zero``: UDP over IPv4 with checksum 0 (no checksum, RFC 768);
* ``unverified``: the capture truncated the segment, so the sum cannot be computed (Zeek, too, only
  checks fully captured segments).

:class:`ChecksumDecoder` is :class:`~analyzers.decode.Decoder` plus this classification, stored in
each segment's / datagram's ``checksum`` attribute (plain :class:`~analyzers.decode.Decoder` leaves it
unset: read it with :func:`checksum_of`).  Verification costs a pass over every byte, so it is a
separate class: the default decoder's hot path does not change.
"""

from __future__ import annotations

import struct
from typing import Final

from analyzers.decode import (
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    Decoded,
    Decoder,
    TcpSegment,
    UdpDatagram,
)

OK: Final = "ok"
PARTIAL: Final = "partial"
BAD: Final = "bad"
BAD_IP: Final = "bad_ip"
ZERO: Final = "zero"
UNVERIFIED: Final = "unverified"

#: statuses under which a packet is fine for any consumer that checks checksums strictly
VALID_STRICT: Final = frozenset((OK, ZERO, UNVERIFIED))
#: statuses that a consumer accepting offloaded (partial) checksums takes as valid
VALID_LENIENT: Final = VALID_STRICT | {PARTIAL}

_CHECKSUM_OFFSET: Final = {PROTO_TCP: 16, PROTO_UDP: 6, PROTO_ICMP: 2, PROTO_ICMPV6: 2}


def ones_sum(data: bytes | bytearray | memoryview, start: int = 0) -> int:
    """The 16-bit one's-complement sum of ``data`` (padded with a zero byte if odd), folded, not
    complemented; ``start`` is added in (for pseudo-headers).

    Computed as the big-endian integer of ``data`` modulo 0xFFFF (2**16 is 1 modulo 0xFFFF, so the
    integer and the sum of its 16-bit words agree; a non-zero sum folds to 1..0xFFFF)."""
    n = len(data)
    value = int.from_bytes(data, "big")
    if n % 2:
        value <<= 8
    value += start
    if value == 0:
        return 0
    return value % 0xFFFF or 0xFFFF


def internet_checksum(data: bytes | bytearray | memoryview) -> int:
    """The value a sender writes in a checksum field whose bytes in ``data`` are zero (RFC 1071)."""
    return ~ones_sum(data) & 0xFFFF


def pseudo_header_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """Folded sum of the TCP/UDP/ICMPv6 pseudo-header (IPv4 or IPv6 by address length)."""
    if len(src) == 4:
        return ones_sum(src + dst + struct.pack(">BBH", 0, proto, length))
    return ones_sum(src + dst + struct.pack(">IxxxB", length, proto))


def ipv4_header_ok(header: bytes | bytearray | memoryview) -> bool:
    """True if an IPv4 header (``ihl * 4`` bytes, checksum included) sums to 0xFFFF."""
    return ones_sum(header) == 0xFFFF


def classify_l4(version: int, src: bytes, dst: bytes, proto: int, segment: bytes | bytearray | memoryview,
                wire_len: int) -> str:
    """Checksum status of a TCP/UDP/ICMP(v6) segment (``segment``: the captured bytes from its header
    on; ``wire_len``: its length on the wire).  ICMP over IPv4 has no pseudo-header."""
    if len(segment) < wire_len:
        return UNVERIFIED
    off = _CHECKSUM_OFFSET.get(proto)
    if off is None or wire_len < off + 2:
        return UNVERIFIED
    field = (segment[off] << 8) | segment[off + 1]
    if proto == PROTO_UDP and version == 4 and field == 0:
        return ZERO
    pseudo = 0 if proto == PROTO_ICMP else pseudo_header_sum(src, dst, proto, wire_len)
    if ones_sum(segment[:wire_len], pseudo) == 0xFFFF:
        return OK
    # CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum (0 and 0xFFFF are the same number in
    # one's complement); ICMP is never offloaded
    if proto != PROTO_ICMP and (field == pseudo or (field in (0, 0xFFFF) and pseudo in (0, 0xFFFF))):
        return PARTIAL
    return BAD


def checksum_of(x: TcpSegment | UdpDatagram) -> str | None:
    """The status a :class:`ChecksumDecoder` stored, or None when the decoder did not verify."""
    return getattr(x, "checksum", None)


class ChecksumDecoder(Decoder):
    """A :class:`~analyzers.decode.Decoder` that also classifies every checksum it can (see the
    module docstring).  Counts per status are kept in :attr:`counts`."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}
        self._ip_ok = True
        self._frame_checked = -1

    def _count(self, status: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1

    def _ipv4(self, frame: int, ts_ns: int, data: bytes, off: int) -> Decoded:
        ok = True
        if len(data) - off >= 20:
            ihl = (data[off] & 0x0F) * 4
            if 20 <= ihl <= len(data) - off:
                ok = ipv4_header_ok(memoryview(data)[off:off + ihl])
        self._ip_ok = ok
        self._frame_checked = frame
        try:
            res = super()._ipv4(frame, ts_ns, data, off)
        finally:
            self._ip_ok = True
        return res

    def _l4(self, frame: int, ts_ns: int, version: int, src: bytes, dst: bytes, proto: int, seg: bytes,
            wire_len: int, ip_bytes: int, frag_frames: tuple[int, ...]) -> Decoded:
        res = super()._l4(frame, ts_ns, version, src, dst, proto, seg, wire_len, ip_bytes, frag_frames)
        if isinstance(res, (TcpSegment, UdpDatagram)):
            if not self._ip_ok:
                status = BAD_IP
            else:
                status = classify_l4(version, src, dst, proto, seg, wire_len)
            res.checksum = status
            self._count(status)
        return res
