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
from collections.abc import Callable, Iterable

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

#: bound on the FIN/RST packets remembered per connection (a RST storm must not grow memory)
MAX_TEARDOWN_PACKETS = 64
#: bytes of each direction kept for previews and protocol recognition when not keeping everything
PREVIEW_BYTES = 4096


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

    # -- helpers -----------------------------------------------------------------------------
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


class TcpTracker:
    """Assigns segments to connections, numbered like Wireshark's ``tcp.stream``."""

    def __init__(self, *, keep_payload: Callable[[int], bool] | bool = False, http: bool = True,
                 server_ports: Iterable[int] = ()) -> None:
        self._by_key: dict[tuple[object, ...], TcpConnection] = {}
        self.connections: list[TcpConnection] = []
        self._keep = keep_payload
        self._http = http
        self.server_ports = frozenset(server_ports)

    def _keep_limit(self, stream: int) -> int:
        keep = self._keep(stream) if callable(self._keep) else self._keep
        return (1 << 62) if keep else PREVIEW_BYTES

    def _lookup(self, src: bytes, sport: int, dst: bytes, dport: int, seq: int, flags: int,
                seg: TcpSegment) -> TcpConnection:
        a = (src, sport)
        b = (dst, dport)
        key = (a, b) if a <= b else (b, a)
        conn = self._by_key.get(key)
        if conn is not None and flags & (TCP_SYN | TCP_ACK) == TCP_SYN:
            d = 0 if (src == conn.ep[0][0] and sport == conn.ep[0][1]) else 1
            base = conn.base[d]
            if base is not None and seq != base:
                conn = None  # port reuse: a new SYN with a new ISN starts a new connection
        if conn is None:
            n = len(self.connections)
            conn = TcpConnection(n, seg, self._keep_limit(n), self._http)
            self.connections.append(conn)
            self._by_key[key] = conn
        return conn

    def feed(self, seg: TcpSegment) -> TcpConnection:
        conn = self._lookup(seg.src, seg.sport, seg.dst, seg.dport, seg.seq, seg.flags, seg)
        conn.add(seg)
        return conn

    def feed_quoted(self, seg: TcpSegment) -> None:
        """A TCP header quoted inside an ICMP error: Wireshark looks the conversation up (creating it,
        and so consuming a ``tcp.stream`` number, if it is new) but nothing else changes."""
        conn = self._lookup(seg.src, seg.sport, seg.dst, seg.dport, seg.seq, seg.flags, seg)
        if conn.packets == [0, 0]:
            conn.quote_only = True

    def finish(self) -> list[TcpConnection]:
        """End of input: the connections that carried packets, in ``tcp.stream`` order."""
        for c in self.connections:
            c.finish(self.server_ports)
        return [c for c in self.connections if not c.quote_only]
