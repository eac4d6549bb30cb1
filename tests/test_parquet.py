"""--format parquet (analyzers.parquet): flat typed columns that read back with plain pyarrow,
equal to the loopcap/1 documents they came from; per-packet records through an observer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import corpus_dir, fixture_pcaps

from analyzers.analysis import AnalysisOptions, analyze_file
from analyzers.errors import UsageError

pq = pytest.importorskip("pyarrow.parquet")

from analyzers.parquet import (  # noqa: E402
    PACKET_COLUMNS,
    TCP_COLUMNS,
    UDP_COLUMNS,
    PacketWriter,
    tcp_rows,
    udp_rows,
    write_parquet,
)

FIXTURES = fixture_pcaps()
CORPUS = sorted((corpus_dir() / "captures").glob("*.pcap*")) if (corpus_dir() / "captures").is_dir() else []


def docs() -> list[dict[str, Any]]:
    return [analyze_file(p).to_dict() for p in FIXTURES + CORPUS]


def test_connection_tables_round_trip_through_pyarrow_read_table(tmp_path: Path) -> None:
    ds = docs()
    paths = write_parquet(ds, tmp_path / "out")
    tcp = pq.read_table(paths["tcp"])
    udp = pq.read_table(paths["udp"])
    assert tcp.column_names == [n for n, _ in TCP_COLUMNS]
    assert udp.column_names == [n for n, _ in UDP_COLUMNS]
    assert tcp.to_pylist() == [r for d in ds for r in tcp_rows(d)]
    assert udp.to_pylist() == [r for d in ds for r in udp_rows(d)]
    assert tcp.num_rows == sum(len(d["tcp"]) for d in ds) > 50


def test_columns_carry_the_summary_fields_a_query_needs(tmp_path: Path) -> None:
    fx = next(p for p in FIXTURES if p.name == "tcp-echo-ipv4.pcap")
    doc = analyze_file(fx).to_dict()
    row = pq.read_table(write_parquet([doc], tmp_path)["tcp"]).to_pylist()[0]
    c = doc["tcp"][0]
    assert (row["stream"], row["client_port"], row["server_port"]) == (0, c["client"]["port"], 9999)
    assert row["handshake_complete"] is True and row["teardown_kind"] == c["teardown"]["kind"]
    assert row["payload_client_sha256"] == c["payload"]["client"]["sha256"]
    assert row["payload_server_bytes"] == c["payload"]["server"]["bytes"] > 0
    assert row["client_isn"] == c["handshake"]["syn"]["seq"] and row["mss_client"] == 65495
    assert row["file"] == str(fx) and row["time_wait"] == "client"


def test_types_are_stable_when_a_file_has_no_connections(tmp_path: Path) -> None:
    empty = {"file": "x.pcap", "tcp": [], "udp": []}
    paths = write_parquet([empty, analyze_file(FIXTURES[0]).to_dict()], tmp_path)
    t = pq.read_table(paths["tcp"])
    assert str(t.schema.field("stream").type) == "int64" and str(t.schema.field("rtt").type) == "double"
    assert pq.ParquetFile(paths["tcp"]).metadata.num_row_groups == 2


def test_per_packet_records_match_the_connections(tmp_path: Path) -> None:
    fx = next(p for p in FIXTURES if p.name == "concurrent-ipv4.pcap")
    out = tmp_path / "packets.parquet"
    with PacketWriter(out, file=str(fx), batch_rows=7) as pw:
        doc = analyze_file(fx, AnalysisOptions(observers=[pw])).to_dict()
    t = pq.read_table(out)
    assert t.column_names == [n for n, _ in PACKET_COLUMNS]
    assert t.num_rows == doc["packets"] == pw.rows
    rows = t.to_pylist()
    for c in doc["tcp"]:
        mine = [r for r in rows if r["stream"] == c["stream"] and r["proto"] == "tcp"]
        assert len(mine) == c["frames"]["count"]
        assert sum(r["payload_len"] for r in mine if r["src_port"] == c["client"]["port"]) == \
            c["payload"]["client"]["wire_bytes"]
    assert rows[0]["flags"] == "SYN" and rows[0]["frame"] == 1


def test_writing_into_a_file_path_is_a_usage_error(tmp_path: Path) -> None:
    f = tmp_path / "plain"
    f.write_text("x")
    with pytest.raises(UsageError):
        write_parquet([], f)


def test_analyze_format_parquet_streams_and_writes_the_tables_of_the_in_memory_documents(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``loopcap analyze --format parquet`` streams each file (the peers' views too) and writes its
    connections a row group at a time: the same rows as the in-memory documents, in order, and a
    document larger than a row group becomes several."""
    from click.testing import CliRunner

    import analyzers.parquet
    from loopcap import cli

    monkeypatch.setattr(analyzers.parquet, "ROW_GROUP_ROWS", 3)
    files = [str(p) for p in FIXTURES[:8]]
    for args in ([], ["--no-peers"], ["--port", "9999"]):
        out = tmp_path / f"t{len(args)}"
        done = CliRunner().invoke(cli.cli, ["analyze", "--format", "parquet", "-q", "-w", str(out), *args, *files])
        assert done.exit_code == 0, done.output
        peers = not args or args[0] != "--no-peers"
        want = [cli.filter_doc(analyze_file(f, cli._options((), peers=peers)).to_dict(), stream=None, udp_stream=None,
                               port=9999 if "--port" in args else None, host=None) for f in files]
        tcp = pq.ParquetFile(out / "tcp.parquet")
        assert tcp.read().to_pylist() == [r for d in want for r in tcp_rows(d)]
        assert pq.read_table(out / "udp.parquet").to_pylist() == [r for d in want for r in udp_rows(d)]
        assert tcp.metadata.num_row_groups == sum(max(1, -(-len(d["tcp"]) // 3)) for d in want)


@pytest.mark.parametrize("args", [["--no-peers"], [], ["--no-peers", "-j", "2"]])
def test_analyze_packets_writes_a_row_per_segment_and_datagram_of_every_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    """``--format parquet --packets``: packets.parquet holds each file's TCP segments and UDP
    datagrams in capture order, named by file and numbered by stream as the connection tables are,
    with or without the peers' views, and a file large enough to be split by flow stays in one
    process (the table follows every packet)."""
    from click.testing import CliRunner

    import analyzers.parallel
    from loopcap import cli

    monkeypatch.setattr(analyzers.parallel, "DEFAULT_SPLIT_BYTES", 1)
    files = [str(p) for p in FIXTURES[:5]]
    out = tmp_path / "t"
    done = CliRunner().invoke(cli.cli, ["analyze", "--format", "parquet", "--packets", "-q", "-w", str(out),
                                        *args, *files])
    assert done.exit_code == 0, done.output
    assert f"packets: {out / 'packets.parquet'}" in done.stdout
    rows = pq.read_table(out / "packets.parquet").to_pylist()
    tcp = pq.read_table(out / "tcp.parquet").to_pylist()
    udp = pq.read_table(out / "udp.parquet").to_pylist()
    for f in files:
        mine = [r for r in rows if r["file"] == f]
        assert [r["frame"] for r in mine] == sorted(r["frame"] for r in mine)
        for kind, table, count in (("tcp", tcp, ("packets_client", "packets_server")),
                                   ("udp", udp, ("packets_client", "packets_server"))):
            for c in (c for c in table if c["file"] == f):
                got = [r for r in mine if r["proto"] == kind and r["stream"] == c["stream"]]
                assert len(got) == c[count[0]] + c[count[1]], (f, kind, c["stream"])
    assert {r["file"] for r in rows} == set(files) and len(rows) > 100


def test_analyze_packets_needs_the_parquet_format(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from loopcap import cli

    done = CliRunner().invoke(cli.cli, ["analyze", "--json", "--packets", str(FIXTURES[0])])
    assert done.exit_code == 2 and "--format parquet" in done.stderr and "Traceback" not in done.output
