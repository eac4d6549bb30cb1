"""How the objects that cross processes pickle, the same in the pure and the compiled build.

A process pool or a Dask cluster pickles the analysis options with their observers, and each
shard's capture-wide facts (malformed packets, ICMP errors, read warnings, the Zeek view's part).
mypyc (the optional compiled build, see setup.py) makes native classes whose instances pickle only
through their constructor: its own fallback makes them without calling ``__init__`` and loses every
attribute.  So each class that crosses says how it is made again, with ``__reduce__``: a dataclass
from its fields (:func:`fields_reduce`), a packet from its constructor's arguments and the
attributes set after it (:func:`rebuild`), an observer from its configuration (:func:`fresh_only`).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any


def fields_reduce(obj: Any) -> tuple[Any, tuple[Any, ...]]:
    """``__reduce__`` of a dataclass: made again from its class and its fields (every field is an
    ``__init__`` argument)."""
    return type(obj), tuple(getattr(obj, f.name) for f in fields(obj))


def rebuild(cls: Any, args: tuple[Any, ...], extra: dict[str, Any]) -> Any:
    """``cls(*args)``, then the attributes in ``extra`` set (the unpickling side of a ``__reduce__``
    that returns ``rebuild, (cls, args, extra)``)."""
    obj = cls(*args)
    for name, value in extra.items():
        setattr(obj, name, value)
    return obj


def set_only(obj: Any, *names: str) -> dict[str, Any]:
    """The attributes among ``names`` that ``obj`` has (optional ones are left unset, not None)."""
    return {name: getattr(obj, name) for name in names if hasattr(obj, name)}


def fresh_only(obj: Any, fresh: bool) -> None:
    """An observer crosses processes (in the analysis options) before it sees any packet: it is
    pickled as its configuration, and refuses to be once it holds an analysis's state."""
    if not fresh:
        raise TypeError(f"a {type(obj).__name__} that has seen packets cannot be pickled (only its configuration is)")
