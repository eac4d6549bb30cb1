"""The manifest of a generator run: what connections it made and the exact bytes each side moved.

Analysing the capture of a run must reproduce its manifest (DESIGN.md section 2). A run made in
two halves (``serve`` in one terminal, ``run_client`` in another) yields two *parts*, each filling
in its own side; :func:`merge_parts` joins them into one ``part="both"`` manifest.

JSON shape (``Manifest.to_dict()``, schema version :data:`SCHEMA_VERSION`)::

    {
      "schema": 1,
      "scenario": "tcp-echo",
      "part": "both",                      # "both" | "client" | "server"
      "family": "ipv4",                    # "ipv4" | "ipv6"
      "server": {"ip": "127.0.0.1", "port": 9999},
      "options": {"messages": ["Michael", "Tracy", "Sarah"], "close_delay": 0.3},
      "timestamps": {"started": 1700000000.25, "finished": 1700000000.61,
                     "started_iso": "2023-11-14T22:13:20.250000+00:00", "finished_iso": "..."},
      "notes": ["..."],
      "problems": [],                      # consistency problems found while merging (empty = good)
      "tcp": [                             # in the order the clients sent their SYNs
        {"index": 0,
         "client": {"ip": "127.0.0.1", "port": 51234},
         "server": {"ip": "127.0.0.1", "port": 9999},
         "closes_first": "client",         # "client" | "server" | "both" | null
         "expected_teardown": ["four-way"],
         "reset_by": null,                 # null | "client" | "server"
         "refused": false,
         "client_sent": {"bytes": 25, "sha256": "...", "hex": "..."},   # hex only if <= 4096 bytes
         "client_received": {...}, "server_sent": {...}, "server_received": {...},  # null if unknown
         "notes": []}
      ],
      "udp": [
        {"index": 0,
         "client": {"ip": "127.0.0.1", "port": 40000},
         "server": {"ip": "127.0.0.1", "port": 1060},
         "lossy": true,
         "retries": 2,                     # client retransmissions (null if the client part is absent)
         "datagrams": [{"from": "client", "len": 7, "sha256": "...", "hex": "...", "dropped": true},
                       ...],
         "dropped": [0],                   # indices into datagrams of requests the server dropped
         "notes": []}
      ]
    }
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

SCHEMA_VERSION = 1
"""Version of the manifest JSON shape; bumped on any incompatible change."""

HEX_LIMIT = 4096
"""Payloads up to this many bytes carry their bytes as ``hex`` in the JSON; larger ones only
``bytes`` and ``sha256`` (the raw bytes stay available on the dataclass)."""

TeardownKind = Literal["four-way", "three-way", "simultaneous", "half-close", "reset", "one-sided", "none"]
TEARDOWN_KINDS: tuple[TeardownKind, ...] = (
    "four-way",
    "three-way",
    "simultaneous",
    "half-close",
    "reset",
    "one-sided",
    "none",
)
Side = Literal["client", "server"]
ClosesFirst = Literal["client", "server", "both"]
Part = Literal["both", "client", "server"]
Family = Literal["ipv4", "ipv6"]

OptionValue = bool | int | float | str | tuple[str, ...]
"""A normalised scenario option value (sequences of strings become tuples)."""

JSONDict = dict[str, Any]


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat()


def _option_json(value: OptionValue) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class Endpoint:
    """One end of a conversation: an IP address (compressed text form) and a port."""

    ip: str
    port: int

    def to_dict(self) -> JSONDict:
        return {"ip": self.ip, "port": self.port}

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class Payload:
    """The bytes one side sent or received on one connection, in order."""

    data: bytes = b""

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def to_dict(self) -> JSONDict:
        out: JSONDict = {"bytes": self.size, "sha256": self.sha256}
        if self.size <= HEX_LIMIT:
            out["hex"] = self.data.hex()
        return out


def _payload_json(payload: Payload | None) -> JSONDict | None:
    return None if payload is None else payload.to_dict()


@dataclass
class TcpConnection:
    """One TCP connection, as the generator knows it.

    ``client_*`` fields are ``None`` in a server-only part and ``server_*`` fields in a
    client-only part. ``expected_teardown`` is the honest set of teardown kinds an analyzer may
    find for this connection (several when the outcome depends on timing).
    """

    index: int
    client: Endpoint
    server: Endpoint
    closes_first: ClosesFirst | None
    expected_teardown: list[TeardownKind]
    reset_by: Side | None = None
    refused: bool = False
    client_sent: Payload | None = None
    client_received: Payload | None = None
    server_sent: Payload | None = None
    server_received: Payload | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> JSONDict:
        return {
            "index": self.index,
            "client": self.client.to_dict(),
            "server": self.server.to_dict(),
            "closes_first": self.closes_first,
            "expected_teardown": list(self.expected_teardown),
            "reset_by": self.reset_by,
            "refused": self.refused,
            "client_sent": _payload_json(self.client_sent),
            "client_received": _payload_json(self.client_received),
            "server_sent": _payload_json(self.server_sent),
            "server_received": _payload_json(self.server_received),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Datagram:
    """One UDP datagram of a conversation; ``dropped`` marks a request the server ignored on
    purpose (lossy variant)."""

    sender: Side
    data: bytes
    dropped: bool = False

    def to_dict(self) -> JSONDict:
        out: JSONDict = {
            "from": self.sender,
            "len": len(self.data),
            "sha256": hashlib.sha256(self.data).hexdigest(),
        }
        if len(self.data) <= HEX_LIMIT:
            out["hex"] = self.data.hex()
        out["dropped"] = self.dropped
        return out


@dataclass
class UdpConversation:
    """The datagrams between one client endpoint and the server, in the order they were sent."""

    index: int
    client: Endpoint
    server: Endpoint
    datagrams: list[Datagram] = field(default_factory=list)
    lossy: bool = False
    retries: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def dropped(self) -> list[int]:
        """Indices (into ``datagrams``) of the requests the server dropped on purpose."""
        return [i for i, d in enumerate(self.datagrams) if d.dropped]

    def sent_by(self, side: Side) -> list[bytes]:
        return [d.data for d in self.datagrams if d.sender == side]

    def to_dict(self) -> JSONDict:
        return {
            "index": self.index,
            "client": self.client.to_dict(),
            "server": self.server.to_dict(),
            "lossy": self.lossy,
            "retries": self.retries,
            "datagrams": [d.to_dict() for d in self.datagrams],
            "dropped": self.dropped,
            "notes": list(self.notes),
        }


@dataclass
class Manifest:
    """Everything a generator run did, for the end-to-end self-check against a capture."""

    scenario: str
    part: Part
    family: Family
    server: Endpoint
    options: dict[str, OptionValue]
    started: float
    finished: float
    tcp: list[TcpConnection] = field(default_factory=list)
    udp: list[UdpConversation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def consistency_problems(self) -> list[str]:
        """What is wrong with this manifest on its own terms (empty list: self-consistent).

        For each TCP connection whose both sides are known: what the client sent is what the
        server received and the other way round; a refused connection carries no bytes; a
        reset names who reset. For UDP: every reply follows a request that was not dropped.
        Also includes ``problems`` recorded while merging parts.
        """
        out = list(self.problems)
        for conn in self.tcp:
            where = f"tcp connection {conn.index} ({conn.client} -> {conn.server})"
            if conn.client.port == 0:
                out.append(f"{where}: client port is 0, not the real ephemeral port")
            if not conn.expected_teardown:
                out.append(f"{where}: no expected teardown kind")
            if ("reset" in conn.expected_teardown) != (conn.reset_by is not None):
                out.append(f"{where}: reset_by={conn.reset_by!r} disagrees with {conn.expected_teardown}")
            pairs = (("client_sent", conn.client_sent, "server_received", conn.server_received),
                     ("server_sent", conn.server_sent, "client_received", conn.client_received))
            for sent_name, sent, got_name, got in pairs:
                if sent is not None and got is not None and sent.data != got.data:
                    out.append(f"{where}: {sent_name} ({sent.size} bytes) != {got_name} ({got.size} bytes)")
            if conn.refused:
                for name, payload in (("client_sent", conn.client_sent), ("server_sent", conn.server_sent)):
                    if payload is not None and payload.size:
                        out.append(f"{where}: refused connection but {name} has {payload.size} bytes")
        for conv in self.udp:
            where = f"udp conversation {conv.index} ({conv.client} -> {conv.server})"
            answerable = False
            for i, d in enumerate(conv.datagrams):
                if d.sender == "client":
                    answerable = not d.dropped
                    if d.dropped and not conv.lossy:
                        out.append(f"{where}: datagram {i} dropped but the conversation is not lossy")
                elif d.dropped:
                    out.append(f"{where}: datagram {i} from the server marked dropped")
                elif not answerable and self.part != "client":
                    out.append(f"{where}: datagram {i} is a reply to no request")
                else:
                    answerable = False
        return list(dict.fromkeys(out))

    def to_dict(self) -> JSONDict:
        return {
            "schema": SCHEMA_VERSION,
            "scenario": self.scenario,
            "part": self.part,
            "family": self.family,
            "server": self.server.to_dict(),
            "options": {k: _option_json(v) for k, v in self.options.items()},
            "timestamps": {
                "started": self.started,
                "finished": self.finished,
                "started_iso": _iso(self.started),
                "finished_iso": _iso(self.finished),
            },
            "notes": list(self.notes),
            "problems": list(self.problems),
            "tcp": [c.to_dict() for c in self.tcp],
            "udp": [c.to_dict() for c in self.udp],
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the manifest as UTF-8 JSON (indented, trailing newline)."""
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(self.to_json())
            fh.write("\n")
