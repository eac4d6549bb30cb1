"""One large capture on every core, in bounded memory: flow shards that stream.

Each worker process reads the whole file but analyzes only the flows of its shard (see
:func:`analyzers.parallel.flow_shard`), streaming like :mod:`analyzers.streaming`: every finished
connection is summarized and written at once to the worker's own spool file, under its *creation
frame* (the frame that made it a new ``tcp.stream``) instead of a stream number.  The parent then
numbers every connection of every shard by creation frame -- exactly as one tracker would have --
and writes the document, reading the spooled lines back in that order and putting the final
number in.  The parent holds a few integers per connection; the workers hold their open flows.

The peers' views shard too (:class:`~analyzers.analysis.ShardableObserver`): tcp.analysis is per
stream, and each shard's Zeek view sees every packet's time, so that its timers fire where one
process's would; the parent merges the shards' conn.log rows in Zeek's removal order.
"""

from __future__ import annotations

import heapq
import multiprocessing
import os
import shutil
import tempfile
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import IO, Any, Protocol

from analyzers.analysis import Analysis, AnalysisOptions, analyze_file, shardable
from analyzers.errors import LoopcapError
from analyzers.jsonout import EncodedItems, dumps_value, write_document
from analyzers.parallel import _raw_shard, carry, flow_shard, raise_carried
from analyzers.pcapfile import CaptureReader
from analyzers.progress import Progress
from analyzers.streaming import SummarySink, streams_with
from analyzers.zeek import ZeekObserver, ZeekShardPart, contribute_shards


@dataclass
class ShardSpool:
    """What a worker hands back: where its lines are, and the integers needed to number them."""

    shard: int
    path: str
    #: creation frame of every conversation the shard numbered (quote-only ones too), by kind
    created: dict[str, array[int]] = field(default_factory=dict)
    #: per kind: creation frame, offset and length of every spooled line (in the order written)
    frames: dict[str, array[int]] = field(default_factory=dict)
    offsets: dict[str, array[int]] = field(default_factory=dict)
    lengths: dict[str, array[int]] = field(default_factory=dict)
    #: (creation frame, warning texts) of the TCP connections that have some
    warnings: list[tuple[int, list[str]]] = field(default_factory=list)
    #: per kind: how many flows came back after being handed out, and the first (new, old) frames
    late: dict[str, tuple[int, list[tuple[int, int]]]] = field(default_factory=dict)
    #: shard 0: the capture-wide facts (an Analysis without connections)
    base: Analysis | None = None
    error: tuple[type[LoopcapError], str, dict[str, Any]] | None = None
    #: the address of the Dask worker whose disk holds ``path`` (None: this machine's)
    worker: str | None = None
    #: the Zeek view's part, when the shards ran it (its rows follow the lines in ``path``)
    zeek: ZeekShardPart | None = None


def _stream_shard(path: str, shard: int, shards: int, options: AnalysisOptions, spool_path: str, *,
                  sort: bool = False, progress: Any = None) -> ShardSpool:
    """Worker: analyze this shard's flows of ``path``, spooling each finished one; with ``sort`` the
    spool is then rewritten in creation order (each kind's lines one after the other), so that it is
    read back front to back (:func:`_numbered`), a chunk at a time from afar."""
    out = ShardSpool(shard, spool_path)
    for kind in ("tcp", "udp"):
        out.created[kind] = array("q")
        out.frames[kind] = array("q")
        out.offsets[kind] = array("q")
        out.lengths[kind] = array("q")
    f = open(spool_path, "wb")  # noqa: SIM115 - closed below
    pos = 0

    def put(kind: str, stream: int, summary: dict[str, Any]) -> None:
        nonlocal pos
        frame = summary["stream"]  # the creation frame: the parent replaces it with the final number
        data = dumps_value(summary).encode()
        f.write(data)
        out.frames[kind].append(frame)
        out.offsets[kind].append(pos)
        out.lengths[kind].append(len(data))
        pos += len(data)

    zeek = next((ob for ob in options.observers if isinstance(ob, ZeekObserver)), None)
    rows_path = spool_path + ".zeek"
    if zeek is not None:
        zeek.rows_path = rows_path
    sink = SummarySink(options.observers, put, lambda kind, stream: out.created[kind][stream])
    opts = replace(options, on_tcp_done=sink.tcp_done, on_udp_done=sink.udp_done,
                   shard=(shard, shards, _raw_shard, flow_shard), created=out.created)
    try:
        res = analyze_file(path, opts, progress=progress)
        sink.finish()
    except LoopcapError as err:
        out.error = carry(err)
        return out
    finally:
        f.close()
    out.warnings = sink.warned
    part = zeek.shard_part() if zeek is not None else None
    res.observers = []  # their parts are in the spools
    for kind, (count, pairs) in (("tcp", res.late_tcp), ("udp", res.late_udp)):
        c = out.created[kind]
        out.late[kind] = (count, [(c[new], c[old]) for new, old in pairs])
    if shard == 0:
        res.late_tcp = res.late_udp = (0, [])
        out.base = res
    if sort:
        _sort_spool(out)
    if part is not None:  # the rows go after the lines
        with open(spool_path, "ab") as dst, open(rows_path, "rb") as src:
            part.offset = dst.tell()
            shutil.copyfileobj(src, dst, 1 << 20)
            part.length = dst.tell() - part.offset
        os.unlink(rows_path)
        out.zeek = part
    return out


def _sort_spool(spool: ShardSpool) -> None:
    """Rewrite ``spool``'s file with each kind's lines in creation order (tcp, then udp)."""
    tmp = spool.path + ".sorted"
    pos = 0
    with open(spool.path, "rb") as src, open(tmp, "wb") as dst:
        for kind in ("tcp", "udp"):
            frames, offs, lens = spool.frames[kind], spool.offsets[kind], spool.lengths[kind]
            order = sorted(range(len(frames)), key=frames.__getitem__)
            new_frames, new_offs, new_lens = array("q"), array("q"), array("q")
            for i in order:
                src.seek(offs[i])
                dst.write(src.read(lens[i]))
                new_frames.append(frames[i])
                new_offs.append(pos)
                new_lens.append(lens[i])
                pos += lens[i]
            spool.frames[kind], spool.offsets[kind], spool.lengths[kind] = new_frames, new_offs, new_lens
    os.replace(tmp, spool.path)


class SpoolReader(Protocol):
    """Where a shard's spooled lines are read back from (a local file, or a Dask worker's)."""

    def read(self, offset: int, length: int) -> bytes: ...

    def close(self) -> None: ...


class _LocalSpool:
    def __init__(self, spool: ShardSpool) -> None:
        self._f = open(spool.path, "rb")  # noqa: SIM115 - closed by close()

    def read(self, offset: int, length: int) -> bytes:
        self._f.seek(offset)
        return self._f.read(length)

    def close(self) -> None:
        self._f.close()


def _numbered(spools: list[ShardSpool], kind: str, open_spool: Callable[[ShardSpool], SpoolReader]) -> Iterator[str]:
    """Every spooled line of ``kind``, in creation order, with its final stream number."""
    everything = array("q", sorted(f for s in spools for f in s.created[kind]))
    files = {s.shard: open_spool(s) for s in spools}

    def by_frame(s: ShardSpool) -> Iterator[tuple[int, int, int, int]]:
        frames, offs, lens = s.frames[kind], s.offsets[kind], s.lengths[kind]
        for i in sorted(range(len(frames)), key=frames.__getitem__):
            yield frames[i], s.shard, offs[i], lens[i]

    try:
        for frame, shard, off, n in heapq.merge(*(by_frame(s) for s in spools)):
            text = files[shard].read(off, n).decode()
            head = f'{{"stream":{frame},'  # jsonout's compact encoding; the summary starts with its stream
            assert text.startswith(head), text[:40]
            yield f'{{"stream":{bisect_left(everything, frame)},' + text[len(head):]
    finally:
        for fh in files.values():
            fh.close()


def analyze_file_to_json_sharded(path: str | os.PathLike[str], out: IO[str], options: AnalysisOptions | None = None,
                                 *, jobs: int = 2) -> Analysis:
    """:func:`analyzers.streaming.analyze_file_to_json` on ``jobs`` processes (flow shards); the
    same document."""
    return analyze_file_sharded(path, lambda doc: write_document(doc, out), options, jobs=jobs)


def analyze_file_sharded(path: str | os.PathLike[str], consume: Callable[[dict[str, Any]], None],
                         options: AnalysisOptions | None = None, *, jobs: int = 2,
                         progress: Progress | None = None) -> Analysis:
    """:func:`analyzers.streaming.analyze_file_streamed` on ``jobs`` processes (flow shards): the same
    document, handed to ``consume``.  ``progress`` follows the slowest shard's reading (every shard
    reads the whole file); the caller advances it past the file."""
    opts = options or AnalysisOptions()
    if not shards_with(opts):
        raise ValueError("a sharded analysis keeps no payloads and takes only observers that can follow a flow "
                         "shard (the peers' views)")
    name = os.fspath(path)
    with CaptureReader.open(name):
        pass  # a file that is no capture fails here, clearly, before any worker starts
    tmp = tempfile.mkdtemp(prefix="loopcap-shards-")
    # each shard's bytes read and packets, written by the workers (only their own slots), read here
    slots = multiprocessing.RawArray("q", 2 * jobs) if progress is not None else None
    try:
        with ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker, initargs=(slots,)) as pool:
            futures = [pool.submit(_shard_task, name, k, jobs, opts, os.path.join(tmp, f"shard-{k}.jsonl"))
                       for k in range(jobs)]
            if progress is not None and slots is not None:
                progress.start_file(name, os.path.getsize(name))
                while True:
                    running = wait(futures, timeout=PROGRESS_EVERY_S).not_done
                    progress.update(min(slots[:jobs]), min(slots[jobs:]))
                    if not running:
                        break
            spools = [fut.result() for fut in futures]
        base, doc = document_from_spools(spools, _LocalSpool)
        consume(doc)
        return base
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


#: how often a sharded run's progress is shown, in seconds
PROGRESS_EVERY_S = 0.25
#: in a worker of :func:`analyze_file_sharded`: the run's progress slots (None: no progress shown)
_SLOTS: Any = None


def _init_worker(slots: Any) -> None:
    global _SLOTS
    _SLOTS = slots


class _SlotProgress:
    """A shard's progress (a :class:`~analyzers.progress.Progress`): its bytes read and packets go to
    its two slots of the shared array."""

    def __init__(self, slots: Any, shard: int, shards: int) -> None:
        self._slots, self._k, self._n = slots, shard, shards

    def start_file(self, name: str, size: int) -> None:
        return None

    def update(self, file_bytes: int, packets: int) -> None:
        self._slots[self._k] = file_bytes
        self._slots[self._n + self._k] = packets

    def advance_file(self, size: int, packets: int = 0) -> None:
        self.update(size, packets)


def _shard_task(path: str, shard: int, shards: int, options: AnalysisOptions, spool_path: str) -> ShardSpool:
    """Worker of :func:`analyze_file_sharded`: :func:`_stream_shard`, its progress in the run's slots."""
    progress = _SlotProgress(_SLOTS, shard, shards) if _SLOTS is not None else None
    return _stream_shard(path, shard, shards, options, spool_path, progress=progress)


def document_from_spools(spools: list[ShardSpool], open_spool: Callable[[ShardSpool], SpoolReader]
                         ) -> tuple[Analysis, dict[str, Any]]:
    """One file's document from every shard's spool (shard order), its connections numbered by
    creation frame and read back lazily through ``open_spool``; and the file's :class:`Analysis`
    (without connections).  A shard's carried error is raised here."""
    for s in spools:
        raise_carried(s.error)
    base = spools[0].base
    assert base is not None
    number = {kind: array("q", sorted(f for s in spools for f in s.created[kind])) for kind in ("tcp", "udp")}

    def late(kind: str) -> tuple[int, list[tuple[int, int]]]:
        pairs = sorted(p for s in spools for p in s.late[kind][1])[:100]
        return (sum(s.late[kind][0] for s in spools),
                [(bisect_left(number[kind], a), bisect_left(number[kind], b)) for a, b in pairs])

    base.late_tcp, base.late_udp = late("tcp"), late("udp")
    warned = sorted((w for s in spools for w in s.warnings), key=lambda t: t[0])
    base.streamed_warnings = []
    for frame, texts in warned:
        g = bisect_left(number["tcp"], frame)
        head = f"TCP stream {frame}: "
        base.streamed_warnings.extend(f"TCP stream {g}: " + t[len(head):] for t in texts)
    counts = {kind: sum(len(s.frames[kind]) for s in spools) for kind in ("tcp", "udp")}
    doc = base.to_dict(tcp=EncodedItems(counts["tcp"], _numbered(spools, "tcp", open_spool)),  # type: ignore[arg-type]
                       udp=EncodedItems(counts["udp"], _numbered(spools, "udp", open_spool)))  # type: ignore[arg-type]
    parts = [(s, s.zeek) for s in spools if s.zeek is not None]
    if parts:
        contribute_shards(doc, [p for _, p in parts], [_lines(open_spool(s), p.offset, p.length) for s, p in parts])
    return base, doc


#: how much of a spool is read at a time when it is read as lines
LINES_CHUNK = 1 << 20


def _lines(spool: SpoolReader, offset: int, length: int) -> Iterator[bytes]:
    """The lines (without their newline) of ``spool`` from ``offset`` to ``offset + length``, read a
    chunk at a time (held once: no list of a chunk's lines, no second copy); the spool is closed at
    the end."""
    try:
        buf = b""
        start = 0
        pos = offset
        end = offset + length
        while True:
            nl = buf.find(b"\n", start)
            if nl >= 0:
                yield buf[start:nl]
                start = nl + 1
                continue
            chunk = spool.read(pos, min(LINES_CHUNK, end - pos)) if pos < end else b""
            if not chunk:
                if start < len(buf):
                    yield buf[start:]
                return
            pos += len(chunk)
            buf = buf[start:] + chunk
            start = 0
    finally:
        spool.close()


def shards_with(options: AnalysisOptions) -> bool:
    """Whether a file can be analyzed by flow shards with these options: no kept payloads, only
    observers that can follow a shard (the peers' views), and a custom decoder only theirs."""
    if not shardable(options.observers) or not streams_with(options):  # (no kept payloads: they cannot stream)
        return False
    return options.decoder_factory is None or any(
        getattr(options.decoder_factory, "__self__", None) is ob for ob in options.observers)
