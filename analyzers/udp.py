"""UDP conversations, numbered like Wireshark's ``udp.stream``.

A conversation is an unordered address/port pair, numbered in order of its first packet, with no
timeout (as tshark 4.0).  The first sender is called the client.  Its first
:data:`MAX_DATAGRAM_RECORDS` datagrams are kept as small records (frame, direction, length, SHA-256,
a bounded preview) and the rest counted, so a conversation's memory is bounded however long it
runs; its packet and byte counts are exact.  Payload bytes are kept only when asked for, and then
every datagram's record with them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from analyzers.decode import UdpDatagram
from analyzers.streams import StreamNumbers
from analyzers.tombstones import FlowKey, Tombstones

PREVIEW_BYTES: Final = 64


# slots: a streaming analysis holds the records of thousands of open conversations at once
@dataclass(slots=True)
class DatagramRecord:
    frame: int
    ts_ns: int
    direction: int  # 0: client -> server, 1: server -> client
    length: int  # UDP payload length on the wire (udp.length - 8)
    captured: int  # payload bytes captured
    digest: bytes  # SHA-256 of the captured payload (the bytes: half the memory of their hex)
    preview: bytes
    fragment_frames: tuple[int, ...] = ()
    payload: bytes | None = None

    @property
    def truncated(self) -> bool:
        return self.captured < self.length

    @property
    def sha256(self) -> str:
        return self.digest.hex()


@dataclass(slots=True)
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


#: datagram records kept per conversation (the rest are counted in ``dropped_records``); None: all
MAX_DATAGRAM_RECORDS: Final = 100
#: streaming: a conversation silent this long (capture time) is handed out: twice Zeek's
#: udp_inactivity_timeout (one minute), as TCP's idle limit is twice Zeek's tcp_inactivity_timeout
#: (tshark has none).  UDP has no close, so this is what bounds its memory on a long capture: at ten
#: minutes nearly every conversation of a busy capture stayed until MAX_LIVE pushed it out, and with
#: the Zeek view's connections waiting for them that was 17 MB of the default command at 1M packets
IDLE_NS: Final = 120 * 1_000_000_000
#: streaming: at most this many conversations stay open; past it the longest silent is handed out
MAX_LIVE: Final = 8192


class UdpTracker:
    """Sans-I/O: feed datagrams, read conversations.

    With ``on_done`` the tracker streams, like :class:`~analyzers.tcp.TcpTracker`: :meth:`expire`
    hands out (and forgets) the conversations silent for ``idle_ns`` (or the longest silent ones, when
    more than :data:`MAX_LIVE` are open); a later datagram of the same
    pair starts a new ``udp.stream`` (tshark would continue the old one): :attr:`late` counts them."""

    def __init__(self, *, keep_payload: Callable[[int], bool] | bool = False,
                 max_records_per_conversation: int | None = MAX_DATAGRAM_RECORDS,
                 on_done: Callable[[UdpConversation], None] | None = None, idle_ns: int = IDLE_NS,
                 created: Callable[[int], None] | None = None, shard: tuple[int, int] = (0, 1)) -> None:
        self._by_key: dict[FlowKey, UdpConversation] = {}
        #: udp.stream numbers (flow sharding, with ``created``: creation frames)
        self.numbers = StreamNumbers(created)
        self.conversations: list[UdpConversation] = []
        self._keep = keep_payload
        self.max_records = max_records_per_conversation if max_records_per_conversation is not None else 1 << 62
        self._on_done = on_done
        self._idle = idle_ns
        self.max_live = MAX_LIVE
        #: streaming: the open conversations, by last datagram, oldest first (the same dict as
        #: :attr:`_by_key`: in a streaming tracker every known conversation is open)
        self._live = self._by_key if on_done is not None else {}
        self.tombstones = Tombstones(shard=shard)  # streaming: the pairs handed out (flow shard k of n)

    @property
    def late(self) -> list[tuple[int, int]]:
        """Streaming: (new stream, old stream) of pairs that came back after they were handed out
        (the first 100)."""
        return self.tombstones.late

    @property
    def late_count(self) -> int:
        return self.tombstones.late_count

    def _lookup(self, dg: UdpDatagram) -> UdpConversation:
        a = (dg.src, dg.sport)
        b = (dg.dst, dg.dport)
        key = (a, b) if a <= b else (b, a)
        conv = self._by_key.get(key)
        if conv is not None and self._on_done is not None and dg.ts_ns - max(conv.last_ts, conv.first_ts) > self._idle:
            self._hand_out(key, conv)  # streaming: silent too long, whenever expire() would have noticed
            conv = None
        if conv is None:
            n = self.numbers.new(dg.frame)
            conv = UdpConversation(n, dg.version, a, b, first_ts=dg.ts_ns)
            if self._on_done is None:
                self.conversations.append(conv)
            else:
                self.tombstones.came_back(key, conv.stream)
            self._by_key[key] = conv
        elif self._on_done is not None:
            live = self._live
            del live[key]
            live[key] = conv  # (re)inserted: the newest
        return conv

    def expire(self, now_ns: int) -> None:
        """Streaming: hand out the conversations silent since ``idle_ns`` before ``now_ns``."""
        live = self._live
        limit = now_ns - self._idle
        while live:
            key, conv = next(iter(live.items()))
            if max(conv.last_ts, conv.first_ts) >= limit and len(live) <= self.max_live:
                break
            self._hand_out(key, conv)

    def _hand_out(self, key: FlowKey, conv: UdpConversation) -> None:
        del self._live[key]  # (and from _by_key: the same dict)
        self.tombstones.bury(key, conv.stream)
        assert self._on_done is not None
        self._on_done(conv)

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
        if keep or len(conv.datagrams) < self.max_records:  # (a kept conversation keeps every datagram)
            conv.datagrams.append(DatagramRecord(
                dg.frame, dg.ts_ns, d, dg.length - 8, len(dg.payload), hashlib.sha256(dg.payload).digest(),
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
        """End of input: the conversations that carried datagrams, in ``udp.stream`` order
        (streaming: the open ones are handed out, in that order, and the list is empty)."""
        if self._on_done is not None:
            for conv in sorted(self._live.values(), key=lambda c: c.stream):
                self._on_done(conv)
            self._live.clear()
            return []
        return [c for c in self.conversations if not c.quote_only]
