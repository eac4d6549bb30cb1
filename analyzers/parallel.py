"""Use every core: many capture files at once, and one large file sharded by flow.

``analyze_many(paths, options, jobs)`` returns the ``loopcap/1`` document of every file, in the
order given, each identical to ``analyze_file(path, options).to_dict()`` of a single process.

Many files
    Each file is one task in a :class:`~concurrent.futures.ProcessPoolExecutor` (``jobs`` worker
    processes, default ``os.cpu_count()``), largest first so the pool stays busy.

One large file: shard by flow, not by byte range
    Splitting a capture into byte ranges cannot give identical results: a connection spanning two
    chunks would need its TCP state machine, its reassembly buffers and its incremental SHA-256
    carried across the cut, and a hash state cannot be merged.  Instead a file of at least
    ``split_bytes`` is analyzed by ``shards`` tasks that each read the whole file (reading is cheap:
    the profile in ``bench/README.md`` puts it under a tenth of the time) but decode and track only
    the flows whose symmetric address/port key falls in their share.  Every connection is then
    complete inside one shard, hashes and all.  What is global is settled as follows:

    * ``tcp.stream`` / ``udp.stream`` numbers are Wireshark's: the order in which a conversation was
      first looked up.  Each shard numbers its conversations by the frame that created them and
      records those frames (quote-only ones made by ICMP errors or damaged headers included, since
      they consume a number too); the merge numbers all of them by that frame and renumbers the
      summaries.
    * IP fragments carry no ports until reassembled, so every shard decodes every fragment (the
      reassembler's state, eviction included, is the same in all shards) and only the owner of the
      reassembled datagram tracks it.
    * A raw pre-check recognises the common case (an unfragmented IPv4 or IPv6 TCP/UDP packet
      without options or extension headers, on Ethernet, Linux cooked or BSD loopback framing) from
      a few header bytes, exactly under the conditions in which the decoder would return a segment
      or datagram; other shards' packets are then skipped without decoding.  Anything else is fully
      decoded by every shard and dispatched by the key of the result.
    * Per-capture facts (packet count, first/last time, malformed packets, ICMP errors, other frames,
      unknown link types, pending fragments, read warnings) come from shard 0, which sees every
      record and decodes every packet that is not a clean segment or datagram.

Options that cannot cross a process boundary (observers such as the Zeek and tcp.analysis peers, a
``keep_payload`` callable, which is asked about stream numbers only known after the merge, a custom
``decoder_factory``) make :func:`analyze_many` run in this process, file after file: the results are
the same, only slower.
"""

from __future__ import annotations

import os
import pickle
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from analyzers.analysis import Analysis, AnalysisOptions, analyze_file, gc_paused
from analyzers.errors import LoopcapError, UsageError
from analyzers.tombstones import flow_hash

if TYPE_CHECKING:
    from analyzers.progress import Progress

#: files at least this large are sharded by flow across the workers (when there is more than one)
DEFAULT_SPLIT_BYTES = 64 * 1024 * 1024
#: what a directory given to ``loopcap analyze DIR/`` contributes (case-insensitive)
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".dmp")

__all__ = [
    "CAPTURE_SUFFIXES",
    "DEFAULT_SPLIT_BYTES",
    "Task",
    "TaskResult",
    "analyze_many",
    "analyze_paths",
    "can_cross_processes",
    "capture_files",
    "default_jobs",
    "flow_shard",
    "iter_analyze_many",
    "merge_results",
    "plan_tasks",
    "run_task",
]


def default_jobs() -> int:
    """Every core (``os.cpu_count()``), at least 1."""
    return os.cpu_count() or 1


# ---------------------------------------------------------------------------------------------
# which shard owns a flow


def flow_shard(src: bytes, sport: int, dst: bytes, dport: int, shards: int) -> int:
    """The shard owning the conversation between ``(src, sport)`` and ``(dst, dport)``.

    Symmetric (both directions give the same shard), deterministic across processes and machines
    (Python's ``hash`` of bytes is salted per process, so it is not used), and cheap: the flow-shard
    hash (:func:`analyzers.tombstones.flow_hash`) modulo ``shards``."""
    return flow_hash(src[-1], sport, dst[-1], dport) % shards


_ETH_IPV4 = 0x0800
_ETH_IPV6 = 0x86DD
_NULL_V6 = frozenset((24, 28, 30, 10))


def _raw_shard(linktype: int, data: bytes, shards: int) -> int:
    """The owning shard of a clean TCP/UDP packet, read from raw bytes, or -1 when unsure.

    A shard >= 0 is returned only when :meth:`analyzers.decode.Decoder.decode` would return a
    :class:`TcpSegment` or :class:`UdpDatagram` with those addresses and ports without touching the
    fragment reassembler: IPv4 with a 20-byte header, not a fragment, total length filled in and
    fully captured; IPv6 with TCP or UDP as the first next header and a non-zero payload length;
    TCP with a valid data offset; UDP with a valid length.  Every other frame returns -1 and is
    decoded in full by every shard."""
    n = len(data)
    if linktype == 1:  # Ethernet (VLAN tags: -1)
        if n < 42:
            return -1
        etype = (data[12] << 8) | data[13]
        off = 14
    elif linktype == 113:  # Linux SLL
        if n < 44:
            return -1
        etype = (data[14] << 8) | data[15]
        off = 16
    elif linktype == 276:  # Linux SLL2
        if n < 48:
            return -1
        etype = (data[0] << 8) | data[1]
        off = 20
    elif linktype == 0:  # BSD loopback / NULL: family in the capturing host's byte order
        if n < 32:
            return -1
        le = data[0] | (data[1] << 8) | (data[2] << 16) | (data[3] << 24)
        be = (data[0] << 24) | (data[1] << 16) | (data[2] << 8) | data[3]
        if le == 2 or (le not in _NULL_V6 and be == 2):
            etype = _ETH_IPV4
        elif le in _NULL_V6 or be in _NULL_V6:
            etype = _ETH_IPV6
        else:
            return -1
        off = 4
    else:
        return -1
    if etype == _ETH_IPV4:
        if data[off] != 0x45:
            return -1
        total = (data[off + 2] << 8) | data[off + 3]
        if total < 28 or off + total > n or (data[off + 6] & 0x3F) or data[off + 7]:
            return -1  # TSO length 0, truncated, or a fragment (MF set or an offset)
        proto = data[off + 9]
        l4 = off + 20
        wire = total - 20
        a = data[off + 15]
        b = data[off + 19]
    elif etype == _ETH_IPV6:
        if n < off + 48 or data[off] >> 4 != 6:
            return -1
        plen = (data[off + 4] << 8) | data[off + 5]
        if plen < 8 or off + 40 + plen > n:
            return -1  # jumbogram / TSO, or truncated
        proto = data[off + 6]
        l4 = off + 40
        wire = plen
        a = data[off + 23]
        b = data[off + 39]
    else:
        return -1
    if proto == 6:
        if wire < 20 or n < l4 + 20:
            return -1
        hlen = (data[l4 + 12] >> 4) * 4
        if hlen < 20 or hlen > wire:
            return -1
    elif proto == 17:
        ulen = (data[l4 + 4] << 8) | data[l4 + 5]
        if ulen < 8 or ulen > wire:
            return -1
    else:
        return -1
    return flow_hash(a, (data[l4] << 8) | data[l4 + 1], b, (data[l4 + 2] << 8) | data[l4 + 3]) % shards


# ---------------------------------------------------------------------------------------------
# tasks


@dataclass(frozen=True)
class Task:
    """One unit of work: a whole file (``shards == 1``) or one flow shard of it."""

    path: str
    shard: int = 0
    shards: int = 1
    index: int = 0  #: position of the file in the caller's list
    size: int = 0


@dataclass
class TaskResult:
    """What a worker sends back (plain picklable data: hash states never cross processes)."""

    task: Task
    #: the whole document when the file was not sharded
    doc: dict[str, Any] | None = None
    #: shard 0: the capture-wide facts (an Analysis without connections)
    base: Analysis | None = None
    #: (creation frame, summary) of every TCP connection / UDP conversation this shard reports
    tcp: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    udp: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    #: creation frames of every conversation this shard numbered (quote-only ones too)
    tcp_created: list[int] = field(default_factory=list)
    udp_created: list[int] = field(default_factory=list)
    #: a LoopcapError raised while analyzing, carried across the process boundary
    error: tuple[type[LoopcapError], str, dict[str, Any]] | None = None

    def raise_error(self) -> None:
        raise_carried(self.error)


def carry(err: LoopcapError) -> tuple[type[LoopcapError], str, dict[str, Any]]:
    """A LoopcapError as plain data that crosses a process boundary (see :func:`raise_carried`)."""
    return type(err), str(err.args[0]) if err.args else err.message, dict(err.__dict__)


def raise_carried(error: tuple[type[LoopcapError], str, dict[str, Any]] | None) -> None:
    """Raise again, in this process, an error a worker carried over with :func:`carry` (None: no error)."""
    if error is not None:
        cls, message, attrs = error
        exc = cls.__new__(cls)
        Exception.__init__(exc, message)
        exc.__dict__.update(attrs)
        raise exc


def can_cross_processes(options: AnalysisOptions | None) -> bool:
    """Whether ``options`` can be sent to worker processes (no observers, no ``keep_payload``
    callable, no custom decoder, and picklable)."""
    if options is None:
        return True
    if options.observers or callable(options.keep_payload) or getattr(options, "decoder_factory", None) is not None:
        return False
    return picklable(options)


def picklable(obj: object) -> bool:
    """Whether ``obj`` can be sent to another process."""
    try:
        pickle.dumps(obj)
    except Exception:
        return False
    return True


def plan_tasks(paths: Sequence[str | os.PathLike[str]], shards: int, split_bytes: int = DEFAULT_SPLIT_BYTES
               ) -> list[Task]:
    """Tasks for ``paths``: files of at least ``split_bytes`` become ``shards`` flow shards, the rest
    one task each; the largest work first."""
    tasks: list[Task] = []
    for i, p in enumerate(paths):
        path = os.fspath(p)
        try:
            size = os.stat(path).st_size
        except OSError:
            size = 0  # the worker reports the error as analyze_file does
        if shards > 1 and size >= split_bytes:
            tasks.extend(Task(path, k, shards, i, size // shards) for k in range(shards))
        else:
            tasks.append(Task(path, 0, 1, i, size))
    tasks.sort(key=lambda t: -t.size)
    return tasks


def run_task(task: Task, options: AnalysisOptions | None = None) -> TaskResult:
    """Run one task (in a worker process, a Dask worker, or here)."""
    try:
        if task.shards == 1:
            return TaskResult(task, doc=analyze_file(task.path, options).to_dict())
        return _run_shard(task, options or AnalysisOptions())
    except LoopcapError as err:
        return TaskResult(task, error=carry(err))


def _run_shard(task: Task, opts: AnalysisOptions) -> TaskResult:
    """:func:`analyzers.analysis.analyze_file` tracking only this shard's flows (the analysis loop's
    ``shard`` option), with the creation frame of every conversation it numbered."""
    if not can_cross_processes(opts):
        raise ValueError("a sharded task cannot run observers, a keep_payload callable or a custom decoder")
    created: dict[str, array[int]] = {"tcp": array("q"), "udp": array("q")}
    with gc_paused():
        res = analyze_file(task.path, replace(opts, shard=(task.shard, task.shards, _raw_shard, flow_shard),
                                              created={k: a.append for k, a in created.items()}))
        # a shard's conversations are numbered by their creation frame
        tcp = [(c.stream, s) for c, s in zip(res.tcp, res.tcp_summaries, strict=True)]
        udp = [(u.stream, s) for u, s in zip(res.udp, res.udp_summaries, strict=True)]
    out = TaskResult(task, tcp=tcp, udp=udp, tcp_created=list(created["tcp"]), udp_created=list(created["udp"]))
    if task.shard == 0:
        # the base travels without connections or summaries (connections hold hash states)
        res.tcp, res.udp = [], []
        res._tcp_summaries = res._udp_summaries = None
        out.base = res
    return out


def merge_results(results: Iterable[TaskResult]) -> dict[str, Any]:
    """The document of one file from its task results (one whole-file result, or every shard)."""
    rs = sorted(results, key=lambda r: r.task.shard)
    if not rs:
        raise ValueError("no task results to merge")
    for r in rs:
        r.raise_error()
    if rs[0].doc is not None:
        return rs[0].doc
    shards = rs[0].task.shards
    if [r.task.shard for r in rs] != list(range(shards)):
        raise ValueError(f"{rs[0].task.path}: expected shards 0..{shards - 1}, got {[r.task.shard for r in rs]}")
    base = rs[0].base
    assert base is not None
    tcp = _renumber([r.tcp for r in rs], [r.tcp_created for r in rs])
    udp = _renumber([r.udp for r in rs], [r.udp_created for r in rs])
    base._tcp_summaries = tcp
    base._udp_summaries = udp
    return base.to_dict()


def _renumber(items: list[list[tuple[int, dict[str, Any]]]], created: list[list[int]]) -> list[dict[str, Any]]:
    """Number conversations by creation frame across shards (as one tracker would have), in order."""
    everything = sorted(f for fs in created for f in fs)
    out: list[tuple[int, dict[str, Any]]] = []
    for part in items:
        for frame, summary in part:
            number = bisect_left(everything, frame)
            summary["stream"] = number
            out.append((number, summary))
    out.sort(key=lambda t: t[0])
    return [s for _, s in out]


# ---------------------------------------------------------------------------------------------
# driving a pool


def iter_analyze_many(paths: Sequence[str | os.PathLike[str]], options: AnalysisOptions | None = None,
                      jobs: int | None = None, *, split_bytes: int = DEFAULT_SPLIT_BYTES
                      ) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(path, loopcap/1 document)`` for every file, in the order given, as soon as each file
    and all files before it are done.  A file that cannot be read raises its
    :class:`~analyzers.errors.LoopcapError` at its turn (the documents before it have been yielded)."""
    jobs = default_jobs() if jobs is None else jobs
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    names = [os.fspath(p) for p in paths]
    if jobs == 1 or not can_cross_processes(options):
        for name in names:
            yield name, analyze_file(name, options).to_dict()
        return
    tasks = plan_tasks(names, jobs, split_bytes)
    if len(tasks) == 1:
        t = tasks[0]
        yield t.path, merge_results([run_task(t, options)])
        return
    parts: dict[int, list[TaskResult]] = {}
    need = {}
    for t in tasks:
        need[t.index] = t.shards
    ready: dict[int, dict[str, Any] | TaskResult] = {}
    nxt = 0
    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks))) as pool:
        pending: set[Future[TaskResult]] = {pool.submit(run_task, t, options) for t in tasks}
        try:
            while pending:
                # results are unpickled while we wait: thousands of small dicts, which the cyclic GC
                # would re-walk over and over (5x the unpickling time); reference counting frees them
                with gc_paused():
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    r = fut.result()
                    lst = parts.setdefault(r.task.index, [])
                    lst.append(r)
                    if len(lst) == need[r.task.index]:
                        del parts[r.task.index]
                        try:
                            ready[r.task.index] = merge_results(lst)
                        except LoopcapError:
                            ready[r.task.index] = next(x for x in lst if x.error is not None)
                while nxt in ready:
                    item = ready.pop(nxt)
                    if isinstance(item, TaskResult):
                        item.raise_error()
                    else:
                        yield names[nxt], item
                    nxt += 1
        finally:
            for fut in pending:
                fut.cancel()
    while nxt in ready:  # pragma: no cover - everything is yielded inside the loop
        item = ready.pop(nxt)
        if isinstance(item, TaskResult):
            item.raise_error()
        else:
            yield names[nxt], item
        nxt += 1


def analyze_many(paths: Sequence[str | os.PathLike[str]], options: AnalysisOptions | None = None,
                 jobs: int | None = None, *, split_bytes: int = DEFAULT_SPLIT_BYTES) -> list[dict[str, Any]]:
    """The ``loopcap/1`` document of every file in ``paths`` (in that order), computed on ``jobs``
    processes (default: every core); each equals ``analyze_file(path, options).to_dict()``.
    Files of at least ``split_bytes`` are sharded by flow across the processes."""
    return [doc for _, doc in iter_analyze_many(paths, options, jobs, split_bytes=split_bytes)]


# ---------------------------------------------------------------------------------------------
# what the CLI calls


def capture_files(args: Iterable[str | os.PathLike[str]], *, recursive: bool = True) -> list[str]:
    """Expand ``loopcap analyze DIR/ FILES...``: files as given (in that order), each directory
    replaced by the capture files under it (:data:`CAPTURE_SUFFIXES`, sorted by path; recursively
    unless ``recursive=False``).  A path that does not exist is kept, so that analyzing it raises
    the usual typed error."""
    out: list[str] = []
    for a in args:
        p = os.fspath(a)
        if os.path.isdir(p):
            found: list[str] = []
            for root, dirs, files in os.walk(p):
                dirs.sort()
                found.extend(os.path.join(root, f) for f in files if f.lower().endswith(CAPTURE_SUFFIXES))
                if not recursive:
                    break
            out.extend(sorted(found))
        else:
            out.append(p)
    return out


def analyze_paths(paths: Sequence[str | os.PathLike[str]], options: AnalysisOptions | None = None, *,
                  jobs: int | None = None, engine: str = "local", scheduler: str | None = None,
                  progress: Progress | None = None, split_bytes: int = DEFAULT_SPLIT_BYTES
                  ) -> Iterator[tuple[str, dict[str, Any]]]:
    """One entry point for ``loopcap analyze``: ``(path, document)`` for every file, in order.

    ``engine="local"`` uses :func:`iter_analyze_many` (``jobs`` processes, default every core);
    ``engine="dask"`` sends the work to the scheduler at ``scheduler``.  ``progress`` (see
    :mod:`analyzers.progress`) follows the bytes of one file record by record when the work stays
    in this process, else advances file by file as documents arrive.  Options with observers (which
    keep state) serve one file only: ``loopcap analyze`` makes them anew for each file."""
    from analyzers.progress import NullProgress, analyze_file_with_progress

    bar: Progress = progress if progress is not None else NullProgress()
    names = [os.fspath(p) for p in paths]
    if engine == "dask":
        if not scheduler:
            raise UsageError("--engine dask needs --scheduler ADDRESS (e.g. tcp://127.0.0.1:8786)")
        from analyzers.dask_engine import iter_analyze_many_dask

        docs = iter_analyze_many_dask(names, options, scheduler=scheduler, split_bytes=split_bytes)
    elif engine == "local":
        j = default_jobs() if jobs is None else jobs
        if j == 1 or (len(names) == 1 and _file_size(names[0]) < split_bytes) or not can_cross_processes(options):
            for name in names:  # in this process: the bar follows every record
                yield name, analyze_file_with_progress(name, options, bar).to_dict()
            return
        docs = iter_analyze_many(names, options, j, split_bytes=split_bytes)
    else:
        raise UsageError(f"unknown engine {engine!r}: use local or dask")
    for name, doc in docs:
        bar.advance_file(_file_size(name), int(doc.get("packets") or 0))
        yield name, doc


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
