"""Per-direction TCP payload reassembly with bounded memory.

The byte stream of one direction is rebuilt the way Wireshark's *Follow TCP Stream* does it
(``follow_tcp_tap_listener`` / ``check_follow_fragments`` in ``packet-tcp.c``):

* the first segment seen in a direction sets the next expected sequence number (the SYN counts one);
* a segment at the expected sequence number is appended; one that starts earlier contributes only
  its bytes past the expected number (retransmissions and overlaps removed: the first copy wins);
* a segment beyond the expected number is held back (out of order) and put in place when the gap
  before it is filled;
* when the peer acknowledges data beyond a gap that is never filled (the receiver got bytes the
  capture missed), the gap is recorded and reassembly continues after it.  Wireshark inserts the text
  ``[N bytes missing in capture file]`` there; loopcap records a :class:`Gap` instead and never
  zero-fills;
* a frame truncated by the snap length contributes only its captured bytes, while the expected
  sequence number advances by the segment's real length (the shortfall is reported).

Sequence arithmetic is modulo 2**32.  The stream is hashed incrementally (SHA-256); bytes are kept
only up to ``keep_limit`` (a preview, or the whole stream when the user asked to see it).  Held-back
segments are bounded in count and bytes; past the bound the oldest gap is declared lost.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left, insort
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

M32: Final = 0xFFFFFFFF
HALF: Final = 0x80000000


def seq_lt(a: int, b: int) -> bool:
    return a != b and ((a - b) & M32) >= HALF


def seq_gt(a: int, b: int) -> bool:
    return a != b and ((a - b) & M32) < HALF


def seq_ge(a: int, b: int) -> bool:
    return ((a - b) & M32) < HALF


@dataclass(frozen=True)
class Gap:
    """Bytes of a direction's stream that the capture does not hold."""

    offset: int  #: position in the reassembled output where the gap sits
    length: int  #: sequence-space bytes missing (a best estimate when ``reason`` is ``unfilled``)
    frame: int  #: frame at which the gap was noticed
    reason: str  #: ``acked`` (peer acknowledged bytes never captured), ``unfilled``, ``overflow``

    def to_dict(self) -> dict[str, object]:
        return {"offset": self.offset, "length": self.length, "frame": self.frame, "reason": self.reason}


class _Held:
    __slots__ = ("data", "frame", "seq")

    def __init__(self, seq: int, data: bytes, frame: int) -> None:
        self.seq = seq
        self.data = data
        self.frame = frame


class StreamAssembler:
    """Reassemble one direction of a TCP connection (sans-I/O: feed segments, read results)."""

    __slots__ = ("_hash", "_held", "_held_bytes", "_lowest", "_order", "_seqs", "_stuck", "bytes_out", "chunks", "gaps",
                 "keep_limit", "kept", "max_held_bytes", "max_held_segments", "next_seq", "record_chunks", "sink", "started",
                 "truncated_bytes")

    def __init__(self, keep_limit: int = 0, max_held_segments: int = 4096,
                 max_held_bytes: int = 8 * 1024 * 1024, record_chunks: bool = True) -> None:
        self.next_seq = 0
        self.started = False
        self.bytes_out = 0
        self._hash = hashlib.sha256()
        self.keep_limit = keep_limit
        self.kept = bytearray()
        #: (frame, length) of each contribution, for Follow Stream; off for plain analysis so that
        #: memory does not grow with the number of segments
        self.record_chunks = record_chunks
        self.chunks: list[tuple[int, int]] = []
        self._held: list[_Held] = []
        self._held_bytes = 0
        # so that a capture of held-back segments does not cost a scan of all of them per packet: the
        # held sequence numbers sorted and in arrival order (as _held), the next_seq at which the last
        # _fit_held scan found nothing (while _held is unchanged), and _lowest_seq() (None: recompute)
        self._seqs: list[int] = []
        self._order: list[int] = []
        self._stuck: int | None = None
        self._lowest: int | None = None
        self.max_held_segments = max_held_segments
        self.max_held_bytes = max_held_bytes
        self.gaps: list[Gap] = []
        self.truncated_bytes = 0
        #: called with every run of bytes appended to the stream (e.g. a protocol splitter); when it
        #: returns False it wants no more and is dropped
        self.sink: Callable[[bytes, int], bool | None] | None = None

    # -- output ----------------------------------------------------------------------------
    def _emit(self, data: bytes, frame: int) -> None:
        if not data:
            return
        self._hash.update(data)
        if len(self.kept) < self.keep_limit:
            self.kept += data[: self.keep_limit - len(self.kept)]
        self.bytes_out += len(data)
        if self.sink is not None and self.sink(data, frame) is False:
            self.sink = None
        if self.record_chunks:  # Follow Stream needs the chunk boundaries; the analysis alone does not
            self.chunks.append((frame, len(data)))

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    @property
    def held_segments(self) -> int:
        return len(self._held)

    # -- input -----------------------------------------------------------------------------
    def start(self, seq: int) -> None:
        """Every segment of this direction (any flags) passes its relative start here: the first one
        sets the expected sequence number."""
        # as Wireshark: (re)initialise while nothing was written and the expected number is 0
        if self.bytes_out == 0 and self.next_seq == 0:
            self.next_seq = seq
            self.started = True

    def add(self, seq: int, wirelen: int, data: bytes, frame: int) -> None:
        """A segment whose payload starts at ``seq`` (the SYN already counted), ``wirelen`` bytes long on
        the wire, of which ``data`` were captured."""
        self.start(seq)
        if wirelen < len(data):
            wirelen = len(data)
        nxt = self.next_seq
        off = 0
        dlen = len(data)
        if seq != nxt and ((seq - nxt) & M32) >= HALF:  # starts before what we have
            end = (seq + wirelen) & M32
            if end != nxt and ((end - nxt) & M32) < HALF:  # but extends past it
                off = (nxt - seq) & M32
                dlen = dlen - off if dlen > off else 0
                wirelen = (end - nxt) & M32
                seq = nxt
        if dlen == 0 or (seq != nxt and ((seq - nxt) & M32) >= HALF):
            return
        piece = data[off:off + dlen] if off or dlen != len(data) else data
        if seq == nxt:
            self.next_seq = (nxt + wirelen) & M32
            if wirelen > dlen:
                self.truncated_bytes += wirelen - dlen
            self._emit(piece, frame)
            if self._held:
                while self._fit_held(frame):
                    pass
        else:
            self._held.append(_Held(seq, piece, frame))
            self._held_bytes += len(piece)
            insort(self._seqs, seq)
            self._order.append(seq)
            self._stuck = None
            low = self._lowest
            if low is not None and seq != low and ((seq - low) & M32) >= HALF:  # _lowest_seq's fold, one step on
                self._lowest = seq
            if len(self._held) > self.max_held_segments or self._held_bytes > self.max_held_bytes:
                self._skip_to_lowest(frame, "overflow")

    def peer_ack(self, ack: int, frame: int) -> None:
        """A peer segment carries ``ack``: bytes the peer acknowledged beyond a gap that the capture
        never filled end that gap (Wireshark runs this for every peer packet, ACK flag or not)."""
        while self._held:
            if self._fit_held(frame):
                continue
            lowest = self._lowest_seq()
            if ack != lowest and ((ack - lowest) & M32) < HALF:
                self._skip_to_lowest(frame, "acked", fit=False)
                continue
            break

    def finish(self, frame: int) -> None:
        """End of capture: held-back segments after an unfilled gap are reported, not emitted
        (Wireshark drops them too)."""
        if self._held:
            lowest = self._lowest_seq()
            missing = (lowest - self.next_seq) & M32
            held = sum(len(h.data) for h in self._held)
            if len(self.gaps) < 10_000:
                self.gaps.append(Gap(self.bytes_out, missing + held, frame, "unfilled"))
            self._held = []
            self._held_bytes = 0
            self._seqs = []
            self._order = []
            self._stuck = self._lowest = None

    # -- internals ---------------------------------------------------------------------------
    def _lowest_seq(self) -> int:
        if self._lowest is not None:
            return self._lowest
        seqs = self._seqs
        first, last = seqs[0], seqs[-1]
        if last - first < HALF:  # all within half the sequence space: the fold below gives the smallest
            self._lowest = first
            return first
        upper = bisect_left(seqs, HALF)
        if 0 < upper < len(seqs) and seqs[upper - 1] + (M32 + 1) - seqs[upper] < HALF:  # the same, across 0
            self._lowest = seqs[upper]
            return seqs[upper]
        lowest = self._held[0].seq
        for h in self._held:
            if h.seq != lowest and ((h.seq - lowest) & M32) >= HALF:
                lowest = h.seq
        self._lowest = lowest
        return lowest

    def _skip_to_lowest(self, frame: int, reason: str, fit: bool = True) -> None:
        lowest = self._lowest_seq()
        missing = (lowest - self.next_seq) & M32
        if len(self.gaps) < 10_000:
            self.gaps.append(Gap(self.bytes_out, missing, frame, reason))
        self.next_seq = lowest
        while fit and self._fit_held(frame):
            pass

    def _fit_held(self, frame: int) -> bool:
        nxt = self.next_seq
        kind = 0 if nxt == self._stuck else self._fit_kind(nxt)
        if kind == 0:
            self._stuck = nxt
            return False  # no held segment starts at or before nxt: nothing to scan for
        if kind == 1:  # none starts before nxt: the scan below would take the first one starting at it
            i = self._order.index(nxt)
            h = self._held[i]
            self._emit(h.data, h.frame)
            self.next_seq = (nxt + len(h.data)) & M32
            self._drop_held(i, h)
            return True
        for i, h in enumerate(self._held):
            if h.seq != nxt and ((h.seq - nxt) & M32) >= HALF:  # starts before the expected seq
                end = (h.seq + len(h.data)) & M32
                if end != nxt and ((end - nxt) & M32) < HALF:
                    pos = (nxt - h.seq) & M32
                    self._emit(h.data[pos:], h.frame)
                    self.next_seq = end
                self._drop_held(i, h)
                return True
            if h.seq == nxt:
                self._emit(h.data, h.frame)
                self.next_seq = (nxt + len(h.data)) & M32
                self._drop_held(i, h)
                return True
        self._stuck = nxt
        return False

    def _fit_kind(self, nxt: int) -> int:
        """What the scan in :meth:`_fit_held` can find, by binary search: 2 if some held segment starts
        before ``nxt`` (within the half of the sequence space behind it), else 1 if one starts at it,
        else 0."""
        seqs = self._seqs
        lo = (nxt - HALF) & M32
        at = bisect_left(seqs, nxt)
        if lo <= nxt:
            before = at > bisect_left(seqs, lo)  # some seq in [lo, nxt)
        else:
            before = at > 0 or bisect_left(seqs, lo) < len(seqs)  # in [lo, 2**32) or [0, nxt)
        if before:
            return 2
        return 1 if at < len(seqs) and seqs[at] == nxt else 0

    def _drop_held(self, i: int, h: _Held) -> None:
        del self._held[i]
        del self._order[i]
        self._held_bytes -= len(h.data)
        del self._seqs[bisect_left(self._seqs, h.seq)]
        self._stuck = self._lowest = None
