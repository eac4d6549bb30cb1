"""Read a capture file back with pyshark and print a JSON summary (runs as its own process).

Used by the pyshark backend to verify what dumpcap wrote. It runs in a separate interpreter on
purpose: pyshark 0.6 drives tshark through asyncio and fails inside an already running event loop
(an async caller, a Jupyter kernel) and in threads after a main-thread capture; a fresh process has
neither problem, and a hung tshark can be killed with it. Only the standard library and pyshark are
imported here, so the script also works when the ``capture`` package is not importable.

Usage: ``python _pyshark_probe.py FILE`` -> ``{"packets": N, "first": {...}, "last_time": T}``
"""

from __future__ import annotations

import json
import sys
from typing import Any


def probe(path: str) -> dict[str, Any]:
    """Count the packets of ``path`` with pyshark and describe the first one."""
    import pyshark

    cap = pyshark.FileCapture(path, keep_packets=False)
    packets = 0
    first: dict[str, Any] | None = None
    first_time: str | None = None
    last_time: str | None = None
    try:
        for pkt in cap:
            packets += 1
            last_time = str(pkt.sniff_timestamp)
            if first is None:
                first_time = last_time
                layers = [layer.layer_name for layer in pkt.layers]
                first = {"layers": layers, "length": int(pkt.length), "highest_layer": pkt.highest_layer}
                if "tcp" in layers:
                    first["tcp_flags"] = int(str(pkt.tcp.flags), 16)
                    first["tcp_flags_str"] = str(pkt.tcp.get_field_value("flags_str") or "")
    finally:
        cap.close()
    return {"packets": packets, "first": first, "first_time": first_time, "last_time": last_time}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: _pyshark_probe.py FILE", file=sys.stderr)
        return 2
    json.dump(probe(args[0]), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
