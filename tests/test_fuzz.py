"""The fuzz targets in CI: the saved corpus of each atheris target (tests/fuzz/corpus/TARGET, grown
and minimized by long atheris runs) replayed under the invariant's time and memory bounds, and a
short coverage-guided atheris session per target.

Long runs: ``python tests/fuzz/fuzz_reader.py -max_total_time=1200 WORKDIR tests/fuzz/corpus/reader``
(and ``fuzz_decode.py``, ``fuzz_tracker.py``); see SECURITY.md for the figures of the last ones.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))
import fuzzlib

FUZZ = Path(__file__).resolve().parent / "fuzz"
TARGETS = sorted(fuzzlib.TARGETS)
#: executions of the short atheris session per target in CI (LOOPCAP_FUZZ_RUNS for more)
CI_RUNS = int(os.environ.get("LOOPCAP_FUZZ_RUNS", "500"))


def corpus_files(target: str) -> list[Path]:
    return sorted(p for p in (fuzzlib.CORPUS / target).iterdir() if p.is_file())


@pytest.mark.parametrize("target", TARGETS)
def test_saved_corpus_replays_within_the_time_and_memory_bounds(target: str) -> None:
    files = corpus_files(target)
    assert len(files) >= 3, f"the saved corpus of {target} is missing"
    fn = fuzzlib.TARGETS[target]
    slowest = (0.0, "")
    for path in files:
        data = path.read_bytes()
        tracemalloc.start()
        t0 = time.perf_counter()
        try:
            fn(data)
        finally:
            seconds = time.perf_counter() - t0
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        assert seconds < fuzzlib.TIME_LIMIT_S, f"{path.name}: {seconds:.1f} s"
        assert peak < fuzzlib.MEMORY_LIMIT_BYTES, f"{path.name}: {peak / 2**20:.1f} MiB"
        slowest = max(slowest, (seconds, path.name))


@pytest.mark.parametrize("target", TARGETS)
def test_seed_inputs_reach_deep_into_the_target(target: str) -> None:
    """The seeds are valid inputs: the reader seeds give connections, the others decode without
    falling back to 'malformed' everywhere (otherwise the fuzzer would start from nothing)."""
    for name, data in fuzzlib.seed_inputs(target).items():
        result = fuzzlib.TARGETS[target](data)
        if target == "reader":
            assert isinstance(result, dict) and result["tcp"] and result["packets"] > 0, name


@pytest.mark.parametrize("target", TARGETS)
def test_a_short_atheris_session_finds_nothing(target: str, tmp_path: Path) -> None:
    """Coverage-guided: atheris mutates the saved corpus for ``CI_RUNS`` executions; any exception
    other than loopcap's typed errors, a timeout or the RSS limit fails the session."""
    pytest.importorskip("atheris")
    (tmp_path / "new").mkdir()
    # through a shell that forks (no exec): Linux starts a child's peak-RSS mark at its parent's, and
    # libFuzzer's RSS limit reads that mark -- a test run that once held 1.5 GB would fail the session
    proc = subprocess.run(
        ["/bin/sh", "-c", '"$@"; exit $?', "sh", sys.executable, str(FUZZ / f"fuzz_{target}.py"),
         f"-atheris_runs={CI_RUNS}", "-seed=1", f"-artifact_prefix={tmp_path}/", str(tmp_path / "new"),
         str(fuzzlib.CORPUS / target)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    tail = proc.stderr[-3000:]
    assert proc.returncode == 0, tail
    assert f"Done {CI_RUNS} runs" in proc.stderr or "Done" in proc.stderr, tail
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("timeout-*")), tail


def test_the_fuzz_scripts_apply_the_invariant_bounds() -> None:
    args = fuzzlib.libfuzzer_args(["fuzz_reader.py", "-timeout=3"], "reader")
    assert "-timeout=3" in args and f"-rss_limit_mb={fuzzlib.RSS_LIMIT_MB}" in args
    assert f"-max_len={fuzzlib.MAX_INPUT_BYTES}" in args
    assert any(a.startswith("-artifact_prefix=/tmp/") for a in args)


def test_regressions_found_by_fuzzing_stay_fixed() -> None:
    """Inputs that once broke the invariant (each named for the bug; see SECURITY.md)."""
    regressions = FUZZ / "regressions"
    files = sorted(regressions.glob("*/*"))
    assert files, "no regression inputs"
    for path in files:
        fuzzlib.TARGETS[path.parent.name](path.read_bytes())
