"""How the trackers number their conversations (Wireshark's ``tcp.stream`` / ``udp.stream``)."""

from __future__ import annotations

from collections.abc import Callable


class StreamNumbers:
    """0, 1, 2... in the order conversations are created, as Wireshark numbers them; or, for a flow
    shard (``created`` given), the frame that created each one, which is also handed to ``created``:
    it is unique, ordered as one tracker's numbers would be, and tells them apart across shards
    (the shards' conversations are numbered by it in the end, see :mod:`analyzers.shardstream`)."""

    __slots__ = ("_count", "created")

    def __init__(self, created: Callable[[int], None] | None = None) -> None:
        self.created = created
        self._count = 0

    def new(self, frame: int) -> int:
        """The number of a conversation created by ``frame``."""
        if self.created is None:
            n = self._count
            self._count += 1
            return n
        self.created(frame)
        return frame
