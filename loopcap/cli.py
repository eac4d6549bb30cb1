"""The ``loopcap`` command line.

Exit codes (documented in the README):
  0  analyzed (warnings allowed, e.g. a damaged tail)
  1  a check failed (capture self-check against the generator manifest, ``check``)
  2  the input cannot be read as a capture, or the command line is wrong
130  interrupted (Ctrl+C) outside a capture
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from analyzers import compiled
from analyzers.analysis import Analysis, AnalysisOptions, analyze_file
from analyzers.errors import LoopcapError, UsageError
from analyzers.jsonout import decoded_items
from analyzers.udp import MAX_DATAGRAM_RECORDS
from loopcap import __version__

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _fail(err: LoopcapError) -> NoReturn:
    from capture.generators import NotLoopbackError

    if isinstance(err, NotLoopbackError):  # speak CLI, not Python keywords
        err.hint = "use 127.0.0.1, ::1 or localhost, or pass --allow-non-loopback to really leave loopback"
    click.echo(f"loopcap: error: {err.message}", err=True)
    if err.hint:
        click.echo(f"  {err.hint}", err=True)
    sys.exit(err.exit_code)


def _style_for(color: str) -> Callable[..., str]:
    use = color == "always" or (color == "auto" and sys.stdout.isatty() and not os.environ.get("NO_COLOR"))
    if use:
        return click.style
    return lambda text, **_: text


def _match_host(ep: dict[str, Any], host: str | None) -> bool:
    return host is None or ep["ip"] == host


def filter_doc(doc: dict[str, Any], *, stream: int | None, udp_stream: int | None, port: int | None,
               host: str | None) -> dict[str, Any]:
    """Apply --stream / --udp-stream / --port / --host to a loopcap/1 document."""
    if stream is None and udp_stream is None and port is None and host is None:
        return doc

    def keep(item: dict[str, Any]) -> bool:
        c, s = item["client"], item["server"]
        if port is not None and port not in (c["port"], s["port"]):
            return False
        return host is None or _match_host(c, host) or _match_host(s, host)

    def pick(items: Any, wanted: int | None, kind: str) -> list[dict[str, Any]]:
        # one pass (a streamed document's connections can be read once): the matches, and the
        # stream numbers there are for the message when ``wanted`` is not among them
        by_number = stream is not None or udp_stream is not None
        got: list[dict[str, Any]] = []
        first = last = None
        for it in decoded_items(items):
            if first is None:
                first = it["stream"]
            last = it["stream"]
            if keep(it) and (not by_number or it["stream"] == wanted):
                got.append(it)
        if wanted is not None and not got:
            none = "no TCP connections" if kind == "TCP" else "no UDP conversations"
            have = f"{'UDP streams' if kind == 'UDP' else 'streams'} {first}-{last}" if first is not None else none
            raise UsageError(f"no {kind} stream {wanted} matches (the capture has {have})")
        return got

    tcp = pick(doc["tcp"], stream, "TCP")
    udp = pick(doc["udp"], udp_stream, "UDP")
    out = dict(doc)
    out["tcp"] = tcp
    out["udp"] = udp
    out["filtered"] = {"stream": stream, "udp_stream": udp_stream, "port": port, "host": host}
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="loopcap",
                      message=f"%(prog)s %(version)s (compiled: {'yes' if compiled() else 'no'})")
def cli() -> None:
    """loopcap: see TCP and UDP at work.

    Analyze saved captures (handshakes, teardowns, payloads), follow a stream, and (with the
    capture commands) record built-in loopback scenarios and check them end to end.
    """


def _options(server_port: tuple[int, ...], keep: Callable[[int], bool] | bool = False,
             http: bool = True, peers: bool = False, checksums: str = "auto") -> AnalysisOptions:
    opts = AnalysisOptions(server_ports=frozenset(server_port), keep_payload=keep, http=http)
    if peers:
        from analyzers.tcpanalysis import TcpAnalysisObserver
        from analyzers.zeek import ZeekObserver, ZeekOptions

        zeek = ZeekObserver(ZeekOptions(checksums=checksums))
        opts.observers = [zeek, TcpAnalysisObserver()]
        opts.decoder_factory = zeek.make_decoder
    return opts


def run_analysis(path: str, opts: AnalysisOptions) -> Analysis:
    return analyze_file(path, opts)


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the loopcap/1 JSON document instead of text.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "zeek", "parquet"]), default="text",
              show_default=True, help="text walkthrough, loopcap/1 JSON (--json is short for it), a Zeek "
                                      "conn.log, or Parquet tables (with -w DIR).")
@click.option("-w", "--write", "out_dir", type=click.Path(file_okay=False),
              help="Output directory for --format parquet (tcp.parquet, udp.parquet).")
@click.option("--packets", "packet_table", is_flag=True,
              help="With --format parquet: also packets.parquet, one row per TCP segment and UDP datagram "
                   "(frame, time, stream, addresses, ports, flags, seq/ack, window, lengths), in capture order.")
@click.option("--peers/--no-peers", default=True, show_default=True,
              help="Add Wireshark's tcp.analysis flags and Zeek's conn_state/history (--no-peers: faster).")
@click.option("--checksums", type=click.Choice(["auto", "verify", "ignore"]), default="auto", show_default=True,
              help="Zeek view: verify checksums and discard bad packets as Zeek does (verify), accept "
                   "Linux loopback's partial checksums too (auto), or do not check (ignore, zeek -C).")
@click.option("--jobs", "-j", type=click.IntRange(1), help="Processes to use (default: every core).")
@click.option("--engine", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="local processes, or a Dask cluster (--scheduler).")
@click.option("--scheduler", help="Dask scheduler address for --engine dask, e.g. tcp://127.0.0.1:8786.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar on stderr.")
@click.option("--stream", type=int, help="Only this TCP connection (Wireshark's tcp.stream number).")
@click.option("--udp-stream", type=int, help="Only this UDP conversation (udp.stream number).")
@click.option("--port", type=click.IntRange(0, 65535), help="Only connections with this port on either side.")
@click.option("--host", help="Only connections with this IP address on either side.")
@click.option("--server-port", type=click.IntRange(0, 65535), multiple=True,
              help="A port known to be a server's (decides roles when a connection has no SYN). Repeatable.")
@click.option("--no-http", is_flag=True, help="Do not look for HTTP/1.x messages in TCP payloads.")
@click.option("--all-datagrams", is_flag=True, help="List every UDP datagram in the text output.")
@click.option("--max-datagrams", type=click.IntRange(0), default=MAX_DATAGRAM_RECORDS, show_default=True,
              help="Datagrams listed per UDP conversation; the rest are counted (datagrams_omitted), and packet "
                   "and byte counts stay exact. 0: all of them (memory then grows with long conversations).")
@click.option("--color", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True)
def analyze(files: tuple[str, ...], as_json: bool, fmt: str, out_dir: str | None, packet_table: bool, peers: bool,
            checksums: str,
            jobs: int | None, engine: str, scheduler: str | None, quiet: bool, stream: int | None,
            udp_stream: int | None, port: int | None, host: str | None, server_port: tuple[int, ...],
            no_http: bool, all_datagrams: bool, max_datagrams: int, color: str) -> None:
    """Explain the TCP connections and UDP conversations in pcap/pcapng FILES (or directories of them).

    With several files and --json, one JSON document per line (JSON Lines). Several files, or one
    large file, are analyzed on every core (--jobs); results equal the single-process run.
    """
    from analyzers.jsonout import write_document
    from analyzers.parallel import analyze_paths, capture_files
    from analyzers.progress import progress_for
    from analyzers.walkthrough import iter_render

    if as_json:
        fmt = "json"
    if packet_table and fmt != "parquet":
        _fail(UsageError("--packets writes packets.parquet next to the connection tables",
                         hint="Use it with --format parquet -w DIR."))
    if engine == "dask" and packet_table:
        _fail(UsageError("--engine dask does not write per-packet tables (packets.parquet)",
                         hint="Use the local engine (the default) for --packets."))
    style = _style_for(color)
    paths = capture_files(files)
    if not paths:
        _fail(UsageError("no pcap/pcapng files found in " + ", ".join(files)))
    if fmt == "zeek":
        _zeek_log(tuple(paths), checksums)
        return
    if fmt == "parquet" and not out_dir:
        _fail(UsageError("--format parquet writes tables into a directory: give -w DIR"))
    total = sum(os.path.getsize(p) for p in paths if os.path.isfile(p))
    bar = progress_for(total, quiet=quiet)
    local = engine == "local"
    filtered = any(f is not None for f in (stream, udp_stream, port, host))
    if peers and fmt in ("json", "parquet") and total >= BIG_CAPTURE_BYTES and not quiet:
        click.echo(f"loopcap: note: {total / 2**20:.0f} MB of captures with the peers' views (Wireshark's "
                   "tcp.analysis flags, Zeek's conn_state) takes minutes; --no-peers gives the same analysis "
                   "without them, about 4x faster", err=True)

    tables: Any = None  # ParquetTables, for --format parquet
    packets: Any = None  # PacketWriter, for --packets

    def fresh(path: str | None = None) -> AnalysisOptions:  # the peers' views keep state: one set per capture
        opts = _options(server_port, http=not no_http, peers=peers, checksums=checksums)
        # --udp-stream lists every datagram of its conversation (numbers are final only at the end: all)
        opts.max_datagrams = None if max_datagrams == 0 or udp_stream is not None else max_datagrams
        if packets is not None:
            packets.file = path
            opts.observers = [*opts.observers, packets]
        return opts

    def emit(doc: dict[str, Any], first: bool) -> None:
        """One file's document to the output (its connections read once): Parquet row groups, the
        JSON document (a line of JSON Lines with several files) or the walkthrough, filtered."""
        doc = filter_doc(doc, stream=stream, udp_stream=udp_stream, port=port, host=host)
        if tables is not None:
            tables.add(doc)
            return
        if fmt == "json":
            write_document(doc, sys.stdout, one_line=len(paths) > 1)  # several files: JSON Lines
            return
        if not first:
            click.echo("")
        for piece in iter_render(doc, style, all_datagrams=all_datagrams or udp_stream is not None):
            click.echo(piece, nl=False)

    try:
        if fmt == "parquet":
            from analyzers.parquet import ParquetTables

            assert out_dir is not None
            tables = ParquetTables(out_dir)
            if packet_table:
                from analyzers.parquet import PacketWriter

                packets = PacketWriter(Path(out_dir) / "packets.parquet")
        with bar:
            try:
                if local and fmt == "json" and len(paths) > 1 and not filtered:
                    # several files' JSON Lines, streamed by worker processes -j files at a time
                    from analyzers.parallel import default_jobs
                    from analyzers.streaming import write_json_lines

                    write_json_lines(paths, sys.stdout, fresh(), progress=bar, fresh_options=fresh if peers else None,
                                     jobs=default_jobs() if jobs is None else jobs)
                    sys.stdout.flush()
                elif local:
                    # each file streamed in bounded memory (a large one on every core, by flow shards) and
                    # handed to the output a connection at a time
                    _stream_each(paths, fresh, packets is not None, jobs, bar, emit, warn=fmt == "text")
                else:
                    # a Dask cluster: each file's connections read back from the workers' spools
                    for i, (path, doc) in enumerate(analyze_paths(paths, fresh(), jobs=jobs, engine=engine,
                                                                  scheduler=scheduler, progress=bar)):
                        emit(doc, not i)
                        sys.stdout.flush()
                        for w in doc["warnings"] if fmt == "text" else ():
                            click.echo(f"loopcap: warning: {path}: {w}", err=True)
            except BrokenPipeError:  # click would exit 1 on it
                _piped_away()
            finally:
                if tables is not None:
                    tables.close()
                if packets is not None:
                    packets.close()
        if tables is not None:
            for name, where in tables.paths.items():
                click.echo(f"{name}: {where}")
        if packets is not None:
            click.echo(f"packets: {packets.path}")
    except LoopcapError as err:
        _fail(err)


def _stream_each(paths: list[str], fresh: Callable[[str], AnalysisOptions], one_process: bool, jobs: int | None,
                 bar: Any, emit: Callable[[dict[str, Any], bool], None], *, warn: bool) -> None:
    """Each file analyzed streaming (a large one on every core, unless ``one_process``: the per-packet
    table follows every packet in one process), its document handed to ``emit(doc, first)``
    with its connections to be read once; with ``warn`` its warnings to stderr afterwards."""
    from analyzers.parallel import DEFAULT_SPLIT_BYTES, default_jobs
    from analyzers.streaming import analyze_file_streamed

    j = default_jobs() if jobs is None else jobs
    for i, path in enumerate(paths):
        warnings: list[str] = []

        def show(doc: dict[str, Any], first: bool = not i, warnings: list[str] = warnings) -> None:
            emit(doc, first)
            warnings.extend(doc["warnings"])

        big = os.path.isfile(path) and os.path.getsize(path) >= DEFAULT_SPLIT_BYTES
        if not one_process and j > 1 and big:
            from analyzers.shardstream import analyze_file_sharded

            res = analyze_file_sharded(path, show, fresh(path), jobs=j, progress=bar)
            bar.advance_file(os.path.getsize(path), res.packets)
        else:
            analyze_file_streamed(path, show, fresh(path), progress=bar)
        sys.stdout.flush()
        for w in warnings if warn else ():
            click.echo(f"loopcap: warning: {path}: {w}", err=True)


#: from this much capture data on, ``analyze`` with the peers' views says that --no-peers streams
BIG_CAPTURE_BYTES = 64 * 1024 * 1024


def _zeek_log(files: tuple[str, ...], checksums: str) -> None:
    """Write one Zeek conn.log (TSV with Zeek's header lines) for FILES to stdout."""
    from analyzers.zeek import ZeekOptions, write_conn_log, zeek_analyze

    rows: list[Any] = []
    try:
        for path in files:
            log = zeek_analyze(path, ZeekOptions(checksums=checksums))
            rows.extend(log.rows)
            if log.checksums.discarded:
                click.echo(f"loopcap: warning: {path}: {log.checksums.discarded} packet(s) with bad checksums "
                           f"discarded, as Zeek does (--checksums ignore keeps them)", err=True)
    except LoopcapError as err:
        _fail(err)
    write_conn_log(rows, sys.stdout)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@click.option("--stream", type=int, help="The TCP connection to follow (tcp.stream number).")
@click.option("--udp-stream", type=int, help="Follow a UDP conversation instead (udp.stream number).")
@click.option("--format", "fmt", type=click.Choice(["ascii", "hex", "raw", "binary"]), default="ascii",
              show_default=True, help="ascii/hex/raw as Wireshark's Follow Stream; binary writes the bytes.")
@click.option("--direction", type=click.Choice(["client", "server"]), help="Only one side's data.")
@click.option("--server-port", type=click.IntRange(0, 65535), multiple=True)
def follow(file: str, stream: int | None, udp_stream: int | None, fmt: str, direction: str | None,
           server_port: tuple[int, ...]) -> None:
    """Print a connection's reassembled payload, like Wireshark's Follow TCP Stream."""
    from analyzers.follow import node, render_follow, tcp_chunks, udp_chunks

    if (stream is None) == (udp_stream is None):
        _fail(UsageError("give exactly one of --stream N (TCP) or --udp-stream N (UDP)"))
    want = stream if stream is not None else udp_stream
    try:
        res = run_analysis(file, _options(server_port, keep=lambda s: s == want, http=False))
    except LoopcapError as err:
        _fail(err)
    if stream is not None:
        conns = [c for c in res.tcp if c.stream == stream]
        if not conns:
            ids = [c.stream for c in res.tcp]
            _fail(UsageError(f"no TCP stream {stream} (the capture has "
                             + (f"streams {ids[0]}-{ids[-1]})" if ids else "no TCP connections)")))
        c = conns[0]
        cd = c.client_dir or 0
        out = render_follow(tcp_chunks(c), fmt, proto="tcp", stream=stream,
                            nodes=(node(c.ep[cd]), node(c.ep[1 - cd])), direction=direction)
    else:
        convs = [u for u in res.udp if u.stream == udp_stream]
        if not convs:
            _fail(UsageError(f"no UDP stream {udp_stream} in the capture"))
        u = convs[0]
        assert udp_stream is not None
        out = render_follow(udp_chunks(u), fmt, proto="udp", stream=udp_stream,
                            nodes=(node(u.client), node(u.server)), direction=direction)
    if isinstance(out, bytes):
        sys.stdout.buffer.write(out)
        sys.stdout.buffer.flush()
    else:
        click.echo(out, nl=False)
    for w in res.warnings:
        click.echo(f"loopcap: warning: {w}", err=True)


@cli.command()
def states() -> None:
    """Print the TCP endpoint state machine loopcap uses (state, event, next state)."""
    from analyzers.states import table_text

    click.echo(table_text())


def _peer_observers() -> list[Any]:
    """Wireshark's tcp.analysis flags and Zeek's view, for the report and checks."""
    from analyzers.tcpanalysis import TcpAnalysisObserver
    from analyzers.zeek import ZeekObserver, ZeekOptions

    return [ZeekObserver(ZeekOptions()), TcpAnalysisObserver()]


def _register_more() -> None:
    from loopcap import capcli, gencli, viscli

    gencli.register(cli, _fail)
    capcli.register(cli, _fail, _style_for)
    viscli.register(cli, _fail, observers=_peer_observers)


_register_more()


def main() -> None:
    try:
        cli.main(standalone_mode=False, prog_name="loopcap")
    except click.exceptions.Abort:
        click.echo("loopcap: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_BAD_INPUT)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("loopcap: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        _piped_away()
    except LoopcapError as err:
        _fail(err)


def _piped_away() -> NoReturn:
    """Output piped into ``head`` (or a pager) that closed it: not an error, and no noise at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(0)


if __name__ == "__main__":
    main()
