"""Sans-I/O TCP connection tracker.

Feed it decoded :class:`~analyzers.decode.TcpSegment` objects in capture order; it numbers
connections exactly like Wireshark's ``tcp.stream`` (including a new connection when a 4-tuple is
reused with a new SYN), and keeps per connection only what the analysis needs: the handshake
packets, the FIN/RST packets and the segments acknowledging the FINs, per-direction counters and
a bounded :class:`~analyzers.reassembly.StreamAssembler`.  Memory therefore follows the number of
connections, never the number of packets.

No I/O happens here: the caller decides where segments come from (a file, a live interface) and
what to do with the finished :class:`TcpConnection` objects.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable
from typing import Final

from analyzers.decode import (
    TCP_ACK,
    TCP_CWR,
    TCP_ECE,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    TcpOptions,
    TcpSegment,
    parse_tcp_options,
)
from analyzers.http import HttpSplitter
from analyzers.reassembly import HALF, M32, StreamAssembler
from analyzers.streams import StreamNumbers
from analyzers.tombstones import NO_KEY, FlowKey, Tombstones

#: bound on the FIN/RST packets remembered per connection (a RST storm must not grow memory)
MAX_TEARDOWN_PACKETS: Final = 64
#: bytes of each direction kept for the summary's preview (its first 60) when not keeping everything
PREVIEW_BYTES: Final = 64


def _range_start(r: list[int]) -> int:
    return r[0]


def _ge(a: int, b: int) -> bool:
    """a >= b in 32-bit serial arithmetic."""
    return ((a - b) & M32) < HALF


class Pkt:
    """The few fields of a segment the analysis keeps (handshake, teardown packets)."""

    __slots__ = ("ack", "d", "flags", "frame", "len", "options", "rseq", "seq", "ts_ns", "window")

    def __init__(self, seg: TcpSegment, d: int, rseq: int) -> None:
        self.frame = seg.frame
        self.ts_ns = seg.ts_ns
        self.d = d
        self.flags = seg.flags
        self.seq = seg.seq
        self.ack = seg.ack
        self.len = seg.paylen
        self.window = seg.window
        self.rseq = rseq
        self.options: TcpOptions | None = None


class TcpConnection:
    """Everything loopcap learns about one TCP connection (one ``tcp.stream``)."""

    # slots: a capture holds tens of thousands of these at once (a dict per instance was 2 KB of each)
    __slots__ = ("after_any", "after_any_bytes", "after_before_f2", "after_before_f2_bytes", "assembler",
                 "base", "client_dir", "closing_since", "ece_cwr_seen", "ecn_syn", "ecn_synack", "ep", "fin",
                 "fin_acker", "fin_frames", "fin_order", "first_frame", "first_rtt_ns", "first_synack_any",
                 "first_ts", "hs_ack", "http", "ip_bytes", "key", "last_frame", "last_ts", "max_end_before_f1",
                 "mru_syn_ts", "packets", "payload_segments", "payload_wire_bytes", "quote_only", "ranges",
                 "role_by", "rst_count", "rst_dirs", "rst_first", "steady", "stream", "syn", "syn_rtx",
                 "synack", "synack_count", "teardown_overflow", "teardown_pkts", "tfo_syn_len",
                 "truncated_frames", "version")

    def __init__(self, stream: int, seg: TcpSegment, keep_limit: int, http: bool) -> None:
        self.stream = stream
        self.version = seg.version
        # direction 0 = from the first packet's source ("A") to its destination ("B")
        self.ep: tuple[tuple[bytes, int], tuple[bytes, int]] = ((seg.src, seg.sport), (seg.dst, seg.dport))
        self.first_frame = seg.frame
        self.last_frame = seg.frame
        self.first_ts = seg.ts_ns
        self.last_ts = seg.ts_ns
        self.packets = [0, 0]
        self.ip_bytes = [0, 0]
        self.payload_segments = [0, 0]
        self.payload_wire_bytes = [0, 0]
        self.truncated_frames: list[list[int]] = [[], []]
        self.base: list[int | None] = [None, None]
        # union of payload ranges in relative sequence space, per direction (merged intervals)
        self.ranges: list[list[list[int]]] = [[], []]
        whole = keep_limit > PREVIEW_BYTES  # the whole stream is kept (Follow Stream): record chunks too
        self.assembler = [StreamAssembler(keep_limit, record_chunks=whole),
                          StreamAssembler(keep_limit, record_chunks=whole)]
        self.http: list[HttpSplitter] | None = None
        if http:
            self.http = [HttpSplitter(), HttpSplitter()]
            self.http[0].peer, self.http[1].peer = self.http[1], self.http[0]
            self.assembler[0].sink = self.http[0].feed
            self.assembler[1].sink = self.http[1].feed
        # roles
        self.client_dir: int | None = None  # 0: A is the client; 1: B is the client
        self.role_by = ""
        # handshake
        self.syn: Pkt | None = None
        self.syn_rtx: list[int] = []
        self.synack: Pkt | None = None
        self.synack_count = [0, 0]
        self.hs_ack: Pkt | None = None
        self.first_synack_any: Pkt | None = None
        # teardown
        self.fin: list[Pkt | None] = [None, None]
        self.fin_frames: list[list[int]] = [[], []]
        self.fin_acker: list[Pkt | None] = [None, None]
        self.fin_order: list[int] = []
        self.teardown_pkts: list[Pkt] = []
        self.teardown_overflow = 0
        self.rst_first: Pkt | None = None
        self.rst_dirs: set[int] = set()
        self.rst_count = 0
        self.max_end_before_f1: list[int | None] = [None, None]
        self.after_any: list[Pkt] = []  # data from the second closer after it ACKed the first FIN
        self.after_before_f2: list[Pkt] = []  # same, but only new data and up to its own FIN
        self.after_any_bytes = 0
        self.after_before_f2_bytes = 0
        # flags seen
        self.quote_only = False  # created by an ICMP error quoting its header, no packet of its own yet
        self.mru_syn_ts: int | None = None
        self.first_rtt_ns: int | None = None
        self.ecn_syn = False
        self.ecn_synack = False
        self.ece_cwr_seen = False
        self.tfo_syn_len = 0
        #: the tracker's key (streaming: to forget it), and since when it is closed (streaming)
        self.key: FlowKey = NO_KEY  # (set by the tracker)
        self.closing_since: int | None = None
        #: set after each :meth:`add`: a plain ACK or ACK+PSH segment, in order and fully captured,
        #: would change nothing here but counters, the payload and the ranges (see :meth:`add_steady`)
        self.steady = False

    # -- helpers -----------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """Both FINs acknowledged, or a RST seen: what follows can only be stragglers."""
        return self.rst_count > 0 or (self.fin_acker[0] is not None and self.fin_acker[1] is not None)

    def direction_of(self, seg: TcpSegment) -> int:
        return 0 if (seg.src == self.ep[0][0] and seg.sport == self.ep[0][1]) else 1

    def _fin_seq(self, p: Pkt) -> int:
        return (p.seq + p.len + (1 if p.flags & TCP_SYN else 0)) & M32

    def _add_range(self, d: int, start: int, end: int) -> None:
        rs = self.ranges[d]
        if rs and start >= rs[-1][0]:
            last = rs[-1]
            if start <= last[1]:
                if end > last[1]:
                    last[1] = end
                return
            if len(rs) < 4096:
                rs.append([start, end])
            return
        # general case (out of order / retransmission of old data): insert in place and merge with the
        # neighbours it touches; a binary search, not a sort of every range per segment (a capture
        # of segments in descending order must not cost O(ranges) sorted per packet)
        lo = bisect_right(rs, start, key=_range_start)
        if lo and rs[lo - 1][1] >= start:
            lo -= 1
            start = rs[lo][0]
            end = max(end, rs[lo][1])
        hi = lo
        while hi < len(rs) and rs[hi][0] <= end:
            end = max(end, rs[hi][1])
            hi += 1
        rs[lo:hi] = [[start, end]]
        del rs[4096:]

    # -- the per-segment update --------------------------------------------------------------
    def add(self, seg: TcpSegment) -> None:
        d = self.direction_of(seg)
        od = 1 - d
        flags = seg.flags
        syn = flags & TCP_SYN
        ackf = flags & TCP_ACK
        paylen = seg.paylen
        if self.quote_only or self.packets == [0, 0]:
            self.first_frame = seg.frame
            self.first_ts = seg.ts_ns
        self.quote_only = False
        self.last_frame = seg.frame
        self.last_ts = seg.ts_ns
        self.packets[d] += 1
        self.ip_bytes[d] += seg.ip_bytes
        # relative sequence bases, as Wireshark sets them (packet-tcp.c): the SYN's seq, else seq-1;
        # the peer's base from the first ACK it receives (ack-1); a SYN-ACK with a new seq resets it
        base = self.base[d]
        if base is None:
            base = seg.seq if syn else (seg.seq - 1) & M32
            self.base[d] = base
        elif syn and ackf and seg.seq != base:
            base = self.base[d] = seg.seq
        if ackf and self.base[od] is None:
            self.base[od] = (seg.ack - 1) & M32
        rseq = (seg.seq - base) & M32

        # roles and handshake
        if syn and not ackf:
            self.mru_syn_ts = seg.ts_ns
        elif ackf and not syn and self.mru_syn_ts is not None and self.first_rtt_ns is None:
            self.first_rtt_ns = seg.ts_ns - self.mru_syn_ts
        if syn:
            if not ackf:
                if self.syn is None:
                    if self.role_by != "syn":
                        self.client_dir = d
                        self.role_by = "syn"
                    if d == self.client_dir:
                        p = Pkt(seg, d, rseq)
                        p.options = parse_tcp_options(seg.options)
                        self.syn = p
                        self.ecn_syn = bool(flags & TCP_ECE and flags & TCP_CWR)
                        self.tfo_syn_len = paylen
                elif d == self.syn.d and seg.seq == self.syn.seq and len(self.syn_rtx) < MAX_TEARDOWN_PACKETS:
                    self.syn_rtx.append(seg.frame)
            else:
                self.synack_count[d] += 1
                if self.first_synack_any is None:
                    self.first_synack_any = Pkt(seg, d, rseq)
                    if self.client_dir is None:
                        self.client_dir = od
                        self.role_by = "syn_ack"
                if self.synack is None and self.client_dir is not None and d != self.client_dir and (
                        self.syn is not None or self.role_by == "syn_ack"):
                    p = Pkt(seg, d, rseq)
                    p.options = parse_tcp_options(seg.options)
                    self.synack = p
                    self.ecn_synack = bool(flags & TCP_ECE) and not flags & TCP_CWR
        elif (self.synack is not None and self.hs_ack is None and d == self.client_dir and ackf
              and not flags & TCP_RST):
            self.hs_ack = Pkt(seg, d, rseq)
        if flags & (TCP_ECE | TCP_CWR) and not syn:
            self.ece_cwr_seen = True

        # teardown: the first segment of the other side that acknowledges each FIN
        if ackf:
            f = self.fin[od]
            if f is not None and self.fin_acker[od] is None and _ge(seg.ack, (self._fin_seq(f) + 1) & M32):
                p = Pkt(seg, d, rseq)
                self.fin_acker[od] = p
                if not flags & (TCP_FIN | TCP_RST):
                    self._remember(p)
        if paylen:
            if not self.fin_order:
                mx = self.max_end_before_f1[d]
                end = rseq + paylen
                if mx is None or end > mx:
                    self.max_end_before_f1[d] = end
            elif self.fin_order[0] == od and self.fin[d] is None:
                # the second closer sends data after it acknowledged the first FIN: a half-close
                f1 = self.fin[od]
                if f1 is not None and _ge(seg.ack, (self._fin_seq(f1) + 1) & M32):
                    p = Pkt(seg, d, rseq)
                    self.after_any_bytes += paylen
                    if len(self.after_any) < MAX_TEARDOWN_PACKETS:
                        self.after_any.append(p)
                    mx = self.max_end_before_f1[d]
                    if mx is None or rseq + paylen > mx:
                        self.after_before_f2_bytes += paylen
                        if len(self.after_before_f2) < MAX_TEARDOWN_PACKETS:
                            self.after_before_f2.append(p)
        if flags & TCP_FIN:
            if len(self.fin_frames[d]) < MAX_TEARDOWN_PACKETS:
                self.fin_frames[d].append(seg.frame)
            p = Pkt(seg, d, rseq)
            if self.fin[d] is None:
                self.fin[d] = p
                self.fin_order.append(d)
            self._remember(p)
        elif flags & TCP_RST:
            p = Pkt(seg, d, rseq)
            self.rst_count += 1
            self.rst_dirs.add(d)
            if self.rst_first is None:
                self.rst_first = p
            self._remember(p)

        # payload, reassembled in relative sequence space exactly as Follow TCP Stream does
        other = self.assembler[od]
        if other.held_segments:
            obase = self.base[od]
            other.peer_ack((seg.ack - obase) & M32 if ackf and obase is not None else seg.ack, seg.frame)
        start = (rseq + 1) & M32 if syn else rseq
        asm = self.assembler[d]
        asm.start(start)
        if paylen:
            self.payload_segments[d] += 1
            self.payload_wire_bytes[d] += paylen
            if seg.caplen_short and len(self.truncated_frames[d]) < 4096:
                self.truncated_frames[d].append(seg.frame)
            self._add_range(d, start, start + paylen)
            asm.add(start, paylen, seg.payload, seg.frame)
        self.steady = (self.base[0] is not None and self.base[1] is not None and not self.fin_order
                       and not self.rst_count  # closed: the next segment may end its lingering
                       and (self.synack is None or self.hs_ack is not None)
                       and (self.mru_syn_ts is None or self.first_rtt_ns is not None)
                       and not asm.held_segments and not other.held_segments)

    def add_steady(self, d: int, frame: int, ts_ns: int, seq: int, ip_bytes: int, payload: bytes) -> bool:
        """The fast path of :meth:`add` for a segment of direction ``d`` with flags ACK or ACK+PSH and
        every payload byte captured, on a :attr:`steady` connection: what :meth:`add` would do, without
        building a segment object.  Returns False (having changed nothing) when the segment does not
        start where this direction's stream continues; the caller then takes :meth:`add`."""
        base = self.base[d]
        assert base is not None
        start = (seq - base) & M32
        asm = self.assembler[d]
        paylen = len(payload)
        if start != asm.next_seq and (paylen or asm.bytes_out or asm.next_seq):
            return False  # out of order, a retransmission, or the stream's first segment: the full path
        self.last_frame = frame
        self.last_ts = ts_ns
        self.packets[d] += 1
        self.ip_bytes[d] += ip_bytes
        if not asm.bytes_out and not asm.next_seq:  # asm.start(start), inlined
            asm.next_seq = start
            asm.started = True
        if paylen:
            end = start + paylen
            mx = self.max_end_before_f1[d]
            if mx is None or end > mx:
                self.max_end_before_f1[d] = end
            self.payload_segments[d] += 1
            self.payload_wire_bytes[d] += paylen
            rs = self.ranges[d]
            if rs and rs[-1][0] <= start <= rs[-1][1]:
                if end > rs[-1][1]:
                    rs[-1][1] = end
            else:
                self._add_range(d, start, end)
            asm.next_seq = end & M32
            asm._emit(payload, frame)
        return True

    def _remember(self, p: Pkt) -> None:
        if len(self.teardown_pkts) < MAX_TEARDOWN_PACKETS:
            self.teardown_pkts.append(p)
        else:
            self.teardown_overflow += 1

    def finish(self, server_ports: frozenset[int] = frozenset()) -> None:
        """End of input: settle roles that no SYN decided and flush reassembly."""
        for a in self.assembler:
            a.finish(self.last_frame)
        if self.client_dir is None:
            (_, pa), (_, pb) = self.ep
            if pb in server_ports and pa not in server_ports:
                self.client_dir, self.role_by = 0, "known_server_port"
            elif pa in server_ports and pb not in server_ports:
                self.client_dir, self.role_by = 1, "known_server_port"
            elif pa != pb:
                # the lower port is usually the server's (well-known / listening port)
                self.client_dir = 0 if pa > pb else 1
                self.role_by = "lower_port_is_server"
            else:
                self.client_dir, self.role_by = 0, "first_packet"
        if self.http is not None:
            for h in self.http:
                h.finish()


#: streaming: a closed connection (both FINs acknowledged, or a RST) is handed out once the
#: capture's clock is this far past its last packet: Linux's TIME_WAIT (Zeek waits 5 s, but real
#: captures have stragglers 15 s after a RST)
CLOSED_LINGER_NS: Final = 60 * 1_000_000_000
#: streaming: a connection that never closed is handed out after this long without a packet
#: (twice Zeek's tcp_inactivity_timeout)
IDLE_NS: Final = 600 * 1_000_000_000
#: streaming: at most this many closed connections linger; past it the oldest are handed out early
#: (a busy capture closes thousands per second: memory must not follow the rate times the linger)
MAX_LINGERING: Final = 2048


class TcpTracker:
    """Assigns segments to connections, numbered like Wireshark's ``tcp.stream``.

    By default every connection is kept until :meth:`finish`.  With ``on_done`` the tracker streams
    (as Zeek does): a connection is finished and handed to ``on_done``, then forgotten, as soon as
    no packet should belong to it any more -- its 4-tuple was reused by a new connection (at once),
    it closed ``linger_ns`` ago (or :data:`MAX_LINGERING` others closed since), or it has been silent
    for ``idle_ns`` (by the capture's clock) -- so memory follows the connections that are open, not
    the length of the capture.  A segment that still arrives for a forgotten 4-tuple starts a new ``tcp.stream``
    (Wireshark, which never forgets, would add it to the old one); :attr:`late` counts those."""

    def __init__(self, *, keep_payload: Callable[[int], bool] | bool = False, http: bool = True,
                 server_ports: Iterable[int] = (), on_done: Callable[[TcpConnection], None] | None = None,
                 linger_ns: int = CLOSED_LINGER_NS, idle_ns: int = IDLE_NS, created: Callable[[int], None] | None = None,
                 shard: tuple[int, int] = (0, 1)) -> None:
        self._by_key: dict[FlowKey, TcpConnection] = {}
        #: tcp.stream numbers (flow sharding, with ``created``: creation frames)
        self.numbers = StreamNumbers(created)
        self.connections: list[TcpConnection] = []
        self._keep = keep_payload
        self._http = http
        self.server_ports = frozenset(server_ports)
        self._on_done = on_done
        self._linger = linger_ns
        self._idle = idle_ns
        self.max_lingering = MAX_LINGERING
        self._live: dict[int, TcpConnection] = {}  # streaming: stream -> connection not handed out yet
        self._closing: deque[TcpConnection] = deque()  # streaming: closed ones, roughly by last packet
        self._next_sweep: int | None = None  # streaming: when to look for idle connections next
        self.tombstones = Tombstones(shard=shard)  # streaming: the 4-tuples handed out (flow shard k of n)

    @property
    def late(self) -> list[tuple[int, int]]:
        """Streaming: (new stream, old stream) for segments without SYN that came back for a 4-tuple
        already handed out (the first 100)."""
        return self.tombstones.late

    @property
    def late_count(self) -> int:
        return self.tombstones.late_count

    def _keep_limit(self, stream: int) -> int:
        keep = self._keep(stream) if callable(self._keep) else self._keep
        return (1 << 62) if keep else PREVIEW_BYTES

    def _lookup(self, src: bytes, sport: int, dst: bytes, dport: int, seq: int, flags: int,
                seg: TcpSegment) -> TcpConnection:
        a = (src, sport)
        b = (dst, dport)
        key = (a, b) if a <= b else (b, a)
        conn = self._by_key.get(key)
        if conn is not None and self._on_done is not None and self._over(conn, seg.ts_ns):
            self._hand_out(conn)  # streaming: its time is up, whenever expire() would have noticed
            conn = None
        if conn is not None and flags & (TCP_SYN | TCP_ACK) == TCP_SYN:
            d = 0 if (src == conn.ep[0][0] and sport == conn.ep[0][1]) else 1
            base = conn.base[d]
            if base is not None and seq != base:
                conn = None  # port reuse: a new SYN with a new ISN starts a new connection
        if conn is None:
            n = self.numbers.new(seg.frame)
            conn = TcpConnection(n, seg, self._keep_limit(n), self._http)
            conn.key = key
            old = self._by_key.get(key)
            if old is not None:  # its 4-tuple now belongs to the new connection: nothing can reach it
                old.steady = False  # (the fast paths check this flag)
            if self._on_done is None:
                self.connections.append(conn)
            else:
                if old is not None:
                    self._hand_out(old)
                else:  # a SYN on a forgotten 4-tuple is a new connection, not a late packet
                    self.tombstones.came_back(key, n, count=not flags & TCP_SYN)
                self._live[n] = conn
            self._by_key[key] = conn
        return conn

    def feed(self, seg: TcpSegment) -> TcpConnection:
        conn = self._lookup(seg.src, seg.sport, seg.dst, seg.dport, seg.seq, seg.flags, seg)
        conn.add(seg)
        if self._on_done is not None and conn.closing_since is None and conn.closed:
            conn.closing_since = conn.last_ts
            self._closing.append(conn)
        return conn

    def _over(self, conn: TcpConnection, now_ns: int) -> bool:
        """Streaming: whether ``conn`` is finished at ``now_ns`` (closed and lingered, or idle)."""
        quiet = now_ns - conn.last_ts
        return quiet > self._idle or (conn.closing_since is not None and quiet > self._linger)

    @property
    def idle_limit_ns(self) -> int:
        """How long a connection may be silent and still take the next packet of its 4-tuple."""
        return self._idle if self._on_done is not None else 1 << 80

    def _hand_out(self, conn: TcpConnection) -> None:
        if self._live.pop(conn.stream, None) is None:
            return  # handed out already
        if self._by_key.get(conn.key) is conn:
            del self._by_key[conn.key]
            self.tombstones.bury(conn.key, conn.stream)
        conn.steady = False  # handed out: the fast paths must not add to it
        conn.finish(self.server_ports)
        assert self._on_done is not None
        self._on_done(conn)
        if conn.http is not None:  # the splitters know each other: a cycle the paused collector would keep
            conn.http[0].peer = conn.http[1].peer = None

    def expire(self, now_ns: int) -> None:
        """Streaming: hand out the closed connections whose last packet is ``linger_ns`` before
        ``now_ns`` (the capture's clock; call it every few thousand packets)."""
        if self._next_sweep is None:
            self._next_sweep = now_ns + self._idle
        elif now_ns >= self._next_sweep:  # now and then: the connections silent for idle_ns
            self._next_sweep = now_ns + self._idle // 4
            limit = now_ns - self._idle
            for conn in [c for c in self._live.values() if c.last_ts < limit]:
                self._hand_out(conn)
        q = self._closing
        limit = now_ns - self._linger
        for _ in range(len(q)):
            conn = q[0]
            if conn.last_ts >= limit:
                if conn.last_ts == conn.closing_since:
                    break  # the oldest closed connection is still lingering: so are the ones after it
                # it had packets after its close: back in the queue by its last packet
                conn.closing_since = conn.last_ts
                q.rotate(-1)
                continue
            q.popleft()
            self._hand_out(conn)
        while len(q) > self.max_lingering:
            self._hand_out(q.popleft())

    def feed_quoted(self, seg: TcpSegment) -> None:
        """A TCP header quoted inside an ICMP error: Wireshark looks the conversation up (creating it,
        and so consuming a ``tcp.stream`` number, if it is new) but nothing else changes."""
        conn = self._lookup(seg.src, seg.sport, seg.dst, seg.dport, seg.seq, seg.flags, seg)
        if conn.packets == [0, 0]:
            conn.quote_only = True

    def finish(self) -> list[TcpConnection]:
        """End of input: the connections that carried packets, in ``tcp.stream`` order (streaming:
        every connection still open is handed out, and the list is empty)."""
        if self._on_done is not None:
            for stream in sorted(self._live):
                self._hand_out(self._live[stream])
            self._closing.clear()
            return []
        for c in self.connections:
            c.finish(self.server_ports)
        return [c for c in self.connections if not c.quote_only]
