"""CLI commands for live capture: ``capture`` (a built-in scenario, or the user's own traffic) and
``demo`` (the README's main job)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from analyzers.errors import LoopcapError

Fail = Callable[[LoopcapError], NoReturn]


def stats_text(stats: Any) -> str:
    d = stats.to_dict()
    parts = [f"{d['packets_written']} packets captured on {d['interface']} by {d['backend']} into {d['output']}"
             f" ({d['file_format']})"]
    drops = []
    if d.get("packets_dropped") is not None:
        drops.append(f"{d['packets_dropped']} dropped by the kernel")
    if d.get("interface_dropped"):
        drops.append(f"{d['interface_dropped']} dropped by the interface")
    if drops:
        parts.append(", ".join(drops))
    if d.get("verified_packets") is not None:
        parts.append(f"{d['verified_packets']} verified by pyshark")
    parts.append(f"stopped: {d['stop_reason']}")
    return "capture: " + "; ".join(parts)


def _run_lab(scenario: str, backend: str, host: str, port: int | None, options: dict[str, Any], write: str,
             fmt: str | None, interface: str, allow_non_loopback: bool, as_json: bool, quiet: bool,
             style: Callable[..., str], fail: Fail, manifest_path: str | None = None) -> None:
    from analyzers.walkthrough import render
    from capture.lab import capture_scenario

    try:
        run = capture_scenario(scenario, output=Path(write), backend=backend, host=host, port=port,
                               options=options, file_format=fmt, interface=interface,
                               allow_non_loopback=allow_non_loopback)
    except LoopcapError as err:
        fail(err)
    if manifest_path:
        try:
            run.manifest.write(manifest_path)
        except OSError as exc:
            fail(LoopcapError(f"cannot write the manifest to {manifest_path}: {exc.strerror}"))
    doc = run.analysis.to_dict()
    if as_json:
        click.echo(json.dumps({"schema": "loopcap-capture/1", "capture": run.stats.to_dict(), "bpf": run.bpf,
                               "manifest": run.manifest.to_dict(),
                               "check": {"ok": run.check.ok, "checks": run.check.checks,
                                         "failures": run.check.failures, "notes": run.check.notes},
                               "analysis": doc}, indent=2))
    else:
        if not quiet:
            click.echo(render(doc, style), nl=False)
            click.echo("")
        click.echo(stats_text(run.stats) + f"; filter: {run.bpf}")
        text = run.check.text()
        click.echo(style(text, fg="green" if run.check.ok else "red"))
        click.echo(f"open it in Wireshark, or: loopcap analyze {write}  /  loopcap follow {write} --stream 0")
    if not run.check.ok:
        sys.exit(1)


def _maybe_force_simultaneous(opts: dict[str, Any], fail: Fail) -> dict[str, Any]:
    """simultaneous-close: force real simultaneity when possible (re-run inside a private namespace
    whose loopback holds back the first FIN); otherwise say why it is not forced."""
    from capture import netns

    if netns.inside():
        opts.setdefault("forced", True)
        return opts
    wanted = opts.get("forced")
    reason = netns.unavailable_reason()
    if wanted is False:
        return opts
    if reason is not None:
        if wanted:
            fail(LoopcapError(f"cannot force a simultaneous close: {reason}"))
        click.echo(f"note: simultaneous close not forced ({reason}); on plain loopback the FINs usually "
                   "do not cross, so the manifest accepts three-way and four-way too", err=True)
        return opts
    try:
        code = netns.run_in_fin_drop_netns(sys.argv[1:])
    except OSError as exc:
        if wanted:
            fail(LoopcapError(f"cannot force a simultaneous close: {exc}"))
        click.echo(f"note: simultaneous close not forced (namespace setup failed: {exc})", err=True)
        return opts
    sys.exit(code)


def register(cli: click.Group, fail: Fail, style_for: Callable[[str], Callable[..., str]]) -> None:
    from loopcap.gencli import _host, parse_options, scenario_info

    backend_opt = click.option("--backend", type=click.Choice(["scapy", "pyshark"]), default="scapy",
                               show_default=True, help="scapy (pure Python) or pyshark (dumpcap/tshark).")
    color_opt = click.option("--color", type=click.Choice(["auto", "always", "never"]), default="auto",
                             show_default=True)

    @cli.command()
    @click.option("--scenario", help="Run this built-in scenario under the capture, then analyze and "
                                     "self-check it (see `loopcap scenarios`).")
    @backend_opt
    @click.option("-i", "--interface", default="lo", show_default=True)
    @click.option("-f", "--filter", "bpf", help="BPF capture filter, e.g. 'tcp port 9999' (own traffic).")
    @click.option("-w", "--write", "write", type=click.Path(dir_okay=False),
                  help="Output file (.pcap or .pcapng). Default: loopcap-SCENARIO.pcap / loopcap-capture.pcap")
    @click.option("--file-format", "fmt", type=click.Choice(["pcap", "pcapng"]),
                  help="Output format (default: from the file name).")
    @click.option("-c", "--count", type=click.IntRange(1), help="Stop after this many packets.")
    @click.option("--duration", type=click.FloatRange(0.01), help="Stop after this many seconds.")
    @click.option("--host", help="Scenario address (default 127.0.0.1, ::1 with -6).")
    @click.option("-6", "--ipv6", is_flag=True, help="Run the scenario on ::1.")
    @click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
                  help="Scenario server port (0: a free ephemeral port).")
    @click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE", help="Scenario option.")
    @click.option("--manifest", "manifest_path", type=click.Path(dir_okay=False),
                  help="Also write the scenario's manifest here.")
    @click.option("--allow-non-loopback", is_flag=True)
    @click.option("--json", "as_json", is_flag=True, help="Print stats, manifest, check and analysis as JSON.")
    @click.option("-q", "--quiet", is_flag=True, help="Scenario mode: print only the stats and the check.")
    @color_opt
    def capture(scenario: str | None, backend: str, interface: str, bpf: str | None, write: str | None,
                fmt: str | None, count: int | None, duration: float | None, host: str | None, ipv6: bool,
                port: int, options: tuple[str, ...], manifest_path: str | None, allow_non_loopback: bool,
                as_json: bool, quiet: bool, color: str) -> None:
        """Capture live traffic into a pcap/pcapng file.

        With --scenario: run a built-in client/server on loopback inside the capture, then analyze the
        file and check it against what the programs did (exit 1 if it does not match). Without:
        record your own traffic (-i, -f, -c, --duration) until Ctrl+C.
        """
        style = style_for(color)
        if scenario is not None:
            if bpf or count or duration:
                fail(LoopcapError("--scenario sets its own filter and stops by itself; -f, -c and --duration "
                                  "are for capturing your own traffic"))
            try:
                info = scenario_info(scenario)
                opts = parse_options(info, options)
            except LoopcapError as err:
                fail(err)
            out = write or f"loopcap-{scenario}.pcap"
            if scenario == "simultaneous-close":
                opts = _maybe_force_simultaneous(dict(opts), fail)
            _run_lab(scenario, backend, _host(host, ipv6), port, dict(opts), out, fmt, interface,
                     allow_non_loopback, as_json, quiet, style, fail, manifest_path)
            return
        from capture.live import file_format_for, run_capture_until_interrupted

        out = write or "loopcap-capture.pcap"

        def ready(_: object) -> None:
            what = f" matching '{bpf}'" if bpf else ""
            click.echo(f"capturing on {interface}{what} into {out}; Ctrl+C to stop", err=True)

        try:
            stats = run_capture_until_interrupted(backend, on_ready=ready, interface=interface, bpf=bpf,
                                                  output=Path(out), file_format=file_format_for(Path(out), fmt),
                                                  count=count, duration=duration)
        except LoopcapError as err:
            fail(err)
        if as_json:
            click.echo(json.dumps(stats.to_dict(), indent=2))
        else:
            click.echo(stats_text(stats))
            click.echo(f"next: loopcap analyze {out}")

    @cli.command()
    @click.option("--scenario", default="tcp-echo", show_default=True, help="Which built-in scenario to show.")
    @backend_opt
    @click.option("-6", "--ipv6", is_flag=True, help="Use ::1.")
    @click.option("-w", "--write", "write", type=click.Path(dir_okay=False), default="loopcap-demo.pcap",
                  show_default=True, help="Where to keep the capture.")
    @color_opt
    def demo(scenario: str, backend: str, ipv6: bool, write: str, color: str) -> None:
        """The live demo: a built-in client and server talk on loopback while loopcap captures them, then
        loopcap explains the capture packet by packet and checks it against what the programs did."""
        try:
            scenario_info(scenario)
        except LoopcapError as err:
            fail(err)
        opts: dict[str, Any] = {}
        if scenario == "simultaneous-close":
            opts = _maybe_force_simultaneous(opts, fail)
        click.echo(f"loopcap demo: running the {scenario} scenario on {'::1' if ipv6 else '127.0.0.1'} "
                   f"under a live {backend} capture...\n", err=True)
        _run_lab(scenario, backend, "::1" if ipv6 else "127.0.0.1", None, opts, write, None, "lo", False, False,
                 False, style_for(color), fail)
