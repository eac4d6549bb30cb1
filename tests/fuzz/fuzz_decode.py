#!/usr/bin/env python3
"""Coverage-guided fuzz target (atheris): frames of every link type (Ethernet, 802.1Q, NULL/LOOP, raw IP, SLL/SLL2, unknown) through one
stateful decoder: IPv4/IPv6 (fragments, extension headers), TCP (options), UDP, ICMP errors.

    python tests/fuzz/fuzz_decode.py -atheris_runs=100000            # saved corpus, read-only
    python tests/fuzz/fuzz_decode.py -max_total_time=600 WORKDIR tests/fuzz/corpus/decode

The invariant and the bounds (time, memory) are in :mod:`fuzzlib`; a failure is written to
/tmp/loopcap-fuzz-decode-crash-* and ``tests/test_fuzz.py`` replays the saved corpus in CI.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["analyzers", "fuzzlib"]):
    import fuzzlib

if __name__ == "__main__":
    fuzzlib.run_atheris("decode")
