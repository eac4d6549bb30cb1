"""Golden expectations: compare a capture's ``loopcap/1`` analysis with a stored subset of it.

An expectation is a JSON document shaped like the analysis, holding only the fields that matter::

    {"tcp": [{"stream": 0, "handshake": {"complete": true}, "teardown": {"kind": "four-way"}}]}

Rules of :func:`compare_expectation`:

* only the fields present in the expectation count; a field missing from the analysis is a
  difference, a field the expectation does not name is ignored;
* dicts are compared key by key, recursively;
* lists whose expected items all carry a ``stream`` number (``tcp``, ``udp``) are matched *by
  stream*: every expected stream must be in the analysis, and a stream the expectation does not
  list is reported as unexpected (the expectation describes the whole capture);
* other lists are compared element by element and must have the same length;
* numbers compare by value (``1 == 1.0``), with a relative tolerance of 1e-9 for floats.

Each difference is one readable line: ``tcp[stream 0].teardown.kind: expected "four-way", got "reset"``.

:func:`make_expectation` picks the fields worth pinning from an analysis: per connection the
endpoints (the client's port only when it is not ephemeral, since a fresh capture gets a new one),
handshake, teardown, final states and each side's payload size and SHA-256; per UDP conversation
every datagram's sender, length and SHA-256; and the warnings.
"""

from __future__ import annotations

import json
import math
from typing import Any

#: differences listed at most (a few hundred lines are not readable anyway)
MAX_DIFFERENCES = 200


def _show(v: Any) -> str:
    text = json.dumps(v, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


def _same_scalar(want: Any, got: Any) -> bool:
    if isinstance(want, bool) or isinstance(got, bool):
        return isinstance(want, bool) and isinstance(got, bool) and want == got
    if isinstance(want, (int, float)) and isinstance(got, (int, float)):
        if isinstance(want, float) or isinstance(got, float):
            return math.isclose(want, got, rel_tol=1e-9, abs_tol=1e-12)
        return want == got
    return bool(type(want) is type(got) and want == got)


def _desc(v: Any) -> str:
    """``null``, ``"text"``, ``a list [1, 2]``, ``an object {...}``."""
    if isinstance(v, list):
        return f"a list {_show(v)}"
    if isinstance(v, dict):
        return f"an object {_show(v)}"
    return _show(v)


def _item_label(item: Any) -> str:
    if isinstance(item, dict) and isinstance(item.get("client"), dict) and isinstance(item.get("server"), dict):
        c, s = item["client"], item["server"]
        return f" ({c.get('ip')}:{c.get('port')} -> {s.get('ip')}:{s.get('port')})"
    return ""


def _by_stream(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(x, dict) and isinstance(x.get("stream"), int) for x in items)


def _compare(want: Any, got: Any, path: str, out: list[str]) -> None:
    if len(out) >= MAX_DIFFERENCES:
        return
    where = path or "(document)"
    if isinstance(want, dict):
        if not isinstance(got, dict):
            out.append(f"{where}: expected an object, got {_desc(got)}")
            return
        for key, w in want.items():
            sub = f"{path}.{key}" if path else str(key)
            if key not in got:
                out.append(f"{sub}: missing from the analysis (expected {_show(w)})")
                continue
            _compare(w, got[key], sub, out)
        return
    if isinstance(want, list):
        if not isinstance(got, list):
            out.append(f"{where}: expected a list, got {_desc(got)}")
            return
        if _by_stream(want) and all(isinstance(x, dict) for x in got):
            have = {x.get("stream"): x for x in got}
            wanted = set()
            for w in want:
                s = w["stream"]
                wanted.add(s)
                if s not in have:
                    out.append(f"{path}[stream {s}]: not in the analysis{_item_label(w)}; it has "
                               + (f"streams {sorted(k for k in have if isinstance(k, int))}" if have else "none"))
                    continue
                _compare(w, have[s], f"{path}[stream {s}]", out)
            for s, x in have.items():
                if s not in wanted:
                    out.append(f"{path}[stream {s}]: unexpected{_item_label(x)} (the expectation lists streams "
                               f"{sorted(wanted)})")
            return
        if all(not isinstance(x, (dict, list)) for x in [*want, *got]):
            if len(want) != len(got) or not all(_same_scalar(w, g) for w, g in zip(want, got, strict=False)):
                out.append(f"{where}: expected {_show(want)}, got {_show(got)}")
            return
        if len(want) != len(got):
            out.append(f"{where}: expected {len(want)} item{'' if len(want) == 1 else 's'}, got {len(got)}")
        for i, (w, g) in enumerate(zip(want, got, strict=False)):
            _compare(w, g, f"{path}[{i}]", out)
        return
    if not _same_scalar(want, got):
        out.append(f"{where}: expected {_show(want)}, got {_show(got)}")


def compare_expectation(doc: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """The differences between an analysis and an expectation, one readable line each (empty: ok)."""
    out: list[str] = []
    _compare(expected, doc, "", out)
    if len(out) >= MAX_DIFFERENCES:
        out = out[:MAX_DIFFERENCES]
        out.append(f"... (stopped after {MAX_DIFFERENCES} differences)")
    return out


def _ep(e: dict[str, Any], *, keep_ephemeral: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"ip": e["ip"]}
    if keep_ephemeral or not (e.get("service") or {}).get("ephemeral"):
        out["port"] = e["port"]
    return out


def make_expectation(doc: dict[str, Any]) -> dict[str, Any]:
    """A sensible subset of an analysis to store as its expectation (see the module docstring)."""
    tcp = []
    for c in doc["tcp"]:
        hs, td = c["handshake"], c["teardown"]
        tcp.append({
            "stream": c["stream"],
            "client": _ep(c["client"], keep_ephemeral=False),
            "server": _ep(c["server"], keep_ephemeral=True),
            "handshake": {"complete": hs["complete"], "valid": hs["valid"], "refused": hs["refused"]},
            "teardown": {"kind": td["kind"], "initiator": td["initiator"], "reset_by": td["reset_by"],
                         "time_wait": td["time_wait"]},
            "states": {"final": c["states"]["final"]},
            "payload": {side: {"bytes": c["payload"][side]["bytes"], "sha256": c["payload"][side]["sha256"],
                               "complete": c["payload"][side]["complete"]} for side in ("client", "server")},
        })
    udp = []
    for u in doc["udp"]:
        udp.append({
            "stream": u["stream"],
            "client": _ep(u["client"], keep_ephemeral=False),
            "server": _ep(u["server"], keep_ephemeral=True),
            "datagrams": [{"from": d["from"], "len": d["len"], "sha256": d["sha256"]} for d in u["datagrams"]],
        })
    return {"schema": doc.get("schema", "loopcap/1"), "tcp": tcp, "udp": udp, "warnings": list(doc["warnings"])}
