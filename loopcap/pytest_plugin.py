"""loopcap's pytest plugin: assert on the packets your code really sent.

Registered through the ``pytest11`` entry point, so installing loopcap makes it available::

    def test_my_server_closes_cleanly(loopback_capture, my_server):
        with loopback_capture(port=9999) as cap:        # records lo, "port 9999", while the block runs
            talk_to(my_server)
        assert cap.tcp[0].handshake.complete            # the loopcap/1 JSON contract's names
        assert cap.tcp[0].teardown.kind == "four-way"
        print(cap.pcap)                                 # the capture file

What it provides:

* ``loopback_capture`` (fixture): ``loopback_capture(port=None, *, filter=None, backend="scapy",
  interface="lo", server_ports=())`` is a context manager that captures while its block runs, then
  analyzes the file; ``cap`` gives the analysis with attribute access (:class:`Capture`), plus
  ``cap.pcap``, ``cap.stats``, ``cap.doc`` (the plain dict), ``cap.ladder(stream)``,
  ``cap.report()`` and ``cap.expect(expected)``. Where this process cannot capture (not root, no
  CAP_NET_RAW) the test is *skipped* with the command that fixes it.
* ``loopcap_load`` (fixture) / :func:`load_capture`: the same object for a saved pcap/pcapng file;
  :func:`assert_capture` compares a capture with an expectation (a dict or a JSON file, only the
  fields present count, see :mod:`analyzers.expect`) and fails with a readable list of differences.
* ``--loopcap-keep``: copy the captures of failed tests to ``--loopcap-keep-dir`` (default
  ``loopcap-failed/`` under the rootdir) for later inspection; every failed test that captured gets
  a "loopcap" report section saying where its capture is and what it held.

The heavy imports (scapy, the capture backends) happen only when a capture starts, so the plugin
costs nothing to test sessions that do not use it.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

__all__ = ["Capture", "Doc", "DocList", "LoopbackCapture", "assert_capture", "load_capture"]

_CAPTURES = pytest.StashKey[list["Capture"]]()
_KEPT = pytest.StashKey[list[Path]]()
DEFAULT_KEEP_DIR = "loopcap-failed"
#: seconds to let the last packets of the block (the final ACK) reach the capture before it stops
DEFAULT_SETTLE = 0.05


# ============================================================================ attribute access
def _wrap(value: Any, path: str) -> Any:
    if isinstance(value, dict):
        return Doc(value, path)
    if isinstance(value, list):
        return DocList(value, path)
    return value


def _short(v: Any, limit: int = 160) -> str:
    try:
        text = json.dumps(v, sort_keys=True, default=str)
    except (TypeError, ValueError):
        text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Doc:
    """A read-only view of a ``loopcap/1`` dict with attribute access: ``doc.handshake.complete``.

    Dicts become :class:`Doc`, lists :class:`DocList`, other values are returned as they are (so
    ``assert cap.tcp[0].teardown.kind == "four-way"`` shows pytest's usual string diff). A field
    that does not exist raises :class:`AttributeError` naming the fields that do."""

    __slots__ = ("_data", "_path")

    def __init__(self, data: Mapping[str, Any] | None, path: str = "") -> None:
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "_path", path)

    def _mapping(self) -> Mapping[str, Any]:
        data: Mapping[str, Any] | None = object.__getattribute__(self, "_data")
        if data is None:
            raise RuntimeError("the capture is still running: read its analysis (cap.tcp, cap.udp ...) after "
                               "the `with loopback_capture(...) as cap:` block has ended")
        return data

    def _sub(self, key: str) -> str:
        path: str = object.__getattribute__(self, "_path")
        return f"{path}.{key}" if path else key

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        data = self._mapping()
        if name in data:
            return _wrap(data[name], self._sub(name))
        path = object.__getattribute__(self, "_path") or "the analysis"
        raise AttributeError(f"{path} has no field {name!r}; its fields are: {', '.join(sorted(data))}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("the analysis is read-only")

    def __getitem__(self, key: str) -> Any:
        data = self._mapping()
        if key not in data:
            path = object.__getattribute__(self, "_path") or "the analysis"
            raise KeyError(f"{path} has no field {key!r}; its fields are: {', '.join(sorted(data))}")
        return _wrap(data[key], self._sub(key))

    def __contains__(self, key: object) -> bool:
        return key in self._mapping()

    def __iter__(self) -> Iterator[str]:
        return iter(self._mapping())

    def __len__(self) -> int:
        return len(self._mapping())

    def __dir__(self) -> list[str]:
        data: Mapping[str, Any] | None = object.__getattribute__(self, "_data")
        return sorted(set(super().__dir__()) | set(data or ()))

    def keys(self) -> list[str]:
        return list(self._mapping())

    def get(self, key: str, default: Any = None) -> Any:
        data = self._mapping()
        return _wrap(data[key], self._sub(key)) if key in data else default

    def to_dict(self) -> dict[str, Any]:
        """The plain dict (a copy)."""
        return json.loads(json.dumps(self._mapping()))  # type: ignore[no-any-return]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Doc):
            return self._mapping() == other._mapping()
        if isinstance(other, Mapping):
            return self._mapping() == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        path = object.__getattribute__(self, "_path") or "analysis"
        data: Mapping[str, Any] | None = object.__getattribute__(self, "_data")
        if data is None:
            return f"<{path}: capture still running>"
        return f"<{path}: {_short(data)}>"


class DocList(list[Any]):
    """A list of analysis items (``cap.tcp``, ``cap.udp``...) whose dicts have attribute access."""

    def __init__(self, items: list[Any], path: str = "") -> None:
        super().__init__(_wrap(x, f"{path}[{i}]") for i, x in enumerate(items))
        self.path = path

    def to_list(self) -> list[Any]:
        return [x.to_dict() if isinstance(x, Doc) else (x.to_list() if isinstance(x, DocList) else x) for x in self]


# ================================================================================ captures
class Capture(Doc):
    """The analysis of one capture (live or from a file) with attribute access to the ``loopcap/1``
    names (``cap.tcp[0].handshake.complete``), plus the capture file and helpers."""

    __slots__ = ("bpf", "label", "pcap", "stats")

    def __init__(self, pcap: Path, doc: dict[str, Any] | None = None, *, label: str = "",
                 bpf: str | None = None) -> None:
        super().__init__(doc, "")
        object.__setattr__(self, "pcap", Path(pcap))
        object.__setattr__(self, "stats", None)
        object.__setattr__(self, "label", label or Path(pcap).name)
        object.__setattr__(self, "bpf", bpf)
        self.pcap: Path
        self.stats: Any
        self.label: str
        self.bpf: str | None

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    @property
    def doc(self) -> dict[str, Any]:
        """The ``loopcap/1`` document as a plain dict."""
        return dict(self._mapping())

    @property
    def ready(self) -> bool:
        return object.__getattribute__(self, "_data") is not None

    def connections(self, port: int | None = None) -> DocList:
        """The TCP connections, or those with ``port`` on either side."""
        items = [c for c in self._mapping()["tcp"]
                 if port is None or port in (c["client"]["port"], c["server"]["port"])]
        return DocList(items, "tcp")

    def ladder(self, stream: int = 0) -> str:
        """The ladder diagram of a TCP connection as text (to print in a failing test)."""
        from analyzers.ladder import analyze_with_log, render_text

        doc = analyze_with_log(self.pcap, [stream])
        for c in doc["tcp"]:
            if c["stream"] == stream:
                return render_text(c)
        raise LookupError(f"no TCP stream {stream} in {self.pcap}")

    def report(self, path: str | Path | None = None) -> Path:
        """Write the HTML report of the capture (default: beside it) and return its path."""
        from analyzers.report import build_report

        out = Path(path) if path is not None else self.pcap.with_suffix(".html")
        out.write_text(build_report(self.pcap), encoding="utf-8")
        return out

    def expect(self, expected: Mapping[str, Any] | str | Path) -> None:
        """Fail (AssertionError with the differences) unless the analysis matches ``expected``."""
        assert_capture(self, expected)

    def summary_lines(self) -> list[str]:
        """One line per connection / conversation: what a failed test's report section shows."""
        data = self._mapping()
        lines = []
        for c in data["tcp"]:
            hs, td = c["handshake"], c["teardown"]
            state = "refused" if hs["refused"] else ("complete" if hs["complete"] else "incomplete")
            lines.append(f"  tcp {c['stream']}: {c['client']['ip']}:{c['client']['port']} -> "
                         f"{c['server']['ip']}:{c['server']['port']}, handshake {state}, teardown {td['kind']}"
                         + (f" (first by the {td['initiator']})" if td["initiator"] else "")
                         + f", client sent {c['payload']['client']['bytes']} B, "
                           f"server sent {c['payload']['server']['bytes']} B")
        for u in data["udp"]:
            lines.append(f"  udp {u['stream']}: {u['client']['ip']}:{u['client']['port']} -> "
                         f"{u['server']['ip']}:{u['server']['port']}, {len(u['datagrams'])} datagrams")
        if not lines:
            lines.append("  no TCP or UDP traffic captured" + (f" (filter: {self.bpf})" if self.bpf else ""))
        return lines

    def __repr__(self) -> str:
        if not self.ready:
            return f"<Capture {self.pcap}: still running>"
        data = self._mapping()
        return f"<Capture {self.pcap}: {len(data['tcp'])} TCP connection(s), {len(data['udp'])} UDP conversation(s)>"


def _analyze(path: Path, server_ports: tuple[int, ...] = ()) -> dict[str, Any]:
    from analyzers.analysis import AnalysisOptions, analyze_file

    return analyze_file(path, AnalysisOptions(server_ports=frozenset(server_ports))).to_dict()


def load_capture(path: str | Path, *, server_ports: tuple[int, ...] = ()) -> Capture:
    """The analysis of a saved pcap/pcapng file, with attribute access (``cap.tcp[0].teardown.kind``)."""
    p = Path(path)
    return Capture(p, _analyze(p, server_ports))


def assert_capture(capture: Capture | Mapping[str, Any] | str | Path,
                   expected: Mapping[str, Any] | str | Path) -> None:
    """Fail with a readable list of differences unless ``capture`` matches ``expected``.

    ``capture``: a :class:`Capture`, a ``loopcap/1`` dict or a capture file. ``expected``: a dict
    or a JSON expectation file (as ``loopcap check --update`` writes); only its fields count."""
    from analyzers.expect import compare_expectation

    if isinstance(capture, Capture):
        doc, name = capture.doc, str(capture.pcap)
    elif isinstance(capture, (str, Path)):
        doc, name = _analyze(Path(capture)), str(capture)
    else:
        doc, name = dict(capture), str(capture.get("file") or "the analysis")
    if isinstance(expected, (str, Path)):
        want = json.loads(Path(expected).read_text(encoding="utf-8"))
        where = str(expected)
    else:
        want, where = dict(expected), "the expectation"
    diffs = compare_expectation(doc, want)
    if diffs:
        n = len(diffs)
        raise AssertionError(f"{name} does not match {where} ({n} difference{'' if n == 1 else 's'}):\n  "
                             + "\n  ".join(diffs))


class _Recording:
    """``with loopback_capture(...) as cap:``: starts the capture on enter, stops and analyzes on exit."""

    def __init__(self, owner: LoopbackCapture, cap: Capture, backend: str, interface: str, bpf: str | None,
                 server_ports: tuple[int, ...], settle: float) -> None:
        self.owner = owner
        self.cap = cap
        self.backend = backend
        self.interface = interface
        self.bpf = bpf
        self.server_ports = server_ports
        self.settle = settle
        self.session: Any = None

    def __enter__(self) -> Capture:
        __tracebackhide__ = True  # a skip or failure is reported at the user's `with` line
        from capture.live import (
            CapturePermissionError,
            CaptureToolMissingError,
            LiveCaptureError,
            open_capture,
            privileges,
        )

        try:
            if self.backend == "pyshark":
                privileges.check_dumpcap()
            else:
                privileges.check_raw_socket_privileges()
        except (CapturePermissionError, CaptureToolMissingError) as err:
            pytest.skip(f"loopback_capture: {err.message} {err.hint or ''}".rstrip())
        try:
            self.session = open_capture(self.backend, interface=self.interface, bpf=self.bpf, output=self.cap.pcap)
            self.session.start()
        except CapturePermissionError as err:
            pytest.skip(f"loopback_capture: {err.message} {err.hint or ''}".rstrip())
        except LiveCaptureError as err:
            pytest.fail(f"loopback_capture could not start ({self.backend} on {self.interface}, filter "
                        f"{self.bpf or '(none)'}): {err.message}" + (f"\n{err.hint}" if err.hint else ""),
                        pytrace=False)
        self.owner.register(self.cap)
        return self.cap

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        __tracebackhide__ = True
        if self.session is None:
            return
        if self.settle > 0:
            time.sleep(self.settle)
        self.cap._set("stats", self.session.stop())
        try:
            doc = _analyze(self.cap.pcap, self.server_ports)
        except Exception as err:
            if exc_type is not None:
                return  # the block's own error matters more
            pytest.fail(f"loopback_capture: cannot analyze {self.cap.pcap}: {err}", pytrace=False)
        object.__setattr__(self.cap, "_data", doc)


class LoopbackCapture:
    """The ``loopback_capture`` fixture's value: call it to get a capturing context manager."""

    def __init__(self, node: pytest.Item | None, directory: Path) -> None:
        self.node = node
        self.directory = directory
        self.captures: list[Capture] = []

    def register(self, cap: Capture) -> None:
        self.captures.append(cap)
        if self.node is not None:
            self.node.stash.setdefault(_CAPTURES, []).append(cap)

    def __call__(self, port: int | None = None, *, filter: str | None = None, backend: str = "scapy",
                 interface: str = "lo", server_ports: tuple[int, ...] = (),
                 settle: float = DEFAULT_SETTLE) -> _Recording:
        """Capture loopback traffic while the ``with`` block runs.

        ``port``: only this port (BPF ``port N``, TCP and UDP, either side). ``filter``: a BPF
        filter (combined with ``port`` by ``and`` when both are given). ``backend``: ``"scapy"``
        (default) or ``"pyshark"`` (dumpcap). ``server_ports`` decide roles when no SYN is seen
        (``port`` is one by default)."""
        bpf: str | None
        if filter and port is not None:
            bpf = f"({filter}) and port {int(port)}"
        elif port is not None:
            bpf = f"port {int(port)}"
        else:
            bpf = filter or None
        n = len(self.captures) + 1
        pcap = self.directory / f"loopcap-{n}.pcap"
        while pcap.exists():
            n += 1
            pcap = self.directory / f"loopcap-{n}.pcap"
        ports = tuple(server_ports) or ((int(port),) if port is not None else ())
        cap = Capture(pcap, None, label=f"capture {n}", bpf=bpf)
        return _Recording(self, cap, backend, interface, bpf, ports, settle)


@pytest.fixture
def loopback_capture(request: pytest.FixtureRequest, tmp_path: Path) -> LoopbackCapture:
    """Record loopback traffic while a block runs: ``with loopback_capture(port=9999) as cap: ...``;
    afterwards ``cap.tcp[0].handshake.complete``, ``cap.pcap``. Skips without capture privileges."""
    node = request.node if isinstance(request.node, pytest.Item) else None
    return LoopbackCapture(node, tmp_path)


@pytest.fixture
def loopcap_load(request: pytest.FixtureRequest) -> Any:
    """``loopcap_load(path)`` -> :class:`Capture` of a saved capture (shown in the failure report)."""
    node = request.node if isinstance(request.node, pytest.Item) else None

    def load(path: str | Path, *, server_ports: tuple[int, ...] = ()) -> Capture:
        cap = load_capture(path, server_ports=server_ports)
        object.__setattr__(cap, "label", f"fixture {Path(path).name}")
        if node is not None:
            node.stash.setdefault(_CAPTURES, []).append(cap)
        return cap

    return load


# ==================================================================================== hooks
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("loopcap", "loopcap packet captures")
    group.addoption("--loopcap-keep", action="store_true", default=False,
                    help="keep the captures (pcap files) of failed tests in --loopcap-keep-dir")
    group.addoption("--loopcap-keep-dir", default=None, metavar="DIR",
                    help=f"where --loopcap-keep puts them (default: {DEFAULT_KEEP_DIR}/ in the rootdir)")


def _keep_dir(config: pytest.Config) -> Path:
    d = config.getoption("loopcap_keep_dir")
    return Path(d) if d else Path(config.rootpath) / DEFAULT_KEEP_DIR


def _safe_name(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", nodeid).strip("_")[:150] or "test"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    caps = [c for c in item.stash.get(_CAPTURES, []) if c.ready or c.pcap.exists()]
    if not caps or not report.failed:
        return report
    keep = bool(item.config.getoption("loopcap_keep"))
    lines: list[str] = []
    for i, cap in enumerate(caps, 1):
        live = cap.label.startswith("capture")
        where = cap.pcap
        if keep and live and cap.pcap.exists():
            dest = _keep_dir(item.config) / f"{_safe_name(item.nodeid)}-{i}{cap.pcap.suffix}"
            kept = item.config.stash.setdefault(_KEPT, [])
            if dest not in kept:  # a test failing in two phases is kept once
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(cap.pcap, dest)
                kept.append(dest)
            where = dest
            lines.append(f"{cap.label} kept: {dest}")
        elif live:
            lines.append(f"{cap.label}: {where} (temporary; run pytest with --loopcap-keep to keep the captures "
                         "of failed tests)")
        else:
            lines.append(f"{cap.label}: {where}")
        if cap.bpf:
            lines.append(f"  filter: {cap.bpf}")
        if cap.ready:
            lines.extend(cap.summary_lines())
        lines.append(f"  see it: loopcap analyze {where}   |   loopcap ladder {where} --stream 0")
    report.sections.append((f"loopcap captures ({report.when})", "\n".join(lines)))
    return report


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    kept = config.stash.get(_KEPT, [])
    if kept:
        terminalreporter.write_sep("-", "loopcap")
        terminalreporter.write_line(f"kept {len(kept)} capture(s) of failed tests in {kept[0].parent}:")
        for p in kept:
            terminalreporter.write_line(f"  {p}")
