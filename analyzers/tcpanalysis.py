"""Wireshark's per-packet TCP analysis (``tcp.analysis.*``) and ``tcp.completeness``.

A port of ``tcp_analyze_sequence_number()`` and the surrounding bookkeeping of
``epan/dissectors/packet-tcp.c`` (Wireshark 4.0, default preferences: relative sequence numbers,
``tcp.fastrt_supersedes_ooo``, no default window scaling), run as an
:class:`~analyzers.analysis.Observer` over the same segments and the same connections
(``tcp.stream`` numbering) as the rest of loopcap.  State per direction ("flow") is what Wireshark
keeps: the next expected sequence number and when it was set, the last ACK / window sent and when,
the duplicate-ACK counter, the highest contiguous sequence number to be acknowledged, the window
scale learnt from the handshake, and the list of unacknowledged segments.

Each segment gets the ``tcp.analysis`` flags tshark shows for it.  As in tshark's fields, a fast or
spurious retransmission is also a ``retransmission``; a duplicate ACK carries its number
(``tcp.analysis.duplicate_ack_num``) and the frame it duplicates.

``tcp.completeness`` is the conversation-wide bit set (1 SYN, 2 SYN-ACK, 4 ACK, 8 data, 16 FIN, 32
RST) with Wireshark's quirks: a conversation that does not begin with a pure SYN ignores its first
packet, SYN-ACKs and FINs count only with ACK set, data counts only on non-SYN ACK segments (TFO data
on the very first SYN excepted).  The value reported is the final one (what ``tshark -2`` shows on
every frame).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from analyzers.decode import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, TcpSegment
from analyzers.picklable import fresh_only
from analyzers.tombstones import FlowMemory

if TYPE_CHECKING:  # pragma: no cover
    from analyzers.analysis import Analysis
    from analyzers.tcp import TcpConnection
    from analyzers.udp import UdpConversation

M32: Final = 0xFFFFFFFF

# ta->flags (packet-tcp.c)
A_RETRANSMISSION: Final = 0x0001
A_LOST_PACKET: Final = 0x0002
A_ACK_LOST_PACKET: Final = 0x0004
A_KEEP_ALIVE: Final = 0x0008
A_DUPLICATE_ACK: Final = 0x0010
A_ZERO_WINDOW: Final = 0x0020
A_ZERO_WINDOW_PROBE: Final = 0x0040
A_ZERO_WINDOW_PROBE_ACK: Final = 0x0080
A_KEEP_ALIVE_ACK: Final = 0x0100
A_OUT_OF_ORDER: Final = 0x0200
A_FAST_RETRANSMISSION: Final = 0x0400
A_WINDOW_UPDATE: Final = 0x0800
A_WINDOW_FULL: Final = 0x1000
A_REUSED_PORTS: Final = 0x2000
A_SPURIOUS_RETRANSMISSION: Final = 0x4000

#: flag bit -> tshark field name (``tcp.analysis.<name>``), in tshark's display order
FLAG_NAMES: Final[tuple[tuple[int, str], ...]] = (
    (A_RETRANSMISSION, "retransmission"),
    (A_FAST_RETRANSMISSION, "fast_retransmission"),
    (A_SPURIOUS_RETRANSMISSION, "spurious_retransmission"),
    (A_OUT_OF_ORDER, "out_of_order"),
    (A_REUSED_PORTS, "reused_ports"),
    (A_LOST_PACKET, "lost_segment"),
    (A_ACK_LOST_PACKET, "ack_lost_segment"),
    (A_WINDOW_UPDATE, "window_update"),
    (A_WINDOW_FULL, "window_full"),
    (A_KEEP_ALIVE, "keep_alive"),
    (A_KEEP_ALIVE_ACK, "keep_alive_ack"),
    (A_DUPLICATE_ACK, "duplicate_ack"),
    (A_ZERO_WINDOW_PROBE, "zero_window_probe"),
    (A_ZERO_WINDOW, "zero_window"),
    (A_ZERO_WINDOW_PROBE_ACK, "zero_window_probe_ack"),
)
ALL_FLAGS: Final[tuple[str, ...]] = tuple(n for _, n in FLAG_NAMES)

COMPLETENESS_SYNSENT: Final = 0x01
COMPLETENESS_SYNACK: Final = 0x02
COMPLETENESS_ACK: Final = 0x04
COMPLETENESS_DATA: Final = 0x08
COMPLETENESS_FIN: Final = 0x10
COMPLETENESS_RST: Final = 0x20
COMPLETENESS_NAMES: Final = ((COMPLETENESS_SYNSENT, "SYN"), (COMPLETENESS_SYNACK, "SYN-ACK"), (COMPLETENESS_ACK, "ACK"),
                             (COMPLETENESS_DATA, "DATA"), (COMPLETENESS_FIN, "FIN"), (COMPLETENESS_RST, "RST"))

#: packet-tcp.h: beyond this many unacknowledged segments a flow stops remembering new ones
TCP_MAX_UNACKED_SEGMENTS: Final = 10000
#: in-order ACK / ACK+PSH segments that no check can flag take :meth:`TcpAnalyzer._steady` (off: every
#: segment takes the general path; tests/test_tcp_analysis_steady.py compares the two)
STEADY_PATH = True
#: fast retransmission window after the last duplicate ACK (packet-tcp.c: 20 ms)
FAST_RETRANSMISSION_NS: Final = 20_000_000
#: out-of-order window when the initial RTT is unknown (packet-tcp.c: 3 ms)
OOO_DEFAULT_NS: Final = 3_000_000


def _gt(a: int, b: int) -> bool:
    d = (a - b) & M32
    return d != 0 and d < 0x80000000


def _lt(a: int, b: int) -> bool:
    return _gt(b, a)


def _le(a: int, b: int) -> bool:
    return not _gt(a, b)


def completeness_flags(value: int) -> list[str]:
    return [n for bit, n in COMPLETENESS_NAMES if value & bit]


def completeness_label(value: int) -> str:
    """Wireshark's label for a completeness value (4.2+ shows it; 4.0 shows the number only)."""
    hs = COMPLETENESS_SYNSENT | COMPLETENESS_SYNACK | COMPLETENESS_ACK
    if value == COMPLETENESS_SYNSENT:
        return "Incomplete, SYN_SENT"
    if value == COMPLETENESS_SYNSENT | COMPLETENESS_SYNACK:
        return "Incomplete, CLIENT_ESTABLISHED"
    if value == hs:
        return "Incomplete, ESTABLISHED"
    if value == hs | COMPLETENESS_DATA:
        return "Incomplete, DATA"
    if value & hs == hs and value & (COMPLETENESS_FIN | COMPLETENESS_RST) and not value & ~0x3F:
        return "Complete, WITH_DATA" if value & COMPLETENESS_DATA else "Complete, NO_DATA"
    return "Incomplete"


class _Flow:
    """tcp_flow_t + tcp_analyze_seq_flow_info_t: one direction of a conversation."""

    __slots__ = ("base_seq", "base_set", "dupacknum", "is_first_ack", "lastack", "lastacktime", "lastnondupack",
                 "lastsegmentflags", "maxseqtobeacked", "nextseq", "nextseqframe", "nextseqtime", "segments",
                 "win_scale", "window")

    def __init__(self) -> None:
        self.base_seq = 0
        self.base_set = False
        self.win_scale = -1  # -1 unknown, -2 no scaling, else the shift
        self.window = M32  # G_MAXUINT32 until a segment is seen
        self.nextseq = 0
        self.nextseqframe = 0
        self.nextseqtime = 0
        self.lastack = 0
        self.lastacktime = 0
        self.lastnondupack = 0
        self.dupacknum = 0
        self.maxseqtobeacked = 0
        self.lastsegmentflags = 0
        self.is_first_ack = False
        # unacknowledged segments, newest first: [frame, seq, nextseq]
        self.segments: list[list[int]] = []


@dataclass
class ConversationAnalysis:
    """The analysis of one TCP conversation (one ``tcp.stream``)."""

    stream: int
    flows: tuple[_Flow, _Flow] = field(default_factory=lambda: (_Flow(), _Flow()))
    completeness: int = 0
    ts_mru_syn: int = 0
    ts_first_rtt: int = 0
    #: frame -> ta flags (only frames with at least one flag)
    frame_flags: dict[int, int] = field(default_factory=dict)
    #: frame -> (duplicate ACK number, frame it duplicates)
    dupacks: dict[int, tuple[int, int]] = field(default_factory=dict)
    #: frame -> the completeness value before the frame (what a single-pass tshark shows on it);
    #: filled only when the analyzer records it
    completeness_before: dict[int, int] = field(default_factory=dict)

    def flag_names(self, frame: int) -> list[str]:
        return names_of(self.frame_flags.get(frame, 0))

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(ALL_FLAGS, 0)
        for bits in self.frame_flags.values():
            for n in names_of(bits):
                out[n] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        flags = {str(f): names_of(b) for f, b in sorted(self.frame_flags.items())}
        return {
            "flags": flags,
            "counts": self.counts(),
            "duplicate_acks": {str(f): {"num": n, "of_frame": of} for f, (n, of) in sorted(self.dupacks.items())},
            "completeness": self.completeness,
            "completeness_flags": completeness_flags(self.completeness),
            "completeness_label": completeness_label(self.completeness),
            "initial_rtt": self.ts_first_rtt / 1e9 if self.ts_first_rtt else None,
        }


def names_of(bits: int) -> list[str]:
    """tshark's ``tcp.analysis.*`` fields for a set of ta flags (fast and spurious retransmissions are
    retransmissions too)."""
    out = []
    for bit, name in FLAG_NAMES:
        if bits & bit or (bit == A_RETRANSMISSION and bits & (A_FAST_RETRANSMISSION | A_SPURIOUS_RETRANSMISSION)):
            out.append(name)
    return out


def _window_scale_option(options: bytes) -> int | None:
    """The shift of a well-formed Window Scale option (capped at 14), as dissect_tcpopt_wscale."""
    pos = 0
    n = len(options)
    while pos < n:
        kind = options[pos]
        if kind == 0:
            break
        if kind == 1:
            pos += 1
            continue
        if pos + 1 >= n:
            break
        olen = options[pos + 1]
        if olen < 2 or pos + olen > n:
            break
        if kind == 3 and olen == 3:
            return min(options[pos + 2], 14)
        pos += olen
    return None


def _forget_acked(segs: list[list[int]], ack: int) -> None:
    """Forget the reverse direction's unacknowledged segments that ``ack`` covers (and trim the one
    it falls in)."""
    i = 0
    while i < len(segs):
        u = segs[i]
        if ack == u[2]:
            del segs[i]
            continue
        if _gt(ack, u[1]) and _le(ack, u[2]):
            u[1] = ack
            i += 1  # the next round would keep it (nextseq > ack)
            continue
        if _gt(u[2], ack):
            i += 1
            continue
        del segs[i]


class TcpAnalyzer:
    """Sans-I/O: feed ``(stream, direction, segment)`` in capture order; read per-conversation results.

    ``direction`` is 0 or 1, fixed per endpoint of the conversation; ``new_conversation`` tells that
    the stream was created by a SYN reusing the 4-tuple of an earlier stream (Wireshark's
    ``reused_ports``)."""

    def __init__(self, *, record_completeness: bool = False) -> None:
        self.conversations: dict[int, ConversationAnalysis] = {}
        self.record_completeness = record_completeness

    def feed(self, stream: int, d: int, seg: TcpSegment, *, reused: bool = False) -> int:
        """Analyse one segment; returns its ta flags."""
        conv = self.conversations.get(stream)
        if conv is not None and (seg.flags == 0x10 or seg.flags == 0x18) and STEADY_PATH:
            before = conv.completeness
            if self._steady(conv, d, seg):
                if self.record_completeness:
                    conv.completeness_before[seg.frame] = before
                return 0
        is_new = conv is None
        if conv is None:
            conv = self.conversations[stream] = ConversationAnalysis(stream)
        fwd = conv.flows[d]
        rev = conv.flows[1 - d]
        flags = seg.flags
        seq = seg.seq
        ta = 0
        pure_syn = flags & (TCP_SYN | TCP_ACK) == TCP_SYN
        # conversation lookup (dissect_tcp): SYN with the same ISN restores nextseq; a SYN-ACK with a new ISN
        # resets the flow's base and is flagged
        if reused and pure_syn:
            ta |= A_REUSED_PORTS
        elif pure_syn and fwd.base_set and seq == fwd.base_seq:
            fwd.nextseq = fwd.maxseqtobeacked
        if flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK and fwd.base_set and seq != fwd.base_seq:
            fwd.base_seq = seq
            ta |= A_REUSED_PORTS
        ta = self._sequence_analysis(conv, fwd, rev, seg, ta)
        if ta:
            conv.frame_flags[seg.frame] = conv.frame_flags.get(seg.frame, 0) | ta
        # completeness (after the analysis, as in dissect_tcp; shown before its update)
        if self.record_completeness:
            conv.completeness_before[seg.frame] = COMPLETENESS_SYNSENT if reused and pure_syn else (
                0 if is_new else conv.completeness)
        if reused and pure_syn:
            conv.completeness = COMPLETENESS_SYNSENT
        elif is_new:
            value = 0
            if pure_syn:
                value |= COMPLETENESS_SYNSENT
                if seg.paylen > 0:
                    value |= COMPLETENESS_DATA
            conv.completeness = value
        else:
            value = conv.completeness
            if flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK:
                value |= COMPLETENESS_SYNACK
            if flags & (TCP_SYN | TCP_ACK) == TCP_ACK:
                value |= COMPLETENESS_DATA if seg.paylen > 0 else COMPLETENESS_ACK
            if flags & (TCP_FIN | TCP_ACK) == TCP_FIN | TCP_ACK:
                value |= COMPLETENESS_FIN
            if flags & TCP_RST:
                value |= COMPLETENESS_RST
            conv.completeness = value
        # SYN bookkeeping, initial RTT, first ACK
        if flags & TCP_SYN:
            if not flags & TCP_ACK:
                conv.ts_mru_syn = seg.ts_ns
            fwd.is_first_ack = True
        if flags & (TCP_SYN | TCP_ACK) == TCP_ACK:
            if conv.ts_mru_syn and not conv.ts_first_rtt:
                conv.ts_first_rtt = seg.ts_ns - conv.ts_mru_syn
            fwd.is_first_ack = False
        # options, then the window scaling check of SYNs
        opts = seg.options  # (a Window Scale option holds the bytes 3, 3: most segments have none)
        ws = _window_scale_option(opts) if opts and b"\x03\x03" in opts else None
        if ws is not None:
            fwd.win_scale = ws
        if flags & TCP_SYN:
            if fwd.win_scale == -1:
                fwd.win_scale = -2
                rev.win_scale = -2
            elif flags & TCP_ACK and rev.win_scale == -2:
                fwd.win_scale = -2
        return ta

    @staticmethod
    def _steady(conv: ConversationAnalysis, d: int, seg: TcpSegment) -> bool:
        """:meth:`feed` for an ACK or ACK+PSH segment of a known conversation that starts where its
        direction continues and that no check can flag: its updates without the checks.  False,
        having changed nothing, when a check might flag it or a rarer step applies (the first RTT, a
        Window Scale option): the general path takes it.  Most segments of a capture come here."""
        fwd = conv.flows[d]
        rev = conv.flows[1 - d]
        seq = seg.seq
        nxt = fwd.nextseq
        window = seg.window
        # in order (not lost, no keep-alive, no retransmission of any kind), a window open (no zero
        # window), both directions' bases known
        if seq != nxt or not nxt or not window or not fwd.base_set or not rev.base_set:
            return False
        ack = seg.ack
        seglen = seg.paylen
        if seglen:
            if seglen == 1 and rev.window == 0:
                return False  # a zero window probe
            if rev.win_scale != -1:
                shift = 0 if rev.is_first_ack or rev.win_scale == -2 else rev.win_scale
                if (seq + seglen) & M32 == (rev.lastack + ((rev.window << shift) & M32)) & M32:
                    return False  # window full
            if rev.lastack and _le((seq + seglen) & M32, rev.lastack):
                return False  # acknowledged already: a spurious retransmission
        elif ack == fwd.lastack:
            return False  # a window update, a duplicate ACK, a keep-alive or zero window probe ACK
        if rev.maxseqtobeacked and _gt(ack, rev.maxseqtobeacked):
            return False  # ACKs a segment not seen
        if conv.ts_mru_syn and not conv.ts_first_rtt:
            return False  # the first ACK after a SYN: the initial RTT
        opts = seg.options
        if opts and b"\x03\x03" in opts:
            return False  # maybe a Window Scale option
        # feed's and _sequence_analysis' updates for such a segment (no flags)
        conv.completeness |= COMPLETENESS_DATA if seglen else COMPLETENESS_ACK
        fwd.is_first_ack = False
        frame = seg.frame
        now = seg.ts_ns
        if ack != fwd.lastack:
            fwd.lastnondupack = frame
            fwd.dupacknum = 0
        if seglen:
            nextseq = (seq + seglen) & M32
            if len(fwd.segments) < TCP_MAX_UNACKED_SEGMENTS:
                fwd.segments.insert(0, [frame, seq, nextseq])
            fwd.nextseq = nextseq  # (after nxt: a segment is shorter than half the sequence space)
            fwd.nextseqframe = frame
            fwd.nextseqtime = now
        if seq == fwd.maxseqtobeacked or not fwd.maxseqtobeacked:
            fwd.maxseqtobeacked = fwd.nextseq
        fwd.window = window
        fwd.lastack = ack
        fwd.lastacktime = now
        fwd.lastsegmentflags = 0
        if rev.segments:
            _forget_acked(rev.segments, ack)
        return True

    @staticmethod
    def _sequence_analysis(conv: ConversationAnalysis, fwd: _Flow, rev: _Flow, seg: TcpSegment, ta: int) -> int:
        """tcp_analyze_sequence_number()."""
        flags = seg.flags
        seq = seg.seq
        ack = seg.ack
        seglen = seg.paylen
        window = seg.window
        now = seg.ts_ns
        frame = seg.frame
        ctl = flags & (TCP_SYN | TCP_FIN | TCP_RST)
        if not fwd.base_set:
            fwd.base_seq = seq if flags & TCP_SYN else (seq - 1) & M32
            fwd.base_set = True
        if not rev.base_set and flags & TCP_ACK:
            rev.base_seq = (ack - 1) & M32
            rev.base_set = True

        skip_to_finished_fwd = False
        # ZERO WINDOW PROBE
        if seglen == 1 and seq == fwd.nextseq and rev.window == 0:
            ta |= A_ZERO_WINDOW_PROBE
            skip_to_finished_fwd = True
        if not skip_to_finished_fwd:
            # ZERO WINDOW
            if window == 0 and not ctl:
                ta |= A_ZERO_WINDOW
            # LOST PACKET
            if fwd.nextseq and _gt(seq, fwd.nextseq) and not flags & TCP_RST:
                ta |= A_LOST_PACKET
            # KEEP ALIVE
            if seglen <= 1 and seq == (fwd.nextseq - 1) & M32 and not ctl:
                ta |= A_KEEP_ALIVE
            # WINDOW UPDATE
            if (seglen == 0 and window and window != fwd.window and seq == fwd.nextseq and ack == fwd.lastack
                    and not ctl):
                ta |= A_WINDOW_UPDATE
            # WINDOW FULL
            if seglen > 0 and rev.win_scale != -1 and not ctl:
                shift = 0 if rev.is_first_ack or rev.win_scale == -2 else rev.win_scale
                edge = (rev.lastack + ((rev.window << shift) & M32)) & M32
                if (seq + seglen) & M32 == edge:
                    ta |= A_WINDOW_FULL
            same = seglen == 0 and window == fwd.window and seq == fwd.nextseq and ack == fwd.lastack and not ctl
            # KEEP ALIVE ACK
            if same and window and rev.lastsegmentflags & A_KEEP_ALIVE:
                ta |= A_KEEP_ALIVE_ACK
                skip_to_finished_fwd = True
            # ZERO WINDOW PROBE ACK
            elif same and window == 0 and rev.lastsegmentflags & A_ZERO_WINDOW_PROBE:
                ta |= A_ZERO_WINDOW_PROBE_ACK
                skip_to_finished_fwd = True
            # DUPLICATE ACK
            elif same and window:
                fwd.dupacknum = 1 if fwd.dupacknum == -1 else fwd.dupacknum + 1
                ta |= A_DUPLICATE_ACK
                conv.dupacks[frame] = (fwd.dupacknum, fwd.lastnondupack)

        # finished_fwd: a new ACK resets the duplicate-ACK counter
        if ack != fwd.lastack:
            fwd.lastnondupack = frame
            fwd.dupacknum = 0
        # ACKED LOST PACKET
        if rev.maxseqtobeacked and _gt(ack, rev.maxseqtobeacked) and flags & TCP_ACK:
            if _lt(rev.maxseqtobeacked, rev.nextseq):
                # a hole in the other direction: move 'max seq to be acked' past it so that the same
                # loss is not reported again
                rev.maxseqtobeacked = rev.nextseq
                ta |= A_ACK_LOST_PACKET
            else:
                # the other side is stalled with pure ACKs: report the loss once (until its ACK moves);
                # the counter's -1 is an unsigned 0xFFFFFFFF in Wireshark (see _retransmission)
                if rev.dupacknum == 0:
                    ta |= A_ACK_LOST_PACKET
                rev.dupacknum = -1

        # RETRANSMISSION / FAST RETRANSMISSION / SPURIOUS / OUT-OF-ORDER
        if (seglen > 0 or flags & (TCP_SYN | TCP_FIN)) and not ta & A_KEEP_ALIVE:
            ta = TcpAnalyzer._retransmission(conv, fwd, rev, seg, ta)

        # finished_checking_retransmission_type
        nextseq = (seq + seglen) & M32
        if (seglen or flags & (TCP_SYN | TCP_FIN)) and len(fwd.segments) < TCP_MAX_UNACKED_SEGMENTS:
            if flags & (TCP_SYN | TCP_FIN):
                nextseq = (nextseq + 1) & M32
            fwd.segments.insert(0, [frame, seq, nextseq])
        zwp = bool(ta & A_ZERO_WINDOW_PROBE)
        if (_gt(nextseq, fwd.nextseq) or not fwd.nextseq) and not zwp:
            fwd.nextseq = nextseq
            fwd.nextseqframe = frame
            fwd.nextseqtime = now
        if (seq == fwd.maxseqtobeacked or not fwd.maxseqtobeacked) and not zwp:
            fwd.maxseqtobeacked = fwd.nextseq
        fwd.window = window
        fwd.lastack = ack
        fwd.lastacktime = now
        fwd.lastsegmentflags = ta

        _forget_acked(rev.segments, ack)
        return ta

    @staticmethod
    def _retransmission(conv: ConversationAnalysis, fwd: _Flow, rev: _Flow, seg: TcpSegment, ta: int) -> int:
        seq = seg.seq
        seglen = seg.paylen
        now = seg.ts_ns
        synfin = 1 if seg.flags & (TCP_SYN | TCP_FIN) else 0
        seq_not_advanced = bool(fwd.nextseq) and _lt(seq, fwd.nextseq)
        # a segment that starts one byte before nextseq and carries more than one byte follows a zero
        # window probe: it adds new data
        if seglen > 1 and (fwd.nextseq - 1) & M32 == seq:
            seq_not_advanced = False
        # spurious: all its data was already acknowledged
        if seglen > 0 and rev.lastack and _le((seq + seglen) & M32, rev.lastack):
            return ta | A_SPURIOUS_RETRANSMISSION
        # fast retransmission (takes precedence over out-of-order: tcp.fastrt_supersedes_ooo)
        # (dupacknum is unsigned in Wireshark: the -1 left by an "ACKed unseen segment" counts as many)
        if (seq_not_advanced and rev.dupacknum & M32 >= 2 and rev.lastack == seq
                and now - rev.lastacktime < FAST_RETRANSMISSION_NS):
            return ta | A_FAST_RETRANSMISSION
        ooo_thres = conv.ts_first_rtt if conv.ts_first_rtt else OOO_DEFAULT_NS
        if (seq_not_advanced and now - fwd.nextseqtime < ooo_thres
                and fwd.nextseq != (seq + seglen + synfin) & M32):
            return ta | A_OUT_OF_ORDER
        if seq_not_advanced:
            return ta | A_RETRANSMISSION
        return ta

    def result(self, stream: int) -> ConversationAnalysis | None:
        return self.conversations.get(stream)


#: streaming: how many 4-tuples are remembered in each set of the memory (the most recent of the set)
#: that tells that a new stream reuses one: 524,288 at most, 2 MB (in memory: all of them)
REMEMBERED_TUPLE_WAYS: Final = 8


class TcpAnalysisObserver:
    """The analysis as an :class:`~analyzers.analysis.Observer`: contributes
    ``doc["tcp"][i]["analysis"]`` = ``{"flags": {frame: [names]}, "counts": {...}, "duplicate_acks":
    {frame: {"num", "of_frame"}}, "completeness": int, "completeness_flags": [...],
    "completeness_label": str, "initial_rtt": float|None}``."""

    def __init__(self, *, record_completeness: bool = False) -> None:
        self.analyzer = TcpAnalyzer(record_completeness=record_completeness)
        #: the 4-tuples seen, by hash (streaming: the most recent, in a memory of fixed size): a new
        #: stream on one of them reuses it
        self._seen: set[int] | FlowMemory = set()
        self._streaming = False
        #: flow shard (k, shards) this observer follows (set by analyzers.shardstream): its memory of
        #: 4-tuples then holds only that shard's sets
        self.shard: tuple[int, int] = (0, 1)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (into another process's analysis options) as its configuration."""
        fresh_only(self, not (self.analyzer.conversations or self._seen or self._streaming))
        return (_observer, (self.analyzer.record_completeness,))

    def on_tcp(self, conn: TcpConnection, seg: TcpSegment) -> None:
        stream = conn.stream
        reused = False
        if stream not in self.analyzer.conversations:  # its first segment (a stream is never resumed)
            a, b = conn.ep
            key = (a, b) if a <= b else (b, a)
            seen = self._seen
            if isinstance(seen, FlowMemory):  # streaming: the most recent of its set now
                reused = seen.add(key)
            else:  # in memory: every 4-tuple, by hash (a tombstone must cost little, as in TcpTracker)
                h = hash(key)
                reused = h in seen
                seen.add(h)
        self.analyzer.feed(stream, conn.direction_of(seg), seg, reused=reused)

    def on_udp(self, conv: UdpConversation, dg: object) -> None:
        return None

    def on_other(self, frame: int, ts_ns: int, result: object) -> None:
        return None

    def on_skip(self, frame: int, ts_ns: int) -> None:
        return None  # flow shards: the analysis is per stream, other shards' packets are nothing to it

    # -- streaming (analyzers.streaming): each stream's result goes into its summary when it is done --
    def start_streaming(self, ready: Callable[[str, int], None]) -> None:
        self._streaming = True
        self._seen = FlowMemory(REMEMBERED_TUPLE_WAYS, shard=self.shard, values=False)

    def waiting(self, kind: str, stream: int) -> bool:
        return False  # a stream handed out gets no more segments: its result is final

    def add_links(self, kind: str, stream: int, item: dict[str, Any] | None) -> None:
        if kind != "tcp":
            return
        conv = self.analyzer.conversations.pop(stream, None)
        if conv is not None and item is not None:
            item["analysis"] = conv.to_dict()

    def finish_streaming(self) -> None:
        return None

    def contribute(self, analysis: Analysis, doc: dict[str, Any]) -> None:
        if self._streaming:
            return
        for item in doc.get("tcp", []):
            res = self.analyzer.result(item.get("stream", -1))
            if res is not None:
                item["analysis"] = res.to_dict()

    def frame_flags(self) -> dict[int, list[str]]:
        """Every flagged frame of every conversation (frame -> tshark field names)."""
        out: dict[int, list[str]] = {}
        for conv in self.analyzer.conversations.values():
            for f, bits in conv.frame_flags.items():
                out.setdefault(f, []).extend(names_of(bits))
        return out


def analyze_segments(items: Iterable[tuple[int, int, TcpSegment, bool]]) -> TcpAnalyzer:
    """Run the analysis over ``(stream, direction, segment, reused)`` tuples (for tests and tools)."""
    an = TcpAnalyzer()
    for stream, d, seg, reused in items:
        an.feed(stream, d, seg, reused=reused)
    return an


def _observer(record_completeness: bool) -> TcpAnalysisObserver:
    """:class:`TcpAnalysisObserver` from its pickled configuration (its argument is keyword-only)."""
    return TcpAnalysisObserver(record_completeness=record_completeness)
