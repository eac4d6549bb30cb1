"""``--engine dask``: the same work as :mod:`analyzers.parallel`, spread over a Dask cluster.

Files are tasks; a file of at least ``split_bytes`` becomes one task per flow shard (as many shards
as the cluster has worker threads).  A task streams as on one machine (:mod:`analyzers.shardstream`):
the worker spools each finished connection's summary to its own local directory and sends back only
integers (each connection's creation frame and where its line is).  The client numbers the
connections by creation frame across shards -- exactly as one tracker would have -- and reads the
lines back from the workers a few megabytes at a time while its caller writes the document, then
has the workers delete their spools.  Memory therefore stays bounded on both sides, and every
document equals ``analyze_file(path, options).to_dict()``.

The workers open the files themselves: every path must be readable at the same name on every
worker (a shared or replicated file system), as for ``dask.dataframe.read_csv``; a worker must stay
up until its spools are read.  Only picklable options travel (no ``keep_payload``, no observers
but the peers' views, which shard: each shard's Zeek rows follow its connections in the spool, and
the client merges them as :mod:`analyzers.shardstream` does).

``distributed`` is an optional dependency (``pip install 'loopcap[dask]'``); it is imported only
when this engine runs.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from analyzers.analysis import AnalysisOptions
from analyzers.errors import UsageError
from analyzers.jsonout import EncodedItems, decoded_items
from analyzers.parallel import DEFAULT_SPLIT_BYTES, Task, picklable, plan_tasks
from analyzers.shardstream import ShardSpool, _stream_shard, document_from_spools, shards_with

#: how much of a worker's spool the client fetches at a time
CHUNK_BYTES = 4 * 1024 * 1024

__all__ = ["analyze_many_dask", "connect", "iter_analyze_many_dask"]


def _distributed() -> Any:
    """The ``distributed`` module (typed as Any: its API is only partly annotated)."""
    try:
        return importlib.import_module("distributed")
    except ImportError:  # pragma: no cover - dask is installed with the dev/dask extras
        raise UsageError("--engine dask needs the 'distributed' package",
                         hint="Install it with: pip install 'loopcap[dask]'") from None


def connect(scheduler: str, timeout: str | float = "10s") -> Any:
    """A ``distributed.Client`` for a scheduler address such as ``tcp://10.0.0.5:8786``."""
    dist = _distributed()
    try:
        return dist.Client(scheduler, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise UsageError(f"cannot reach the Dask scheduler at {scheduler}: {exc}",
                         hint="Start one with `dask scheduler` (and `dask worker ADDRESS` on each machine), "
                              "or check the address.") from None


def _worker_threads(client: Any) -> int:
    try:
        return max(1, sum(int(n) for n in client.nthreads().values()))
    except Exception:  # pragma: no cover - a scheduler without workers yet
        return 1


def _run_directory(token: str, dask_worker: Any = None) -> str:
    """Where this run's spools go on this worker (outside a worker: this machine's temp directory)."""
    base = tempfile.gettempdir()
    if dask_worker is not None:
        base = dask_worker.local_directory
    return os.path.join(base, f"loopcap-{token}")


def _spool_task(task: Task, options: AnalysisOptions | None, token: str) -> tuple[Task, ShardSpool]:
    """On a worker: stream ``task``'s flows into a spool in the worker's local directory, sorted for
    reading front to back; the spool's integers, with the worker's address to read it from."""
    worker: Any = None
    with contextlib.suppress(ImportError, ValueError):  # not on a worker
        worker = _distributed().get_worker()
    directory = _run_directory(token, worker)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{task.index}-{task.shard}.jsonl")
    # the peers' views keep state: each task its own (a worker may hand tasks the same deserialized
    # object).  A pickle round trip, not copy.deepcopy: deepcopy takes a compiled build's bound
    # methods (the decoder factory, a view's make_decoder) as atomic, so the copy's factory would
    # still make the decoder of the original view
    opts = pickle.loads(pickle.dumps(options)) if options is not None else AnalysisOptions()
    spool = _stream_shard(task.path, task.shard, task.shards, opts, path, sort=True)
    spool.worker = worker.address if worker is not None else None
    return task, spool


def _remove_run(token: str, dask_worker: Any = None) -> None:
    """On every worker at the end: this run's directory, with what tasks still running may write."""
    shutil.rmtree(_run_directory(token, dask_worker), ignore_errors=True)


def _read_range(path: str, offset: int, length: int) -> bytes:
    """On a worker: ``length`` bytes of a spool from ``offset`` (fewer at its end)."""
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def _remove(path: str) -> None:
    """On a worker: a spool read to its end."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class _WorkerSpool:
    """A spool on a worker, read front to back a chunk at a time (see :func:`document_from_spools`)."""

    def __init__(self, client: Any, spool: ShardSpool) -> None:
        self._client, self._worker, self._path = client, spool.worker, spool.path
        self._start = 0
        self._buf = b""

    def read(self, offset: int, length: int) -> bytes:
        end = offset + length
        if not (self._start <= offset and end <= self._start + len(self._buf)):
            self._buf = self._client.submit(_read_range, self._path, offset, max(length, CHUNK_BYTES),
                                            workers=self._worker and [self._worker], allow_other_workers=False,
                                            pure=False).result()
            self._start = offset
        return self._buf[offset - self._start:end - self._start]

    def close(self) -> None:
        self._buf = b""


def iter_analyze_many_dask(paths: Sequence[str | os.PathLike[str]], options: AnalysisOptions | None = None, *,
                           scheduler: str | Any, split_bytes: int = DEFAULT_SPLIT_BYTES,
                           shards: int | None = None, connect_timeout: str | float = "10s"
                           ) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(path, loopcap/1 document)`` for every file, in the order given.

    Each document's ``tcp`` and ``udp`` are :class:`~analyzers.jsonout.EncodedItems` read from the
    workers while they are iterated (once, before the next document is asked for): the document is
    never whole in memory.  ``scheduler`` is an address (a client is opened and closed here) or a
    ``distributed.Client``.  ``shards`` (default: the cluster's worker threads) is how many flow
    shards a large file is cut into.  A file that cannot be read raises its
    :class:`~analyzers.errors.LoopcapError` at its turn."""
    if options is not None and not (shards_with(options) and picklable(options)):
        raise UsageError("--engine dask runs only the analysis and the peers' views on the cluster (no kept "
                         "payloads, no other observers)", hint="Use the local engine for follow-style options.")
    names = [os.fspath(p) for p in paths]
    if not names:
        return
    own = isinstance(scheduler, str)
    client: Any = connect(scheduler, connect_timeout) if isinstance(scheduler, str) else scheduler
    written: list[ShardSpool] = []  # every spool a worker wrote: removed at the end at the latest
    try:
        as_completed = _distributed().as_completed
        token = uuid.uuid4().hex[:12]
        n_shards = shards if shards is not None else _worker_threads(client)
        tasks = plan_tasks(names, max(1, n_shards), split_bytes)
        need = {t.index: t.shards for t in tasks}
        futures = [client.submit(_spool_task, t, options, token, key=f"loopcap-{token}-{t.index}-{t.shard}",
                                 pure=False) for t in tasks]
        parts: dict[int, list[ShardSpool]] = {}
        ready: dict[int, list[ShardSpool]] = {}
        nxt = 0
        try:
            for fut in as_completed(futures):
                task, spool = fut.result()
                written.append(spool)
                fut.release()
                lst = parts.setdefault(task.index, [])
                lst.append(spool)
                if len(lst) == need[task.index]:
                    ready[task.index] = sorted(parts.pop(task.index), key=lambda sp: sp.shard)
                while nxt in ready:
                    got = ready.pop(nxt)
                    _, doc = document_from_spools(got, lambda sp: _WorkerSpool(client, sp))
                    yield names[nxt], doc
                    _forget(client, got, written)
                    nxt += 1
        finally:
            client.cancel([f for f in futures if not f.done()])
            _forget(client, list(written), written)
            with contextlib.suppress(Exception):  # a cancelled task may still be running: its spool too
                client.run(_remove_run, token)
            _remove_run(token)
    finally:
        if own:
            client.close()


def _forget(client: Any, spools: list[ShardSpool], written: list[ShardSpool]) -> None:
    """Have the workers delete ``spools`` (and strike them from ``written``)."""
    futures = []
    for sp in spools:
        written.remove(sp)
        futures.append(client.submit(_remove, sp.path, workers=sp.worker and [sp.worker], allow_other_workers=False,
                                     pure=False))
    with contextlib.suppress(Exception):  # a worker gone: its directory went with it
        client.gather(futures)


def analyze_many_dask(paths: Sequence[str | os.PathLike[str]], options: AnalysisOptions | None = None, *,
                      scheduler: str | Any, split_bytes: int = DEFAULT_SPLIT_BYTES,
                      shards: int | None = None, connect_timeout: str | float = "10s") -> list[dict[str, Any]]:
    """The ``loopcap/1`` document of every file (in order), computed on a Dask cluster, each whole in
    memory (the command line streams them instead); each equals ``analyze_file(path, options).to_dict()``."""
    out = []
    for _, doc in iter_analyze_many_dask(paths, options, scheduler=scheduler, split_bytes=split_bytes,
                                         shards=shards, connect_timeout=connect_timeout):
        out.append({k: list(decoded_items(v)) if isinstance(v, EncodedItems) else v for k, v in doc.items()})
    return out
