"""The compiled build (``LOOPCAP_MYPYC=1``, see setup.py) analyzes exactly like the Python sources.

A wheel is built with mypyc from a copy of the sources, unpacked, and ``loopcap analyze`` runs from
it and from the sources on every fixture capture, the shared corpus and Zeek's traces, with and
without the peers' views, in one process and in two: the documents, messages and exit codes must
be identical byte for byte.  A selection of the analyzer tests then runs against the compiled
modules.  Building takes two to three minutes (one module set for the whole session).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest
from conftest import REPO, corpus_dir

sys.path.insert(0, str(REPO / "scripts"))
import build_compiled

#: the analyzer tests that then run against the compiled modules: the fast paths against the
#: reference loop, the trackers, readers and hostile input, the streamed, sharded, multi-process and
#: Dask paths (pickling across processes), the peers' views against Zeek's and tshark's baselines.
#: Not the tests that swap a class's methods or pass duck-typed fakes (test_*_steady.py,
#: test_zeek_tracker.py): compiled classes refuse both, by design.
UNIT_TESTS = ("test_fast_path.py", "test_blockloop.py", "test_loops_mixed.py", "test_tracker.py", "test_reader.py",
              "test_decode.py", "test_checksum.py", "test_streaming.py", "test_jsonout.py", "test_hostile_lengths.py",
              "test_summary_speed_equivalence.py", "test_tombstones.py", "test_http_messages.py",
              "test_corpus_truth.py", "test_shard_peers.py", "test_parallel.py", "test_dask_engine.py",
              "test_zeek_conformance.py", "test_malformed_corpus.py", "test_golden.py", "test_cli_analyze.py",
              "test_pickling.py", "test_reference_cycles.py")
#: single tests in those files that swap a compiled class's method to watch it
UNIT_DESELECT = ("test_streaming.py::test_streamed_peers_views_forget_zeek_connections_once_they_are_written",)


def compiled_modules() -> list[str]:
    """setup.py's ``COMPILED`` (read, not imported: importing it would run the build)."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "COMPILED" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError("setup.py has no COMPILED")


@pytest.fixture(scope="module")
def compiled_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the unpacked compiled wheel (first on PYTHONPATH, it replaces the sources)."""
    reason = build_compiled.why_not()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the compiled build cannot run in CI: {reason}")
        pytest.skip(reason)
    return build_compiled.build(tmp_path_factory.mktemp("compiled"))


def run(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """``python -m loopcap ARGS`` with ``site`` first on the import path."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("LOOPCAP_NO_NUMPY", None)
    return subprocess.run([sys.executable, "-m", "loopcap", *args], cwd=cwd, env=env, capture_output=True,
                          timeout=900)


def captures() -> list[str]:
    found = sorted(str(p) for p in (REPO / "pcaps").iterdir() if p.suffix in (".pcap", ".pcapng"))
    for extra in (corpus_dir() / "captures", REPO.parent / "shared" / "zeek-conformance" / "traces"):
        if extra.is_dir():
            found += sorted(str(p) for p in extra.iterdir() if p.suffix in (".pcap", ".pcapng", ".trace"))
    return found


def test_the_wheel_holds_every_listed_module_compiled(compiled_site: Path, tmp_path: Path) -> None:
    names = compiled_modules()
    assert {"tcp", "blockloop", "zeek", "summary"} <= set(names)
    for name in names:
        assert any((compiled_site / "analyzers" / f"{name}{suffix}").exists() for suffix in EXTENSION_SUFFIXES), name
    version = run(compiled_site, "--version", cwd=tmp_path)
    assert version.returncode == 0 and b"(compiled: yes)" in version.stdout, version
    pure = run(REPO, "--version", cwd=tmp_path)
    assert b"(compiled: no)" in pure.stdout, pure


@pytest.mark.parametrize("extra", [(), ("--no-peers",)], ids=["default", "no-peers"])
def test_compiled_and_pure_documents_are_identical(compiled_site: Path, tmp_path: Path,
                                                   extra: tuple[str, ...]) -> None:
    files = captures()
    assert len(files) > 30
    args = ("analyze", "--json", "-q", "-j", "1", *extra, *files)
    pure = run(REPO, *args, cwd=tmp_path)
    fast = run(compiled_site, *args, cwd=tmp_path)
    assert pure.stdout.count(b"\n") >= len(files)
    assert (fast.returncode, fast.stderr) == (pure.returncode, pure.stderr)
    assert fast.stdout == pure.stdout


def test_compiled_shards_and_processes_give_the_single_process_document(compiled_site: Path,
                                                                         tmp_path: Path) -> None:
    """Two processes on one file (flow shards, spooled and merged) and on several files."""
    one = str(REPO / "pcaps" / "concurrent-ipv4.pcap")
    many = [str(REPO / "pcaps" / name) for name in ("bulk-ipv4.pcap", "http-get-ipv4.pcap", "udp-echo-ipv6.pcap")]
    for args in (("analyze", "--json", "-q", one), ("analyze", "--json", "-q", "--no-peers", *many)):
        pure = run(REPO, *args, "-j", "1", cwd=tmp_path)
        fast = run(compiled_site, *args, "-j", "2", cwd=tmp_path)
        assert pure.returncode == fast.returncode == 0, fast.stderr
        assert fast.stdout == pure.stdout


def test_analyzer_tests_pass_against_the_compiled_modules(compiled_site: Path, tmp_path: Path) -> None:
    # run from elsewhere, so that the checkout is not on the import path (``python -m`` puts the
    # working directory first); pytest adds tests/ (no package) for the test modules' own imports
    env = {**os.environ, "PYTHONPATH": str(compiled_site), "LOOPCAP_EXPECT_COMPILED": "1"}
    probe = subprocess.run([sys.executable, "-c", "import analyzers; print(analyzers.compiled())"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "True", probe
    tests = [str(REPO / "tests" / name) for name in UNIT_TESTS]
    skip = [arg for name in UNIT_DESELECT for arg in ("--deselect", f"tests/{name}")]  # node ids: from the rootdir
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                           "--rootdir", str(REPO), "-c", str(REPO / "pyproject.toml"), *skip, *tests],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
