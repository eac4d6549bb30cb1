"""Write ``loopcap/1`` documents as JSON a person can read and a machine can write fast.

``json.dumps(doc, indent=2)`` runs CPython's pure-Python encoder (the C encoder only handles
``indent=None``): on a million-packet capture that was a third of the whole analysis.  The layout
here keeps what indentation is for (one top-level key per line, one connection per line, so that
``grep``, ``head`` and a diff show whole connections) and encodes every value with the C encoder,
streaming it to the output instead of building one huge string.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import IO, Any

_ENCODE = json.JSONEncoder(ensure_ascii=True, separators=(", ", ": ")).encode


def dumps_value(value: Any) -> str:
    """One value on one line (C encoder)."""
    return _ENCODE(value)


class EncodedItems:
    """A top-level list whose items are already encoded (one JSON text each), produced lazily: how a
    streamed analysis hands over connections it summarized and spooled while reading."""

    def __init__(self, count: int, items: Iterable[str]) -> None:
        self.count = count
        self.items = items

    def __len__(self) -> int:
        return self.count


def iter_document(doc: Mapping[str, Any]) -> Iterable[str]:
    """The pieces of ``doc`` in the readable layout: top-level keys one per line, the items of a
    top-level list one per line; joined they are exactly one JSON document ending in a newline."""
    yield "{"
    first = True
    for key, value in doc.items():
        head = ("\n" if first else ",\n") + "  " + _ENCODE(key) + ": "
        first = False
        if isinstance(value, EncodedItems):
            if not value.count:
                yield head + "[]"
                continue
            yield head + "["
            sep = "\n    "
            for text in value.items:
                yield sep + text
                sep = ",\n    "
            yield "\n  ]"
        elif isinstance(value, list) and value:
            yield head + "["
            sep = "\n    "
            for item in value:
                yield sep + _ENCODE(item)
                sep = ",\n    "
            yield "\n  ]"
        else:
            yield head + _ENCODE(value)
    yield "\n}\n" if not first else "}\n"


def write_document(doc: Mapping[str, Any], out: IO[str], *, batch: int = 256) -> None:
    """Write ``doc`` to ``out`` in the readable layout, ``batch`` pieces per write call."""
    buf: list[str] = []
    for piece in iter_document(doc):
        buf.append(piece)
        if len(buf) >= batch:
            out.write("".join(buf))
            buf.clear()
    if buf:
        out.write("".join(buf))


def document_text(doc: Mapping[str, Any]) -> str:
    return "".join(iter_document(doc))


def json_line(doc: Mapping[str, Any]) -> str:
    """The whole document on one line (for JSON Lines output of several files)."""
    return _ENCODE(doc) + "\n"
