"""UDP conversations, numbered like Wireshark's ``udp.stream``.

A conversation is an unordered address/port pair, numbered in order of its first packet, with no
timeout (as tshark 4.0).  The first sender is called the client.  Every datagram is kept as a small
record (frame, direction, length, SHA-256, a bounded preview), so memory follows the number of
datagrams only through these fixed-size records; payload bytes are kept only when asked for.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from analyzers.decode import UdpDatagram

PREVIEW_BYTES = 64


@dataclass
class DatagramRecord:
    frame: int
    ts_ns: int
    direction: int  # 0: client -> server, 1: server -> client
    length: int  # UDP payload length on the wire (udp.length - 8)
    captured: int  # payload bytes captured
    sha256: str
    preview: bytes
    fragment_frames: tuple[int, ...] = ()
    payload: bytes | None = None

    @property
    def truncated(self) -> bool:
        return self.captured < self.length


@dataclass
class UdpConversation:
    stream: int
    version: int
    client: tuple[bytes, int]
    server: tuple[bytes, int]
    datagrams: list[DatagramRecord] = field(default_factory=list)
    packets: list[int] = field(default_factory=lambda: [0, 0])
    payload_bytes: list[int] = field(default_factory=lambda: [0, 0])
    ip_bytes: list[int] = field(default_factory=lambda: [0, 0])
    first_ts: int = 0
    last_ts: int = 0
    quote_only: bool = False
    dropped_records: int = 0


class UdpTracker:
    """Sans-I/O: feed datagrams, read conversations."""

    def __init__(self, *, keep_payload: Callable[[int], bool] | bool = False,
                 max_records_per_conversation: int = 1_000_000) -> None:
        self._by_key: dict[tuple[object, ...], UdpConversation] = {}
        self.conversations: list[UdpConversation] = []
        self._keep = keep_payload
        self.max_records = max_records_per_conversation

    def _lookup(self, dg: UdpDatagram) -> UdpConversation:
        a = (dg.src, dg.sport)
        b = (dg.dst, dg.dport)
        key = (a, b) if a <= b else (b, a)
        conv = self._by_key.get(key)
        if conv is None:
            conv = UdpConversation(len(self.conversations), dg.version, a, b, first_ts=dg.ts_ns)
            self.conversations.append(conv)
            self._by_key[key] = conv
        return conv

    def feed(self, dg: UdpDatagram) -> UdpConversation:
        conv = self._lookup(dg)
        if conv.quote_only or (not conv.datagrams and conv.packets == [0, 0]):
            # first real datagram: its sender is the client
            conv.client, conv.server = (dg.src, dg.sport), (dg.dst, dg.dport)
            conv.first_ts = dg.ts_ns
            conv.quote_only = False
        d = 0 if (dg.src, dg.sport) == conv.client else 1
        conv.packets[d] += 1
        conv.payload_bytes[d] += dg.length - 8
        conv.ip_bytes[d] += dg.ip_bytes
        conv.last_ts = dg.ts_ns
        keep = self._keep(conv.stream) if callable(self._keep) else self._keep
        if len(conv.datagrams) < self.max_records:
            conv.datagrams.append(DatagramRecord(
                dg.frame, dg.ts_ns, d, dg.length - 8, len(dg.payload), hashlib.sha256(dg.payload).hexdigest(),
                bytes(dg.payload[:PREVIEW_BYTES]), dg.fragment_frames, bytes(dg.payload) if keep else None))
        else:
            conv.dropped_records += 1
        return conv

    def feed_quoted(self, dg: UdpDatagram) -> None:
        """A UDP header quoted in an ICMP error consumes a ``udp.stream`` number if its pair is new."""
        conv = self._lookup(dg)
        if conv.packets == [0, 0]:
            conv.quote_only = True

    def finish(self) -> list[UdpConversation]:
        return [c for c in self.conversations if not c.quote_only]
