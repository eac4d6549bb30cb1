"""``--format parquet``: per-connection summaries (and optionally per-packet records) as Parquet.

Flat, typed columns, so DuckDB, pandas, Polars and Spark read the files directly::

    SELECT teardown_kind, count(*) FROM 'out/tcp.parquet' GROUP BY 1;

:func:`write_parquet` takes ``loopcap/1`` documents (from ``analyze_file(...).to_dict()``,
:func:`analyzers.parallel.iter_analyze_many` or the Dask engine) and writes, into a directory,

* ``tcp.parquet``: one row per TCP connection (:data:`TCP_SCHEMA`);
* ``udp.parquet``: one row per UDP conversation (:data:`UDP_SCHEMA`);

one row group per input file, so memory stays at one document.  :class:`PacketWriter` is an
analysis observer that writes ``packets.parquet``, one row per TCP segment / UDP datagram with its
``tcp.stream`` / ``udp.stream`` number (:data:`PACKET_SCHEMA`), in batches; as an observer it runs in
the analyzing process (``jobs=1``).

pyarrow is an optional dependency (``pip install 'loopcap[parquet]'``), imported when used.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from analyzers.decode import TcpSegment, UdpDatagram, flags_str, format_ip
from analyzers.errors import UsageError
from analyzers.tcp import TcpConnection
from analyzers.udp import UdpConversation

__all__ = ["PACKET_COLUMNS", "TCP_COLUMNS", "UDP_COLUMNS", "PacketWriter", "tcp_rows", "udp_rows",
           "write_parquet"]

# (name, arrow type name) - the schema is built from these once pyarrow is imported
_SIDE_COLUMNS = [("bytes", "int64"), ("sha256", "string"), ("complete", "bool"), ("segments", "int64"),
                 ("wire_bytes", "int64"), ("gaps", "int32"), ("truncated_bytes", "int64"),
                 ("http_messages", "int32"), ("preview", "string")]
TCP_COLUMNS: list[tuple[str, str]] = [
    ("file", "string"), ("stream", "int64"), ("ip_version", "int8"),
    ("client_ip", "string"), ("client_port", "int32"), ("server_ip", "string"), ("server_port", "int32"),
    ("roles_inferred", "bool"), ("roles_by", "string"),
    ("first_frame", "int64"), ("last_frame", "int64"), ("frames", "int64"),
    ("packets_client", "int64"), ("packets_server", "int64"),
    ("ip_bytes_client", "int64"), ("ip_bytes_server", "int64"),
    ("time_first", "float64"), ("time_last", "float64"), ("duration", "float64"),
    ("handshake_complete", "bool"), ("handshake_valid", "bool"), ("refused", "bool"), ("rtt", "float64"),
    ("syn_frame", "int64"), ("syn_ack_frame", "int64"), ("ack_frame", "int64"),
    ("client_isn", "int64"), ("server_isn", "int64"), ("syn_retransmissions", "int32"),
    ("mss_client", "int32"), ("mss_server", "int32"), ("window_scale", "bool"), ("sack_permitted", "bool"),
    ("timestamps", "bool"), ("ecn_negotiated", "bool"),
    ("teardown_kind", "string"), ("teardown_initiator", "string"), ("first_fin_by", "string"),
    ("fin_ack_pattern", "string"), ("reset_by", "string"), ("rst_count", "int32"), ("rst_first_by", "string"),
    ("rst_after_close", "bool"), ("final_ack_frame", "int64"), ("time_wait", "string"),
    ("final_state_client", "string"), ("final_state_server", "string"),
    *[(f"payload_client_{n}", t) for n, t in _SIDE_COLUMNS],
    *[(f"payload_server_{n}", t) for n, t in _SIDE_COLUMNS],
]
UDP_COLUMNS: list[tuple[str, str]] = [
    ("file", "string"), ("stream", "int64"), ("ip_version", "int8"),
    ("client_ip", "string"), ("client_port", "int32"), ("server_ip", "string"), ("server_port", "int32"),
    ("packets_client", "int64"), ("packets_server", "int64"),
    ("payload_bytes_client", "int64"), ("payload_bytes_server", "int64"),
    ("time_first", "float64"), ("time_last", "float64"), ("duration", "float64"),
    ("datagrams", "int64"), ("datagrams_omitted", "int64"),
]
PACKET_COLUMNS: list[tuple[str, str]] = [
    ("file", "string"), ("frame", "int64"), ("time_ns", "int64"), ("proto", "string"), ("stream", "int64"),
    ("ip_version", "int8"), ("src_ip", "string"), ("src_port", "int32"), ("dst_ip", "string"),
    ("dst_port", "int32"), ("flags", "string"), ("seq", "int64"), ("ack", "int64"), ("window", "int32"),
    ("payload_len", "int64"), ("ip_bytes", "int64"),
]


def _pa() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:  # pragma: no cover - pyarrow is installed with the dev/parquet extras
        raise UsageError("--format parquet needs pyarrow", hint="Install it with: pip install 'loopcap[parquet]'") from None
    return pyarrow


def schema(columns: list[tuple[str, str]]) -> Any:
    """The pyarrow schema of a column list."""
    pa = _pa()
    return pa.schema([(name, getattr(pa, "bool_" if typ == "bool" else typ)()) for name, typ in columns])


def _get(d: dict[str, Any] | None, *path: str) -> Any:
    cur: Any = d
    for p in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(p)
    return cur


def tcp_rows(doc: dict[str, Any], items: Iterable[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The flat rows of a document's TCP connections (:data:`TCP_COLUMNS`): all of them, or ``items``."""
    rows = []
    for c in doc["tcp"] if items is None else items:
        hs, td = c["handshake"], c["teardown"]
        neg = hs.get("negotiated") or {}
        row: dict[str, Any] = {
            "file": doc.get("file"), "stream": c["stream"], "ip_version": c["ip_version"],
            "client_ip": c["client"]["ip"], "client_port": c["client"]["port"],
            "server_ip": c["server"]["ip"], "server_port": c["server"]["port"],
            "roles_inferred": c["roles_inferred"], "roles_by": c["roles_by"],
            "first_frame": c["frames"]["first"], "last_frame": c["frames"]["last"], "frames": c["frames"]["count"],
            "packets_client": c["packets"]["client"], "packets_server": c["packets"]["server"],
            "ip_bytes_client": c["ip_bytes"]["client"], "ip_bytes_server": c["ip_bytes"]["server"],
            "time_first": c["time"]["first"], "time_last": c["time"]["last"], "duration": c["time"]["duration"],
            "handshake_complete": hs["complete"], "handshake_valid": hs["valid"], "refused": hs["refused"],
            "rtt": hs["rtt"], "syn_frame": _get(hs, "syn", "frame"), "syn_ack_frame": _get(hs, "syn_ack", "frame"),
            "ack_frame": _get(hs, "ack", "frame"), "client_isn": _get(hs, "syn", "seq"),
            "server_isn": _get(hs, "syn_ack", "seq"), "syn_retransmissions": len(hs["syn_retransmissions"]),
            "mss_client": _get(neg, "mss", "client") if neg else _get(hs, "client_options", "mss"),
            "mss_server": _get(neg, "mss", "server") if neg else _get(hs, "server_options", "mss"),
            "window_scale": neg.get("window_scale"), "sack_permitted": neg.get("sack_permitted"),
            "timestamps": neg.get("timestamps"), "ecn_negotiated": _get(hs, "ecn", "negotiated"),
            "teardown_kind": td["kind"], "teardown_initiator": td["initiator"], "first_fin_by": td["first_fin_by"],
            "fin_ack_pattern": td["fin_ack_pattern"], "reset_by": td["reset_by"], "rst_count": td["rst"]["count"],
            "rst_first_by": td["rst"]["first_by"], "rst_after_close": td["rst"]["after_close"],
            "final_ack_frame": td["final_ack_frame"], "time_wait": ",".join(td["time_wait"]),
            "final_state_client": _get(c, "states", "final", "client"),
            "final_state_server": _get(c, "states", "final", "server"),
        }
        for side in ("client", "server"):
            p = c["payload"][side]
            pre = f"payload_{side}_"
            row[pre + "bytes"] = p["bytes"]
            row[pre + "sha256"] = p["sha256"]
            row[pre + "complete"] = p["complete"]
            row[pre + "segments"] = p["segments"]
            row[pre + "wire_bytes"] = p["wire_bytes"]
            row[pre + "gaps"] = len(p["gaps"])
            row[pre + "truncated_bytes"] = p["truncated_bytes"]
            row[pre + "http_messages"] = len(p.get("http") or ())
            row[pre + "preview"] = p["preview"]
        rows.append(row)
    return rows


def udp_rows(doc: dict[str, Any], items: Iterable[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The flat rows of a document's UDP conversations (:data:`UDP_COLUMNS`): all of them, or ``items``."""
    return [{
        "file": doc.get("file"), "stream": u["stream"], "ip_version": u["ip_version"],
        "client_ip": u["client"]["ip"], "client_port": u["client"]["port"],
        "server_ip": u["server"]["ip"], "server_port": u["server"]["port"],
        "packets_client": u["packets"]["client"], "packets_server": u["packets"]["server"],
        "payload_bytes_client": u["payload_bytes"]["client"], "payload_bytes_server": u["payload_bytes"]["server"],
        "time_first": u["time"]["first"], "time_last": u["time"]["last"], "duration": u["time"]["duration"],
        "datagrams": len(u["datagrams"]) + u["datagrams_omitted"], "datagrams_omitted": u["datagrams_omitted"],
    } for u in (doc["udp"] if items is None else items)]


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]], sch: Any) -> Any:
    pa = _pa()
    return pa.Table.from_pydict({name: [r[name] for r in rows] for name, _ in columns}, schema=sch)


#: rows per row group when a document's connections are written a batch at a time (a streamed one)
ROW_GROUP_ROWS = 65_536


def _batches(items: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    """``items`` in lists of ``size``; one empty list when there are none (a row group per document)."""
    batch: list[dict[str, Any]] = []
    sent = False
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            sent = True
            batch = []
    if batch or not sent:
        yield batch


class ParquetTables:
    """``tcp.parquet`` and ``udp.parquet`` in ``out_dir`` (created if needed), written document by
    document (:meth:`add`), each document's connections :data:`ROW_GROUP_ROWS` at a time, so a
    streamed document (connections read once from its spool) never sits in memory whole."""

    def __init__(self, out_dir: str | os.PathLike[str], *, compression: str = "zstd") -> None:
        pa = _pa()
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise UsageError(f"{out} exists and is not a directory",
                             hint="--format parquet writes tcp.parquet and udp.parquet into a directory (-w DIR).")
        out.mkdir(parents=True, exist_ok=True)
        self.paths = {"tcp": out / "tcp.parquet", "udp": out / "udp.parquet"}
        self._schemas = {"tcp": schema(TCP_COLUMNS), "udp": schema(UDP_COLUMNS)}
        self._writers = {k: pa.parquet.ParquetWriter(self.paths[k], self._schemas[k], compression=compression)
                         for k in ("tcp", "udp")}

    def add(self, doc: dict[str, Any]) -> None:
        from analyzers.jsonout import decoded_items

        for kind, rows_of, columns in (("tcp", tcp_rows, TCP_COLUMNS), ("udp", udp_rows, UDP_COLUMNS)):
            for batch in _batches(decoded_items(doc[kind]), ROW_GROUP_ROWS):
                self._writers[kind].write_table(_table(rows_of(doc, batch), columns, self._schemas[kind]))

    def close(self) -> None:
        for w in self._writers.values():
            w.close()

    def __enter__(self) -> ParquetTables:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def write_parquet(docs: Iterable[dict[str, Any]], out_dir: str | os.PathLike[str], *,
                  compression: str = "zstd") -> dict[str, Path]:
    """Write ``tcp.parquet`` and ``udp.parquet`` into ``out_dir`` (created if needed) from ``docs``;
    returns the paths written.  Each document becomes one row group of each file (a document with
    more than :data:`ROW_GROUP_ROWS` connections, several)."""
    with ParquetTables(out_dir, compression=compression) as tables:
        for doc in docs:
            tables.add(doc)
    return tables.paths


class PacketWriter:
    """An analysis :class:`~analyzers.analysis.Observer` writing one row per TCP segment / UDP datagram
    to a Parquet file, in batches of ``batch_rows`` (memory stays at one batch).

        with PacketWriter("out/packets.parquet", file="x.pcap") as pw:
            doc = analyze_file("x.pcap", AnalysisOptions(observers=[pw])).to_dict()
    """

    def __init__(self, path: str | os.PathLike[str], *, file: str | None = None, batch_rows: int = 65536,
                 compression: str = "zstd") -> None:
        pa = _pa()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = file
        self.batch_rows = batch_rows
        self._schema = schema(PACKET_COLUMNS)
        self._writer = pa.parquet.ParquetWriter(self.path, self._schema, compression=compression)
        self._cols: dict[str, list[Any]] = {name: [] for name, _ in PACKET_COLUMNS}
        self.rows = 0

    def _add(self, frame: int, ts: int, proto: str, stream: int, version: int, src: bytes, sport: int,
             dst: bytes, dport: int, flags: str | None, seq: int | None, ack: int | None, window: int | None,
             paylen: int, ip_bytes: int) -> None:
        c = self._cols
        c["file"].append(self.file)
        c["frame"].append(frame)
        c["time_ns"].append(ts)
        c["proto"].append(proto)
        c["stream"].append(stream)
        c["ip_version"].append(version)
        c["src_ip"].append(format_ip(src))
        c["src_port"].append(sport)
        c["dst_ip"].append(format_ip(dst))
        c["dst_port"].append(dport)
        c["flags"].append(flags)
        c["seq"].append(seq)
        c["ack"].append(ack)
        c["window"].append(window)
        c["payload_len"].append(paylen)
        c["ip_bytes"].append(ip_bytes)
        self.rows += 1
        if len(c["frame"]) >= self.batch_rows:
            self.flush()

    def on_tcp(self, conn: TcpConnection, seg: TcpSegment) -> None:
        self._add(seg.frame, seg.ts_ns, "tcp", conn.stream, seg.version, seg.src, seg.sport, seg.dst, seg.dport,
                  flags_str(seg.flags), seg.seq, seg.ack, seg.window, seg.paylen, seg.ip_bytes)

    def on_udp(self, conv: UdpConversation, dg: UdpDatagram) -> None:
        self._add(dg.frame, dg.ts_ns, "udp", conv.stream, dg.version, dg.src, dg.sport, dg.dst, dg.dport,
                  None, None, None, None, dg.length - 8, dg.ip_bytes)

    def on_other(self, frame: int, ts_ns: int, result: object) -> None:
        pass

    def contribute(self, analysis: object, doc: dict[str, Any]) -> None:
        self.flush()

    # a streamed analysis (analyzers.streaming.StreamingObserver): rows go out in batches as they come,
    # nothing to add to a connection's summary, nothing to wait for
    def start_streaming(self, ready: Callable[[str, int], None]) -> None:
        return None

    def waiting(self, kind: str, stream: int) -> bool:
        return False

    def add_links(self, kind: str, stream: int, item: dict[str, Any] | None) -> None:
        return None

    def finish_streaming(self) -> None:
        self.flush()

    def flush(self) -> None:
        if not self._cols["frame"]:
            return
        pa = _pa()
        self._writer.write_table(pa.Table.from_pydict(self._cols, schema=self._schema))
        self._cols = {name: [] for name, _ in PACKET_COLUMNS}

    def close(self) -> None:
        self.flush()
        self._writer.close()

    def __enter__(self) -> PacketWriter:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
