"""Where a streamed ``--no-peers`` analysis spends its time, by taking parts away.

    python bench/ablate.py FILE [--rounds N]
    PYTHONPATH=bench/out/compiled/site python bench/ablate.py FILE   # the compiled build

Profilers disagree about compiled code and about time spent in the kernel (``perf`` in a virtual
machine gave a quarter of a run to copying file data that ``/usr/bin/time`` measured at a tenth), so
this measures by wall clock instead: the same analysis of ``FILE`` (in this process, the collector
paused as the CLI pauses it) with more of each handed-out connection's work put back at each step --
nothing, the summary, its JSON, the spool.  The differences between the medians are the parts' costs.
Rounds alternate the steps so that the machine's drift hits them alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from analyzers.analysis import analyze_file, gc_paused
from analyzers.jsonout import dumps_bytes
from analyzers.streaming import OrderedSpool
from analyzers.summary import summarize_tcp, summarize_udp
from analyzers.tcp import TcpConnection
from analyzers.udp import UdpConversation
from loopcap.cli import _options

STEPS = ("nothing", "summary", "summary+json", "summary+json+spool")


def _hand_over(step: str, spools: tuple[OrderedSpool, OrderedSpool], counts: list[int]
               ) -> tuple[Callable[[TcpConnection], None], Callable[[UdpConversation], None]]:
    """What each handed-out connection costs at ``step`` (the TCP and UDP callbacks); ``counts``
    counts them and ``spools`` take them (TCP, UDP: one spool per kind, as a streamed analysis has,
    since their stream numbers overlap)."""
    def doing(make: Callable[[Any], dict[str, Any]], kind: int) -> Callable[[Any], None]:
        def done(conn: Any) -> None:
            counts[kind] += 1
            if step == "summary":
                make(conn)
            elif step == "summary+json":
                dumps_bytes(make(conn))
            elif step == "summary+json+spool":
                spools[kind].put(conn.stream, dumps_bytes(make(conn)))
        return done

    return doing(summarize_tcp, 0), doing(summarize_udp, 1)


def run(path: str, step: str) -> tuple[float, list[int]]:
    """Seconds of one analysis of ``path`` at ``step``, and the TCP and UDP conversations handed out."""
    spools = (OrderedSpool(), OrderedSpool())
    counts = [0, 0]
    tcp_done, udp_done = _hand_over(step, spools, counts)
    opts = replace(_options(()), on_tcp_done=tcp_done, on_udp_done=udp_done)
    try:
        start = time.perf_counter()
        with gc_paused():
            analyze_file(path, opts)
        return time.perf_counter() - start, counts
    finally:
        for spool in spools:
            spool.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    import analyzers.tcp

    compiled = not analyzers.tcp.__file__.endswith(".py")
    print(f"{args.file}: {'compiled' if compiled else 'pure'} build, {args.rounds} round(s)", flush=True)
    times: dict[str, list[float]] = {s: [] for s in STEPS}
    handed: set[tuple[int, ...]] = set()
    for _ in range(args.rounds):
        for step in STEPS:
            seconds, counts = run(args.file, step)
            times[step].append(seconds)
            handed.add(tuple(counts))
    if len(handed) != 1:  # every step must hand out the same conversations, or it times another analysis
        print(f"error: the steps handed out different conversations: {sorted(handed)}", file=sys.stderr)
        return 1
    tcp, udp = handed.pop()
    print(f"handed out: {tcp} TCP connections, {udp} UDP conversations")
    previous = None
    for step in STEPS:
        med = statistics.median(times[step])
        extra = "" if previous is None else f"  ({med - previous:+.4f} s)"
        print(f"{step:22s} {med:8.4f} s  [{min(times[step]):.4f}-{max(times[step]):.4f}]{extra}")
        previous = med
    return 0


if __name__ == "__main__":
    sys.exit(main())
