"""--engine dask (analyzers.dask_engine) against a real distributed.LocalCluster on loopback:
files as tasks and large files as flow shards give the single-process documents, in order."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import corpus_dir, fixture_pcaps

from analyzers.analysis import AnalysisOptions, analyze_file
from analyzers.errors import CaptureFormatError, UsageError

distributed = pytest.importorskip("distributed")

from analyzers.dask_engine import analyze_many_dask, iter_analyze_many_dask  # noqa: E402

FIXTURES = fixture_pcaps()
CORPUS = sorted((corpus_dir() / "captures").glob("*.pcap*")) if (corpus_dir() / "captures").is_dir() else []


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    # threads in this process, but real TCP comms bound to loopback only
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp",
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as c:
        yield c


def test_files_as_tasks_give_the_single_process_documents_in_order(client: Any) -> None:
    files = FIXTURES + CORPUS
    assert analyze_many_dask(files, None, scheduler=client) == [analyze_file(p).to_dict() for p in files]


def test_large_files_split_into_flow_shards_are_stitched_back_identically(client: Any) -> None:
    files = [p for p in FIXTURES + CORPUS if p.stat().st_size > 2000][:8]
    want = [analyze_file(p).to_dict() for p in files]
    assert analyze_many_dask(files, None, scheduler=client, split_bytes=1) == want
    assert analyze_many_dask(files, None, scheduler=client, split_bytes=1, shards=5) == want


def test_scheduler_address_string_opens_and_closes_its_own_client(client: Any) -> None:
    address = client.scheduler.address
    assert address.startswith("tcp://127.0.0.1:")
    f = FIXTURES[:2]
    opts = AnalysisOptions(server_ports=frozenset({9999}))
    assert analyze_many_dask(f, opts, scheduler=address) == [analyze_file(p, opts).to_dict() for p in f]


def test_unreadable_file_raises_its_typed_error_at_its_turn(client: Any, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"\x1f\x8b gzip, not a capture")
    got = []
    with pytest.raises(CaptureFormatError) as err:
        for path, _ in iter_analyze_many_dask([FIXTURES[0], bad, FIXTURES[1]], None, scheduler=client):
            got.append(path)
    assert got == [str(FIXTURES[0])] and "gzip" in str(err.value)


def test_observers_are_refused_with_a_usage_error(client: Any) -> None:
    with pytest.raises(UsageError):
        analyze_many_dask(FIXTURES[:1], AnalysisOptions(keep_payload=lambda s: True), scheduler=client)


def test_an_unreachable_scheduler_is_a_usage_error() -> None:
    import socket

    with socket.socket() as s:  # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UsageError) as err:
        analyze_many_dask(FIXTURES[:1], None, scheduler=f"tcp://127.0.0.1:{port}", connect_timeout="1s")
    assert err.value.hint


@pytest.mark.parametrize("fmt", ["--json", "--format=text"])
def test_analyze_engine_dask_writes_what_the_local_engine_writes(client: Any, fmt: str) -> None:
    """``loopcap analyze --engine dask``: the documents come back from the cluster whole and go to
    the output as the local engine's streamed ones do (JSON Lines, or the walkthroughs)."""
    from click.testing import CliRunner

    from loopcap import cli

    files = [str(p) for p in FIXTURES[:3]]
    runner = CliRunner()
    local = runner.invoke(cli.cli, ["analyze", "-q", "--no-peers", fmt, *files])
    dask = runner.invoke(cli.cli, ["analyze", "-q", "--no-peers", fmt, "--engine", "dask",
                                   "--scheduler", client.scheduler.address, *files])
    assert local.exit_code == 0 and dask.exit_code == 0, dask.output
    assert dask.stdout == local.stdout and dask.stdout.count("loopcap") >= 3
