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

# no circular-reference bookkeeping: documents are trees (9% of the encoding time)
_ENCODE = json.JSONEncoder(ensure_ascii=True, separators=(", ", ": "), check_circular=False).encode


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


def iter_document(doc: Mapping[str, Any], *, one_line: bool = False) -> Iterable[str]:
    """The pieces of ``doc`` in the readable layout: top-level keys one per line, the items of a
    top-level list one per line; joined they are exactly one JSON document ending in a newline.
    With ``one_line``: the document on one line, exactly :func:`json_line`'s text (JSON Lines)."""
    if one_line:
        first_key, key_sep, open_list, item_sep, close_list, end = "", ", ", "[", ", ", "]", "}\n"
    else:
        first_key, key_sep, open_list, item_sep, close_list, end = "\n  ", ",\n  ", "[\n    ", ",\n    ", \
            "\n  ]", "\n}\n"
    yield "{"
    first = True
    for key, value in doc.items():
        head = (first_key if first else key_sep) + _ENCODE(key) + ": "
        first = False
        if isinstance(value, EncodedItems | list) and len(value):
            items = value.items if isinstance(value, EncodedItems) else map(_ENCODE, value)
            yield head + open_list
            sep = ""
            for text in items:
                yield sep + text
                sep = item_sep
            yield close_list
        else:
            yield head + ("[]" if isinstance(value, EncodedItems) else _ENCODE(value))
    yield end if not first else "}\n"


def write_document(doc: Mapping[str, Any], out: IO[str], *, batch: int = 256, one_line: bool = False) -> None:
    """Write ``doc`` to ``out`` (see :func:`iter_document`), ``batch`` pieces per write call."""
    buf: list[str] = []
    for piece in iter_document(doc, one_line=one_line):
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
