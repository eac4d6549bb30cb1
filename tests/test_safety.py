"""Safety properties that hold for every command, pinned:

* no code passes anything through a shell: no ``shell=True``, no ``os.system`` / ``os.popen`` /
  ``os.spawn*`` / ``os.exec*`` with a command string, no ``asyncio.create_subprocess_shell``, and every
  ``subprocess`` call gets an argument list (an AST scan of every Python file of the repository);
* capture filters, interface names and file names reach dumpcap (and the writer process) as single
  argument-list elements, whatever characters they hold;
* the generators refuse non-loopback addresses on every command unless ``--allow-non-loopback`` is
  given, before any socket exists;
* output files are written where the user named them and nowhere else (no stray or temporary
  files beside them or in the working directory), and ``analyze`` / ``follow`` write nothing.
"""

from __future__ import annotations

import ast
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import PCAPS, REPO

from capture.generators import NotLoopbackError
from capture.generators.net import resolve_host
from capture.live import open_capture, privileges, pyshark_backend
from loopcap.cli import cli

SKIP_DIRS = {".git", ".venv", "venv", ".mypy_cache", ".ruff_cache", ".pytest_cache", "__pycache__", "build",
             "dist", "node_modules", ".benchmarks"}
HAVE_RAW = privileges.has_cap_net_raw()
needs_raw = pytest.mark.skipif(not HAVE_RAW, reason="live capture needs root or CAP_NET_RAW")
needs_dumpcap = pytest.mark.skipif(shutil.which("dumpcap") is None or shutil.which("tshark") is None,
                                   reason="needs dumpcap and tshark")
HOSTILE = "x; touch PWNED $(touch PWNED2) `touch PWNED3` | tee PWNED4 && rm -rf ~ '\" \\ * ?"


def python_files() -> list[Path]:
    out = []
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        out += [Path(root) / f for f in files if f.endswith(".py")]
    return sorted(out)


SHELL_FUNCS = {("os", "system"), ("os", "popen"), ("asyncio", "create_subprocess_shell"), ("commands", "getoutput"),
               ("pty", "spawn")}
SUBPROCESS_FUNCS = {"run", "Popen", "call", "check_call", "check_output", "getoutput", "getstatusoutput"}


def _dotted(node: ast.AST) -> tuple[str, ...]:
    if isinstance(node, ast.Attribute):
        return (*_dotted(node.value), node.attr)
    if isinstance(node, ast.Name):
        return (node.id,)
    return ()


def _is_string(node: ast.AST) -> bool:
    return (isinstance(node, ast.Constant) and isinstance(node.value, str)) or isinstance(node, ast.JoinedStr) or (
        isinstance(node, ast.BinOp) and (_is_string(node.left) or _is_string(node.right)))


def shell_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    # names bound by "from subprocess import run" (a bare run() elsewhere is someone's own helper)
    imported = {a.asname or a.name: a.name for n in ast.walk(tree)
                if isinstance(n, ast.ImportFrom) and n.module == "subprocess" for a in n.names}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if len(name) == 1 and name[0] in imported:
            name = ("subprocess", imported[name[0]])
        where = f"{path.relative_to(REPO)}:{node.lineno}"
        for kw in node.keywords:
            if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                found.append(f"{where}: shell={ast.unparse(kw.value)}")
        if name[-2:] in SHELL_FUNCS or (len(name) >= 2 and name[-2] == "os" and name[-1].startswith(("spawn", "exec"))
                                        and node.args and _is_string(node.args[0])
                                        and name[-1] not in ("execv", "execve", "execvp", "execvpe")):
            found.append(f"{where}: {'.'.join(name)}()")
        if name[-1:] and name[-1] in SUBPROCESS_FUNCS and name[-2:-1] == ("subprocess",):
            if name[-1] in ("getoutput", "getstatusoutput"):
                found.append(f"{where}: subprocess.{name[-1]}() runs a shell")
            elif node.args and _is_string(node.args[0]):
                found.append(f"{where}: subprocess.{name[-1]}() with a command string")
    return found


def test_no_python_file_runs_anything_through_a_shell() -> None:
    files = python_files()
    assert len(files) > 40 and REPO / "capture" / "live" / "pyshark_backend.py" in files
    problems = [p for f in files for p in shell_uses(f)]
    assert problems == []


def _scan(path: Path) -> list[str]:
    old = globals()["REPO"]
    globals()["REPO"] = path.parent
    try:
        return shell_uses(path)
    finally:
        globals()["REPO"] = old


def test_the_shell_scan_flags_every_form(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os, subprocess, asyncio\n"
                   "subprocess.run('ls ' + x, shell=True)\n"
                   "subprocess.Popen(f'dumpcap -f {bpf}')\n"
                   "os.system('rm x')\n"
                   "os.popen('ls')\n"
                   "asyncio.create_subprocess_shell('ls')\n"
                   "subprocess.check_output(['ls'], shell=flag)\n"
                   "subprocess.getoutput('ls')\n", encoding="utf-8")
    assert len(_scan(bad)) == 8
    good = tmp_path / "good.py"
    good.write_text("import subprocess\nsubprocess.run(['ls', x], shell=False)\nsubprocess.Popen(cmd)\n"
                    "def run(*a): pass\nrun('not a subprocess')\n", encoding="utf-8")
    assert _scan(good) == []
    imported = tmp_path / "imported.py"
    imported.write_text("from subprocess import run as r, Popen\nr('ls -l')\nPopen('ls')\n", encoding="utf-8")
    assert len(_scan(imported)) == 2


# ---------------------------------------------------------------------------------------------
# argument lists


def test_filters_interfaces_and_file_names_are_single_dumpcap_arguments(tmp_path: Path) -> None:
    out = tmp_path / f"{HOSTILE}.pcapng"
    session = open_capture("pyshark", interface=HOSTILE, bpf=HOSTILE, output=out)
    assert isinstance(session, pyshark_backend.PysharkCaptureSession)
    cmd = session._dumpcap_command("/usr/bin/dumpcap")
    assert cmd[cmd.index("-f") + 1] == HOSTILE and cmd[cmd.index("-i") + 1] == HOSTILE
    assert cmd[cmd.index("-w") + 1] == str(out.absolute())
    assert all(isinstance(a, str) for a in cmd)


def test_an_output_named_dash_is_a_file_not_dumpcaps_standard_output(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """dumpcap reads ``-w -`` as "write to stdout": before the fix the packets went to /dev/null and
    pyshark then read its capture from stdin."""
    monkeypatch.chdir(tmp_path)
    session = open_capture("pyshark", bpf="tcp", output="-", file_format="pcap")
    assert isinstance(session, pyshark_backend.PysharkCaptureSession)
    cmd = session._dumpcap_command("dumpcap")
    assert cmd[cmd.index("-w") + 1] == str(tmp_path / "-")


@needs_raw
@needs_dumpcap
@pytest.mark.live
def test_a_hostile_filter_reaches_dumpcap_as_text_and_runs_nothing(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "loopcap", "capture", "--backend", "pyshark", "-f", HOSTILE,
                           "-w", str(tmp_path / "x.pcap"), "--duration", "0.5"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "filter" in proc.stderr.lower()
    assert not any(p.name.startswith("PWNED") for p in tmp_path.iterdir())
    assert not any(p.name.startswith("PWNED") for p in REPO.iterdir())


@needs_raw
@pytest.mark.live
@pytest.mark.parametrize("backend", ["scapy", pytest.param("pyshark", marks=needs_dumpcap)])
def test_a_file_name_with_shell_characters_is_written_exactly_there(backend: str, tmp_path: Path) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    target_dir = tmp_path / "out dir"
    target_dir.mkdir()
    name = "-a;b$(touch PWNED)`c` 'd\" & e|f.pcapng"
    proc = subprocess.run([sys.executable, "-m", "loopcap", "capture", "--backend", backend, "-f", "tcp port 9",
                           "-w", str(target_dir / name), "--duration", "0.3"], cwd=work, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in target_dir.iterdir()] == [name]
    assert list(work.iterdir()) == []  # nothing in the working directory either
    assert (target_dir / name).read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"


# ---------------------------------------------------------------------------------------------
# loopback only


#: regression: capture/lab.py used to bind the scenario host (to pick a free port) before the loopback
#: check, so a non-loopback --host was an uncaught OSError and a name was resolved (DNS off loopback)


@pytest.mark.parametrize("argv", [
    ["generate", "tcp-echo", "--host", "192.0.2.1"],
    ["generate", "udp-echo", "--host", "10.1.2.3"],
    ["generate", "refused", "--host", "2001:db8::1"],
    ["serve", "tcp-echo", "--host", "0.0.0.0", "--duration", "0.1"],
    ["serve", "udp-echo", "--host", "::", "--duration", "0.1"],
    ["client", "tcp-echo", "--host", "example.com", "--port", "9999"],
    ["generate", "tcp-echo", "--host", "::ffff:127.0.0.1"],
    ["capture", "--scenario", "tcp-echo", "--host", "192.0.2.1", "-w", "x.pcap"],
    ["capture", "--scenario", "tcp-echo", "--host", "example.com", "-w", "x.pcap"],
], ids=lambda a: "-".join(a[:2]) + "-" + a[a.index("--host") + 1])
def test_every_command_refuses_non_loopback_addresses_before_any_socket(argv: list[str],
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path) -> None:
    made: list[object] = []
    real = socket.socket

    class Watched(real):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            made.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(socket, "socket", Watched)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: (_ for _ in ()).throw(AssertionError("DNS lookup")))
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, argv)
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    assert "loopback" in res.stderr and "--allow-non-loopback" in res.stderr
    assert "Traceback" not in res.output
    assert made == [] and list(tmp_path.iterdir()) == []


def test_non_loopback_is_allowed_only_when_asked_for() -> None:
    with pytest.raises(NotLoopbackError):
        resolve_host("192.0.2.1")
    assert resolve_host("192.0.2.1", allow_non_loopback=True).ip == "192.0.2.1"
    for host in ("127.0.0.1", "127.1.2.3", "::1", "localhost", "[::1]"):
        assert resolve_host(host).ip in ("127.0.0.1", "127.1.2.3", "::1")


# ---------------------------------------------------------------------------------------------
# files written only where named


def test_analyze_and_follow_write_no_files(tmp_path: Path) -> None:
    pcap = PCAPS / "http-get-ipv4.pcap"
    for argv in (["analyze", str(pcap)], ["analyze", "--json", str(pcap)], ["follow", str(pcap), "--stream", "0"],
                 ["follow", str(pcap), "--stream", "0", "--format", "binary"], ["analyze", str(tmp_path / "no.pcap")]):
        proc = subprocess.run([sys.executable, "-m", "loopcap", *argv], cwd=tmp_path, capture_output=True, timeout=60)
        assert b"Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_generate_writes_the_manifest_where_named_and_nothing_else(tmp_path: Path) -> None:
    work, out = tmp_path / "cwd", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    proc = subprocess.run([sys.executable, "-m", "loopcap", "generate", "tcp-welcome", "-o", "close_delay=0",
                           "--manifest", str(out / "m.json")], cwd=work, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in out.iterdir()] == ["m.json"] and list(work.iterdir()) == []


@needs_raw
@pytest.mark.live
@pytest.mark.parametrize("backend", ["scapy", pytest.param("pyshark", marks=needs_dumpcap)])
def test_capture_writes_the_capture_and_manifest_where_named_and_nothing_else(backend: str, tmp_path: Path) -> None:
    work, out = tmp_path / "cwd", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    proc = subprocess.run([sys.executable, "-m", "loopcap", "capture", "--backend", backend, "--scenario",
                           "tcp-welcome", "-o", "close_delay=0", "-q", "-w", str(out / "c.pcap"), "--manifest",
                           str(out / "m.json")], cwd=work, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["c.pcap", "m.json"]
    assert list(work.iterdir()) == []
