"""One large capture on every core, in bounded memory: flow shards that stream.

Each worker process reads the whole file but analyzes only the flows of its shard (see
:func:`analyzers.parallel.flow_shard`), streaming like :mod:`analyzers.streaming`: every finished
connection is summarized and written at once to the worker's own spool file, under its *creation
frame* (the frame that made it a new ``tcp.stream``) instead of a stream number.  The parent then
numbers every connection of every shard by creation frame -- exactly as one tracker would have --
and writes the document, reading the spooled lines back in that order and putting the final
number in.  The integers that number them are on disk, in the spools: the workers hold their open
flows, the parent a chunk of each spool.

The peers' views shard too (:class:`~analyzers.analysis.ShardableObserver`): tcp.analysis is per
stream, and each shard's Zeek view sees every packet's time, so that its timers fire where one
process's would; the parent merges the shards' conn.log rows in Zeek's removal order.
"""

from __future__ import annotations

import contextlib
import heapq
import multiprocessing
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import IO, Any, Protocol

import numpy as np

from analyzers.analysis import Analysis, AnalysisOptions, analyze_file, gc_paused, shardable
from analyzers.errors import LoopcapError
from analyzers.jsonout import SPOOL_BUFFER, EncodedItems, dumps_bytes, write_document
from analyzers.parallel import _raw_shard, carry, flow_shard, raise_carried
from analyzers.pcapfile import CaptureReader
from analyzers.progress import Progress
from analyzers.streaming import SummarySink, positional_reader, streams_with
from analyzers.tcpanalysis import TcpAnalysisObserver
from analyzers.zeek import ZeekObserver, ZeekShardPart, contribute_shards

#: the kinds of conversation a spool holds, in the order of their sections
KINDS = ("tcp", "udp")
#: one index row: creation frame, offset and length of a spooled line (little-endian int64s)
_ROW = np.dtype("<i8")


@dataclass
class ShardSpool:
    """What a worker hands back: where its lines are, and where in the same file the integers are that
    number them (sections after the lines, so that the worker keeps none of them and the parent reads
    them a chunk at a time: memory follows neither the connections nor the file)."""

    shard: int
    path: str
    #: per kind: (offset, rows) of the index section, one row (creation frame, offset, length) for
    #: every spooled line, in creation order
    index: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: per kind: (offset, count) of the creation frames of every conversation the shard numbered
    #: (quote-only ones too), ascending
    created: dict[str, tuple[int, int]] = field(default_factory=dict)
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

    def lines(self, kind: str) -> int:
        return self.index[kind][1]


def _stream_shard(path: str, shard: int, shards: int, options: AnalysisOptions, spool_path: str, *,
                  sort: bool = False, progress: Any = None) -> ShardSpool:
    """Worker: analyze this shard's flows of ``path``, spooling each finished one; then the index and
    the creation frames follow the lines (see :class:`ShardSpool`).  With ``sort`` the lines
    themselves are rewritten in creation order (each kind's one after the other), so that they are
    read front to back (:func:`_numbered`), a chunk at a time from afar."""
    out = ShardSpool(shard, spool_path)
    f = open(spool_path, "wb", buffering=SPOOL_BUFFER)  # noqa: SIM115 - closed below
    # side files: per kind the index rows, and the creation frames (ascending: frames come in order)
    side_paths = {f"{kind}.{what}": f"{spool_path}.{kind}.{what}" for kind in KINDS for what in ("idx", "created")}
    side = {name: open(p, "wb") for name, p in side_paths.items()}  # noqa: SIM115 - closed below
    idx = {kind: side[f"{kind}.idx"] for kind in KINDS}
    row = struct.Struct("<qqq").pack
    one = struct.Struct("<q").pack
    counts = dict.fromkeys(KINDS, 0)

    def creator(kind: str) -> Callable[[int], None]:
        write = side[f"{kind}.created"].write

        def created(frame: int) -> None:
            counts[kind] += 1
            write(one(frame))
        return created

    pos = 0

    def put(kind: str, stream: int, summary: dict[str, Any]) -> None:
        nonlocal pos
        frame = summary["stream"]  # the creation frame: the parent replaces it with the final number
        data = dumps_bytes(summary)
        f.write(data)
        idx[kind].write(row(frame, pos, len(data)))
        pos += len(data)

    zeek = next((ob for ob in options.observers if isinstance(ob, ZeekObserver)), None)
    rows_path = spool_path + ".zeek"
    if zeek is not None:
        zeek.rows_path = rows_path
    for ob in options.observers:
        if isinstance(ob, TcpAnalysisObserver):  # its memory of 4-tuples: only this shard's sets
            ob.shard = (shard, shards)
    sink = SummarySink(options.observers, put)  # (a shard's stream numbers are creation frames)
    opts = replace(options, on_tcp_done=sink.tcp_done, on_udp_done=sink.udp_done,
                   shard=(shard, shards, _raw_shard, flow_shard), created={kind: creator(kind) for kind in KINDS})
    try:
        with gc_paused():  # the observers' last rows and the sealing too (see gc_paused)
            try:
                res = analyze_file(path, opts, progress=progress)
                sink.finish()
            except LoopcapError as err:
                out.error = carry(err)
                return out
            finally:
                f.close()
                for fh in side.values():
                    fh.close()
            out.warnings = sink.warned
            part = zeek.shard_part() if zeek is not None else None
            res.observers = []  # their parts are in the spools
            out.late = {"tcp": res.late_tcp, "udp": res.late_udp}  # (new, old): creation frames
            if shard == 0:
                res.late_tcp = res.late_udp = (0, [])
                out.base = res
            _seal(out, side_paths, counts, part, rows_path if part is not None else None, sort)
    finally:
        for p in side_paths.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
    return out


def _seal(spool: ShardSpool, side_paths: dict[str, str], created: dict[str, int],
          zeek: ZeekShardPart | None, rows_path: str | None, sort: bool) -> None:
    """Append the sections to ``spool``'s file: the Zeek rows, then per kind the index sorted by
    creation frame, then per kind the creation frames; with ``sort`` the lines are first rewritten in
    that order."""
    tables = {}
    for kind in KINDS:
        t = np.fromfile(side_paths[f"{kind}.idx"], dtype=_ROW).reshape(-1, 3)
        tables[kind] = t[np.argsort(t[:, 0], kind="stable")]
    if sort:
        tmp = spool.path + ".sorted"
        pos = 0
        with open(spool.path, "rb") as src, open(tmp, "wb", buffering=SPOOL_BUFFER) as dst:
            read = positional_reader(src)
            for kind in KINDS:
                t = tables[kind]
                for _, off, n in t.tolist():
                    dst.write(read(off, n))
                lengths = t[:, 2]
                t[:, 1] = pos + np.cumsum(lengths) - lengths
                pos += int(lengths.sum())
        os.replace(tmp, spool.path)
    with open(spool.path, "ab") as dst:
        if zeek is not None and rows_path is not None:
            zeek.offset = dst.tell()
            with open(rows_path, "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 20)
            zeek.length = dst.tell() - zeek.offset
            os.unlink(rows_path)
            spool.zeek = zeek
        for kind in KINDS:
            spool.index[kind] = (dst.tell(), len(tables[kind]))
            dst.write(tables[kind].astype(_ROW, copy=False).tobytes())
        for kind in KINDS:
            spool.created[kind] = (dst.tell(), created[kind])
            with open(side_paths[f"{kind}.created"], "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 20)


class SpoolReader(Protocol):
    """Where a shard's spooled lines are read back from (a local file, or a Dask worker's)."""

    def read(self, offset: int, length: int) -> bytes: ...

    def close(self) -> None: ...


class _LocalSpool:
    def __init__(self, spool: ShardSpool) -> None:
        self._f = open(spool.path, "rb")  # noqa: SIM115 - closed by close()
        self.read = positional_reader(self._f)

    def close(self) -> None:
        self._f.close()


#: index rows read at a time from a spool's sections
ROWS_CHUNK = 1 << 13


def _ints(spool: SpoolReader, offset: int, count: int, width: int) -> Iterator[list[int]]:
    """The ``count`` rows of ``width`` int64s of a section of ``spool`` from ``offset``, a chunk at a
    time (each row a list); the spool is closed at the end."""
    try:
        size = 8 * width
        pos, end = offset, offset + count * size
        while pos < end:
            want = min(ROWS_CHUNK * size, end - pos)
            chunk = spool.read(pos, want)
            if len(chunk) != want:
                raise LoopcapError(f"a shard's spool ends early ({len(chunk)} of {want} bytes at {pos})")
            pos += want
            yield from np.frombuffer(chunk, dtype=_ROW).reshape(-1, width).tolist()
    finally:
        spool.close()


def _created(spools: list[ShardSpool], kind: str, open_spool: Callable[[ShardSpool], SpoolReader]) -> Iterator[int]:
    """The creation frame of every ``kind`` conversation of every shard, ascending."""
    return heapq.merge(*((r[0] for r in _ints(open_spool(s), *s.created[kind], 1)) for s in spools))


def _ranks(spools: list[ShardSpool], kind: str, open_spool: Callable[[ShardSpool], SpoolReader],
           frames: list[int]) -> dict[int, int]:
    """The final stream number of each creation frame in ``frames`` (one pass over the shards'
    creation frames)."""
    want = sorted(set(frames))
    out: dict[int, int] = {}
    if not want:
        return out
    i = 0
    for n, frame in enumerate(_created(spools, kind, open_spool)):
        while i < len(want) and want[i] <= frame:
            if want[i] == frame:
                out[frame] = n
            i += 1
        if i == len(want):
            break
    return out


def _numbered(spools: list[ShardSpool], kind: str, open_spool: Callable[[ShardSpool], SpoolReader]
              ) -> Iterator[bytes]:
    """Every spooled line of ``kind``, in creation order, with its final stream number: the shards'
    index sections merged by creation frame, counted against their creation frames merged."""
    files = {s.shard: open_spool(s) for s in spools}

    def rows(s: ShardSpool) -> Iterator[tuple[int, int, int, int]]:
        for frame, off, n in _ints(open_spool(s), *s.index[kind], 3):
            yield frame, s.shard, off, n

    created = _created(spools, kind, open_spool)
    number = -1
    try:
        for frame, shard, off, n in heapq.merge(*(rows(s) for s in spools)):
            for c in created:  # every line's frame created a conversation: count up to it
                number += 1
                if c == frame:
                    break
            else:
                raise LoopcapError(f"a shard's spool lists frame {frame} but no conversation created there")
            text = files[shard].read(off, n)
            head = b'{"stream":%d,' % frame  # jsonout's compact encoding; the summary starts with its stream
            assert text.startswith(head), text[:40]
            yield b'{"stream":%d,' % number + text[len(head):]
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

    # the creation frames to number outside the lines: the first late pairs, and the warned streams
    pairs = {kind: sorted(p for s in spools for p in s.late[kind][1])[:100] for kind in KINDS}
    warned = sorted((w for s in spools for w in s.warnings), key=lambda t: t[0])
    wanted = {kind: [f for p in pairs[kind] for f in p] for kind in KINDS}
    wanted["tcp"] += [frame for frame, _ in warned]
    rank = {kind: _ranks(spools, kind, open_spool, wanted[kind]) for kind in KINDS}  # (one pass per kind)
    base.late_tcp, base.late_udp = ((sum(s.late[kind][0] for s in spools),
                                     [(rank[kind][a], rank[kind][b]) for a, b in pairs[kind]]) for kind in KINDS)
    base.streamed_warnings = []
    for frame, texts in warned:
        head = f"TCP stream {frame}: "
        base.streamed_warnings.extend(f"TCP stream {rank['tcp'][frame]}: " + t[len(head):] for t in texts)
    counts = {kind: sum(s.lines(kind) for s in spools) for kind in KINDS}
    doc = base.to_dict(tcp=EncodedItems(counts["tcp"], _numbered(spools, "tcp", open_spool)),
                       udp=EncodedItems(counts["udp"], _numbered(spools, "udp", open_spool)))
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
