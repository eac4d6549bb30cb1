"""Zeek connection summaries (``conn.log``), computed as Zeek computes them.

Zeek's idea of a connection is not Wireshark's ``tcp.stream``: a 5-tuple is split on inactivity
(TCP 5 min, UDP and ICMP 1 min), by the connection-removal timers that follow a close, a reset or an
unanswered SYN, and when a SYN (or a SYN-ACK on a half-open connection) with a new ISN reuses the
tuple; its originator may be flipped at creation (likely server ports), when a connection that began
with a SYN-ACK sees its first ACK or data packet, or when a SYN arrives after the SYN-ACK.  So this
module keeps its own sans-I/O tracker, fed with the same decoded segments as the rest of loopcap.

The TCP part is a line-by-line port of Zeek 9.1 (commit a13de64f), which the conformance test pins:

* ``src/packet_analysis/protocol/ip/IPBasedAnalyzer.cc`` (lookup, ``NewConn``, flips at creation) and
  ``tcp/TCP.cc`` (``WantConnection``, checksum validation);
* ``tcp/TCPSessionAdapter.cc`` (``Process``, ``init_endpoint``, ``update_history``, the endpoint state
  machine, ``ConnectionClosed``, ``IsReuse`` and the attempt / expire / delete timers);
* ``analyzer/protocol/tcp/TCP_Endpoint.cc`` (``Size``, ``CheckHistory`` with the SYN-ACK-first flip,
  the log-scaled ``c g t w`` letters) and ``TCP_Reassembler.cc`` + ``src/Reassem.cc`` (block list,
  gaps: ``missed_bytes`` and ``g``);
* ``session/Session.cc`` (inactivity timer), ``udp/UDP.cc``, ``icmp/ICMP.cc``, ``conn-size`` (packet and
  IP byte counts) and ``scripts/base/protocols/conn/main.zeek`` (``conn_state()``, ``set_conn()``).

Timers are kept in network time exactly as Zeek does: before each packet, every timer due at or
before the packet's time fires (with the packet's time), so a 5-tuple that comes back after the
connection was removed starts a new row.  ``service`` (protocol detection) is not computed.

Entry points: :class:`ZeekTracker` (sans-I/O), :func:`zeek_analyze` (records or a file in, rows out),
:class:`ZeekObserver` (the :class:`~analyzers.analysis.Observer` plug-in that adds ``doc["zeek"]``),
:func:`write_conn_log` (Zeek TSV that ``zeek-cut`` and ``zat`` read).
"""

from __future__ import annotations

import hashlib
import heapq
import ipaddress
import operator
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import IO, TYPE_CHECKING, Any, Final

from analyzers.checksum import (
    BAD,
    BAD_IP,
    OK,
    UNVERIFIED,
    ChecksumDecoder,
    checksum_of,
    classify_l4,
)
from analyzers.checksum import PARTIAL as CK_PARTIAL
from analyzers.decode import (
    PROTO_ICMP,
    PROTO_ICMPV6,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    Decoded,
    IcmpError,
    IcmpPacket,
    Malformed,
    TcpSegment,
    UdpDatagram,
    format_ip,
)
from analyzers.pcapfile import CaptureReader, PacketRecord
from analyzers.picklable import fields_reduce, fresh_only, rebuild

if TYPE_CHECKING:  # pragma: no cover
    from analyzers.analysis import Analysis
    from analyzers.tcp import TcpConnection
    from analyzers.udp import UdpConversation

M32: Final = 0xFFFFFFFF
M64: Final = 0xFFFFFFFFFFFFFFFF
NS: Final = 1_000_000_000
TOO_LARGE_SEQ_DELTA: Final = 1048576
#: :meth:`_TcpConn.process` takes its steady path where it can (tests turn it off to compare)
STEADY_PATH = True

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def seconds(ns: int) -> float:
    """``ns / NS`` rounded once, as Python divides two ints.  Spelled as a call: a compiled build
    (mypyc) divides ints as floats, and a time stamp in nanoseconds is past 2**53, so it would be
    rounded twice (1795237369.4725828 instead of 1795237369.472583)."""
    return float(operator.truediv(ns, NS))


# ---------------------------------------------------------------------------------------------
# options

#: UDP ports of the tunnel packet analyzers, registered even in bare mode (base/packet-protocols)
PACKET_PROTOCOL_PORTS: Final[frozenset[tuple[int, str]]] = frozenset(
    (p, "udp") for p in (2123, 2152, 3544, 4754, 4789, 5072, 6081))


def _ports(spec: str) -> frozenset[tuple[int, str]]:
    out: set[tuple[int, str]] = set()
    for item in spec.split():
        num, proto = item.split("/")
        protos = proto.split("+")
        lo, _, hi = num.partition("-")
        for p in range(int(lo), int(hi or lo) + 1):
            for pr in protos:
                out.add((p, pr))
    return frozenset(out)


#: ``likely_server_ports`` of a default (non-bare) ``zeek -r`` run: every base/protocols script's
#: ``Analyzer::register_for_ports`` (Zeek 9.1), plus :data:`PACKET_PROTOCOL_PORTS`
DEFAULT_LIKELY_SERVER_PORTS: Final[frozenset[tuple[int, str]]] = _ports(
    "135/tcp 67/udp 4011/udp 20000/tcp+udp 53/tcp+udp 137/udp 5353/udp 5355/udp 79/tcp 21/tcp 2811/tcp "
    "80/tcp 81/tcp 631/tcp 1080/tcp 3128/tcp 8000/tcp 8080/tcp 8888/tcp 143/tcp 6666-6669/tcp 88/tcp+udp "
    "389/tcp+udp 3268/tcp 502/tcp 1883/tcp 1434/tcp 3306/tcp 123/udp 5432/tcp 443/tcp+udp 1812/udp "
    "3389/tcp+udp 6379/tcp 5060/udp 139/tcp 445/tcp 25/tcp 587/tcp 161/udp 162/udp 22/tcp 465/tcp 563/tcp "
    "585/tcp 614/tcp 636/tcp 989/tcp 990/tcp 992/tcp 993/tcp 995/tcp 5223/tcp 514/tcp+udp 5222/tcp "
    "5269/tcp") | PACKET_PROTOCOL_PORTS

#: Site::private_address_space (base/utils/site.zeek), local by default (private_address_space_is_local)
PRIVATE_ADDRESS_SPACE: Final[tuple[Network, ...]] = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "2002::/24", "10.0.0.0/8", "2002:a00::/24", "100.64.0.0/10", "2002:6440::/26", "127.0.0.0/8",
    "2002:7f00::/24", "169.254.0.0/16", "2002:a9fe::/32", "172.16.0.0/12", "2002:ac10::/28", "192.0.0.0/24",
    "2002:c000::/40", "192.0.2.0/24", "2002:c000:200::/40", "192.168.0.0/16", "2002:c0a8::/32", "198.18.0.0/15",
    "2002:c612::/31", "198.51.100.0/24", "2002:c633:6400::/40", "203.0.113.0/24", "2002:cb00:7100::/40",
    "224.0.0.0/24", "2002:e000::/40", "239.0.0.0/8", "2002:ef00::/24", "240.0.0.0/4", "2002:f000::/20",
    "255.255.255.255/32", "2002:ffff:ffff::/48", "::/128", "::1/128", "64:ff9b:1::/48", "100::/64",
    "2001::/23", "2001:2::/48", "2001:db8::/32", "fc00::/7", "fe80::/10", "fec0::/10"))

#: checksum policies: ``verify`` is Zeek's default (any bad checksum discards the packet), ``ignore``
#: is ``zeek -C``, ``auto`` verifies but accepts offloaded (partial) checksums, as Linux writes them on
#: loopback and for every packet the capturing host sends through an offloading NIC
CHECKSUM_MODES: Final = ("auto", "verify", "ignore")


@dataclass(frozen=True)
class ZeekOptions:
    """What a Zeek run would be configured with (``redef``s and command-line switches)."""

    #: ``likely_server_ports`` as (port, "tcp"|"udp"); bare mode (``-b``) registers only the packet
    #: protocols' UDP ports (:data:`PACKET_PROTOCOL_PORTS`) plus those of the loaded scripts
    likely_server_ports: frozenset[tuple[int, str]] = DEFAULT_LIKELY_SERVER_PORTS
    #: "auto" (default: verify, accept partial checksums), "verify" (Zeek's default), "ignore" (``-C``)
    checksums: str = "auto"
    #: ``ignore_checksums_nets``: packets whose IP source is in one of these are never checked
    ignore_checksums_nets: tuple[Network, ...] = ()
    #: ``Site::local_nets`` (private address space is added unless ``private_address_space_is_local=F``)
    local_nets: tuple[Network, ...] = ()
    private_address_space_is_local: bool = True
    #: ``report_gaps_for_partial``: count content gaps (missed_bytes) on partial connections too
    report_gaps_for_partial: bool = False
    tcp_inactivity_timeout: float = 300.0
    udp_inactivity_timeout: float = 60.0
    icmp_inactivity_timeout: float = 60.0
    tcp_SYN_timeout: float = 5.0
    tcp_session_timer: float = 6.0
    tcp_connection_linger: float = 5.0
    tcp_attempt_delay: float = 5.0
    tcp_close_delay: float = 5.0
    tcp_max_initial_window: int = 16384
    tcp_max_above_hole_without_any_acks: int = 16384
    tcp_excessive_data_without_further_acks: int = 10 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.checksums not in CHECKSUM_MODES:
            raise ValueError(f"checksums must be one of {', '.join(CHECKSUM_MODES)}, not {self.checksums!r}")

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return fields_reduce(self)  # pickled by its fields (see analyzers/picklable.py)


# ---------------------------------------------------------------------------------------------
# conn.log rows

#: conn.log columns and their Zeek types, in Zeek's order
CONN_FIELDS: Final[tuple[tuple[str, str], ...]] = (
    ("ts", "time"), ("uid", "string"), ("id.orig_h", "addr"), ("id.orig_p", "port"), ("id.resp_h", "addr"),
    ("id.resp_p", "port"), ("proto", "enum"), ("service", "string"), ("duration", "interval"),
    ("orig_bytes", "count"), ("resp_bytes", "count"), ("conn_state", "string"), ("local_orig", "bool"),
    ("local_resp", "bool"), ("missed_bytes", "count"), ("history", "string"), ("orig_pkts", "count"),
    ("orig_ip_bytes", "count"), ("resp_pkts", "count"), ("resp_ip_bytes", "count"),
    ("tunnel_parents", "set[string]"), ("ip_proto", "count"))

#: what each conn_state means (conn/main.zeek)
CONN_STATE_MEANING: Final = {
    "S0": "connection attempt seen, no reply",
    "S1": "connection established, not terminated",
    "SF": "normal establishment and termination",
    "REJ": "connection attempt rejected",
    "S2": "established, originator attempted close, no reply from responder",
    "S3": "established, responder attempted close, no reply from originator",
    "RSTO": "established, originator aborted (sent a RST)",
    "RSTR": "responder sent a RST",
    "RSTOS0": "originator sent a SYN followed by a RST, no SYN-ACK from the responder",
    "RSTRH": "responder sent a SYN-ACK followed by a RST, no SYN from the (purported) originator",
    "SH": "originator sent a SYN followed by a FIN, no SYN-ACK from the responder",
    "SHR": "responder sent a SYN-ACK followed by a FIN, no SYN from the originator",
    "OTH": "no SYN seen, just midstream traffic",
}


def _in_nets(addr: bytes, nets: Sequence[Network]) -> bool:
    if not nets:
        return False
    a = ipaddress.ip_address(addr)
    return any(a.version == n.version and a in n for n in nets)


class _LocalNets:
    """:func:`_in_nets` for the rows' local_orig / local_resp, memoized by address (a capture's
    addresses repeat).  One per tracker, whose nets never change: a cache keyed by the nets as well
    hashed every network (Python-level ``ipaddress`` hashes) on every row, 4% of the analysis."""

    __slots__ = ("_memo", "nets")

    def __init__(self, nets: tuple[Network, ...]) -> None:
        self.nets = nets
        self._memo: dict[bytes, bool] = {}

    def __bool__(self) -> bool:
        return bool(self.nets)

    def __call__(self, addr: bytes) -> bool:
        memo = self._memo
        hit = memo.get(addr)
        if hit is None:
            if len(memo) >= 4096:  # so many addresses (a scan?) that memory must not follow them
                memo.clear()
            hit = memo[addr] = _in_nets(addr, self.nets)
        return hit


_B62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _uid(*parts: object) -> str:
    n = int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:12], "big")
    out = []
    for _ in range(17):
        n, r = divmod(n, 62)
        out.append(_B62[r])
    return "C" + "".join(out)


# ---------------------------------------------------------------------------------------------
# timers (network time, as Zeek's TimerMgr: due timers fire before the packet that passes them)

class _Timer:
    __slots__ = ("cancelled", "conn", "fn", "kind", "when")

    def __init__(self, when: int, conn: _Conn, fn: Callable[[int], None], kind: str) -> None:
        self.when = when
        self.conn: _Conn | None = conn
        self.fn: Callable[[int], None] | None = fn
        self.kind = kind
        self.cancelled = False


class _TimerQueue:
    def __init__(self) -> None:
        self.heap: list[tuple[int, int, int, _Timer]] = []
        #: (when, first frame) of the timer firing now, if one is (see :meth:`ZeekTracker.remove`)
        self.firing: tuple[int, int] | None = None
        self._n = 0
        self._cancelled = 0
        self.network_time: int | None = None

    def add(self, timer: _Timer) -> None:
        """Due timers fire in order of time, then of their connection's first frame (then as added):
        an order that each flow shard (analyzers.shardstream) can tell on its own."""
        self._n += 1
        assert timer.conn is not None
        heapq.heappush(self.heap, (timer.when, timer.conn.first_frame, self._n, timer))

    def cancel(self, timer: _Timer) -> None:
        """A timer that will not fire: it lets go of its connection at once (a removed connection must
        not live on until the timer's time comes: the inactivity timer is minutes away), and the heap
        drops cancelled timers when they are half of it."""
        if timer.cancelled:
            return
        timer.cancelled = True
        timer.conn = timer.fn = None
        self._cancelled += 1
        heap = self.heap
        if self._cancelled > 4096 and 2 * self._cancelled > len(heap):
            heap[:] = [e for e in heap if not e[3].cancelled]  # (when, frame, n) still orders them exactly
            heapq.heapify(heap)
            self._cancelled = 0

    def advance(self, t: int) -> None:
        if self.network_time is None or t > self.network_time:
            self.network_time = t
        now = self.network_time
        heap = self.heap
        while heap and heap[0][0] <= now:
            when, first, _, timer = heapq.heappop(heap)
            if timer.cancelled:
                self._cancelled -= 1
                continue
            conn, fn = timer.conn, timer.fn
            assert conn is not None and fn is not None
            if not conn.in_table:
                continue
            conn.remove_timer(timer)
            self.firing = (when, first)
            try:
                fn(now)
            finally:
                self.firing = None


# ---------------------------------------------------------------------------------------------
# connections (common part: Zeek's Connection / Session)

ORIG_BIT: Final = 1
RESP_BIT: Final = 2
#: the "frame" of the removals at the end of the input (see :attr:`_Conn.removed_at`)
FINISHED: Final = 1 << 62


class _Conn:
    """Zeek's Connection: endpoints, history, timers, counters."""

    __slots__ = ("first_frame", "flipped", "hist_seen", "history", "in_table", "inactivity_timeout", "ip_proto", "key",
                 "last_time", "link", "orig_h", "orig_p", "removed_at", "resp_h", "resp_p", "start_time", "streams",
                 "timers", "tracker")
    proto = ""
    #: the row's ip_proto (an ICMP connection's is set per IP version)
    default_ip_proto = 0

    def __init__(self, tracker: ZeekTracker, key: tuple[object, ...], src: bytes, sport: int, dst: bytes,
                 dport: int, t: int, frame: int) -> None:
        self.tracker = tracker
        self.key = key
        self.orig_h, self.orig_p, self.resp_h, self.resp_p = src, sport, dst, dport
        self.start_time = t
        self.last_time = t
        self.first_frame = frame
        self.ip_proto = self.default_ip_proto
        self.history = ""
        self.hist_seen = 0
        self.in_table = True
        self.timers: list[_Timer] = []
        self.inactivity_timeout = 0
        self.flipped = False
        #: loopcap tcp.stream / udp.stream numbers of its packets (a list: nearly always one)
        self.streams: list[int] = []
        #: streaming: what the summaries of its loopcap streams name of its row, set when it is removed
        self.link: dict[str, Any] | None = None
        #: where it was removed: (frame, 0, timer's time, first frame) when a timer removed it, (frame,
        #: 1, 0, first frame) when a packet did, (FINISHED, 2, 0, first frame) at the end of the input;
        #: Zeek logs rows in this order, so flow shards' rows merge by it (analyzers.shardstream)
        self.removed_at: tuple[int, int, int, int] | None = None

    # -- history (Connection::CheckHistory / AddHistory) --------------------------------------
    def check_history(self, mask: int, code: str) -> bool:
        if self.hist_seen & mask == 0:
            self.hist_seen |= mask
            self.history += code
            return False
        return True

    def scaled_history(self, code: str, counter: list[int], idx: int) -> None:
        """Session::ScaledHistoryEntry, base 10: ``counter[idx]`` is the count, ``counter[idx+1]`` the
        next threshold."""
        counter[idx] += 1
        if counter[idx] == counter[idx + 1]:
            self.history += code
            new = counter[idx + 1] * 10
            if new > M32:
                counter[idx] = 0
            else:
                counter[idx + 1] = new

    def flip_roles(self) -> None:
        self.orig_h, self.resp_h = self.resp_h, self.orig_h
        self.orig_p, self.resp_p = self.resp_p, self.orig_p
        self.flipped = not self.flipped
        self.flip_adapter()
        self.history += "^"

    def flip_adapter(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def start(self, network_time: int) -> None:  # pragma: no cover - overridden
        """Install the timers Zeek's session adapter starts with."""
        raise NotImplementedError

    # -- timers -------------------------------------------------------------------------------
    def add_timer(self, when: int, fn: Callable[[int], None], kind: str) -> None:
        if not self.in_table:
            return
        tm = _Timer(when, self, fn, kind)
        self.timers.append(tm)
        self.tracker.timers.add(tm)

    def remove_timer(self, tm: _Timer) -> None:
        if tm in self.timers:
            self.timers.remove(tm)

    def cancel_timers(self, kinds: Iterable[str] | None = None) -> None:
        keep = []
        kk = None if kinds is None else set(kinds)
        for tm in self.timers:
            if kk is None or tm.kind in kk:
                self.tracker.timers.cancel(tm)
            else:
                keep.append(tm)
        self.timers = keep

    def set_inactivity_timeout(self, timeout_ns: int) -> None:
        """Session::SetInactivityTimeout."""
        if timeout_ns == self.inactivity_timeout:
            return
        for tm in self.timers:
            if tm.kind == "inactivity":
                self.tracker.timers.cancel(tm)
                self.timers.remove(tm)
                break
        if timeout_ns:
            self.add_timer(self.last_time + timeout_ns, self._inactivity_timer, "inactivity")
        self.inactivity_timeout = timeout_ns

    def _inactivity_timer(self, t: int) -> None:
        if self.last_time + self.inactivity_timeout <= t:
            self.tracker.remove(self)
            return
        self.add_timer(self.last_time + self.inactivity_timeout, self._inactivity_timer, "inactivity")

    # -- the log row ----------------------------------------------------------------------------
    def sizes(self) -> tuple[int, int]:  # pragma: no cover - overridden
        raise NotImplementedError

    def conn_state(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def packet_counts(self) -> tuple[int, int, int, int]:  # pragma: no cover - overridden
        raise NotImplementedError

    def missed(self) -> int:
        return 0

    def row(self) -> dict[str, Any]:
        duration = self.last_time - self.start_time
        osz, rsz = self.sizes()
        op, ob, rp, rb = self.packet_counts()
        local = self.tracker.local_nets
        return {
            "ts": seconds(self.start_time),
            "uid": _uid(self.start_time, self.proto, self.orig_h.hex(), self.orig_p, self.resp_h.hex(), self.resp_p,
                        self.first_frame),
            "id.orig_h": format_ip(self.orig_h), "id.orig_p": self.orig_p,
            "id.resp_h": format_ip(self.resp_h), "id.resp_p": self.resp_p,
            "proto": self.proto,
            "service": None,
            "duration": duration / NS if duration > 0 else None,
            "orig_bytes": osz if duration > 0 else None,
            "resp_bytes": rsz if duration > 0 else None,
            "conn_state": self.conn_state(),
            "local_orig": local(self.orig_h) if local else None,
            "local_resp": local(self.resp_h) if local else None,
            "missed_bytes": self.missed(),
            "history": self.history or None,
            "orig_pkts": op, "orig_ip_bytes": ob, "resp_pkts": rp, "resp_ip_bytes": rb,
            "tunnel_parents": None,
            "ip_proto": self.ip_proto,
        }


# ---------------------------------------------------------------------------------------------
# TCP: TCP_Endpoint + TCP_Reassembler + TCPSessionAdapter

INACTIVE: Final = 0
SYN_SENT: Final = 1
SYN_ACK_SENT: Final = 2
PARTIAL: Final = 3
ESTABLISHED: Final = 4
CLOSED: Final = 5
RESET: Final = 6
STATE_NAMES: Final = ("TCP_INACTIVE", "TCP_SYN_SENT", "TCP_SYN_ACK_SENT", "TCP_PARTIAL", "TCP_ESTABLISHED",
                      "TCP_CLOSED", "TCP_RESET")
_HANDSHAKE: Final = frozenset((INACTIVE, SYN_SENT, SYN_ACK_SENT))

HIST_SYN_PKT: Final = 0x1
HIST_FIN_PKT: Final = 0x2
HIST_RST_PKT: Final = 0x4
HIST_FIN_RST_PKT: Final = 0x8
HIST_DATA_PKT: Final = 0x10
HIST_ACK_PKT: Final = 0x20
HIST_MULTI_FLAG_PKT: Final = 0x40


def _sdelta(a: int, b: int) -> int:
    """seq_delta: a - b as int32."""
    d = (a - b) & M32
    return d - (1 << 32) if d & 0x80000000 else d


class _Reassembler:
    """TCP_Reassembler over a DataBlockList, tracking sequence ranges only (no bytes)."""

    # slots, here and in the endpoints and connections: a capture holds thousands of them at once
    __slots__ = ("blocks", "did_eof", "endp", "had_gap", "last_reassem_seq", "size", "skip_deliveries", "trim_seq")

    def __init__(self, endp: _Endpoint) -> None:
        self.endp = endp
        self.blocks: list[list[int]] = []  # sorted [seq, upper)
        self.size = 0  # bytes held in blocks
        self.last_reassem_seq = 1
        self.trim_seq = 1
        self.skip_deliveries = False
        self.did_eof = False
        self.had_gap = False

    # -- DataBlockList ------------------------------------------------------------------------
    def _index(self, seq: int) -> int:
        lo, hi = 0, len(self.blocks)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.blocks[mid][0] < seq:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def _put(self, seq: int, upper: int) -> int:
        i = self._index(seq)
        if i < len(self.blocks) and self.blocks[i][0] == seq:  # std::map: key exists, nothing inserted
            return seq
        self.blocks.insert(i, [seq, upper])
        self.size += upper - seq
        return seq

    def _first_at_or_before(self, seq: int) -> int | None:
        # upper_bound(seq): first block with key > seq
        i = self._index(seq + 1)
        if i == len(self.blocks):
            return len(self.blocks) - 1 if self.blocks else None
        if i == 0:
            return None
        return i - 1

    def _insert(self, seq: int, upper: int, hint: int | None = None) -> int:
        """DataBlockList::Insert; returns the key (seq) of the block to start delivery checks from."""
        blocks = self.blocks
        if not blocks:
            return self._put(seq, upper)
        if seq == blocks[-1][1]:
            return self._put(seq, upper)
        if hint is not None:
            it = self._index(hint)
        else:
            f = self._first_at_or_before(seq)
            it = 0 if f is None else f
        while it + 1 < len(blocks) and blocks[it][1] <= seq:
            it += 1
        bseq, bupper = blocks[it]
        if bupper <= seq:
            return self._put(seq, upper)
        if upper <= bseq:
            return self._put(seq, upper)
        if seq < bseq:
            rval = self._put(seq, bseq)
            seq = bseq
        else:
            rval = bseq
        overlap_len = min(upper - seq, bupper - seq)
        if overlap_len < upper - seq:
            seq += overlap_len
            r = self._insert(seq, upper, bseq)
            if rval == bseq:
                rval = r
        return rval

    def _trim(self, seq: int) -> None:
        """DataBlockList::Trim (no old-block list) + SetTrimSeq."""
        if seq > self.last_reassem_seq:
            self._undelivered(seq)
        blocks = self.blocks
        while blocks and blocks[0][1] <= seq:
            first = blocks.pop(0)
            self.size -= first[1] - first[0]
        if blocks and blocks[0][0] == self.last_reassem_seq:
            self._block_inserted(blocks[0][0])
        if seq > self.trim_seq:
            self.trim_seq = seq

    def clear(self) -> None:
        self.blocks.clear()
        self.size = 0

    # -- Reassembler / TCP_Reassembler ----------------------------------------------------------
    def new_block(self, seq: int, length: int) -> None:
        if length == 0:
            return
        upper = seq + length
        if upper <= self.trim_seq:
            return
        if seq < self.trim_seq:
            seq = self.trim_seq
        key = self._insert(seq, upper)
        self._block_inserted(key)

    def _block_inserted(self, key: int) -> None:
        blocks = self.blocks
        i = self._index(key)
        if i >= len(blocks) or blocks[i][0] != key:
            return
        if blocks[i][0] > self.last_reassem_seq or blocks[i][1] <= self.last_reassem_seq:
            return
        while i < len(blocks):
            b = blocks[i]
            if b[0] > self.last_reassem_seq:
                break
            if b[0] == self.last_reassem_seq:
                self.last_reassem_seq += b[1] - b[0]
            i += 1
        e = self.endp
        opts = e.conn.tracker.options
        if (e.no_data_acked() and opts.tcp_max_initial_window
                and e.size() > opts.tcp_max_initial_window):
            self._trim(self.last_reassem_seq)

    def _gap(self, seq: int, length: int) -> None:
        e = self.endp
        clean = e.is_clean() and e.peer.is_clean()
        if clean:
            e.conn.scaled_history("G" if e.is_orig else "g", e.counters, 6)
        if e.conn.tracker.options.report_gaps_for_partial or clean:
            e.conn.missed_bytes += length
        self.had_gap = True

    def _undelivered(self, up_to: int) -> None:
        if up_to <= 2 and self.endp.conn.is_partial:
            return
        if not self.skip_deliveries:
            blocks = self.blocks
            i = 0
            while i < len(blocks):
                bseq = blocks[i][0]
                if bseq < self.last_reassem_seq:
                    i += 1
                    continue
                if bseq >= up_to:
                    break
                gap_len = bseq - self.last_reassem_seq
                self._gap(self.last_reassem_seq, gap_len)
                self.last_reassem_seq += gap_len
                self._block_inserted(bseq)
                i = 0
            if up_to > self.last_reassem_seq:
                self._gap(self.last_reassem_seq, up_to - self.last_reassem_seq)
        if up_to > self.last_reassem_seq:
            self.last_reassem_seq = up_to

    def data_sent(self, seq: int, length: int) -> None:
        if self.skip_deliveries:
            return
        e = self.endp
        ack = e.to_relative(e.ack_seq, e.ack_wraps) & M64
        upper = seq + length
        if seq < ack:
            if upper <= ack:
                return
            amount = ack - seq
            seq += amount
            length -= amount
        self.new_block(seq, length)
        opts = e.conn.tracker.options
        if e.no_data_acked() and opts.tcp_max_above_hole_without_any_acks and self.blocks and \
                ((self.blocks[-1][1] - self.last_reassem_seq) & M64) > opts.tcp_max_above_hole_without_any_acks:
            self.clear()
            self.skip_deliveries = True
        if opts.tcp_excessive_data_without_further_acks and \
                self.size > opts.tcp_excessive_data_without_further_acks:
            self.clear()
            self.skip_deliveries = True

    def ack_received(self, seq: int) -> None:
        e = self.endp
        if e.fin_cnt > 0 and seq >= e.fin_seq:
            seq = (e.fin_seq - 1) & M64
        if seq <= self.trim_seq:
            return
        self._trim(seq)
        self.check_eof()

    def check_eof(self) -> None:
        e = self.endp
        if not self.did_eof and (e.fin_cnt > 0 or e.state in (CLOSED, RESET)) and not self.data_pending():
            self.did_eof = True
            e.conn.endpoint_eof(e)

    def data_pending(self) -> bool:
        if self.skip_deliveries:
            return False
        e = self.endp
        delivered = (e.start_seq + self.last_reassem_seq) & M64
        last = (e.seq_wraps << 32) + e.last_seq
        if last < delivered:
            return False
        if delivered != ((last - 1) & M64) and delivered != last:
            return True
        return bool(e.state != RESET and e.peer.reasm.blocks)


class _Endpoint:
    """TCP_Endpoint."""

    __deletable__ = ("conn", "peer", "reasm")  # release() deletes them (mypyc compiles only listed deletions)
    __slots__ = ("ack_seq", "ack_wraps", "conn", "counters", "did_close", "fin_cnt", "fin_seq", "hist_last_fin",
                 "hist_last_rst", "hist_last_syn", "ip_bytes", "is_orig", "last_seq", "peer", "pkts", "prev_state",
                 "reasm", "rst_cnt", "seq_wraps", "start_seq", "state")

    def __init__(self, conn: _TcpConn, is_orig: bool) -> None:
        self.conn = conn
        self.is_orig = is_orig
        self.state = INACTIVE
        self.prev_state = INACTIVE
        self.peer: _Endpoint = self
        self.start_seq = 0
        self.last_seq = 0
        self.ack_seq = 0
        self.seq_wraps = 0
        self.ack_wraps = 0
        self.fin_seq = 0
        self.fin_cnt = 0
        self.rst_cnt = 0
        self.did_close = False
        self.hist_last_syn = 0
        self.hist_last_fin = 0
        self.hist_last_rst = 0
        # chk, rxmt, win0, gap: [count, threshold] pairs
        self.counters = [0, 1, 0, 1, 0, 1, 0, 1]
        self.pkts = 0
        self.ip_bytes = 0
        self.reasm = _Reassembler(self)

    def set_state(self, new: int) -> None:
        if new != self.state:
            if new not in _HANDSHAKE and self.state in _HANDSHAKE and self.peer.state in _HANDSHAKE:
                self.conn.set_inactivity_timeout(int(self.conn.tracker.options.tcp_inactivity_timeout * NS))
            self.prev_state = self.state
            self.state = new

    def start_seq32(self) -> int:
        return self.start_seq & M32

    def to_relative(self, seq: int, wraps: int) -> int:
        return (wraps << 32) + seq - self.start_seq

    def no_data_acked(self) -> bool:
        ack = (self.ack_wraps << 32) + self.ack_seq
        return ack in (self.start_seq, self.start_seq + 1)

    def size(self) -> int:
        p = self.peer
        if self.prev_state == SYN_SENT and self.state == RESET and p.state == INACTIVE and not self.no_data_acked():
            return 0
        last64 = (self.seq_wraps << 32) + self.last_seq
        ack64 = (self.ack_wraps << 32) + self.ack_seq
        size = (last64 - self.start_seq) & M64 if last64 > ack64 else (ack64 - self.start_seq) & M64
        if size != 0:
            size -= 1
        if self.fin_cnt > 0 and size != 0:
            size -= 1
        return size

    def is_clean(self) -> bool:
        return self.state == ESTABLISHED or (self.state == CLOSED and self.prev_state == ESTABLISHED)

    def check_history(self, mask: int, code: str) -> bool:
        conn = self.conn
        if code in "AD" and conn.history == "H":
            # a connection that began with a SYN-ACK now sees productive traffic: flip it
            conn.flip_roles()
            conn.history = "^h"
            conn.first_packet_seen |= ORIG_BIT
        if not self.is_orig:
            mask <<= 16
            code = code.lower()
        return conn.check_history(mask, code)

    def add_history(self, code: str) -> None:
        self.conn.history += code if self.is_orig else code.lower()

    def checksum_error(self) -> None:
        self.conn.scaled_history("C" if self.is_orig else "c", self.counters, 0)

    def did_rxmit(self) -> None:
        self.conn.scaled_history("T" if self.is_orig else "t", self.counters, 2)

    def zero_window(self) -> None:
        self.conn.scaled_history("W" if self.is_orig else "w", self.counters, 4)


class _TcpConn(_Conn):
    __slots__ = ("close_deferred", "deferred_gen_event", "first_packet_seen", "is_active", "is_partial", "missed_bytes",
                 "orig", "resp")
    proto = "tcp"
    default_ip_proto = 6

    def __init__(self, tracker: ZeekTracker, key: tuple[object, ...], src: bytes, sport: int, dst: bytes,
                 dport: int, t: int, frame: int) -> None:
        super().__init__(tracker, key, src, sport, dst, dport, t, frame)
        self.orig = _Endpoint(self, True)
        self.resp = _Endpoint(self, False)
        self.orig.peer = self.resp
        self.resp.peer = self.orig
        self.is_active = True
        self.is_partial = False
        self.first_packet_seen = 0
        self.close_deferred = False
        self.deferred_gen_event = False
        self.missed_bytes = 0

    def release(self) -> None:
        """Break the reference cycles (endpoints and their reassemblers point back at it, and at each
        other) of a connection that was removed and logged: a streamed analysis pauses the cyclic
        garbage collector, and it must not keep every connection of the capture."""
        for ep in (self.orig, self.resp):
            del ep.reasm
            del ep.peer
            del ep.conn

    def start(self, network_time: int) -> None:
        """TCPAnalyzer::MakeSessionAdapter: the first expire timer and the (UDP-length!) inactivity
        timeout, raised to tcp_inactivity_timeout once the handshake is over."""
        opts = self.tracker.options
        self.add_timer(network_time + int(opts.tcp_SYN_timeout * NS), self._expire_timer, "expire")
        self.set_inactivity_timeout(int(opts.udp_inactivity_timeout * NS))

    def flip_adapter(self) -> None:
        self.orig, self.resp = self.resp, self.orig
        self.orig.is_orig = not self.orig.is_orig
        self.resp.is_orig = not self.resp.is_orig
        fps = self.first_packet_seen
        self.first_packet_seen = (RESP_BIT if fps & ORIG_BIT else 0) | (ORIG_BIT if fps & RESP_BIT else 0)
        self.is_partial = False

    def is_closed(self) -> bool:
        return self.orig.did_close or self.resp.did_close

    # -- reuse (TCPSessionAdapter::IsReuse) ------------------------------------------------------
    def is_reuse(self, seg: TcpSegment) -> bool:
        flags = seg.flags
        if not flags & TCP_SYN:
            return False
        conn_orig = self.orig
        if flags & TCP_ACK:
            if self.orig.state != INACTIVE:
                return False
            conn_orig = self.resp
        if not self.is_closed():
            if seg.seq == conn_orig.start_seq32():
                return False
            if (not flags & TCP_ACK and conn_orig.state == SYN_ACK_SENT and self.resp.state == INACTIVE
                    and seg.seq == self.resp.start_seq32()):
                return False
        return True

    # -- timers -------------------------------------------------------------------------------
    def _attempt_timer(self, t: int) -> None:
        if not self.is_active:
            return
        if self.orig.state in (SYN_SENT, SYN_ACK_SENT) and self.resp.state == INACTIVE:
            self.is_active = False
            self.tracker.remove(self)

    def _expire_timer(self, t: int) -> None:
        if not self.is_active:
            return
        opts = self.tracker.options
        o, r = self.orig, self.resp
        if self.last_time + int(opts.tcp_connection_linger * NS) < t:
            if (o.did_close or r.did_close) and (
                    (o.did_close and r.did_close) or o.state == RESET or r.state == RESET
                    or o.state == INACTIVE or r.state == INACTIVE):
                self.is_active = False
                self.tracker.remove(self)
                return
            if r.state == INACTIVE and o.state == INACTIVE:
                self.tracker.remove(self)
                return
        self.add_timer(t + int(opts.tcp_session_timer * NS), self._expire_timer, "expire")

    def _delete_timer(self, t: int) -> None:
        self.tracker.remove(self)

    # -- the per-packet processing ------------------------------------------------------------
    def process(self, is_orig: bool, seg: TcpSegment, t: int) -> None:
        """TCPSessionAdapter::Process (``is_orig`` goes stale after a flip, exactly as in Zeek)."""
        flags = seg.flags
        if (flags == 0x10 or flags == 0x18) and self.first_packet_seen == 3 and seg.window and STEADY_PATH \
                and self._steady(self.orig if is_orig else self.resp, seg, t):
            return
        syn = bool(flags & TCP_SYN)
        fin = bool(flags & TCP_FIN)
        rst = bool(flags & TCP_RST)
        ack = bool(flags & TCP_ACK)
        base_seq = seg.seq
        ack_seq = seg.ack
        length = seg.paylen
        endpoint = self.orig if is_orig else self.resp
        peer = endpoint.peer

        self._set_partial_status(syn, ack, endpoint.is_orig)
        seg_len = length + syn + fin - (length if rst else 0)
        one_past = (base_seq + seg_len) & M32
        self._init_endpoint(endpoint, syn, base_seq, one_past, t)
        rel_seq, underflow = self._relative(endpoint, base_seq, endpoint.last_seq, endpoint.seq_wraps)
        self._update_history(syn, fin, rst, ack, endpoint, rel_seq, length)
        # update_window: only the zero-window history letter matters here
        if seg.window == 0 and not rst and endpoint.peer.state != CLOSED and endpoint.state != RESET:
            endpoint.zero_window()
        if not self.orig.did_close or not self.resp.did_close:
            self.last_time = t
        if fin:
            endpoint.fin_cnt += 1
            endpoint.fin_seq = (rel_seq + seg_len) & M64
        if rst:
            endpoint.rst_cnt += 1
        rel_ack = 0
        if ack:
            if peer.state == INACTIVE:
                rel_ack = 1
                a1 = (ack_seq - 1) & M32
                peer.start_seq = a1
                peer.ack_seq = a1
                peer.last_seq = a1
            else:
                rel_ack, ack_under = self._relative(peer, ack_seq, peer.ack_seq, peer.ack_wraps)
                if ack_under:
                    rel_ack = 0
                elif not rst:
                    d = _sdelta(ack_seq, peer.ack_seq)
                    if ack_seq == 0 and d > TOO_LARGE_SEQ_DELTA:
                        pass
                    elif d > 0:
                        if ack_seq < peer.ack_seq:
                            peer.ack_wraps += 1
                        peer.ack_seq = ack_seq
        delta_last = self._update_last_seq(endpoint, one_past, syn, fin, rst, length)
        do_close, gen_event = self._update_state_machine(t, endpoint, peer, base_seq, ack_seq, length, delta_last,
                                                         is_orig, syn, fin, rst, ack)
        if ack:
            peer.reasm.ack_received(rel_ack)
        # CheckPIA_FirstPacket
        if is_orig and not self.first_packet_seen & ORIG_BIT:
            self.first_packet_seen |= ORIG_BIT
        if not is_orig and not self.first_packet_seen & RESP_BIT:
            self.first_packet_seen |= RESP_BIT
        rel_data_seq = (rel_seq + 1) & M64 if syn else rel_seq
        if length > 0 and not rst and not underflow and not seg.caplen_short:
            endpoint.reasm.data_sent(rel_data_seq, length)
        endpoint.reasm.check_eof()
        if do_close:
            self._connection_closed(endpoint, peer, gen_event)

    def _steady(self, e: _Endpoint, seg: TcpSegment, t: int) -> bool:
        """:meth:`process` for the common case, an ACK or PSH+ACK segment with a window, in order or a
        pure ACK, on a connection established both ways whose history has seen such packets, before
        any sequence wraps: what :meth:`process` would do, without its general steps.  Returns False
        (having changed nothing) for anything else; the caller then takes the general path."""
        peer = e.peer
        if e.state != ESTABLISHED or peer.state != ESTABLISHED or e.seq_wraps or peer.ack_wraps:
            return False
        length = seg.paylen
        bit = HIST_DATA_PKT if length else HIST_ACK_PKT
        if not self.hist_seen & (bit if e.is_orig else bit << 16):
            return False  # a new history letter (so also the flip of a connection whose history is "H")
        seq = seg.seq
        last = e.last_seq
        rel_seq = _sdelta(seq, e.start_seq & M32)
        one_past = (seq + length) & M32
        d_last = _sdelta(one_past, last)
        if rel_seq < 0 or (length and d_last <= 0) or (d_last > 0 and one_past < last):
            # below the start (underflow), a retransmission, or the sequence number wraps (then the
            # segment's start wrapped too, or it would not be ahead of last_seq)
            return False
        ack = seg.ack
        peer_ack = peer.ack_seq
        d_ack = _sdelta(ack, peer_ack)
        rel_ack = _sdelta(ack, peer.start_seq & M32)
        if (d_ack > 0 and ack < peer_ack) or rel_ack < 0 or ack == 0:
            return False  # the acknowledgement wraps, underflows or is zero
        if not self.orig.did_close or not self.resp.did_close:
            self.last_time = t
        if d_ack > 0:
            peer.ack_seq = ack
        if d_last > 0:
            e.last_seq = one_past
        peer.reasm.ack_received(rel_ack)
        if length and not seg.caplen_short:
            e.reasm.data_sent(rel_seq, length)
        e.reasm.check_eof()
        return True

    def _set_partial_status(self, syn: bool, ack: bool, is_orig: bool) -> None:
        if is_orig:
            if not self.first_packet_seen & ORIG_BIT:
                self.is_partial = not syn or ack
        elif not self.first_packet_seen & RESP_BIT and not self.is_partial:
            self.is_partial = not syn

    @staticmethod
    def _init_endpoint(e: _Endpoint, syn: bool, first: int, last: int, t: int) -> None:
        st = e.state
        if st == INACTIVE:
            if syn:
                e.ack_seq = first
                e.start_seq = first
            else:
                e.ack_seq = (first - 1) & M32
                e.start_seq = (first - 1) & M32
                last = first
            e.last_seq = last
        elif st in (SYN_SENT, SYN_ACK_SENT):
            if syn and first != e.start_seq32():
                e.start_seq = first
                e.ack_seq = first
                e.last_seq = last
        elif st in (ESTABLISHED, PARTIAL):
            if syn:
                e.start_seq = first
                e.ack_seq = first
                e.last_seq = last
        elif st == RESET and syn and e.prev_state == INACTIVE:
            e.start_seq = first
            e.ack_seq = first
            e.last_seq = last

    @staticmethod
    def _relative(e: _Endpoint, cur: int, last: int, wraps: int) -> tuple[int, bool]:
        """get_relative_seq: (uint64 result, underflow)."""
        delta = _sdelta(cur, last)
        if delta < 0:
            if wraps and cur > last:
                wraps -= 1
        elif delta > 0 and cur < last:
            wraps += 1
        if wraps == 0:
            d = _sdelta(cur, e.start_seq32())
            return d & M64, d < 0
        return e.to_relative(cur, wraps) & M64, False

    @staticmethod
    def _update_history(syn: bool, fin: bool, rst: bool, ack: bool, e: _Endpoint, rel_seq: int, length: int) -> None:
        bits = syn + fin + rst
        if bits > 1:
            if fin and rst:
                e.check_history(HIST_FIN_RST_PKT, "I")
            else:
                e.check_history(HIST_MULTI_FLAG_PKT, "Q")
        elif bits == 1:
            if syn:
                code = "H" if ack else "S"
                if e.check_history(HIST_SYN_PKT, code) and rel_seq != e.hist_last_syn:
                    e.add_history(code)
                e.hist_last_syn = rel_seq
            if fin:
                end = (rel_seq + length) & M64
                if e.check_history(HIST_FIN_PKT, "F") and end != e.hist_last_fin:
                    e.add_history("F")
                e.hist_last_fin = end
            if rst:
                if e.check_history(HIST_RST_PKT, "R") and rel_seq != e.hist_last_rst:
                    e.add_history("R")
                e.hist_last_rst = rel_seq
        elif length:
            e.check_history(HIST_DATA_PKT, "D")
        elif ack:
            e.check_history(HIST_ACK_PKT, "A")

    @staticmethod
    def _update_last_seq(e: _Endpoint, last: int, syn: bool, fin: bool, rst: bool, length: int) -> int:
        delta = _sdelta(last, e.last_seq)
        # (no nested function: compiled, each call's would be a reference cycle left to the collector)
        if (syn or rst) and (delta > TOO_LARGE_SEQ_DELTA or delta < -TOO_LARGE_SEQ_DELTA):
            pass
        elif (fin and e.last_seq == (e.start_seq32() + 1) & M32) or (e.state != RESET and delta > 0):
            if last < e.last_seq:
                e.seq_wraps += 1
            e.last_seq = last
        elif e.state == RESET:
            pass
        elif delta <= 0 and length > 0:
            e.did_rxmit()
        return delta

    def _update_state_machine(self, t: int, e: _Endpoint, peer: _Endpoint, base_seq: int, ack_seq: int,
                              length: int, delta_last: int, is_orig: bool, syn: bool, fin: bool, rst: bool,
                              ack: bool) -> tuple[bool, bool]:
        do_close = gen_event = False
        st = e.state
        if st == INACTIVE:
            if syn:
                if is_orig:
                    e.set_state(SYN_ACK_SENT if ack else SYN_SENT)
                    opts = self.tracker.options
                    if opts.tcp_attempt_delay:
                        self.add_timer(t + int(opts.tcp_attempt_delay * NS), self._attempt_timer, "attempt")
                else:
                    if ack:
                        pass
                    elif peer.state == SYN_ACK_SENT and base_seq == e.start_seq32():
                        # SYN/SYN-ACK reversal
                        self.is_partial = False
                        self.flip_roles()
                        peer.set_state(ESTABLISHED)
                        self.first_packet_seen |= ORIG_BIT
                    if peer.state == SYN_SENT:
                        peer.set_state(ESTABLISHED)
                    e.set_state(ESTABLISHED)
            if fin:
                e.set_state(CLOSED)
                do_close = gen_event = True
            if rst:
                e.set_state(RESET)
                if is_orig:
                    is_reject = peer.state == ESTABLISHED
                else:
                    is_reject = peer.state in (SYN_SENT, SYN_ACK_SENT)
                do_close = True
                gen_event = not is_reject
            if e.state == INACTIVE:
                if not is_orig and length == 0 and self.orig.state == SYN_SENT:
                    pass
                elif ack and peer.state == ESTABLISHED:
                    e.set_state(ESTABLISHED)
                    self.is_partial = False
                    self.first_packet_seen |= ORIG_BIT if is_orig else RESP_BIT
                else:
                    e.set_state(PARTIAL)
        elif st in (SYN_SENT, SYN_ACK_SENT):
            if fin:
                e.set_state(CLOSED)
                do_close = gen_event = True
            if rst:
                e.set_state(RESET)
                self.is_active = False  # ConnectionReset
                do_close = True
        elif st in (ESTABLISHED, PARTIAL):
            if syn and st == PARTIAL and peer.state == INACTIVE and not ack:
                e.set_state(SYN_SENT)
            if fin and not rst:
                e.set_state(CLOSED)
                if peer.state == RESET and peer.prev_state == CLOSED:
                    peer.set_state(CLOSED)
                do_close = gen_event = True
            if rst:
                e.set_state(RESET)
                do_close = True
                if peer.state != RESET or peer.prev_state != ESTABLISHED:
                    self.is_active = False  # ConnectionReset
        elif st == CLOSED and rst and e.peer.state != CLOSED:
            e.set_state(RESET)
            if not e.did_close:
                do_close = True
        return do_close, gen_event

    def _connection_closed(self, e: _Endpoint, peer: _Endpoint, gen_event: bool) -> None:
        if e.reasm.data_pending():
            self.close_deferred = True
            if not self.deferred_gen_event:
                self.deferred_gen_event = gen_event
            return
        self.close_deferred = False
        if e.did_close:
            return
        e.did_close = True
        opts = self.tracker.options
        if e.state == RESET or peer.did_close or peer.state == INACTIVE:
            if e.prev_state != INACTIVE or peer.state != INACTIVE:
                if self.deferred_gen_event:
                    gen_event = True
                    self.deferred_gen_event = False
                if gen_event:
                    self.is_active = False  # ConnectionFinished
            self.cancel_timers(("expire", "attempt", "delete"))  # the analyzer's timers
            self.add_timer(self.last_time + int(opts.tcp_close_delay * NS), self._delete_timer, "delete")
        elif e.prev_state != INACTIVE:
            self.add_timer(self.last_time + int(opts.tcp_session_timer * NS), self._expire_timer, "expire")

    def endpoint_eof(self, e: _Endpoint) -> None:
        if self.close_deferred:
            self._connection_closed(e, e.peer, self.deferred_gen_event)
            self.close_deferred = False

    # -- row ----------------------------------------------------------------------------------
    def sizes(self) -> tuple[int, int]:
        return self.orig.size(), self.resp.size()

    def packet_counts(self) -> tuple[int, int, int, int]:
        return self.orig.pkts, self.orig.ip_bytes, self.resp.pkts, self.resp.ip_bytes

    def missed(self) -> int:
        return self.missed_bytes

    def conn_state(self) -> str:
        os_, rs = self.orig.state, self.resp.state
        o_inactive = os_ in (INACTIVE, PARTIAL)
        r_inactive = rs in (INACTIVE, PARTIAL)
        if rs == RESET:
            if os_ in (SYN_SENT, SYN_ACK_SENT) or (os_ == RESET and self.orig.size() == 0 and self.resp.size() == 0):
                return "REJ"
            return "RSTRH" if o_inactive else "RSTR"
        if os_ == RESET:
            if r_inactive:
                h = self.history
                if h.startswith("^"):
                    h = h[1:]
                # /\^?S[^HAFGIQ]*R.*/ (Zeek's == on a pattern anchors it)
                if h.startswith("S"):
                    for ch in h[1:]:
                        if ch == "R":
                            return "RSTOS0"
                        if ch in "HAFGIQ":
                            break
                return "OTH"
            return "RSTO"
        if rs == CLOSED and os_ == CLOSED:
            return "SF"
        if os_ == CLOSED:
            return "SH" if r_inactive else "S2"
        if rs == CLOSED:
            return "SHR" if o_inactive else "S3"
        if os_ == SYN_SENT and rs == INACTIVE:
            return "S0"
        if os_ == ESTABLISHED and rs == ESTABLISHED:
            return "S1"
        return "OTH"


# ---------------------------------------------------------------------------------------------
# UDP and ICMP

class _UdpConn(_Conn):
    __slots__ = ("chk", "counts", "length")
    proto = "udp"
    default_ip_proto = 17

    def __init__(self, tracker: ZeekTracker, key: tuple[object, ...], src: bytes, sport: int, dst: bytes,
                 dport: int, t: int, frame: int) -> None:
        super().__init__(tracker, key, src, sport, dst, dport, t, frame)
        self.length = [-1, -1]  # request_len / reply_len (orig, resp); -1: inactive
        self.counts = [0, 0, 0, 0]  # orig pkts, orig ip bytes, resp pkts, resp ip bytes
        self.chk = [0, 1, 0, 1]  # orig C count/threshold, resp c count/threshold

    def start(self, network_time: int) -> None:
        self.set_inactivity_timeout(int(self.tracker.options.udp_inactivity_timeout * NS))

    def flip_adapter(self) -> None:
        self.length.reverse()
        self.counts = [self.counts[2], self.counts[3], self.counts[0], self.counts[1]]

    def sizes(self) -> tuple[int, int]:
        return max(self.length[0], 0), max(self.length[1], 0)

    def packet_counts(self) -> tuple[int, int, int, int]:
        c = self.counts
        return c[0], c[1], c[2], c[3]

    def conn_state(self) -> str:
        o, r = self.length[0] >= 0, self.length[1] >= 0
        if o:
            return "SF" if r else "S0"
        return "SHR" if r else "OTH"


class _IcmpConn(_UdpConn):
    __slots__ = ()
    proto = "icmp"
    default_ip_proto = 1

    def start(self, network_time: int) -> None:
        self.set_inactivity_timeout(int(self.tracker.options.icmp_inactivity_timeout * NS))

    def conn_state(self) -> str:
        return "OTH"


def icmp_counterpart(version: int, itype: int, code: int) -> tuple[int, bool]:
    """ICMP4_counterpart / ICMP6_counterpart: (the responder "port", one-way?)."""
    pairs4 = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 9: 10, 17: 18, 18: 17}
    pairs6 = {128: 129, 129: 128, 133: 134, 134: 133, 135: 136, 136: 135, 130: 131, 131: 130, 139: 140,
              140: 139, 144: 145, 145: 144}
    table = pairs4 if version == 4 else pairs6
    if itype in table:
        return table[itype], False
    return code, True


# ---------------------------------------------------------------------------------------------
# the tracker

@dataclass
class ChecksumReport:
    """What the checksum policy did to the packets the Zeek view saw."""

    mode: str
    verified: bool = False  # the decoder classified checksums at all
    discarded_bad_ip: int = 0  # bad IPv4 header checksum: dropped before any connection (Zeek: no trace)
    discarded_bad: int = 0  # bad TCP/UDP/ICMP checksum: not counted, ``C``/``c`` in the history
    discarded_partial: int = 0  # offloaded (partial) checksums rejected (mode "verify" only)
    accepted_partial: int = 0  # offloaded (partial) checksums accepted (mode "auto")
    ignored_nets: int = 0  # not checked because the source is in ignore_checksums_nets

    @property
    def discarded(self) -> int:
        return self.discarded_bad_ip + self.discarded_bad + self.discarded_partial

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "verified": self.verified, "discarded": self.discarded,
                "discarded_bad_ip_header": self.discarded_bad_ip, "discarded_bad_checksum": self.discarded_bad,
                "discarded_partial_checksum": self.discarded_partial, "accepted_partial_checksum": self.accepted_partial,
                "not_checked_ignore_nets": self.ignored_nets}

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return fields_reduce(self)  # pickled by its fields (see analyzers/picklable.py)


class ZeekTracker:
    """Zeek's session table for TCP, UDP and ICMP: feed packets in capture order, read rows.

    Sans-I/O: :meth:`advance` moves network time (call it for every frame, as Zeek's timers run on
    every packet), :meth:`tcp` / :meth:`udp` / :meth:`icmp` process one packet each (and advance time
    themselves), :meth:`finish` flushes what is left, as Zeek does at the end of a trace, and returns
    every row in the order Zeek would log them (removal order, then the rest by first packet)."""

    def __init__(self, options: ZeekOptions | None = None) -> None:
        self.options = options or ZeekOptions()
        self.timers = _TimerQueue()
        self.table: dict[tuple[object, ...], _Conn] = {}
        self.removed: list[_Conn] = []
        #: the frame being processed (removals are keyed by it, see :meth:`remove`)
        self.frame = 0
        self.checksums = ChecksumReport(self.options.checksums)
        nets = list(self.options.local_nets)
        if self.options.private_address_space_is_local:
            nets.extend(PRIVATE_ADDRESS_SPACE)
        self.local_nets = _LocalNets(tuple(nets))
        self._finished: list[dict[str, Any]] | None = None
        self._finished_conns: list[_Conn] = []
        #: streaming: each connection is handed here when it is removed (its row is final then), and
        #: not kept in :attr:`removed`
        self.on_remove: Callable[[_Conn], None] | None = None

    # -- time and removal ---------------------------------------------------------------------
    def advance(self, ts_ns: int, frame: int | None = None) -> None:
        """Network time moves to ``ts_ns`` at ``frame`` (default: the frame being processed)."""
        if frame is not None:
            self.frame = frame
        self.timers.advance(ts_ns)

    def remove(self, conn: _Conn) -> None:
        if not conn.in_table:
            return
        conn.in_table = False
        firing = self.timers.firing
        conn.removed_at = ((self.frame, 0, *firing) if firing is not None and firing[1] == conn.first_frame
                           else (self.frame, 1, 0, conn.first_frame))
        conn.cancel_timers()
        if self.table.get(conn.key) is conn:
            del self.table[conn.key]
        if self.on_remove is not None:
            self.on_remove(conn)
        else:
            self.removed.append(conn)

    # -- checksum policy ----------------------------------------------------------------------
    def _verdict(self, status: str | None, src: bytes) -> str:
        """"ok", "drop" (bad IP header: no session at all) or "bad" (counted as a checksum error)."""
        mode = self.options.checksums
        if status is None or mode == "ignore" or status in (OK, UNVERIFIED) or status == "zero":
            return "ok"
        self.checksums.verified = True
        if self.options.ignore_checksums_nets and _in_nets(src, self.options.ignore_checksums_nets):
            self.checksums.ignored_nets += 1
            return "ok"
        if status == BAD_IP:
            self.checksums.discarded_bad_ip += 1
            return "drop"
        if status == CK_PARTIAL:
            if mode == "auto":
                self.checksums.accepted_partial += 1
                return "ok"
            self.checksums.discarded_partial += 1
            return "bad"
        if status == BAD:
            self.checksums.discarded_bad += 1
            return "bad"
        return "ok"

    def _likely(self, port: int, proto: str) -> bool:
        return (port, proto) in self.options.likely_server_ports

    def _new(self, cls: type[_Conn], key: tuple[object, ...], src: bytes, sport: int, dst: bytes, dport: int,
             t: int, frame: int, flip: bool) -> _Conn:
        conn = cls(self, key, src, sport, dst, dport, t, frame)
        if flip and not (len(dst) == 4 and dst == b"\xff\xff\xff\xff"):
            conn.orig_h, conn.resp_h = conn.resp_h, conn.orig_h
            conn.orig_p, conn.resp_p = conn.resp_p, conn.orig_p
            conn.flipped = True
            conn.history += "^"  # no adapter yet: only the addresses turn around
        self.table[key] = conn
        assert self.timers.network_time is not None
        conn.start(self.timers.network_time)
        return conn

    # -- TCP ----------------------------------------------------------------------------------
    def tcp(self, seg: TcpSegment, status: str | None = None, *, header_only: bool = False) -> _Conn | None:
        """One TCP segment (``status``: its checksum classification, see analyzers.checksum; None when
        not verified).  ``header_only``: a segment whose header could be read but not used (Zeek creates
        the connection, then drops the packet).  Returns the Zeek connection it went to."""
        t = seg.ts_ns
        # self.advance(t, seg.frame), inlined: most segments move time on and find no timer due
        self.frame = seg.frame
        timers = self.timers
        now = timers.network_time
        if now is None or t > now:
            timers.network_time = now = t
        heap = timers.heap
        if heap and heap[0][0] <= now:
            timers.advance(t)
        if status is None:
            status = checksum_of(seg)
        verdict = "ok" if header_only else self._verdict(status, seg.src)
        if verdict == "drop":
            return None
        a = (seg.src, seg.sport)
        b = (seg.dst, seg.dport)
        key = ("tcp", a, b) if a <= b else ("tcp", b, a)
        conn = self.table.get(key)
        if conn is not None and not header_only:
            assert isinstance(conn, _TcpConn)
            if conn.is_reuse(seg):
                self.remove(conn)
                conn = None
        if conn is None:
            flags = seg.flags
            flip = False
            if (not flags & TCP_SYN or flags & TCP_ACK) and self._likely(seg.sport, "tcp"):
                if self._likely(seg.dport, "tcp"):
                    flip = not flags & TCP_SYN and seg.sport < seg.dport
                else:
                    flip = True
            conn = self._new(_TcpConn, key, seg.src, seg.sport, seg.dst, seg.dport, t, seg.frame, flip)
        assert isinstance(conn, _TcpConn)
        if header_only:
            return conn
        is_orig = seg.src == conn.orig_h and seg.sport == conn.orig_p
        if verdict == "bad":
            (conn.orig if is_orig else conn.resp).checksum_error()
            return conn
        sender_before = conn.orig if is_orig else conn.resp
        conn.process(is_orig, seg, t)
        sender_before.pkts += 1  # ConnSize counts on the sender, whatever its role became
        sender_before.ip_bytes += seg.ip_bytes
        return conn

    # -- UDP ----------------------------------------------------------------------------------
    def udp(self, dg: UdpDatagram, status: str | None = None) -> _Conn | None:
        t = dg.ts_ns
        self.advance(t, dg.frame)
        if status is None:
            status = checksum_of(dg)
        verdict = self._verdict(status, dg.src)
        if verdict == "drop":
            return None
        a = (dg.src, dg.sport)
        b = (dg.dst, dg.dport)
        key = ("udp", *((a, b) if a <= b else (b, a)))
        conn = self.table.get(key)
        if conn is None:
            flip = self._likely(dg.sport, "udp") and not self._likely(dg.dport, "udp")
            conn = self._new(_UdpConn, key, dg.src, dg.sport, dg.dst, dg.dport, t, dg.frame, flip)
        assert isinstance(conn, _UdpConn)
        is_orig = dg.src == conn.orig_h and dg.sport == conn.orig_p
        if verdict == "bad":
            if is_orig:
                conn.scaled_history("C", conn.chk, 0)
            else:
                conn.scaled_history("c", conn.chk, 2)
            return conn
        conn.last_time = t
        d = 0 if is_orig else 1
        conn.check_history(1 if is_orig else 2, "D" if is_orig else "d")
        ulen = dg.length - 8
        conn.length[d] = ulen if conn.length[d] < 0 else conn.length[d] + ulen
        conn.counts[2 * d] += 1
        conn.counts[2 * d + 1] += dg.ip_bytes
        return conn

    # -- ICMP ---------------------------------------------------------------------------------
    def icmp(self, pkt: IcmpPacket) -> _Conn | None:
        t = pkt.ts_ns
        self.advance(t, pkt.frame)
        verdict = self._verdict(pkt.checksum, pkt.src)
        if verdict == "drop":
            return None
        counter, one_way = icmp_counterpart(pkt.version, pkt.type, pkt.code)
        a = (pkt.src, pkt.type)
        b = (pkt.dst, counter)
        proto = "icmp" if pkt.version == 4 else "icmp6"
        key = (proto, a, b) if one_way or a <= b else (proto, b, a)
        conn = self.table.get(key)
        if conn is None:
            conn = self._new(_IcmpConn, key, pkt.src, pkt.type, pkt.dst, counter, t, pkt.frame, False)
            conn.ip_proto = 1 if pkt.version == 4 else 58
        assert isinstance(conn, _IcmpConn)
        if verdict == "bad":
            return conn
        is_orig = pkt.src == conn.orig_h and pkt.type == conn.orig_p
        conn.last_time = t
        d = 0 if is_orig else 1
        ln = pkt.length - 8
        conn.length[d] = ln if conn.length[d] < 0 else conn.length[d] + ln
        if pkt.whole:
            conn.counts[2 * d] += 1
            conn.counts[2 * d + 1] += pkt.ip_bytes
        return conn

    # -- end of input -------------------------------------------------------------------------
    def finish(self) -> list[dict[str, Any]]:
        """Flush every connection still in the table and return all rows (idempotent)."""
        if self._finished is None:
            rest = sorted(self.table.values(), key=lambda c: c.first_frame)
            for c in rest:
                c.in_table = False
                c.removed_at = (FINISHED, 2, 0, c.first_frame)
                c.cancel_timers()
            self.table.clear()
            if self.on_remove is not None:  # streaming: the rest go where the removed ones went
                for c in rest:
                    self.on_remove(c)
                rest = []
            self._finished_conns = self.removed + rest
            self._finished = [c.row() for c in self._finished_conns]
        return self._finished

    @property
    def connections(self) -> list[_Conn]:
        """The connections in row order (after :meth:`finish`)."""
        self.finish()
        return self._finished_conns


# ---------------------------------------------------------------------------------------------
# decoding: checksums and ICMP messages as Zeek sees them

class ZeekDecoder(ChecksumDecoder):
    """The decoder behind the Zeek view: checksums classified (:class:`ChecksumDecoder`; PPP, PPPoE and
    MPLS frames are opened by every decoder), and ICMP messages returned as :class:`IcmpPacket` (ICMP
    errors stay :class:`~analyzers.decode.IcmpError`, for loopcap's stream numbering; their Zeek view is
    kept in :attr:`last_icmp`)."""

    def __init__(self) -> None:
        super().__init__()
        self.last_icmp: IcmpPacket | None = None

    def _l4(self, frame: int, ts_ns: int, version: int, src: bytes, dst: bytes, proto: int, seg: bytes,
            wire_len: int, ip_bytes: int, frag_frames: tuple[int, ...]) -> Decoded:
        res = super()._l4(frame, ts_ns, version, src, dst, proto, seg, wire_len, ip_bytes, frag_frames)
        if ((proto == PROTO_ICMP and version == 4) or (proto == PROTO_ICMPV6 and version == 6)) and len(seg) >= 8:
            status = BAD_IP if not self._ip_ok else classify_l4(version, src, dst, proto, seg, wire_len)
            pkt = IcmpPacket(frame, ts_ns, version, src, dst, seg[0], seg[1], wire_len, ip_bytes,
                             len(seg) >= wire_len, status)
            if isinstance(res, IcmpError):
                self.last_icmp = pkt
                return res
            return pkt
        return res

    def take_icmp(self, frame: int) -> IcmpPacket | None:
        pkt = self.last_icmp
        self.last_icmp = None
        return pkt if pkt is not None and pkt.frame == frame else None


# ---------------------------------------------------------------------------------------------
# drivers

@dataclass
class ZeekLog:
    """The result of :func:`zeek_analyze`: conn.log rows and the checksum report."""

    rows: list[dict[str, Any]]
    checksums: ChecksumReport
    first_ts: int | None = None
    last_ts: int | None = None
    connections: list[Any] = field(default_factory=list, repr=False)


def zeek_analyze(source: Iterable[PacketRecord] | str | os.PathLike[str],
                 options: ZeekOptions | None = None) -> ZeekLog:
    """Run the Zeek view over capture records (or a capture file): every TCP, UDP and ICMP connection
    as ``zeek -r`` would log it with ``options``."""
    if isinstance(source, (str, os.PathLike)):
        with CaptureReader.open(source) as reader:
            return zeek_analyze(reader, options)
    dec = ZeekDecoder()
    tr = ZeekTracker(options)
    first: int | None = None
    last: int | None = None
    for rec in source:
        ts = rec.ts_ns
        if first is None:
            first = ts
        last = ts
        x = dec.decode(rec.frame, ts, rec.linktype, rec.data, rec.wirelen)
        tr.advance(ts, rec.frame)
        if isinstance(x, TcpSegment):
            tr.tcp(x)
        elif isinstance(x, UdpDatagram):
            tr.udp(x)
        elif isinstance(x, IcmpPacket):
            tr.icmp(x)
        elif isinstance(x, IcmpError):
            pkt = dec.take_icmp(rec.frame)
            if pkt is not None:
                tr.icmp(pkt)
        elif isinstance(x, Malformed) and isinstance(x.partial, TcpSegment):
            tr.tcp(x.partial, header_only=True)
    rows = tr.finish()
    return ZeekLog(rows, tr.checksums, first, last, tr.connections)


class ZeekObserver:
    """The Zeek view as an :class:`~analyzers.analysis.Observer`: it sees the segments the analysis
    decodes and contributes ``doc["zeek"]`` (the conn.log rows), ``doc["zeek_checksums"]`` and, for each
    ``doc["tcp"][i]`` / ``doc["udp"][i]``, a ``zeek`` sub-dict naming the row(s) its packets went to.

    Checksums are verified only if the analysis decodes with :meth:`make_decoder` (a
    :class:`ZeekDecoder`; it also opens PPP / PPPoE / MPLS frames and reports ICMP messages); with the
    plain decoder the checksum mode acts as ``ignore`` and ICMP has no rows."""

    def __init__(self, options: ZeekOptions | None = None) -> None:
        self.tracker = ZeekTracker(options)
        self.decoder: ZeekDecoder | None = None
        self._tcp_streams: dict[int, list[_Conn]] = {}
        self._udp_streams: dict[int, list[_Conn]] = {}
        # streaming (see start_streaming)
        self._rows: RowSpool | None = None
        #: a flow shard's streaming: the file its rows go to (see :func:`merged_rows`)
        self.rows_path: str | None = None
        self._ready: Callable[[str, int], None] | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (into another process's analysis options) as its configuration."""
        tr = self.tracker
        fresh_only(self, not (tr.table or tr.removed or self._tcp_streams or self._udp_streams or self._rows))
        return rebuild, (ZeekObserver, (tr.options,), {"rows_path": self.rows_path})

    def make_decoder(self) -> ZeekDecoder:
        """A decoder for the analysis to use (``AnalysisOptions.decoder_factory``)."""
        self.decoder = ZeekDecoder()
        return self.decoder

    @staticmethod
    def _note(table: dict[int, list[_Conn]], stream: int, conn: _Conn | None) -> None:
        if conn is None:
            return
        lst = table.get(stream)
        if lst is None:
            table[stream] = [conn]
        elif conn not in lst:
            lst.append(conn)
        else:
            return
        conn.streams.append(stream)  # (a stream lists a connection exactly when the connection lists it)

    def on_tcp(self, conn: TcpConnection, seg: TcpSegment) -> None:
        self._note(self._tcp_streams, conn.stream, self.tracker.tcp(seg))

    def on_udp(self, conv: UdpConversation, dg: UdpDatagram) -> None:
        self._note(self._udp_streams, conv.stream, self.tracker.udp(dg))

    def on_other(self, frame: int, ts_ns: int, result: object) -> None:
        self.tracker.advance(ts_ns, frame)
        if isinstance(result, IcmpPacket):
            self.tracker.icmp(result)
        elif isinstance(result, IcmpError) and self.decoder is not None:
            pkt = self.decoder.take_icmp(frame)
            if pkt is not None:
                self.tracker.icmp(pkt)
        elif isinstance(result, Malformed) and isinstance(result.partial, TcpSegment):
            self.tracker.tcp(result.partial, header_only=True)

    def on_skip(self, frame: int, ts_ns: int) -> None:
        """Flow shards: a packet another shard analyzes still moves network time here (Zeek's timers
        run on every packet), so that each connection is removed where one process would remove it."""
        nt = self.tracker.timers.network_time
        if nt is None or ts_ns > nt:
            self.tracker.advance(ts_ns, frame)

    def rows(self) -> list[dict[str, Any]]:
        return self.tracker.finish()

    # -- streaming (analyzers.streaming): rows written as Zeek removes connections ------------------
    def start_streaming(self, ready: Callable[[str, int], None]) -> None:
        """Write each row as soon as its connection is removed (Zeek logs it then too) and forget the
        connection once the loopcap streams it links to are written; ``ready(kind, stream)`` is called
        when a stream that :meth:`waiting` held back may be written now.  With :attr:`rows_path` set
        (a flow shard), the rows go there, each after its :attr:`_Conn.removed_at`."""
        self._rows = RowSpool(self.rows_path)
        self._ready = ready
        self.tracker.on_remove = self._removed

    def _removed(self, conn: _Conn) -> None:
        assert self._rows is not None and self._ready is not None
        row = conn.row()
        self._rows.add(row, conn.removed_at)
        conn.link = {k: row[k] for k in _LINK_FIELDS}
        if isinstance(conn, _TcpConn):
            conn.release()  # removed connections get no more packets (removal happens between them)
        if conn.streams:
            kind = "tcp" if isinstance(conn, _TcpConn) else "udp"
            for stream in sorted(conn.streams):
                self._ready(kind, stream)

    def waiting(self, kind: str, stream: int) -> bool:
        """Whether a connection ``stream`` went to is still in Zeek's table (its row can change)."""
        lst = (self._tcp_streams if kind == "tcp" else self._udp_streams).get(stream)
        return lst is not None and any(c.in_table for c in lst)

    def add_links(self, kind: str, stream: int, item: dict[str, Any] | None) -> None:
        """Name the row(s) of ``stream`` in its summary ``item`` (as :meth:`contribute` does), and
        forget them (``item`` None: a stream that is not listed)."""
        lst = (self._tcp_streams if kind == "tcp" else self._udp_streams).pop(stream, None)
        if not lst:
            return
        if item is not None:
            picked = [c.link for c in lst]
            assert all(p is not None for p in picked), "a stream written before Zeek removed its connection"
            _name_rows(item, kind, picked)  # type: ignore[arg-type]
        for c in lst:
            c.streams.remove(stream)

    def finish_streaming(self) -> None:
        """The end of the capture: the connections left in the table are removed (and written)."""
        self.tracker.finish()

    def shard_part(self) -> ZeekShardPart:
        """A flow shard's streaming: what the parent needs to finish the document (the rows file
        closed; where the rows end up is the caller's to fill in)."""
        assert self._rows is not None and self.rows_path is not None
        self._rows.close()
        return ZeekShardPart(self._rows.count, self._report())

    def contribute(self, analysis: Analysis, doc: dict[str, Any]) -> None:
        if self._rows is not None:  # streaming: the rows are spooled, the streams already name theirs
            doc["zeek"] = self._rows.items()
            _add_checksums(doc, self._report())
            return
        rows = self.tracker.finish()
        conns = self.tracker.connections
        index = {id(c): i for i, c in enumerate(conns)}
        doc["zeek"] = rows
        _add_checksums(doc, self._report())
        for key, table in (("tcp", self._tcp_streams), ("udp", self._udp_streams)):
            for item in doc.get(key, []):
                lst = table.get(item.get("stream", -1))
                if not lst:
                    continue
                _name_rows(item, key, [rows[index[id(c)]] for c in lst if id(c) in index])

    def _report(self) -> ChecksumReport:
        rep = self.tracker.checksums
        if self.decoder is None:
            rep.verified = False
        return rep


def _add_checksums(doc: dict[str, Any], rep: ChecksumReport) -> None:
    doc["zeek_checksums"] = rep.to_dict()
    if rep.discarded:
        doc.setdefault("warnings", []).append(
            f"Zeek view: {rep.discarded} packet(s) discarded for bad checksums "
            f"({rep.discarded_bad_ip} bad IPv4 header, {rep.discarded_bad} bad TCP/UDP/ICMP checksum, "
            f"{rep.discarded_partial} offloaded partial checksum); use checksums='ignore' (zeek -C) to keep them")


@dataclass
class ZeekShardPart:
    """A flow shard's Zeek view: how many rows, its checksum report, and where its rows are (bytes
    ``offset`` to ``offset + length`` of the shard's spool: a line each, in removal order, keyed)."""

    count: int
    checksums: ChecksumReport
    offset: int = 0
    length: int = 0

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return fields_reduce(self)  # pickled by its fields (see analyzers/picklable.py)


def merged_rows(shards: list[Iterable[bytes]]) -> Iterator[bytes]:
    """The rows of every flow shard (each an iterable of its keyed lines, see :class:`RowSpool`), in
    the order one process would have logged them (by :attr:`_Conn.removed_at`: each shard's lines
    are in that order already)."""

    def keyed(lines: Iterable[bytes]) -> Iterator[tuple[tuple[int, ...], bytes]]:
        for line in lines:
            head, _, text = line.partition(b" {")
            yield tuple(map(int, head.split())), b"{" + text

    for _, text in heapq.merge(*(keyed(lines) for lines in shards)):
        yield text


def contribute_shards(doc: dict[str, Any], parts: list[ZeekShardPart], lines: list[Iterable[bytes]]) -> None:
    """:meth:`ZeekObserver.contribute` for a document whose flow shards each ran a Zeek view
    (``lines``: each shard's keyed row lines)."""
    from analyzers.jsonout import EncodedItems

    doc["zeek"] = EncodedItems(sum(p.count for p in parts), merged_rows(lines))
    rep = replace(parts[0].checksums)
    for p in parts[1:]:
        c = p.checksums
        rep.verified |= c.verified
        rep.discarded_bad_ip += c.discarded_bad_ip
        rep.discarded_bad += c.discarded_bad
        rep.discarded_partial += c.discarded_partial
        rep.accepted_partial += c.accepted_partial
        rep.ignored_nets += c.ignored_nets
    _add_checksums(doc, rep)


#: the fields of a conn.log row that a loopcap stream's summary names
_LINK_FIELDS: Final = ("uid", "conn_state", "history", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p")


def _name_rows(item: dict[str, Any], kind: str, picked: list[dict[str, Any]]) -> None:
    """``item["zeek"]``: the conn.log row(s) a loopcap stream's packets went to."""
    if len(picked) == 1:
        r = picked[0]
        item["zeek"] = {"uid": r["uid"], "conn_state": r["conn_state"], "history": r["history"],
                        "orig": {"ip": r["id.orig_h"], "port": r["id.orig_p"]},
                        "resp": {"ip": r["id.resp_h"], "port": r["id.resp_p"]}}
    else:
        item["zeek"] = {"uids": [r["uid"] for r in picked],
                        "conn_states": [r["conn_state"] for r in picked],
                        "histories": [r["history"] for r in picked],
                        "note": f"Zeek logs this {kind.upper()} stream as {len(picked)} connections"}


class RowSpool:
    """Encoded rows in the order added, kept in an anonymous temporary file; or, with ``path``, in that
    file, each after its key (a flow shard's rows, see :func:`merged_rows`)."""

    def __init__(self, path: str | None = None) -> None:
        import tempfile

        from analyzers.jsonout import SPOOL_BUFFER

        self._f = (tempfile.TemporaryFile(buffering=SPOOL_BUFFER) if path is None  # noqa: SIM115 - closed when read
                   else open(path, "wb", buffering=SPOOL_BUFFER))  # noqa: SIM115
        self._keyed = path is not None
        self.count = 0

    def add(self, row: dict[str, Any], key: tuple[int, ...] | None = None) -> None:
        from analyzers.jsonout import dumps_bytes

        data = dumps_bytes(row) + b"\n"
        if self._keyed:
            assert key is not None
            data = b"%d %d %d %d " % key + data
        self._f.write(data)
        self.count += 1

    def close(self) -> None:
        self._f.close()

    def _lines(self) -> Iterator[bytes]:
        self._f.seek(0)
        try:
            for line in self._f:
                yield line[:-1]
        finally:
            self._f.close()

    def items(self) -> Any:
        from analyzers.jsonout import EncodedItems

        return EncodedItems(self.count, self._lines())


def make_observers(options: ZeekOptions | None = None) -> list[ZeekObserver]:
    """The Zeek observer(s) to put in ``AnalysisOptions.observers``."""
    return [ZeekObserver(options)]


# ---------------------------------------------------------------------------------------------
# conn.log writer (Zeek ASCII / TSV)

def _escape(s: str) -> str:
    out: list[str] = []
    for ch in s:
        o = ord(ch)
        if ch in "\t,\\" or o < 0x20 or o >= 0x7F:
            out.extend(f"\\x{b:02x}" for b in ch.encode())
        else:
            out.append(ch)
    return "".join(out)


def _fmt(value: object, ztype: str) -> str:
    if value is None:
        return "-"
    if ztype in ("time", "interval"):
        assert isinstance(value, (int, float))
        return f"{value:.6f}"
    if ztype == "bool":
        return "T" if value else "F"
    if ztype.startswith("set["):
        assert isinstance(value, (list, tuple, set, frozenset))
        return ",".join(_escape(str(v)) for v in value) if value else "(empty)"
    if ztype == "string":
        return _escape(str(value)) if value != "" else "(empty)"
    return str(value)


def _stamp(ts: float | None) -> str:
    try:
        t = time.gmtime(ts if ts is not None else 0)
    except (OverflowError, OSError, ValueError):  # a capture's timestamp can be any 64-bit value
        t = time.gmtime(0)
    return time.strftime("%Y-%m-%d-%H-%M-%S", t)


def write_conn_log(rows: Iterable[dict[str, Any]], stream: IO[str], *, open_ts: float | None = None,
                   close_ts: float | None = None) -> None:
    """Write ``rows`` as a Zeek ASCII conn.log (tab separated, with the ``#`` header lines that
    zeek-cut, zat and Zeek's own readers expect), in the order given (Zeek's: removal order).  ``open_ts``/``close_ts`` (Unix seconds) go in the
    ``#open``/``#close`` lines; they default to the first row's ``ts`` and the last ``ts``."""
    rows = list(rows)
    if open_ts is None:
        open_ts = min((r["ts"] for r in rows), default=0.0)
    if close_ts is None:
        close_ts = max((r["ts"] for r in rows), default=open_ts)
    stream.write("#separator \\x09\n")
    stream.write("#set_separator\t,\n")
    stream.write("#empty_field\t(empty)\n")
    stream.write("#unset_field\t-\n")
    stream.write("#path\tconn\n")
    stream.write(f"#open\t{_stamp(open_ts)}\n")
    stream.write("#fields\t" + "\t".join(n for n, _ in CONN_FIELDS) + "\n")
    stream.write("#types\t" + "\t".join(t for _, t in CONN_FIELDS) + "\n")
    for r in rows:
        stream.write("\t".join(_fmt(r.get(n), t) for n, t in CONN_FIELDS) + "\n")
    stream.write(f"#close\t{_stamp(close_ts)}\n")


def read_conn_log(text: str) -> list[dict[str, Any]]:
    """Parse a Zeek ASCII conn.log (or any Zeek TSV log) into dicts typed by its ``#types`` line."""
    fields: list[str] = []
    types: list[str] = []
    unset, empty = "-", "(empty)"
    out: list[dict[str, Any]] = []
    for line in text.splitlines():
        if line.startswith("#"):
            key, _, val = line[1:].partition("\t")
            if key == "fields":
                fields = val.split("\t")
            elif key == "types":
                types = val.split("\t")
            elif key == "unset_field":
                unset = val
            elif key == "empty_field":
                empty = val
            continue
        if not line:
            continue
        row: dict[str, Any] = {}
        for name, ztype, raw in zip(fields, types, line.split("\t"), strict=False):
            row[name] = _parse(raw, ztype, unset, empty)
        out.append(row)
    return out


def _unescape(s: str) -> str:
    if "\\x" not in s:
        return s
    data = bytearray()
    i = 0
    while i < len(s):
        if s.startswith("\\x", i) and i + 4 <= len(s):
            data.append(int(s[i + 2:i + 4], 16))
            i += 4
        else:
            data.extend(s[i].encode())
            i += 1
    return data.decode("utf-8", "replace")


def _parse(raw: str, ztype: str, unset: str, empty: str) -> object:
    if raw == unset:
        return None
    if ztype.startswith(("set[", "vector[")):
        return [] if raw == empty else [_unescape(x) for x in raw.split(",")]
    if ztype in ("count", "port", "int"):
        return int(raw)
    if ztype in ("time", "interval", "double"):
        return float(raw)
    if ztype == "bool":
        return raw == "T"
    return "" if raw == empty else _unescape(raw)


__all__ = [
    "CHECKSUM_MODES",
    "CONN_FIELDS",
    "CONN_STATE_MEANING",
    "DEFAULT_LIKELY_SERVER_PORTS",
    "PACKET_PROTOCOL_PORTS",
    "STATE_NAMES",
    "ChecksumReport",
    "IcmpPacket",
    "ZeekDecoder",
    "ZeekLog",
    "ZeekObserver",
    "ZeekOptions",
    "ZeekTracker",
    "make_observers",
    "read_conn_log",
    "write_conn_log",
    "zeek_analyze",
]
