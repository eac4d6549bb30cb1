"""The analysis driver: records in, connections and conversations out.

``analyze_records`` takes any iterable of :class:`~analyzers.pcapfile.PacketRecord` (a file reader,
a live capture) and runs them through the decoder and the sans-I/O trackers; ``analyze_file`` opens
a capture file first.  Both return an :class:`Analysis` whose ``to_dict()`` is the ``loopcap/1``
JSON document.
"""

from __future__ import annotations

import gc
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from analyzers import blockloop
from analyzers.decode import FRAGMENT, Decoder, IcmpError, Malformed, TcpSegment, UdpDatagram, linktype_name
from analyzers.jsonout import EncodedItems
from analyzers.pcapfile import CaptureReader, PacketRecord, ReadWarning
from analyzers.picklable import fields_reduce
from analyzers.summary import summarize_tcp, summarize_udp
from analyzers.tcp import TcpConnection, TcpTracker
from analyzers.tombstones import flow_hash
from analyzers.udp import MAX_DATAGRAM_RECORDS, UdpConversation, UdpTracker

SCHEMA: Final = "loopcap/1"
MAX_MALFORMED_LISTED: Final = 100


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many long-lived objects.

    Every connection lives until the end of the analysis, so the generational GC only re-walks an
    ever-growing heap: measured 27% of the run time on a 250k-packet capture.  Reference counting
    still frees everything that is not in a cycle; the collector runs again afterwards."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


#: flow sharding: (this shard, shards, raw owner test, flow owner test), see AnalysisOptions.shard
#: a document's connections: summaries, or (streamed) their encoded JSON texts
Items = list[dict[str, Any]] | EncodedItems
Shard = tuple[int, int, Callable[[int, bytes, int], int], Callable[[bytes, int, bytes, int, int], int]]


class Observer(Protocol):
    """A plug-in that sees every decoded packet and adds to the document (sans-I/O, like the trackers).

    ``on_tcp`` gets the connection the segment was assigned to (``conn.stream`` is its tcp.stream
    number and ``conn.direction_of(seg)`` its direction: 0 from the connection's first sender);
    ``on_udp`` likewise; ``on_other`` every other decode result (ICMP errors, malformed packets,
    fragments, non-IP frames); ``contribute`` may add fields to the finished document (to each
    ``doc["tcp"][i]`` / ``doc["udp"][i]`` or at the top level) without renaming existing ones."""

    def on_tcp(self, conn: TcpConnection, seg: TcpSegment) -> None: ...

    def on_udp(self, conv: UdpConversation, dg: UdpDatagram) -> None: ...

    def on_other(self, frame: int, ts_ns: int, result: object) -> None: ...

    def contribute(self, analysis: Analysis, doc: dict[str, Any]) -> None: ...


class ShardableObserver(Observer, Protocol):
    """An observer that can follow one flow shard of a capture (analyzers.shardstream): it keeps
    per-flow state only, and learns the time of every packet another shard analyzes."""

    def on_skip(self, frame: int, ts_ns: int) -> None:
        """A packet another flow shard analyzes: only its time and frame number."""


def shardable(observers: Iterable[object]) -> bool:
    """Whether these observers can run on flow shards (see :class:`ShardableObserver`)."""
    return all(hasattr(ob, "on_skip") for ob in observers)


@dataclass
class AnalysisOptions:
    #: ports known to be servers' (decides roles when a connection has no SYN / SYN-ACK)
    server_ports: frozenset[int] = frozenset()
    #: keep every payload byte of these TCP streams / UDP conversations (for ``follow``); else previews
    keep_payload: Callable[[int], bool] | bool = False
    #: recognise HTTP/1.x messages in TCP payloads
    http: bool = True
    #: datagram records kept per UDP conversation (the rest are counted as omitted; None: all; a
    #: conversation whose payload is kept keeps all)
    max_datagrams: int | None = MAX_DATAGRAM_RECORDS
    #: plug-ins that see every packet and add to the document (see :class:`Observer`)
    observers: list[Observer] = field(default_factory=list)
    #: builds the frame decoder (e.g. a checksum-verifying one for the Zeek view); default: Decoder
    decoder_factory: Callable[[], Decoder] | None = None
    #: streaming (see analyzers.streaming): each connection / conversation is handed here, finished,
    #: as soon as no packet can belong to it any more, instead of being kept for the result
    on_tcp_done: Callable[[TcpConnection], None] | None = None
    on_udp_done: Callable[[UdpConversation], None] | None = None
    #: flow sharding (analyzers.shardstream): (this shard, shards, raw owner test, flow owner test);
    #: packets of other shards' flows are read and counted but not analyzed (observers, which must
    #: then be :class:`ShardableObserver`\ s, get their time)
    shard: Shard | None = None
    #: flow sharding: per kind ("tcp", "udp"), called with the frame that created each conversation;
    #: the trackers then number conversations by that frame (see analyzers.shardstream)
    created: dict[str, Callable[[int], None]] | None = None

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return fields_reduce(self)  # pickled by its fields (see analyzers/picklable.py)


@dataclass
class Analysis:
    file: str | None
    file_format: str = ""
    linktypes: list[int] = field(default_factory=list)
    packets: int = 0
    bytes_read: int = 0
    tcp: list[TcpConnection] = field(default_factory=list)
    udp: list[UdpConversation] = field(default_factory=list)
    read_warnings: list[ReadWarning] = field(default_factory=list)
    malformed: list[Malformed] = field(default_factory=list)
    malformed_count: int = 0
    icmp_errors: list[IcmpError] = field(default_factory=list)
    fragments_pending: int = 0
    other_frames: int = 0
    unknown_linktypes: dict[int, int] = field(default_factory=dict)
    first_ts: int | None = None
    last_ts: int | None = None
    observers: list[Observer] = field(default_factory=list)
    _tcp_summaries: list[dict[str, Any]] | None = None
    _udp_summaries: list[dict[str, Any]] | None = None
    #: a streamed analysis keeps no connections: their warnings, collected as they were handed out
    streamed_warnings: list[str] | None = None
    #: streaming: packets that came back for a connection / conversation already handed out (count,
    #: the first (new stream, old stream) pairs)
    late_tcp: tuple[int, list[tuple[int, int]]] = (0, [])
    late_udp: tuple[int, list[tuple[int, int]]] = (0, [])

    # -- summaries (computed once) --------------------------------------------------------------
    @property
    def tcp_summaries(self) -> list[dict[str, Any]]:
        if self._tcp_summaries is None:
            with gc_paused():
                self._tcp_summaries = [summarize_tcp(c) for c in self.tcp]
        return self._tcp_summaries

    @property
    def udp_summaries(self) -> list[dict[str, Any]]:
        if self._udp_summaries is None:
            with gc_paused():
                self._udp_summaries = [summarize_udp(c) for c in self.udp]
        return self._udp_summaries

    @property
    def warnings(self) -> list[str]:
        out = [f"the capture is damaged at {w}; results cover the frames before it" for w in self.read_warnings]
        if self.malformed_count:
            listed = "; ".join(str(m) for m in self.malformed[:5])
            more = f" (and {self.malformed_count - 5} more)" if self.malformed_count > 5 else ""
            out.append(f"{self.malformed_count} malformed packet(s) skipped: {listed}{more}")
        for lt, n in sorted(self.unknown_linktypes.items()):
            out.append(f"{n} frame(s) with {linktype_name(lt)} were not decoded")
        if self.fragments_pending:
            out.append(f"{self.fragments_pending} IP fragment(s) never completed a datagram")
        for proto, (count, pairs) in (("TCP", self.late_tcp), ("UDP", self.late_udp)):
            if count:
                which = ", ".join(f"{new} (was {old})" for new, old in pairs[:5])
                out.append(f"{count} {proto} stream(s) began with a packet of a 4-tuple the streamed analysis "
                           f"had already finished (closed and quiet, or idle, for longer than it waits), so they "
                           f"are new streams where Wireshark continues the old ones: {which}")
        if self.streamed_warnings is not None:
            out.extend(self.streamed_warnings)
        else:
            for c in self.tcp_summaries:
                out.extend(tcp_summary_warnings(c))
        return out

    def to_dict(self, *, tcp: Items | None = None, udp: Items | None = None) -> dict[str, Any]:
        doc = self._base_dict(tcp, udp)
        for ob in self.observers:
            ob.contribute(self, doc)
        return doc

    def _base_dict(self, tcp: Items | None, udp: Items | None) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "file": self.file,
            "format": self.file_format,
            "link_types": [{"linktype": lt, "name": linktype_name(lt)} for lt in self.linktypes],
            "packets": self.packets,
            "time": {"first": self.first_ts / 1e9 if self.first_ts is not None else None,
                     "last": self.last_ts / 1e9 if self.last_ts is not None else None},
            "tcp": self.tcp_summaries if tcp is None else tcp,
            "udp": self.udp_summaries if udp is None else udp,
            "icmp_errors": [{"frame": e.frame, "family": e.family, "type": e.type, "code": e.code}
                            for e in self.icmp_errors[:1000]],
            "malformed": {"count": self.malformed_count,
                          "packets": [{"frame": m.frame, "layer": m.layer, "reason": m.reason}
                                      for m in self.malformed[:MAX_MALFORMED_LISTED]]},
            "damaged": bool(self.read_warnings),
            "warnings": self.warnings,
        }

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return fields_reduce(self)  # pickled by its fields (see analyzers/picklable.py)


def tcp_summary_warnings(c: dict[str, Any]) -> list[str]:
    """What a connection's summary has to warn about (data the capture lacks)."""
    out = []
    for d in ("client", "server"):
        p = c["payload"][d]
        if p["truncated_frames"]:
            out.append(f"TCP stream {c['stream']}: {len(p['truncated_frames'])} {d} frame(s) truncated by "
                       f"the capture's snap length ({p['truncated_bytes']} payload bytes not captured)")
        for g in p["gaps"]:
            out.append(f"TCP stream {c['stream']}: {d} data has a gap of {g['length']} bytes at stream "
                       f"offset {g['offset']} (noticed at frame {g['frame']}, {g['reason']})")
    return out


#: the loops let streaming trackers hand out finished connections every this many packets
EXPIRE_EVERY = 4096


class _ObservedFeeds:
    """The trackers' feeds that also show every segment and datagram to the observers (bound
    methods of an object, not closures: a closure compiled by mypyc shares its parent's locals in a
    reference cycle, which would keep the trackers until the paused collector runs)."""

    def __init__(self, tcp: TcpTracker, udp: UdpTracker, observers: list[Observer]) -> None:
        self._tcp = tcp
        self._udp = udp
        self._by_key = tcp._by_key
        self._idle = tcp.idle_limit_ns
        self._observers = observers

    def tcp(self, seg: TcpSegment) -> TcpConnection:
        # the tracker's fast path (as in _loop_fast) for in-order ACK / ACK+PSH segments fully
        # captured on a steady connection; the observers see every segment either way
        conn = None
        flags = seg.flags
        if (flags == 0x10 or flags == 0x18) and len(seg.payload) == seg.paylen:
            a = (seg.src, seg.sport)
            b = (seg.dst, seg.dport)
            c = self._by_key.get((a, b) if a <= b else (b, a))
            if c is not None and c.steady and seg.ts_ns - c.last_ts <= self._idle and c.add_steady(
                    0 if a == c.ep[0] else 1, seg.frame, seg.ts_ns, seg.seq, seg.ip_bytes, seg.payload):
                conn = c
        if conn is None:
            conn = self._tcp.feed(seg)
        for ob in self._observers:
            ob.on_tcp(conn, seg)
        return conn

    def udp(self, dg: UdpDatagram) -> UdpConversation:
        conv = self._udp.feed(dg)
        for ob in self._observers:
            ob.on_udp(conv, dg)
        return conv


def analyze_records(records: Iterable[PacketRecord], options: AnalysisOptions | None = None,
                    *, file: str | None = None, blocks: CaptureReader | None = None,
                    on_block: Callable[[int], None] | None = None) -> Analysis:
    """Analyze ``records`` in capture order.  ``blocks``: the reader ``records`` come from, to be read
    many records at a time when the plain analysis runs and :mod:`analyzers.blockloop` can read it
    (the same result); ``on_block`` is then called with the packet count after each block."""
    opts = options or AnalysisOptions()
    decoder = opts.decoder_factory() if opts.decoder_factory is not None else Decoder()
    created = opts.created or {}
    shard = (opts.shard[0], opts.shard[1]) if opts.shard is not None else (0, 1)
    tcp = TcpTracker(keep_payload=opts.keep_payload, http=opts.http, server_ports=opts.server_ports,
                     on_done=opts.on_tcp_done, created=created.get("tcp"), shard=shard)
    udp = UdpTracker(keep_payload=opts.keep_payload, max_records_per_conversation=opts.max_datagrams,
                     on_done=opts.on_udp_done, created=created.get("udp"), shard=shard)
    res = Analysis(file)
    decode = decoder.decode
    feed_tcp: Callable[[TcpSegment], object] = tcp.feed
    feed_udp: Callable[[UdpDatagram], object] = udp.feed
    observers = list(opts.observers)
    res.observers = observers
    if observers:
        feeds = _ObservedFeeds(tcp, udp, observers)
        feed_tcp, feed_udp = feeds.tcp, feeds.udp
    with gc_paused():
        if observers or opts.decoder_factory is not None:
            if opts.shard is not None and not shardable(observers):
                raise ValueError("a sharded analysis runs only observers that can follow a flow shard")
            if observers and blocks is not None and blockloop.available(blocks):
                # the peers' views: every packet to the observers, read and (checksums) verified by blocks
                n, first_ts, ts = blockloop.loop_blocks_observed(blocks, res, decoder, feed_tcp, feed_udp, tcp, udp,
                                                                 observers, on_block, opts.shard)
            else:  # the reference loop: a record at a time through the decoder
                n, first_ts, ts = _loop(records, res, decode, feed_tcp, feed_udp, tcp, udp, observers, opts.shard)
        elif blocks is not None and blockloop.available(blocks):
            n, first_ts, ts = blockloop.loop_blocks(blocks, res, decode, tcp, udp, opts.shard, on_block)
        else:
            n, first_ts, ts = _loop_fast(records, res, decode, tcp, udp, opts.shard)
        # (still paused: streaming, the end of the capture hands out every open connection)
        res.tcp = tcp.finish()
        res.udp = udp.finish()
    res.packets = n
    res.first_ts = first_ts
    res.last_ts = ts if n else None
    res.late_tcp = (tcp.late_count, tcp.late)
    res.late_udp = (udp.late_count, udp.late)
    res.fragments_pending = sum(len(fs.frames) for fs in decoder.reassembler._sets.values())
    res.unknown_linktypes = dict(decoder.unknown_linktypes)
    return res


def _loop(records: Iterable[PacketRecord], res: Analysis, decode: Callable[..., object],
          feed_tcp: Callable[[TcpSegment], object], feed_udp: Callable[[UdpDatagram], object],
          tcp: TcpTracker, udp: UdpTracker, observers: list[Observer], shard: Shard | None = None
          ) -> tuple[int, int | None, int]:
    """The hot loop: one decode and one tracker call per record (``shard``: see
    :func:`decode_and_observe`)."""
    n = 0
    first_ts: int | None = None
    ts = 0
    streaming = tcp._on_done is not None or udp._on_done is not None
    for rec in records:
        n += 1
        ts = rec.ts_ns
        if first_ts is None:
            first_ts = ts
        if streaming and not n % EXPIRE_EVERY:
            tcp.expire(ts)
            udp.expire(ts)
        decode_and_observe(rec.frame, ts, rec.linktype, rec.data, rec.wirelen, res, decode, feed_tcp, feed_udp, tcp,
                           udp, observers, shard)
    return n, first_ts, ts


def decode_and_observe(frame: int, ts: int, linktype: int, data: bytes, wirelen: int, res: Analysis,
                       decode: Callable[..., object], feed_tcp: Callable[[TcpSegment], object],
                       feed_udp: Callable[[UdpDatagram], object], tcp: TcpTracker, udp: UdpTracker,
                       observers: list[Observer], shard: Shard | None = None) -> None:
    """One record of the loops with observers: decoded, fed to its tracker (``feed_*`` show it to the
    observers), or counted and shown to them as something else.

    With ``shard`` (this shard, shards, raw owner test, flow owner test) only this shard's flows are
    analyzed; the observers get the time of every other record (``on_skip``).  Of the other decode
    results, a malformed packet's readable header goes to its flow's owner, the rest to shard 0."""
    if shard is not None:
        k, shards, raw_owner, flow_owner = shard
        o = raw_owner(linktype, data, shards)
        if o >= 0 and o != k:
            for ob in observers:
                ob.on_skip(frame, ts)  # type: ignore[attr-defined]
            return
    x = decode(frame, ts, linktype, data, wirelen)
    cls = x.__class__
    if cls is TcpSegment or cls is UdpDatagram:
        if shard is not None and o < 0 and flow_owner(x.src, x.sport, x.dst, x.dport, shards) != k:  # type: ignore[attr-defined]
            for ob in observers:
                ob.on_skip(frame, ts)  # type: ignore[attr-defined]
        elif cls is TcpSegment:
            feed_tcp(x)  # type: ignore[arg-type]
        else:
            feed_udp(x)  # type: ignore[arg-type]
        return
    if shard is None:
        _other(x, res, tcp, udp)
        mine = True
    else:
        _other(x, res, tcp, udp, k, shards, flow_owner)
        q = x.partial if cls is Malformed else None  # type: ignore[attr-defined]
        mine = (flow_owner(q.src, q.sport, q.dst, q.dport, shards) if q is not None else 0) == k
    for ob in observers:
        if mine:
            ob.on_other(frame, ts, x)
        else:
            ob.on_skip(frame, ts)  # type: ignore[attr-defined]


_TCP_HEADER: Final = struct.Struct(">HHIIHH")


def _loop_fast(records: Iterable[PacketRecord], res: Analysis, decode: Callable[..., object],
               tcp: TcpTracker, udp: UdpTracker,
               shard: tuple[int, int, Callable[[int, bytes, int], int],
                            Callable[[bytes, int, bytes, int, int], int]] | None = None) -> tuple[int, int | None, int]:
    """:func:`_loop` without observers, with a fast path for the packets that make up most of any
    capture: Ethernet + IPv4 (no options, not fragmented) or IPv6 (no extension headers) + TCP.
    Those are decoded in place; when the segment has flags ACK or ACK+PSH, every payload byte
    captured, and its connection is past its handshake and before its teardown
    (:attr:`TcpConnection.steady`) and it continues its stream in order, it is applied by
    :meth:`TcpConnection.add_steady` without building a segment object.  Every other packet takes
    exactly the path of :func:`_loop`; results are identical (pinned by tests/test_fast_path.py).

    With ``shard`` only that shard's flows are analyzed (the fast path's packets by their ports and
    addresses as soon as those are read, the other clean TCP/UDP packets by the raw owner test before
    decoding; every other packet is decoded and kept by its flow's owner), and only shard 0 counts
    what belongs to no flow (malformed, ICMP errors, other frames)."""
    k, shards, raw_owner, flow_owner = shard if shard is not None else (0, 1, None, None)
    by_key = tcp._by_key
    idle = tcp.idle_limit_ns  # streaming: a connection silent longer takes the full path (to end it)
    unpack_tcp = _TCP_HEADER.unpack_from
    feed_tcp = tcp.feed
    n = 0
    first_ts: int | None = None
    ts = 0
    streaming = tcp._on_done is not None or udp._on_done is not None
    for rec in records:
        frame, ts, linktype, data, wirelen, _ = rec
        n += 1
        if first_ts is None:
            first_ts = ts
        if streaming and not n % EXPIRE_EVERY:
            tcp.expire(ts)
            udp.expire(ts)
        if linktype == 1 and len(data) >= 54:
            l4 = 0  # where a TCP header starts whose IP layer the fast path takes
            if data[12] == 8 and data[13] == 0 and data[14] == 0x45 and data[23] == 6 and not (
                    data[20] & 0x3F or data[21]):  # IPv4, 20-byte header, TCP, not a fragment
                total = (data[16] << 8) | data[17]
                avail = len(data) - 14
                hlen = (data[46] >> 4) * 4
                end = 14 + (total if total < avail else avail)
                if total >= 40 and 20 <= hlen <= total - 20 and 34 + hlen <= end:
                    l4, version, ip_bytes, src, dst = 34, 4, total, data[26:30], data[30:34]
            elif data[12] == 0x86 and data[13] == 0xDD and len(data) >= 74 and data[14] >> 4 == 6 and data[20] == 6:
                plen = (data[18] << 8) | data[19]  # IPv6 whose next header is TCP
                end = 54 + plen
                if end > len(data):
                    end = len(data)
                hlen = (data[66] >> 4) * 4
                if plen and 20 <= hlen <= plen and 54 + hlen <= end:
                    l4, version, ip_bytes, src, dst = 54, 6, 40 + plen, data[22:38], data[38:54]
            if l4:
                sport, dport, seq, ack, offflags, window = unpack_tcp(data, l4)
                if shards > 1 and flow_hash(src[-1], sport, dst[-1], dport) % shards != k:
                    continue  # another shard's flow
                flags = offflags & 0x1FF
                payload = data[l4 + hlen:end]
                paylen = ip_bytes - (l4 - 14) - hlen  # the IP payload on the wire, less the TCP header
                if flags in (0x10, 0x18) and len(payload) == paylen:  # ACK, ACK+PSH
                    a = (src, sport)
                    b = (dst, dport)
                    conn = by_key.get((a, b) if a <= b else (b, a))
                    if conn is not None and conn.steady and ts - conn.last_ts <= idle and conn.add_steady(
                            0 if a == conn.ep[0] else 1, frame, ts, seq, ip_bytes, payload):
                        continue
                feed_tcp(TcpSegment(frame, ts, version, src, dst, sport, dport, seq, ack, flags, window,
                                    data[l4 + 20:l4 + hlen], payload, paylen, ip_bytes))
                continue
        decode_and_feed(frame, ts, linktype, data, wirelen, res, decode, tcp, udp, k, shards, raw_owner, flow_owner)
    return n, first_ts, ts


def decode_and_feed(frame: int, ts: int, linktype: int, data: bytes, wirelen: int, res: Analysis,
                    decode: Callable[..., object], tcp: TcpTracker, udp: UdpTracker, k: int = 0, shards: int = 1,
                    raw_owner: Callable[[int, bytes, int], int] | None = None,
                    flow_owner: Callable[[bytes, int, bytes, int, int], int] | None = None) -> None:
    """A packet the fast loops do not take in place: decoded and fed to its tracker (sharded: only
    when its flow is shard ``k``'s, see :func:`_loop_fast`)."""
    if raw_owner is not None:
        o = raw_owner(linktype, data, shards)
        if o != k:
            if o < 0:
                assert flow_owner is not None
                _owned(decode(frame, ts, linktype, data, wirelen), res, tcp, udp, k, shards, flow_owner)
            return
    x = decode(frame, ts, linktype, data, wirelen)
    cls = x.__class__
    if cls is TcpSegment:
        tcp.feed(x)  # type: ignore[arg-type]
    elif cls is UdpDatagram:
        udp.feed(x)  # type: ignore[arg-type]
    else:
        _other(x, res, tcp, udp)


def _owned(x: object, res: Analysis, tcp: TcpTracker, udp: UdpTracker, k: int, shards: int,
           flow_owner: Callable[[bytes, int, bytes, int, int], int]) -> None:
    """Sharded: a fully decoded packet, kept when its flow belongs to shard ``k``."""
    cls = x.__class__
    if cls is TcpSegment or cls is UdpDatagram:
        if flow_owner(x.src, x.sport, x.dst, x.dport, shards) == k:  # type: ignore[attr-defined]
            if cls is TcpSegment:
                tcp.feed(x)  # type: ignore[arg-type]
            else:
                udp.feed(x)  # type: ignore[arg-type]
    else:
        _other(x, res, tcp, udp, k, shards, flow_owner)


def _other(x: object, res: Analysis, tcp: TcpTracker, udp: UdpTracker, k: int = 0, shards: int = 1,
           flow_owner: Callable[[bytes, int, bytes, int, int], int] | None = None) -> None:
    """A decode result other than a TCP segment or a UDP datagram (sharded: shard 0 counts it, and
    a quoted header goes to its flow's owner)."""
    cls = x.__class__
    main = k == 0
    if cls is Malformed:
        assert isinstance(x, Malformed)
        if main:
            res.malformed_count += 1
            if len(res.malformed) < MAX_MALFORMED_LISTED:
                res.malformed.append(x)
        q: TcpSegment | UdpDatagram | None = x.partial
    elif cls is IcmpError:
        assert isinstance(x, IcmpError)
        if main and len(res.icmp_errors) < 10_000:
            res.icmp_errors.append(x)
        q = x.quoted
    else:
        if x is not FRAGMENT and main:
            res.other_frames += 1
        return
    if q is None or (flow_owner is not None and flow_owner(q.src, q.sport, q.dst, q.dport, shards) != k):
        return
    if isinstance(q, TcpSegment):
        tcp.feed_quoted(q)  # numbered like Wireshark, not analyzed
    else:
        udp.feed_quoted(q)


def analyze_file(path: str | os.PathLike[str], options: AnalysisOptions | None = None, *,
                 progress: Any = None) -> Analysis:
    """Analyze a pcap/pcapng file.  Raises :class:`~analyzers.errors.CaptureFormatError` when the file
    cannot be read as a capture; damage after the header becomes warnings.  ``progress`` (see
    :mod:`analyzers.progress`) follows the bytes read, record by record."""
    name = os.fspath(path)
    with CaptureReader.open(name) as reader:
        size = reader.size or 0
        records: Iterable[PacketRecord] = reader
        on_block: Callable[[int], None] | None = None
        if progress is not None:
            from analyzers.progress import track_records

            progress.start_file(name, size)
            records = track_records(reader, reader._f.tell, progress)  # tell(): the buffered read position

            def on_block(packets: int) -> None:
                progress.update(reader._f.tell(), packets)
        res = analyze_records(records, options, file=name, blocks=reader, on_block=on_block)
        res.file_format = reader.file_format
        res.linktypes = reader.linktypes
        res.read_warnings = list(reader.warnings)
        res.bytes_read = reader.offset
    if progress is not None:
        progress.advance_file(size, res.packets)
    return res
