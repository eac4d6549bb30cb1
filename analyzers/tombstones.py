"""What a streaming tracker (:class:`~analyzers.tcp.TcpTracker`, :class:`~analyzers.udp.UdpTracker`)
remembers of the flows it handed out, to notice packets that come back for one."""

from __future__ import annotations

#: how many handed-out flows are remembered
MAX_TOMBSTONES = 32_768


class Tombstones:
    """Handed-out flow keys by hash (a tombstone must cost little; past ``limit`` the oldest go), and
    the streams that packets coming back for one of them started: :attr:`late` holds (new stream,
    old stream) for the first 100, :attr:`late_count` counts them all."""

    def __init__(self, limit: int = MAX_TOMBSTONES) -> None:
        self._gone: dict[int, int] = {}
        self.limit = limit
        self.late: list[tuple[int, int]] = []
        self.late_count = 0

    def bury(self, key: object, stream: int) -> None:
        """``key``'s flow, ``stream``, was handed out."""
        gone = self._gone
        gone[hash(key)] = stream
        if len(gone) > self.limit:
            del gone[next(iter(gone))]  # the oldest

    def came_back(self, key: object, stream: int, *, count: bool = True) -> None:
        """A new ``stream`` starts on ``key``: its tombstone (if any) is removed and, with ``count``,
        the return is counted as late."""
        was = self._gone.pop(hash(key), None)
        if was is not None and count:
            self.late_count += 1
            if len(self.late) < 100:
                self.late.append((stream, was))
