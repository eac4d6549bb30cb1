"""--engine dask (analyzers.dask_engine) against a real distributed.LocalCluster on loopback:
files as tasks and large files as flow shards give the single-process documents, in order."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import corpus_dir, fixture_pcaps

from analyzers.analysis import AnalysisOptions, analyze_file
from analyzers.errors import CaptureFormatError, UsageError
from analyzers.jsonout import EncodedItems, decoded_items

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


def test_scheduler_address_string_opens_and_closes_its_own_client() -> None:
    # a scheduler of its own, as a user's would be: with the module's client on the same scheduler,
    # distributed (2026.8) now and then batches a message for that client's stream with the new
    # client's first one, and the new Client fails its handshake (``assert len(msg) == 1``)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster:
        address = cluster.scheduler_address
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


@pytest.mark.parametrize("peers", [["--no-peers"], []])
@pytest.mark.parametrize("fmt", ["--json", "--format=text"])
def test_analyze_engine_dask_writes_what_the_local_engine_writes(client: Any, fmt: str, peers: list[str]) -> None:
    """``loopcap analyze --engine dask``: the documents stream from the workers to the output as the
    local engine's do (JSON Lines, or the walkthroughs), with the peers' views (the default) or not."""
    from click.testing import CliRunner

    from loopcap import cli

    files = [str(p) for p in FIXTURES[:3]]
    runner = CliRunner()
    local = runner.invoke(cli.cli, ["analyze", "-q", *peers, fmt, *files])
    dask = runner.invoke(cli.cli, ["analyze", "-q", *peers, fmt, "--engine", "dask",
                                   "--scheduler", client.scheduler.address, *files])
    assert local.exit_code == 0 and dask.exit_code == 0, dask.output
    assert dask.stdout == local.stdout and dask.stdout.count("loopcap") >= 3


def _spools_left(client: Any) -> list[str]:
    dirs = client.run(lambda dask_worker: dask_worker.local_directory)
    return [n for d in dirs.values() for n in os.listdir(d) if n.startswith("loopcap-")]


def test_documents_stream_from_the_workers_spools_in_chunks_which_are_then_deleted(
        client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client holds integers and one chunk per shard: connections come as encoded lines read
    from the workers' spools (here 300 bytes at a time, less than some lines), and the spools are
    gone once each document was read."""
    import analyzers.dask_engine as dask_engine

    monkeypatch.setattr(dask_engine, "CHUNK_BYTES", 300)
    files = [p for p in FIXTURES + CORPUS if p.stat().st_size > 2000][:4]
    got = []
    for path, doc in iter_analyze_many_dask(files, None, scheduler=client, split_bytes=1, shards=3):
        assert isinstance(doc["tcp"], EncodedItems)
        got.append((path, {**doc, "tcp": list(decoded_items(doc["tcp"])), "udp": list(decoded_items(doc["udp"]))}))
    assert got == [(str(p), analyze_file(p).to_dict()) for p in files]
    assert _spools_left(client) == []


def test_spools_are_deleted_when_the_reader_stops_early_or_a_file_fails(client: Any, tmp_path: Path) -> None:
    files = [p for p in FIXTURES + CORPUS if p.stat().st_size > 2000][:3]
    it = iter_analyze_many_dask(files, None, scheduler=client, split_bytes=1)
    next(it)
    it.close()  # type: ignore[attr-defined]
    assert _spools_left(client) == []
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"\xd4\xc3\xb2\xa1" + b"\0" * 3)
    with pytest.raises(CaptureFormatError):
        analyze_many_dask([files[0], bad, files[1]], None, scheduler=client, split_bytes=1)
    assert _spools_left(client) == []


def test_the_peers_views_run_on_the_cluster_by_flow_shards_and_give_the_local_document(
        client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the peers' views (the default command), each shard's Zeek rows follow its connections in
    its spool on the worker; the client reads them back in chunks (here 300 bytes) and merges them in
    Zeek's removal order: the local document, byte for byte once written."""
    import analyzers.dask_engine as dask_engine
    import analyzers.shardstream as shardstream
    from analyzers.jsonout import document_text
    from loopcap.cli import _options

    monkeypatch.setattr(dask_engine, "CHUNK_BYTES", 300)
    monkeypatch.setattr(shardstream, "LINES_CHUNK", 300)
    files = [p for p in FIXTURES + CORPUS if p.stat().st_size > 2000][:4]
    got = [(path, document_text(doc)) for path, doc in
           iter_analyze_many_dask(files, _options((), peers=True), scheduler=client, split_bytes=1, shards=3)]
    want = [(str(p), document_text(analyze_file(p, _options((), peers=True)).to_dict())) for p in files]
    assert got == want and all('"zeek":' in text for _, text in got)
    assert _spools_left(client) == []
