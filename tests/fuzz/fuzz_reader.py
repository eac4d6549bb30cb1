#!/usr/bin/env python3
"""Coverage-guided fuzz target (atheris): pcap and pcapng files (any bytes) through the whole ``loopcap analyze`` / ``follow`` path: reader,
decoders, trackers, summaries, JSON, text walkthrough, Follow Stream.

    python tests/fuzz/fuzz_reader.py -atheris_runs=100000            # saved corpus, read-only
    python tests/fuzz/fuzz_reader.py -max_total_time=600 WORKDIR tests/fuzz/corpus/reader

The invariant and the bounds (time, memory) are in :mod:`fuzzlib`; a failure is written to
/tmp/loopcap-fuzz-reader-crash-* and ``tests/test_fuzz.py`` replays the saved corpus in CI.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["analyzers", "fuzzlib"]):
    import fuzzlib

if __name__ == "__main__":
    fuzzlib.run_atheris("reader")
