from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PCAPS = REPO / "pcaps"


def corpus_dir() -> Path:
    env = os.environ.get("LOOPCAP_CORPUS")
    return Path(env) if env else REPO.parent / "shared" / "corpus"


def need_corpus() -> Path:
    d = corpus_dir()
    if not (d / "captures").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"the shared corpus is missing at {d} (CI must have it beside the checkout)")
        pytest.skip(f"shared corpus not found at {d}; set LOOPCAP_CORPUS to its path")
    return d


def need_tshark() -> str:
    path = shutil.which("tshark")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("tshark is not installed: .ci/run must install it (apt-get install tshark)")
        pytest.skip("tshark not installed (sudo apt-get install tshark)")
    return path


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite pcaps/golden/* from the current output instead of comparing")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


def fixture_pcaps() -> list[Path]:
    return sorted(p for p in PCAPS.iterdir() if p.suffix in (".pcap", ".pcapng") and p.is_file())


def pytest_sessionstart(session: pytest.Session) -> None:
    """tests/test_compiled_build.py runs analyzer tests against the compiled modules: make sure they,
    and not the checkout's sources, are the ones imported."""
    if os.environ.get("LOOPCAP_EXPECT_COMPILED"):
        import analyzers

        if not analyzers.compiled():
            pytest.exit(f"LOOPCAP_EXPECT_COMPILED is set but analyzers come from {analyzers.__file__}", 3)
