"""A progress bar on stderr for long analyses: bytes read / total, packets/s, time left.

The bar wraps the record iterator, so the analysis hot loop is untouched: the wrapper counts records
and, every :data:`EVERY` records, asks the file object how far it has read (one ``tell()``) and
updates the bar.  It is shown only when stderr is a terminal and the user did not ask for quiet;
otherwise :func:`progress_for` gives a :class:`NullProgress` whose methods do nothing.

    with progress_for(total_bytes, enabled=not quiet) as bar:
        doc = analyze_file_with_progress(path, options, bar).to_dict()

For many files (:func:`analyzers.parallel.iter_analyze_many`) call ``bar.advance_file(path_bytes)``
as each document arrives.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import IO, Protocol

from analyzers.analysis import Analysis, AnalysisOptions, analyze_file
from analyzers.pcapfile import PacketRecord

#: records between two updates of the bar (a ``tell()`` and a redraw request each time)
EVERY = 8192

__all__ = ["EVERY", "NullProgress", "Progress", "RichProgress", "analyze_file_with_progress", "progress_for",
           "should_show", "track_records"]


class Progress(Protocol):
    """What the analysis tells a progress display."""

    def start_file(self, name: str, size: int) -> None: ...

    def update(self, file_bytes: int, packets: int) -> None: ...

    def advance_file(self, size: int, packets: int = 0) -> None: ...

    def __enter__(self) -> Progress: ...

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None: ...


class NullProgress:
    """No display at all (stderr is not a terminal, ``--quiet``)."""

    def start_file(self, name: str, size: int) -> None:
        pass

    def update(self, file_bytes: int, packets: int) -> None:
        pass

    def advance_file(self, size: int, packets: int = 0) -> None:
        pass

    def __enter__(self) -> NullProgress:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        pass


class RichProgress:
    """A ``rich`` progress bar on stderr: bytes read of the total, packets/s, elapsed and time left."""

    def __init__(self, total_bytes: int, *, file: IO[str] | None = None, description: str = "analyzing",
                 clock: Callable[[], float] = time.monotonic) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as _RichProgress

        self.console = Console(file=file or sys.stderr, stderr=file is None)
        self._bar = _RichProgress(
            TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TextColumn("{task.fields[pps]} packets/s"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=self.console, transient=False)
        self._task = self._bar.add_task(description, total=max(total_bytes, 1), pps="-")
        self._clock = clock
        self._t0 = clock()
        self._done_bytes = 0  # of finished files
        self._file_bytes = 0  # of the current file
        self._done_packets = 0
        self.packets = 0
        self.bytes = 0

    def _show(self) -> None:
        self.bytes = self._done_bytes + self._file_bytes
        dt = self._clock() - self._t0
        pps = f"{self.packets / dt:,.0f}" if dt > 0 else "-"
        self._bar.update(self._task, completed=self.bytes, pps=pps)

    def start_file(self, name: str, size: int) -> None:
        self._file_bytes = 0
        self._bar.update(self._task, description=os.path.basename(name) or name)

    def update(self, file_bytes: int, packets: int) -> None:
        self._file_bytes = file_bytes
        self.packets = self._done_packets + packets
        self._show()

    def advance_file(self, size: int, packets: int = 0) -> None:
        self._done_bytes += size
        self._done_packets += packets
        self._file_bytes = 0
        self.packets = self._done_packets
        self._show()

    def __enter__(self) -> RichProgress:
        self._bar.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._bar.stop()


def should_show(quiet: bool = False, stream: IO[str] | None = None) -> bool:
    """A bar only for a person watching: stderr is a terminal, not ``--quiet``, and ``TERM`` is not dumb."""
    s = stream if stream is not None else sys.stderr
    try:
        tty = s.isatty()
    except (AttributeError, ValueError):
        tty = False
    return tty and not quiet and os.environ.get("TERM") != "dumb"


def progress_for(total_bytes: int, *, enabled: bool | None = None, quiet: bool = False,
                 file: IO[str] | None = None) -> RichProgress | NullProgress:
    """The display to use: ``enabled=None`` decides with :func:`should_show`."""
    show = should_show(quiet, file) if enabled is None else enabled
    return RichProgress(total_bytes, file=file) if show else NullProgress()


def track_records(records: Iterable[PacketRecord], tell: Callable[[], int], progress: Progress,
                  every: int = EVERY) -> Iterator[PacketRecord]:
    """Yield ``records`` unchanged, telling ``progress`` the position ``tell()`` every ``every`` records."""
    if isinstance(progress, NullProgress):
        yield from records
        return
    n = 0
    it = iter(records)
    while True:
        # a plain inner loop over a slice of the iterator keeps the per-record cost at one yield
        k = 0
        for rec in it:
            yield rec
            k += 1
            if k == every:
                break
        n += k
        progress.update(tell(), n)
        if k < every:
            return


def analyze_file_with_progress(path: str | os.PathLike[str], options: AnalysisOptions | None,
                               progress: Progress) -> Analysis:
    """:func:`analyzers.analysis.analyze_file` with a progress display (same result)."""
    return analyze_file(path, options, progress=progress)
