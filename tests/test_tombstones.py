"""The memories of hashes a streaming analysis keeps of flows it no longer holds: fixed in size,
they remember the most recent flows and forget the oldest a generation at a time."""

from __future__ import annotations

import random

import pytest

from analyzers.tombstones import HashMemory, Tombstones


def _sizes(mem: HashMemory) -> int:
    return sum(a.buffer_info()[1] for a in (*mem._keys, *mem._vals))


@pytest.mark.parametrize("keep", [1, 7, 50])
def test_a_hash_memory_remembers_the_most_recent_forgets_the_old_and_what_was_popped(keep: int) -> None:
    rng = random.Random(keep)
    mem = HashMemory(keep)
    size = mem._mask + 1
    # hashes that share slots (multiples of the table size), 0 (stored as -1) and the extremes
    pool = [0, 1, -2, 2**63 - 1, -(2**63)] + [k * size for k in range(1, 30)]
    pool += [rng.getrandbits(64) - 2**63 for _ in range(6 * keep + 20)]
    recent: dict[int, int] = {}  # every hash put, in order of its last put (oldest first), with its value
    popped: set[int] = set()  # hashes popped since their last put
    start = _sizes(mem)

    def rank(h: int) -> int:  # how many other hashes were put since h was
        keys = list(recent)
        return len(keys) - 1 - keys.index(h)

    for step in range(4000):
        h = rng.choice(pool)
        op = rng.random()
        if op < 0.55:
            mem.put(h, step)
            recent.pop(h, None)
            recent[h] = step
            popped.discard(h)
            continue
        if h not in recent or h in popped:
            want: int | None = None
        elif rank(h) < keep:
            want = recent[h]
        elif rank(h) >= 2 * keep:
            want = None
        else:
            continue  # between keep and twice keep: either
        if op < 0.75:
            assert mem.pop(h) == want, (step, h)
            if h in recent:
                popped.add(h)
        else:
            assert (h in mem) == (want is not None), (step, h)
    assert _sizes(mem) == start  # (allocated once: rotations replace arrays of the same size)


def test_a_hash_memory_without_values_is_a_set_of_the_most_recent() -> None:
    mem = HashMemory(4, values=False)
    for h in range(1, 9):
        mem.add(h)
    assert all(h in mem for h in range(5, 9))
    mem.add(9)  # a third generation starts: 1..4 are gone
    assert not any(h in mem for h in range(1, 5)) and all(h in mem for h in range(5, 10))
    mem.add(5)  # seen again: the most recent, so it outlives 6..8
    for h in range(10, 13):
        mem.add(h)
    assert 5 in mem and 6 not in mem
    with pytest.raises(TypeError):
        mem.pop(5)


def test_tombstones_count_flows_that_come_back_and_cost_nothing_until_the_first_burial() -> None:
    t = Tombstones(limit=2)
    t.came_back(("a", 1), 5)
    assert t._gone is None and t.late_count == 0
    t.bury(("a", 1), 0)
    t.bury(("b", 2), 1)
    t.came_back(("a", 1), 2)  # a new stream on a handed-out flow: late
    t.came_back(("a", 1), 3)  # its tombstone is gone: not late again
    t.came_back(("b", 2), 4, count=False)  # a SYN: a new connection, not a late packet
    t.came_back(("b", 2), 5)
    assert t.late == [(2, 0)] and t.late_count == 1
