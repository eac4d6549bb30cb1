"""CLI commands for pictures and CI: ``ladder``, ``report`` and ``check --expect``.

``register(cli, fail)`` adds them to the ``loopcap`` group (``fail`` prints a
:class:`~analyzers.errors.LoopcapError` as one paragraph and exits with its code).

Exit codes: 0 done / the capture matches its expectation; 1 ``check`` found differences (listed on
stdout, one per line); 2 the capture or the expectation cannot be read, or the command line is wrong.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from analyzers.analysis import AnalysisOptions, Observer, analyze_file
from analyzers.errors import LoopcapError, UsageError

Fail = Callable[[LoopcapError], NoReturn]
#: more observers for ``report`` and ``check`` (e.g. peers' summaries), made fresh for each run
ObserverFactory = Callable[[], list[Observer]]

EXIT_MISMATCH = 1


def _write_text(path: str, text: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise LoopcapError(f"cannot write {path}: {exc.strerror or exc}",
                           hint="Fix: choose a path in a directory that exists and that you may write to.") from None


def _use_color(color: bool | None) -> bool:
    if color is not None:
        return color
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def load_expectation(path: str) -> dict[str, Any]:
    """Read an expectation file; a typed error (exit 2) when it is missing or not a JSON object."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"the expectation {path} does not exist",
                         hint="Fix: create it from a known-good capture with `loopcap check FILE --expect "
                              f"{path} --update`.") from None
    except OSError as exc:
        raise UsageError(f"cannot read the expectation {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"the expectation {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                         f"{exc.msg})") from None
    if not isinstance(data, dict):
        raise UsageError(f"the expectation {path} must hold a JSON object (like the loopcap/1 document), "
                         f"not a {type(data).__name__}")
    return data


def register(cli: click.Group, fail: Fail, *, observers: ObserverFactory | None = None) -> None:
    """Add ``ladder``, ``report`` and ``check`` to ``cli``."""

    def extra() -> list[Observer]:
        return list(observers()) if observers is not None else []

    server_port_opt = click.option(
        "--server-port", type=click.IntRange(0, 65535), multiple=True,
        help="A port known to be a server's (decides roles when a connection has no SYN). Repeatable.")

    @cli.command()
    @click.argument("file", type=click.Path(dir_okay=False, path_type=str))
    @click.option("--stream", type=int, help="The TCP connection to draw (tcp.stream number); default: all "
                                             "(text) or the only one (SVG).")
    @click.option("-w", "--write", "write", type=click.Path(dir_okay=False, path_type=str),
                  help="Write the ladder as SVG to this file instead of printing text.")
    @click.option("--color/--no-color", default=None, help="Colour the text (default: when on a terminal).")
    @click.option("--head", type=click.IntRange(0), default=12, show_default=True,
                  help="Data packets shown at the start of each connection before folding.")
    @click.option("--tail", type=click.IntRange(0), default=8, show_default=True,
                  help="Data packets shown at the end of each connection after folding.")
    @click.option("--all", "show_all", is_flag=True, help="Fold nothing: one arrow for every packet.")
    @server_port_opt
    def ladder(file: str, stream: int | None, write: str | None, color: bool | None, head: int, tail: int,
               show_all: bool, server_port: tuple[int, ...]) -> None:
        """Draw TCP connections as ladder (sequence) diagrams, like Wireshark's Flow Graph.

        One arrow per packet with time, flags, relative seq/ack and length; handshake and teardown
        marked; each endpoint's state where it changes; RSTs and retransmissions stand out; long
        data phases folded.
        """
        from analyzers.ladder import PacketLog, render_svg, render_text

        log = PacketLog(None if stream is None else [stream], head=None if show_all else head,
                        tail=None if show_all else tail)
        try:
            res = analyze_file(file, AnalysisOptions(server_ports=frozenset(server_port), observers=[log]))
            doc = res.to_dict()
            conns = doc["tcp"]
            if stream is not None:
                conns = [c for c in conns if c["stream"] == stream]
                if not conns:
                    ids = [c["stream"] for c in doc["tcp"]]
                    have = f"streams {ids[0]}-{ids[-1]}" if ids else "no TCP connections"
                    raise UsageError(f"no TCP stream {stream} in {file} (the capture has {have})")
            elif not conns:
                raise UsageError(f"{file} has no TCP connections to draw")
            if write:
                if len(conns) > 1:
                    raise UsageError(f"{file} has {len(conns)} TCP connections: choose one with --stream N "
                                     f"(0-{conns[-1]['stream']}) to write an SVG")
                _write_text(write, render_svg(conns[0]))
                click.echo(f"wrote the ladder of TCP stream {conns[0]['stream']} to {write}", err=True)
                return
        except LoopcapError as err:
            fail(err)
        coloured = _use_color(color)
        style: Callable[..., str] = click.style if coloured else (lambda text, **_: text)
        for i, c in enumerate(conns):
            if i:
                click.echo("")
            click.echo(render_text(c, style), nl=False, color=coloured or None)
        for w in doc["warnings"]:
            click.echo(f"loopcap: warning: {w}", err=True)

    @cli.command()
    @click.argument("file", type=click.Path(dir_okay=False, path_type=str))
    @click.option("-w", "--write", "write", required=True, type=click.Path(dir_okay=False, path_type=str),
                  help="The HTML file to write ('-' for standard output).")
    @click.option("--title", help="The report's title (default: the file name).")
    @server_port_opt
    def report(file: str, write: str, title: str | None, server_port: tuple[int, ...]) -> None:
        """Write a self-contained HTML report: summary table, ladders, payloads, warnings.

        The page needs no network to open (no CDN, nothing fetched).
        """
        from analyzers.report import render_report, report_observers

        try:
            obs: list[Observer] = [*report_observers(), *extra()]
            res = analyze_file(file, AnalysisOptions(server_ports=frozenset(server_port), observers=obs))
            html = render_report(res.to_dict(), title=title)
            if write == "-":
                click.echo(html, nl=False)
                return
            _write_text(write, html)
        except LoopcapError as err:
            fail(err)
        nt, nu = len(res.tcp), len(res.udp)
        click.echo(f"wrote the report of {file} to {write} ({nt} TCP connection{'' if nt == 1 else 's'}, "
                   f"{nu} UDP conversation{'' if nu == 1 else 's'})", err=True)

    @cli.command()
    @click.argument("file", type=click.Path(dir_okay=False, path_type=str))
    @click.option("--expect", "expect_path", required=True, type=click.Path(dir_okay=False, path_type=str),
                  help="The stored expectation (JSON): only the fields it holds are compared.")
    @click.option("--update", is_flag=True, help="Write the expectation from this capture instead of comparing.")
    @server_port_opt
    def check(file: str, expect_path: str, update: bool, server_port: tuple[int, ...]) -> None:
        """Compare a capture's analysis with a stored expectation (exit 1 and a diff if they differ).

        Only the fields present in the expectation count; connections are matched by stream number.
        --update writes a fresh expectation (endpoints, handshake, teardown, final states, payload
        sizes and SHA-256, UDP datagrams, warnings) that you can then trim by hand.
        """
        from analyzers.expect import compare_expectation, make_expectation

        try:
            expected = None if update else load_expectation(expect_path)
            res = analyze_file(file, AnalysisOptions(server_ports=frozenset(server_port), observers=extra()))
            doc = res.to_dict()
            if update:
                _write_text(expect_path, json.dumps(make_expectation(doc), indent=2) + "\n")
                click.echo(f"wrote the expectation of {file} to {expect_path}")
                return
        except LoopcapError as err:
            fail(err)
        assert expected is not None
        diffs = compare_expectation(doc, expected)
        if not diffs:
            click.echo(f"{file} matches {expect_path}")
            return
        click.echo(f"{file} does not match {expect_path}: {len(diffs)} difference{'' if len(diffs) == 1 else 's'}")
        for d in diffs:
            click.echo(f"  {d}")
        click.echo(f"(to accept the new analysis: loopcap check {file} --expect {expect_path} --update)")
        sys.exit(EXIT_MISMATCH)
