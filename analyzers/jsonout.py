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

import codecs
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any, Final

# no circular-reference bookkeeping: documents are trees (9% of the encoding time)
_STDLIB: Final = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), check_circular=False).encode

_orjson: Callable[[Any], bytes] | None
try:
    from orjson import dumps as _orjson
except ImportError:  # pragma: no cover - orjson is a dependency; the standard library encodes the same values
    _orjson = None


#: the write buffer of a file that spools encoded values (``OrderedSpool``, a shard's spool, Zeek's
#: rows): connections are a few kilobytes of JSON each, and with the default 8 KiB nearly every one
#: was a system call of its own (0.37 s instead of 0.12 s for the 235 MB of a million-packet
#: capture's connections)
SPOOL_BUFFER: Final = 1 << 18


def _encode_stdlib(value: Any) -> bytes:
    return _STDLIB(value).encode("ascii")


def _encode_orjson(value: Any) -> bytes:
    assert _orjson is not None
    try:
        data = _orjson(value)
    except TypeError:  # a non-string key, an integer past 64 bits, a lone surrogate in a file name
        return _encode_stdlib(value)
    if data.isascii():
        return data
    return _encode_stdlib(value)  # ASCII output whatever the terminal's encoding: \u escapes, as before


#: a value's compact JSON text, ASCII bytes
_ENCODE: Callable[[Any], bytes] = _encode_orjson if _orjson is not None else _encode_stdlib


def dumps_value(value: Any) -> str:
    """One value on one line, compact."""
    return _ENCODE(value).decode("ascii")


def dumps_bytes(value: Any) -> bytes:
    """:func:`dumps_value` as the ASCII bytes that spools and binary outputs take as they are."""
    return _ENCODE(value)


class EncodedItems:
    """A top-level list whose items are already encoded (one JSON text each, ASCII bytes), produced
    lazily: how a streamed analysis hands over connections it summarized and spooled while reading."""

    def __init__(self, count: int, items: Iterable[bytes]) -> None:
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


def _pieces(doc: Mapping[str, Any], one_line: bool) -> Iterator[bytes]:
    """The pieces of ``doc`` in the readable layout, as ASCII bytes (see :func:`iter_document`)."""
    if one_line:
        first_key, key_sep, colon, open_list, item_sep, close_list, end = b"", b",", b":", b"[", b",", b"]", b"}\n"
    else:
        first_key, key_sep, colon, open_list, item_sep, close_list, end = b"\n  ", b",\n  ", b": ", b"[\n    ", \
            b",\n    ", b"\n  ]", b"\n}\n"
    yield b"{"
    first = True
    for key, value in doc.items():
        head = (first_key if first else key_sep) + _ENCODE(key) + colon
        first = False
        if isinstance(value, EncodedItems | list) and len(value):
            items = value.items if isinstance(value, EncodedItems) else map(_ENCODE, value)
            yield head + open_list
            sep = b""
            for text in items:
                yield sep
                yield text
                sep = item_sep
            yield close_list
        else:
            yield head + (b"[]" if isinstance(value, EncodedItems) else _ENCODE(value))
    yield end if not first else b"}\n"


def iter_document(doc: Mapping[str, Any], *, one_line: bool = False) -> Iterable[str]:
    """The pieces of ``doc`` in the readable layout: top-level keys one per line, the items of a
    top-level list one per line; joined they are exactly one JSON document ending in a newline.
    With ``one_line``: the document on one line, exactly :func:`json_line`'s text (JSON Lines)."""
    for piece in _pieces(doc, one_line):
        yield piece.decode("ascii")


#: encodings in which the document's ASCII text is its bytes as they are
_ASCII_AS_IS: Final = frozenset({"utf-8", "ascii", "iso8859-1", "cp1252"})


def _binary_under(out: IO[str]) -> IO[bytes] | None:
    """The binary stream under the text stream ``out`` when writing the document's ASCII bytes to it
    gives the same bytes as writing its text to ``out`` (an ASCII-compatible encoding, and "\\n"
    line ends: a POSIX system's), else None."""
    raw = getattr(out, "buffer", None)
    if raw is None or os.linesep != "\n":
        return None
    try:
        name = codecs.lookup(getattr(out, "encoding", None) or "").name
    except LookupError:
        return None
    return raw if name in _ASCII_AS_IS else None


def write_document(doc: Mapping[str, Any], out: IO[str], *, batch: int = 256, one_line: bool = False) -> None:
    """Write ``doc`` to ``out`` (see :func:`iter_document`), ``batch`` pieces per write call; to the
    binary stream under ``out`` when there is one that takes the ASCII bytes as they are (no text
    encoding of a document that may be hundreds of megabytes: ten times faster)."""
    raw = _binary_under(out)
    buf: list[bytes] = []
    if raw is not None:
        out.flush()  # what was written to ``out`` before goes first
        write: Callable[[bytes], Any] = raw.write
    else:
        def write(data: bytes) -> None:
            out.write(data.decode("ascii"))
    for piece in _pieces(doc, one_line):
        buf.append(piece)
        if len(buf) >= batch:
            write(b"".join(buf))
            buf.clear()
    if buf:
        write(b"".join(buf))


def document_text(doc: Mapping[str, Any]) -> str:
    return b"".join(_pieces(doc, False)).decode("ascii")


def json_line(doc: Mapping[str, Any]) -> str:
    """The whole document on one line (for JSON Lines output of several files)."""
    return b"".join(_pieces(doc, True)).decode("ascii")
