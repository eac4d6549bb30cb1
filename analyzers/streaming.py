"""Analyze a capture of any length in bounded memory, writing the ``loopcap/1`` JSON document.

The trackers hand each connection over as soon as no packet can belong to it any more (see
:class:`~analyzers.tcp.TcpTracker`); it is summarized, encoded as one line of JSON and written to a
spool file at once, and forgotten.  Connections finish out of ``tcp.stream`` order (a long one
outlives many short ones), so the spool keeps an index (12 bytes per connection) and gives the lines
back in stream order when the document is written.  Memory therefore follows the connections open
at any one time, never the number of packets; the document is the one :func:`analyze_file` +
:func:`~analyzers.jsonout.write_document` produce, byte for byte, as long as no 4-tuple comes back
after the tracker let it go (two minutes of capture time after its close for TCP, two minutes of
silence for UDP); tests/test_streaming.py pins that on every capture the project has.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from array import array
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from typing import IO, Any, Protocol

from analyzers.analysis import Analysis, AnalysisOptions, analyze_file, gc_paused, tcp_summary_warnings
from analyzers.errors import LoopcapError
from analyzers.jsonout import SPOOL_BUFFER, EncodedItems, dumps_bytes, write_document
from analyzers.parallel import carry, raise_carried
from analyzers.summary import summarize_tcp, summarize_udp
from analyzers.tcp import TcpConnection
from analyzers.udp import UdpConversation


class OrderedSpool:
    """Encoded items put by stream number in any order, read back in stream order; the text lives in
    an anonymous temporary file, the index in two flat arrays."""

    def __init__(self, directory: str | None = None) -> None:
        self._f = tempfile.TemporaryFile(dir=directory, buffering=SPOOL_BUFFER)  # noqa: SIM115 - closed by close()
        self._offset = array("q")
        self._length = array("i")
        self._end = 0
        self.count = 0

    def put(self, stream: int, data: bytes) -> None:
        if stream >= len(self._offset):
            grow = stream + 1 - len(self._offset)
            self._offset.extend([0] * grow)
            self._length.extend([-1] * grow)
        self._f.write(data)
        self._offset[stream] = self._end
        self._length[stream] = len(data)
        self._end += len(data)
        self.count += 1

    def __iter__(self) -> Iterator[bytes]:
        f = self._f
        f.flush()
        read = positional_reader(f)
        for off, n in zip(self._offset, self._length, strict=True):
            if n >= 0:
                yield read(off, n)

    def items(self) -> EncodedItems:
        return EncodedItems(self.count, iter(self))

    def close(self) -> None:
        self._f.close()


def positional_reader(f: IO[bytes]) -> Callable[[int, int], bytes]:
    """``read(offset, length)`` of the file ``f``: ``os.pread`` where there is one (one system call,
    no seek, no copy through a buffer: items read back out of order cost half as much), else seek
    and read."""
    if hasattr(os, "pread"):
        fd = f.fileno()
        pread = os.pread

        def read(offset: int, length: int) -> bytes:
            return pread(fd, length, offset)
    else:  # pragma: no cover - Windows
        def read(offset: int, length: int) -> bytes:
            f.seek(offset)
            return f.read(length)
    return read


class StreamingObserver(Protocol):
    """An observer (a peer's view) that can stream: it adds its part to each connection's summary
    when the connection is done (the Zeek view, tcp.analysis)."""

    def start_streaming(self, ready: Callable[[str, int], None]) -> None:
        """From now on, stream; call ``ready(kind, stream)`` when a stream it held back may go."""

    def waiting(self, kind: str, stream: int) -> bool:
        """Whether its part of this stream's summary may still change (the summary then waits)."""

    def add_links(self, kind: str, stream: int, item: dict[str, Any] | None) -> None:
        """Add its part to the summary ``item`` (None: the stream is not listed) and forget the stream."""

    def finish_streaming(self) -> None:
        """The end of the capture: settle what it still holds."""


class SummarySink:
    """Where a streaming analysis hands its finished connections: each is summarized and, once the
    observers' parts of it are final (Zeek may not have removed its connection yet: the summary waits
    for it), completed by them and handed to ``put(kind, stream, summary)``.  The TCP warnings are
    collected in :attr:`warned` under the stream number (a flow shard's: the creation frame)."""

    def __init__(self, observers: list[Any], put: Callable[[str, int, dict[str, Any]], None]) -> None:
        self._observers: list[StreamingObserver] = list(observers)
        self._put = put
        self.warned: list[tuple[int, list[str]]] = []
        self._held: dict[tuple[str, int], dict[str, Any]] = {}  # summaries waiting for a peer's part
        for ob in self._observers:
            ob.start_streaming(self.ready)

    def _write(self, kind: str, stream: int, summary: dict[str, Any]) -> None:
        for ob in self._observers:
            ob.add_links(kind, stream, summary)
        self._put(kind, stream, summary)

    def _settle(self, kind: str, stream: int, summary: dict[str, Any]) -> None:
        if any(ob.waiting(kind, stream) for ob in self._observers):
            self._held[(kind, stream)] = summary
        else:
            self._write(kind, stream, summary)

    def ready(self, kind: str, stream: int) -> None:
        """An observer's part of ``stream`` is final now."""
        summary = self._held.get((kind, stream))
        if summary is not None and not any(ob.waiting(kind, stream) for ob in self._observers):
            del self._held[(kind, stream)]
            self._write(kind, stream, summary)

    def tcp_done(self, conn: TcpConnection) -> None:
        if conn.quote_only:  # a 4-tuple only an ICMP error quoted: numbered, never listed
            for ob in self._observers:
                ob.add_links("tcp", conn.stream, None)
            return
        summary = summarize_tcp(conn)
        w = tcp_summary_warnings(summary)
        if w:
            self.warned.append((summary["stream"], w))
        self._settle("tcp", conn.stream, summary)

    def udp_done(self, conv: UdpConversation) -> None:
        if conv.quote_only:
            for ob in self._observers:
                ob.add_links("udp", conv.stream, None)
            return
        summary = summarize_udp(conv)
        self._settle("udp", conv.stream, summary)

    def finish(self) -> None:
        """The end of the capture: the observers settle, and every summary still held is handed on."""
        for ob in self._observers:
            ob.finish_streaming()
        for (kind, stream), summary in sorted(self._held.items()):  # nothing left to wait for
            self._write(kind, stream, summary)
        self._held.clear()


def streams_with(options: AnalysisOptions) -> bool:
    """Whether :func:`analyze_file_to_json` can stream with these options (no kept payloads; only
    observers that can stream)."""
    return not options.keep_payload and all(hasattr(ob, "start_streaming") for ob in options.observers)


def analyze_file_to_json(path: str | os.PathLike[str], out: IO[str], options: AnalysisOptions | None = None,
                         *, progress: Any = None, one_line: bool = False) -> Analysis:
    """Analyze ``path`` streaming (bounded memory) and write its ``loopcap/1`` document to ``out``
    (see :func:`analyze_file_streamed`)."""
    return analyze_file_streamed(path, lambda doc: write_document(doc, out, one_line=one_line), options,
                                 progress=progress)


def analyze_file_streamed(path: str | os.PathLike[str], consume: Callable[[dict[str, Any]], None],
                          options: AnalysisOptions | None = None, *, progress: Any = None) -> Analysis:
    """Analyze ``path`` streaming (bounded memory) and hand its ``loopcap/1`` document to ``consume``,
    with ``tcp`` and ``udp`` as :class:`~analyzers.jsonout.EncodedItems` (a count, then each
    connection's JSON text in stream order, read back from the spool once).

    Kept payloads need every connection until the end: they are refused here (use
    :func:`~analyzers.analysis.analyze_file`), as are observers that cannot stream
    (:class:`StreamingObserver`: the peers' views can).  A summary whose peers' part may still
    change (Zeek has not removed its connection yet) waits for it.  Returns the :class:`Analysis`
    without its connections (they were written), for the caller's warnings."""
    opts = options or AnalysisOptions()
    if not streams_with(opts):
        raise ValueError("a streamed analysis keeps no payloads and takes only observers that can stream")
    spools = {"tcp": OrderedSpool(), "udp": OrderedSpool()}
    sink = SummarySink(opts.observers, lambda kind, stream, summary: spools[kind].put(stream, dumps_bytes(summary)))
    opts = replace(opts, on_tcp_done=sink.tcp_done, on_udp_done=sink.udp_done)
    name = os.fspath(path)
    try:
        with gc_paused():  # the observers' last rows and the document too (see gc_paused)
            res = analyze_file(name, opts, progress=progress)
            sink.finish()
            res.streamed_warnings = [w for _, ws in sorted(sink.warned, key=lambda x: x[0]) for w in ws]
            consume(res.to_dict(tcp=spools["tcp"].items(), udp=spools["udp"].items()))
    finally:
        for spool in spools.values():
            spool.close()
    return res


def _json_line_task(path: str, options: AnalysisOptions, out_path: str
                    ) -> tuple[tuple[type[LoopcapError], str, dict[str, Any]] | None, int]:
    """Worker: one file's document, on one line, into ``out_path``; (carried error, packets)."""
    try:
        with open(out_path, "w", encoding="utf-8") as f:
            return None, analyze_file_to_json(path, f, options, one_line=True).packets
    except LoopcapError as err:
        return carry(err), 0


def write_json_lines(paths: list[str], out: IO[str], options: AnalysisOptions | None = None, *, jobs: int = 1,
                     progress: Any = None, fresh_options: Callable[[], AnalysisOptions] | None = None) -> None:
    """The documents of ``paths``, one line each in the order given (JSON Lines), each file streamed
    in bounded memory, ``jobs`` files at a time: the workers write the JSON text themselves (to spool
    files) and this process only copies it out, so that it does not become the bottleneck.
    ``fresh_options``: options made anew for each file (the peers' views keep state), in this process
    (a worker gets its own copy)."""
    opts = options or AnalysisOptions()
    if jobs <= 1 or len(paths) < 2:
        for p in paths:
            size = os.path.getsize(p) if os.path.isfile(p) else 0
            res = analyze_file_to_json(p, out, fresh_options() if fresh_options is not None else opts, one_line=True)
            if progress is not None:
                progress.advance_file(size, res.packets)
        return
    tmp = tempfile.mkdtemp(prefix="loopcap-lines-")
    try:
        with ProcessPoolExecutor(max_workers=min(jobs, len(paths))) as pool:
            spools = [os.path.join(tmp, f"{i}.json") for i in range(len(paths))]
            futures = [pool.submit(_json_line_task, p, fresh_options() if fresh_options is not None else opts, sp)
                       for p, sp in zip(paths, spools, strict=True)]
            raw = getattr(out, "buffer", None)  # the workers wrote ASCII: copied as bytes, not decoded again
            for p, sp, fut in zip(paths, spools, futures, strict=True):
                err, packets = fut.result()
                raise_carried(err)
                if raw is not None:
                    out.flush()
                    with open(sp, "rb") as fb:
                        shutil.copyfileobj(fb, raw, 1 << 20)
                    raw.flush()
                else:
                    with open(sp, encoding="utf-8") as f:
                        shutil.copyfileobj(f, out, 1 << 20)
                os.unlink(sp)
                if progress is not None:
                    progress.advance_file(os.path.getsize(p) if os.path.isfile(p) else 0, packets)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
