"""Write ``loopcap/1`` documents as JSON a person can read and a machine can write fast.

``json.dumps(doc, indent=2)`` runs CPython's pure-Python encoder (the C encoder only handles
``indent=None``): on a million-packet capture that was a third of the whole analysis.  The layout
here keeps what indentation is for (one top-level key per line, one connection per line, so that
``grep``, ``head`` and a diff show whole connections) and streams it to the output instead of
building one huge string.

Each value (a connection, a top-level key's value) is encoded on its own, compactly, by orjson when
it is installed (5x the C encoder: 0.5 s instead of 2.6 s for the 215 MB of a million-packet
capture's connections), else, and for any value orjson refuses or that is not plain ASCII, by the
standard library's C encoder with ASCII escapes.  Every path (streamed, sharded, in memory, JSON
Lines) encodes value by value, so the same document always has the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any

# no circular-reference bookkeeping: documents are trees (9% of the encoding time)
_STDLIB = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), check_circular=False).encode

_orjson: Callable[[Any], bytes] | None
try:
    from orjson import dumps as _orjson
except ImportError:  # pragma: no cover - orjson is a dependency; the standard library encodes the same values
    _orjson = None


def _encode_stdlib(value: Any) -> str:
    return _STDLIB(value)


def _encode_orjson(value: Any) -> str:
    assert _orjson is not None
    try:
        data = _orjson(value)
    except TypeError:  # a non-string key, an integer past 64 bits, a lone surrogate in a file name
        return _STDLIB(value)
    if data.isascii():
        return data.decode("ascii")
    return _STDLIB(value)  # ASCII output whatever the terminal's encoding: \u escapes, as before


_ENCODE: Callable[[Any], str] = _encode_orjson if _orjson is not None else _encode_stdlib


def dumps_value(value: Any) -> str:
    """One value on one line, compact."""
    return _ENCODE(value)


class EncodedItems:
    """A top-level list whose items are already encoded (one JSON text each), produced lazily: how a
    streamed analysis hands over connections it summarized and spooled while reading."""

    def __init__(self, count: int, items: Iterable[str]) -> None:
        self.count = count
        self.items = items

    def __len__(self) -> int:
        return self.count


def decoded_items(value: Any) -> Iterator[Any]:
    """A top-level list's items: the list's own, or (streamed, :class:`EncodedItems`) each decoded
    from its JSON text, once."""
    if isinstance(value, EncodedItems):
        for text in value.items:
            yield json.loads(text)
    else:
        yield from value


def iter_document(doc: Mapping[str, Any], *, one_line: bool = False) -> Iterable[str]:
    """The pieces of ``doc`` in the readable layout: top-level keys one per line, the items of a
    top-level list one per line; joined they are exactly one JSON document ending in a newline.
    With ``one_line``: the document on one line, exactly :func:`json_line`'s text (JSON Lines)."""
    if one_line:
        first_key, key_sep, colon, open_list, item_sep, close_list, end = "", ",", ":", "[", ",", "]", "}\n"
    else:
        first_key, key_sep, colon, open_list, item_sep, close_list, end = "\n  ", ",\n  ", ": ", "[\n    ", \
            ",\n    ", "\n  ]", "\n}\n"
    yield "{"
    first = True
    for key, value in doc.items():
        head = (first_key if first else key_sep) + _ENCODE(key) + colon
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
    return "".join(iter_document(doc, one_line=True))
