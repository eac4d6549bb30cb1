"""CLI commands for the traffic generators: scenarios, generate, serve, client."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from analyzers.errors import LoopcapError, UsageError
from capture.generators import SCENARIOS, Manifest, OptionInput, ScenarioInfo


def parse_options(info: ScenarioInfo, pairs: tuple[str, ...]) -> dict[str, OptionInput]:
    """``-o key=value`` pairs, converted to the type of the scenario's default for that key."""
    out: dict[str, OptionInput] = {}
    for pair in pairs:
        if "=" not in pair:
            raise UsageError(f"option {pair!r} is not KEY=VALUE")
        key, value = pair.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in info.default_options:
            known = ", ".join(sorted(info.default_options)) or "none"
            raise UsageError(f"scenario {info.name!r} has no option {key!r} (its options: {known})")
        default = info.default_options[key]
        try:
            if isinstance(default, bool):
                low = value.strip().lower()
                if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(value)
                out[key] = low in ("1", "true", "yes", "on")
            elif isinstance(default, int):
                out[key] = int(value, 0)
            elif isinstance(default, float):
                out[key] = float(value)
            elif isinstance(default, tuple):
                out[key] = tuple(v for v in value.split(",") if v)
            else:
                out[key] = value
        except ValueError:
            raise UsageError(f"option {key}={value!r}: expected a {type(default).__name__}") from None
    return out


def scenario_info(name: str) -> ScenarioInfo:
    info = SCENARIOS.get(name)
    if info is None:
        raise UsageError(f"unknown scenario {name!r}; the scenarios are: {', '.join(SCENARIOS)}")
    return info


def manifest_text(m: Manifest) -> str:
    d: dict[str, Any] = m.to_dict()
    lines = [f"scenario {d['scenario']} ({d['family']}), server {d['server']['ip']}:{d['server']['port']}"]
    for c in d["tcp"]:
        exp = "/".join(c["expected_teardown"])
        sent = []
        for side in ("client", "server"):
            p = c.get(f"{side}_sent")
            if p is not None:
                sent.append(f"{side} sent {p['bytes']} B")
        what = "refused" if c["refused"] else ", ".join(sent)
        lines.append(f"  TCP {c['client']['ip']}:{c['client']['port']} -> {c['server']['ip']}:{c['server']['port']}: "
                     f"{what}; expected teardown {exp}"
                     + (f", {c['closes_first']} closes first" if c["closes_first"] else ""))
    for u in d["udp"]:
        n = len(u["datagrams"])
        dropped = len(u.get("dropped") or [])
        lines.append(f"  UDP {u['client']['ip']}:{u['client']['port']} -> {u['server']['ip']}:{u['server']['port']}: "
                     f"{n} datagrams" + (f", {dropped} requests dropped on purpose" if dropped else ""))
    for n in d.get("notes", []):
        lines.append(f"  note: {n}")
    for p in d.get("problems", []):
        lines.append(f"  PROBLEM: {p}")
    return "\n".join(lines)


def _host(host: str | None, ipv6: bool) -> str:
    return host or ("::1" if ipv6 else "127.0.0.1")


def _write_manifest(m: Manifest, path: str | None) -> None:
    if path:
        try:
            m.write(path)
        except OSError as exc:
            raise LoopcapError(f"cannot write the manifest to {path}: {exc.strerror}") from None


def register(cli: click.Group, fail_: Any) -> None:
    from capture.generators import NotLoopbackError

    def fail(err: LoopcapError) -> None:
        if isinstance(err, NotLoopbackError):
            err.hint = "use 127.0.0.1, ::1 or localhost, or pass --allow-non-loopback to really leave loopback"
        fail_(err)

    opt = click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
                       help="A scenario option (see `loopcap scenarios`). Repeatable.")
    host_opt = click.option("--host", help="Loopback address to use (default 127.0.0.1, or ::1 with -6).")
    v6_opt = click.option("-6", "--ipv6", is_flag=True, help="Use ::1.")
    nonloop = click.option("--allow-non-loopback", is_flag=True,
                           help="Allow a non-loopback address (traffic then leaves this machine's lo).")
    mani = click.option("--manifest", "manifest_path", type=click.Path(dir_okay=False),
                        help="Write the run's manifest (JSON) here.")

    @cli.command()
    @click.option("--json", "as_json", is_flag=True)
    def scenarios(as_json: bool) -> None:
        """List the built-in loopback scenarios and their options."""
        if as_json:
            click.echo(json.dumps([i.to_dict() for i in SCENARIOS.values()], indent=2))
            return
        for info in SCENARIOS.values():
            port = info.default_port if info.default_port is not None else "a closed port"
            click.echo(f"{info.name:<19} port {port}; {'/'.join(info.transports)}"
                       f"{', IPv6 too' if info.ipv6 else ''}")
            click.echo(f"    {info.description}")
            for k, v in info.default_options.items():
                shown = ",".join(v) if isinstance(v, tuple) else v
                helptext = info.option_help.get(k, "")
                click.echo(f"    -o {k}={shown}" + (f"   {helptext}" if helptext else ""))

    @cli.command()
    @click.argument("scenario")
    @host_opt
    @v6_opt
    @click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
                  help="Server port (0 = ephemeral).")
    @opt
    @mani
    @nonloop
    @click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
    def generate(scenario: str, host: str | None, ipv6: bool, port: int, options: tuple[str, ...],
                 manifest_path: str | None, allow_non_loopback: bool, as_json: bool) -> None:
        """Run a scenario's server and client together on loopback and print what they did."""
        from capture.generators import run_scenario

        try:
            info = scenario_info(scenario)
            m = run_scenario(scenario, _host(host, ipv6), port, options=parse_options(info, options),
                             allow_non_loopback=allow_non_loopback)
            _write_manifest(m, manifest_path)
        except LoopcapError as err:
            fail(err)
        click.echo(m.to_json() if as_json else manifest_text(m))
        if m.problems:
            sys.exit(1)

    @cli.command()
    @click.argument("scenario")
    @host_opt
    @v6_opt
    @click.option("--port", type=click.IntRange(0, 65535), help="Port to listen on (default: the tutorial's).")
    @click.option("--max-connections", type=click.IntRange(0), help="Stop after this many clients (0: no limit).")
    @click.option("--duration", type=click.FloatRange(0.1, 3600), default=60.0, show_default=True,
                  help="Stop after this many seconds at most.")
    @opt
    @mani
    @nonloop
    def serve(scenario: str, host: str | None, ipv6: bool, port: int | None, max_connections: int | None,
              duration: float, options: tuple[str, ...], manifest_path: str | None,
              allow_non_loopback: bool) -> None:
        """Run only a scenario's server (the tutorials' first terminal)."""
        from capture.generators import serve as run_serve

        def ready(ep: object) -> None:
            click.echo(f"serving {scenario} on {ep}; Ctrl+C to stop", err=True)

        try:
            info = scenario_info(scenario)
            m = run_serve(scenario, _host(host, ipv6), port, max_connections=max_connections, duration=duration,
                          ready=ready, options=parse_options(info, options), allow_non_loopback=allow_non_loopback)
            _write_manifest(m, manifest_path)
        except LoopcapError as err:
            fail(err)
        click.echo(manifest_text(m))

    @cli.command()
    @click.argument("scenario")
    @host_opt
    @v6_opt
    @click.option("--port", type=click.IntRange(0, 65535), help="Server port (default: the tutorial's).")
    @opt
    @mani
    @nonloop
    def client(scenario: str, host: str | None, ipv6: bool, port: int | None, options: tuple[str, ...],
               manifest_path: str | None, allow_non_loopback: bool) -> None:
        """Run only a scenario's client (the tutorials' second terminal)."""
        from capture.generators import run_client

        try:
            info = scenario_info(scenario)
            m = run_client(scenario, _host(host, ipv6), port, options=parse_options(info, options),
                           allow_non_loopback=allow_non_loopback)
            _write_manifest(m, manifest_path)
        except LoopcapError as err:
            fail(err)
        click.echo(manifest_text(m))
