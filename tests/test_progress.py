"""The progress bar (analyzers.progress): off unless stderr is a terminal and not --quiet; wraps the
record iterator without changing what the analysis sees; reports bytes and packets."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from conftest import fixture_pcaps

from analyzers.analysis import analyze_file
from analyzers.progress import (
    NullProgress,
    RichProgress,
    analyze_file_with_progress,
    progress_for,
    should_show,
    track_records,
)

FIXTURES = fixture_pcaps()


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class Recorder:
    """Records what the analysis reports (not a NullProgress: that one is skipped entirely)."""

    def __init__(self) -> None:
        self.updates: list[tuple[int, int]] = []
        self.files: list[tuple[int, int]] = []

    def update(self, file_bytes: int, packets: int) -> None:
        self.updates.append((file_bytes, packets))

    def advance_file(self, size: int, packets: int = 0) -> None:
        self.files.append((size, packets))

    def start_file(self, name: str, size: int) -> None:
        pass

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def test_no_bar_when_stderr_is_not_a_terminal_or_when_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TERM", raising=False)
    assert not should_show(False, io.StringIO())
    assert not should_show(True, Tty())
    assert should_show(False, Tty())
    monkeypatch.setenv("TERM", "dumb")
    assert not should_show(False, Tty())
    assert isinstance(progress_for(100, file=io.StringIO()), NullProgress)
    assert isinstance(progress_for(100, enabled=True, file=Tty()), RichProgress)


def test_the_analysis_with_a_bar_is_the_analysis_without(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("analyzers.progress.EVERY", 7)
    for path in FIXTURES:
        rec = Recorder()
        assert analyze_file_with_progress(path, None, rec).to_dict() == analyze_file(path).to_dict()
        assert rec.files == [(path.stat().st_size, analyze_file(path).packets)]


def test_updates_every_n_records_with_the_read_position() -> None:
    path = next(p for p in FIXTURES if p.name.startswith("bulk"))
    rec = Recorder()
    analyze_file_with_progress(path, None, rec)
    del rec  # (the default EVERY is larger than this capture: one final update)
    rec = Recorder()
    from analyzers.pcapfile import CaptureReader

    with CaptureReader.open(path) as reader:
        n = sum(1 for _ in track_records(reader, reader._f.tell, rec, every=10))
    assert [p for _, p in rec.updates] == [*range(10, n + 1, 10), n][: len(rec.updates)]
    assert rec.updates[-1] == (path.stat().st_size, n)
    positions = [b for b, _ in rec.updates]
    assert positions == sorted(positions) and positions[0] > 24


def test_the_rich_bar_shows_bytes_and_packets_per_second(tmp_path: Path) -> None:
    out = Tty()
    t = iter(float(i) for i in range(1000))
    path = FIXTURES[0]
    with RichProgress(path.stat().st_size, file=out, clock=lambda: next(t)) as bar:
        analyze_file_with_progress(path, None, bar)
    text = out.getvalue()
    assert "packets/s" in text and bar.packets == analyze_file(path).packets
    assert bar.bytes == path.stat().st_size


def test_many_files_advance_one_bar() -> None:
    out = Tty()
    files = FIXTURES[:3]
    total = sum(p.stat().st_size for p in files)
    with RichProgress(total, file=out) as bar:
        for p in files:
            analyze_file_with_progress(p, None, bar)
    assert bar.bytes == total
