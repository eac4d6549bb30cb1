"""What a streaming analysis remembers of flows it no longer holds: the flows a tracker
(:class:`~analyzers.tcp.TcpTracker`, :class:`~analyzers.udp.UdpTracker`) handed out, to notice
packets that come back for one, and the 4-tuples tcp.analysis saw, to notice their reuse.

Both are memories of a fixed size (:class:`FlowMemory`): their memory is the same at the first
packet and at the billionth.  They forget a flow only for flows that share its *set*, the value of
the flow-shard hash (:func:`flow_set`; :func:`analyzers.parallel.flow_shard` is it modulo the
shards), and every flow of a set belongs to the same shard however many shards there are.  So what
a set remembers depends on its own flows alone, and a run split into any number of flow shards
remembers (and warns about) exactly what one process does.

The flow-shard hash (:func:`flow_hash`) is defined here because the memories and the shards must
agree on it.  It is a strong one: a set holds only a few flows, so flows must spread over the sets
as evenly as a random hash would spread them."""

from __future__ import annotations

from array import array
from typing import Final

#: a flow's key in the trackers: its two (address, port) endpoints, the lower first
FlowKey = tuple[tuple[bytes, int], tuple[bytes, int]]
#: the key of a connection no tracker has keyed yet
NO_KEY: Final[FlowKey] = ((b"", -1), (b"", -1))

#: how many sets a flow memory has: one per value of the 16-bit flow-shard hash
SETS: Final = 1 << 16
#: how many handed-out flows a tracker's memory holds in each set (the most recent of the set)
TOMBSTONE_WAYS: Final = 2

M64: Final = 0xFFFFFFFFFFFFFFFF
#: the two multipliers of splitmix64's finalizer (the flow-shard hash mixes with it)
MIX1: Final = 0xBF58476D1CE4E5B9
MIX2: Final = 0x94D049BB133111EB


def flow_hash(a_last: int, a_port: int, b_last: int, b_port: int) -> int:
    """The flow-shard hash (0 to 65,535) of the conversation between the endpoints with address
    last bytes ``a_last``, ``b_last`` and ports ``a_port``, ``b_port``: symmetric, the same in
    every process and on every machine, and spread like a random hash over real port patterns.

    Each endpoint is the 24-bit value port * 256 + last byte; the lower and the higher make a
    48-bit value, mixed by splitmix64's finalizer; the hash is its top 16 bits.  (The XOR of the
    ports and last bytes, multiplied, as before, put the benchmark's 33,075 4-tuples into 13,143
    values, up to 7 in one.)  :mod:`analyzers.blockloop` computes it in numpy and ``_loop_fast``
    calls it for every packet of a sharded run: the same formula."""
    va = (a_port << 8) | a_last
    vb = (b_port << 8) | b_last
    z = (va << 24) | vb if va <= vb else (vb << 24) | va
    z = ((z ^ (z >> 30)) * MIX1) & M64
    z = ((z ^ (z >> 27)) * MIX2) & M64
    return (z ^ (z >> 31)) >> 48


def flow_set(key: FlowKey) -> int:
    """The flow-shard hash of ``key`` (:func:`flow_hash`): :func:`analyzers.parallel.flow_shard`
    is it modulo the shards."""
    (a, pa), (b, pb) = key
    return flow_hash(a[-1], pa, b[-1], pb)


class FlowMemory:
    """Flow keys, each with an int >= 0, in a set-associative table: :data:`SETS` sets of ``ways``
    flows each, most recent first.  Storing a flow into a full set forgets the least recently
    stored flow of that set; nothing else is ever forgotten.

    A flow is stored as 32 bits of its ``hash()`` (a process's own, so the table never leaves its
    process; with the 16 bits of its set, a flow not stored matches one of the set's flows with a
    chance of ``ways`` in 2**32) in a flat array, with its int in another: 12 bytes a slot (4
    without ``values``), allocated when the memory is made and never grown.  A dict of Python ints
    costs 70 to 90 bytes an entry, and grows with them.

    ``shard`` = (k, shards): the memory of flow shard k of ``shards``, which only ever sees flows
    whose set is k modulo ``shards``; it allocates only those sets."""

    __slots__ = ("_keys", "_shards", "_vals", "ways")

    def __init__(self, ways: int, *, shard: tuple[int, int] = (0, 1), values: bool = True) -> None:
        if ways < 1:
            raise ValueError("a flow memory needs at least one way")
        shards = shard[1]
        slots = (SETS // shards + 1) * ways  # (a set's first slot is set // shards * ways: one set to spare)
        self.ways = ways
        self._shards = shards
        #: every set's tags, most recent first (0: an empty slot; a tag of 0 is stored as 1), and their ints
        self._keys = array("I", [0]) * slots
        self._vals = array("q", [0]) * slots if values else array("q")

    def _find(self, key: FlowKey) -> tuple[int, int, int]:
        """(the first slot of ``key``'s set, ``key``'s tag, its way in the set or -1)."""
        h = (hash(key) & 0xFFFFFFFF) or 1
        w = self.ways
        base = flow_set(key) // self._shards * w
        keys = self._keys
        for i in range(w):
            k = keys[base + i]
            if k == h:
                return base, h, i
            if not k:
                break
        return base, h, -1

    def __contains__(self, key: FlowKey) -> bool:
        return self._find(key)[2] >= 0

    def put(self, key: FlowKey, value: int = 0) -> bool:
        """Remember ``key`` (with ``value``) as the most recent of its set; whether it was remembered
        already."""
        base, h, way = self._find(key)
        keys, vals = self._keys, self._vals
        # the ways before its own (or, if it is new, every way but the oldest) move one down
        for i in range(base + (way if way >= 0 else self.ways - 1), base, -1):
            keys[i] = keys[i - 1]
            if vals:
                vals[i] = vals[i - 1]
        keys[base] = h
        if vals:
            vals[base] = value
        return way >= 0

    def add(self, key: FlowKey) -> bool:
        """Remember ``key`` as the most recent of its set (as ``set.add``); whether it was remembered
        already (``key in memory`` before, without looking it up twice)."""
        return self.put(key)

    def pop(self, key: FlowKey) -> int | None:
        """Forget ``key``; its int, or None if it was not remembered."""
        if not self._vals:
            raise TypeError("a flow memory without values has nothing to pop")
        base, _, way = self._find(key)
        if way < 0:
            return None
        keys, vals = self._keys, self._vals
        out = vals[base + way]
        last = base + self.ways - 1
        for i in range(base + way, last):  # the older ways move one up
            keys[i] = keys[i + 1]
            vals[i] = vals[i + 1]
        keys[last] = 0
        return out


class Tombstones:
    """Handed-out flow keys (a tombstone must cost little: see :class:`FlowMemory`, allocated at the
    first burial), and the streams that packets coming back for one of them started:
    :attr:`late` holds (new stream, old stream) for the first 100, :attr:`late_count` counts them all.

    ``shard``: as :class:`FlowMemory`'s."""

    def __init__(self, ways: int = TOMBSTONE_WAYS, *, shard: tuple[int, int] = (0, 1)) -> None:
        self._gone: FlowMemory | None = None
        self.ways = ways
        self.shard = shard
        self.late: list[tuple[int, int]] = []
        self.late_count = 0

    def bury(self, key: FlowKey, stream: int) -> None:
        """``key``'s flow, ``stream``, was handed out."""
        if self._gone is None:
            self._gone = FlowMemory(self.ways, shard=self.shard)
        self._gone.put(key, stream)

    def came_back(self, key: FlowKey, stream: int, *, count: bool = True) -> None:
        """A new ``stream`` starts on ``key``: its tombstone (if any) is removed and, with ``count``,
        the return is counted as late."""
        if self._gone is None:
            return
        was = self._gone.pop(key)
        if was is not None and count:
            self.late_count += 1
            if len(self.late) < 100:
                self.late.append((stream, was))
