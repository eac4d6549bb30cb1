"""The memories a streaming analysis keeps of flows it no longer holds: fixed in size, they forget a
flow only for the flows of its set (its flow-shard hash), so a run split into flow shards remembers
exactly what one process remembers."""

from __future__ import annotations

import random

import pytest

from analyzers.parallel import flow_shard
from analyzers.tombstones import SETS, FlowKey, FlowMemory, Tombstones, flow_hash, flow_set


def key(sport: int, dport: int, mid: int = 0) -> FlowKey:
    """The flow between 127.0.``mid``.1:``sport`` and 127.0.0.1:``dport``: the flow-shard hash reads
    an address's last byte only, so flows that differ in ``mid`` share a set."""
    a, b = (bytes((127, 0, mid, 1)), sport), (b"\x7f\0\0\x01", dport)
    return (a, b) if a <= b else (b, a)


def keys_in_few_sets(rng: random.Random, sets: int, per_set: int) -> list[FlowKey]:
    ports = [(rng.randrange(1024, 65536), rng.randrange(1, 1024)) for _ in range(sets)]
    return [key(sp, dp, mid) for sp, dp in ports for mid in range(1, per_set + 1)]


def _bytes(mem: FlowMemory) -> int:
    return sum(a.buffer_info()[1] * a.itemsize for a in (mem._keys, mem._vals))


@pytest.mark.parametrize("ways", [1, 2, 4])
def test_a_flow_memory_keeps_the_most_recent_flows_of_each_set_and_forgets_what_was_popped(ways: int) -> None:
    rng = random.Random(ways)
    mem = FlowMemory(ways)
    pool = keys_in_few_sets(rng, 5, 3 * ways + 2)
    pool += [((bytes([10, 0, 0, i]), 80), (bytes([10, 0, 1, i]), 80)) for i in range(4)]  # (a set each)
    model: dict[int, list[tuple[FlowKey, int]]] = {}  # set -> its flows and values, most recent first
    start = _bytes(mem)
    for step in range(5000):
        k = rng.choice(pool)
        entries = model.setdefault(flow_set(k), [])
        held = [v for kk, v in entries if kk == k]
        op = rng.random()
        if op < 0.5:
            assert mem.put(k, step) == bool(held), step
            entries[:] = ([(k, step)] + [e for e in entries if e[0] != k])[:ways]
        elif op < 0.75:
            assert mem.pop(k) == (held[0] if held else None), step
            entries[:] = [e for e in entries if e[0] != k]
        else:
            assert (k in mem) == bool(held), step
    assert _bytes(mem) == start  # allocated once


def test_a_flow_memory_without_values_is_a_set_of_each_sets_most_recent() -> None:
    mem = FlowMemory(2, values=False)
    a, b, c = key(1000, 7, 1), key(1000, 7, 2), key(1000, 7, 3)
    other = key(1000, 9)
    assert flow_set(a) == flow_set(b) == flow_set(c) != flow_set(other)
    for k in (a, b, other):
        assert not mem.add(k)  # (add tells whether it was remembered already)
    assert a in mem and b in mem and other in mem
    assert mem.add(a)  # seen again: the most recent of its set, so it outlives b
    assert not mem.add(c)
    assert a in mem and c in mem and b not in mem and other in mem
    assert not mem.add(b) and mem.add(c)  # b was forgotten (and now a is)
    with pytest.raises(TypeError):
        mem.pop(a)
    with pytest.raises(ValueError):
        FlowMemory(0)


@pytest.mark.parametrize("shards", [2, 3, 5, 8])
def test_flow_shards_memories_answer_exactly_as_one_processs_memory(shards: int) -> None:
    """What makes a sharded run's late warnings and reused-port flags those of one process: every
    shard's memory, fed the operations on its own flows, answers as the single memory does."""
    rng = random.Random(shards)
    # flows of neighbouring sets (a memory that mixed neighbours up would answer otherwise)
    ports = [p for p in range(1024, 65536) if 1000 <= flow_set(key(p, 53)) < 1048]
    pool = [key(p, 53, mid) for p in ports for mid in range(6)]
    assert len({flow_set(k) for k in pool}) >= 20
    one = FlowMemory(2)
    parts = [FlowMemory(2, shard=(k, shards)) for k in range(shards)]
    for step in range(20000):
        k = rng.choice(pool)
        part = parts[flow_set(k) % shards]
        op = rng.random()
        if op < 0.5:
            one.put(k, step)
            part.put(k, step)
        elif op < 0.75:
            assert part.pop(k) == one.pop(k), step
        else:
            assert (k in part) == (k in one), step
    # each shard allocates its share of the sets (and one to spare)
    assert sum(len(p._keys) for p in parts) <= len(one._keys) + 2 * shards


def test_a_flows_set_is_the_hash_that_picks_its_shard() -> None:
    rng = random.Random(5)
    for _ in range(2000):
        src = bytes(rng.randrange(256) for _ in range(rng.choice((4, 16))))
        dst = bytes(rng.randrange(256) for _ in range(len(src)))
        sport, dport = rng.randrange(65536), rng.randrange(65536)
        a, b = (src, sport), (dst, dport)
        s = flow_set((a, b) if a <= b else (b, a))
        assert 0 <= s < SETS
        for shards in (2, 3, 7):
            assert s % shards == flow_shard(src, sport, dst, dport, shards) == flow_shard(dst, dport, src, sport,
                                                                                          shards)


def test_the_flow_shard_hash_spreads_consecutive_ports_to_a_few_servers_like_a_random_hash() -> None:
    """20,000 flows from 5,000 consecutive client ports to 4 server ports: a hash of the ports' XOR
    put them into about 5,000 sets, 4 in each; these take 15,000 sets or more (a random hash: 17,000
    on average) and at most 6 share one, so a few ways a set are enough to remember them."""
    load: dict[int, int] = {}
    for c in range(40000, 45000):
        for s in (80, 81, 82, 83):
            h = flow_set(key(c, s))
            load[h] = load.get(h, 0) + 1
    assert len(load) >= 15000 and max(load.values()) <= 6


def test_the_block_loop_computes_the_flow_shard_hash_of_every_row_as_the_function_does() -> None:
    np = pytest.importorskip("numpy")
    from analyzers.blockloop import _flow_hashes

    rng = random.Random(9)
    rows = [(rng.randrange(65536), rng.randrange(256), rng.randrange(65536), rng.randrange(256)) for _ in range(5000)]
    rows += [(0, 0, 0, 0), (65535, 255, 65535, 255), (80, 1, 80, 1), (65535, 255, 0, 0)]
    sp, sl, dp, dl = (np.array(col, dtype=np.int64) for col in zip(*rows, strict=True))
    assert _flow_hashes(sp, sl, dp, dl).tolist() == [flow_hash(a, p, b, q) for p, a, q, b in rows]


def test_tombstones_count_flows_that_come_back_and_cost_nothing_until_the_first_burial() -> None:
    t = Tombstones(ways=1)
    a, b, c = key(1000, 3), key(2000, 5, 1), key(2000, 5, 2)
    t.came_back(a, 5)
    assert t._gone is None and t.late_count == 0
    t.bury(a, 0)
    t.bury(b, 1)
    t.came_back(a, 2)  # a new stream on a handed-out flow: late
    t.came_back(a, 3)  # its tombstone is gone: not late again
    t.came_back(b, 4, count=False)  # a SYN: a new connection, not a late packet
    t.came_back(b, 5)
    t.bury(b, 6)
    t.bury(c, 7)  # one way: c takes b's place in their set
    t.came_back(b, 8)
    t.came_back(c, 9)
    assert t.late == [(2, 0), (9, 7)] and t.late_count == 2
