"""What a streaming analysis remembers of flows it no longer holds: the flows a tracker
(:class:`~analyzers.tcp.TcpTracker`, :class:`~analyzers.udp.UdpTracker`) handed out, to notice
packets that come back for one, and the 4-tuples tcp.analysis saw, to notice their reuse.

Both are memories of hashes of a fixed size (:class:`HashMemory`): they remember the most recent
flows, and their memory is the same at the first packet and at the billionth."""

from __future__ import annotations

from array import array
from typing import Final

#: how many handed-out flows are remembered at least (twice as many at most)
MAX_TOMBSTONES: Final = 16_384


class HashMemory:
    """Hashes (``hash()`` values), each with an int >= 0, in two generations of flat arrays: the
    ``keep`` most recently stored are remembered at least (at most twice as many); older ones are
    forgotten a generation at a time.

    Its memory is allocated when it is made and never grows: a generation is an open-addressing table
    (linear probing) at most half full, 8 bytes a slot for the hash and 8 for the int (with
    ``values``), so 32 or 64 bytes a remembered hash at most.  A dict of Python ints costs 70 to 90
    bytes an entry, and grows with them."""

    __slots__ = ("_count", "_keys", "_mask", "_vals", "keep")

    def __init__(self, keep: int, *, values: bool = True) -> None:
        size = 1 << max(4, (2 * keep - 1).bit_length())  # a power of two, at least twice ``keep``
        self._mask = size - 1
        self.keep = keep
        #: [young, old]: the hashes (0: an empty slot; a hash of 0 is stored as -1, which ``hash()``
        #: never returns) and the ints (-1: forgotten by :meth:`pop`)
        self._keys = [array("q", bytes(8 * size)), array("q", bytes(8 * size))]
        self._vals = [array("q", bytes(8 * size)), array("q", bytes(8 * size))] if values else []
        self._count = 0  # hashes in the young generation

    def _slot(self, keys: array[int], h: int) -> int:
        """Where ``h`` is in ``keys``, or the empty slot where it would go."""
        mask = self._mask
        i = h & mask
        while True:
            k = keys[i]
            if k == h or k == 0:
                return i
            i = (i + 1) & mask

    def __contains__(self, h: int) -> bool:
        h = h or -1
        for g in (0, 1):
            keys = self._keys[g]
            i = self._slot(keys, h)
            if keys[i]:
                return not self._vals or self._vals[g][i] >= 0
        return False

    def put(self, h: int, value: int = 0) -> None:
        """Remember ``h`` (with ``value``) as the most recent."""
        h = h or -1
        keys = self._keys[0]
        i = self._slot(keys, h)
        if not keys[i]:
            if self._count >= self.keep:  # the young generation is full: it becomes the old one
                self._rotate()
                keys = self._keys[0]
                i = self._slot(keys, h)
            keys[i] = h
            self._count += 1
        if self._vals:
            self._vals[0][i] = value

    def add(self, h: int) -> None:
        """Remember ``h`` as the most recent (as ``set.add``)."""
        self.put(h)

    def pop(self, h: int) -> int | None:
        """Forget ``h``; its int (its most recent), or None if it was not remembered."""
        if not self._vals:
            raise TypeError("a HashMemory without values has nothing to pop")
        h = h or -1
        out: int | None = None
        seen = False
        for g in (0, 1):
            keys = self._keys[g]
            i = self._slot(keys, h)
            if keys[i]:
                vals = self._vals[g]
                if not seen and vals[i] >= 0:
                    out = vals[i]
                seen = True
                vals[i] = -1
        return out

    def _rotate(self) -> None:
        self._keys.reverse()
        self._vals.reverse()
        size = self._mask + 1
        self._keys[0] = array("q", bytes(8 * size))  # (the old generation's arrays go)
        if self._vals:
            self._vals[0] = array("q", bytes(8 * size))
        self._count = 0


class Tombstones:
    """Handed-out flow keys by hash (a tombstone must cost little: see :class:`HashMemory`, allocated
    at the first burial), and the streams that packets coming back for one of them started:
    :attr:`late` holds (new stream, old stream) for the first 100, :attr:`late_count` counts them all."""

    def __init__(self, limit: int = MAX_TOMBSTONES) -> None:
        self._gone: HashMemory | None = None
        self.limit = limit
        self.late: list[tuple[int, int]] = []
        self.late_count = 0

    def bury(self, key: object, stream: int) -> None:
        """``key``'s flow, ``stream``, was handed out."""
        if self._gone is None:
            self._gone = HashMemory(self.limit)
        self._gone.put(hash(key), stream)

    def came_back(self, key: object, stream: int, *, count: bool = True) -> None:
        """A new ``stream`` starts on ``key``: its tombstone (if any) is removed and, with ``count``,
        the return is counted as late."""
        if self._gone is None:
            return
        was = self._gone.pop(hash(key))
        if was is not None and count:
            self.late_count += 1
            if len(self.late) < 100:
                self.late.append((stream, was))
