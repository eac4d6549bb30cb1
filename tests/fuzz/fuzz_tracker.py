#!/usr/bin/env python3
"""Coverage-guided fuzz target (atheris): synthetic TCP segments and UDP datagrams (any flags, sequence numbers around the 2**32 wrap,
lying lengths) into the sans-I/O connection trackers, reassembly, HTTP splitting, summaries.

    python tests/fuzz/fuzz_tracker.py -atheris_runs=100000            # saved corpus, read-only
    python tests/fuzz/fuzz_tracker.py -max_total_time=600 WORKDIR tests/fuzz/corpus/tracker

The invariant and the bounds (time, memory) are in :mod:`fuzzlib`; a failure is written to
/tmp/loopcap-fuzz-tracker-crash-* and ``tests/test_fuzz.py`` replays the saved corpus in CI.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["analyzers", "fuzzlib"]):
    import fuzzlib

if __name__ == "__main__":
    fuzzlib.run_atheris("tracker")
