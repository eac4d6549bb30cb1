"""Built-in loopback traffic generators: the classic Python socket tutorials that Wireshark
walkthroughs capture (DESIGN.md section 2), standard library only.

Run a scenario's server and client together and get its manifest::

    from capture.generators import run_scenario
    manifest = run_scenario("tcp-echo", host="127.0.0.1", port=0, before_client=start_capture)
    manifest.write("tcp-echo.manifest.json")

or apart, like the tutorials' two terminals: :func:`serve` (or :func:`start_server`) in one,
:func:`run_client` in the other, then :func:`merge_parts`. :data:`SCENARIOS` describes every
scenario (name, description, default port, transports, IPv6, default options).

Only loopback addresses are used (127.0.0.0/8, ::1): anything else raises
:class:`NotLoopbackError` unless ``allow_non_loopback=True`` is passed explicitly.
"""

from __future__ import annotations

from .errors import GeneratorError, NotLoopbackError, PortInUseError
from .manifest import (
    HEX_LIMIT,
    SCHEMA_VERSION,
    TEARDOWN_KINDS,
    ClosesFirst,
    Datagram,
    Endpoint,
    Family,
    Manifest,
    OptionValue,
    Part,
    Payload,
    Side,
    TcpConnection,
    TeardownKind,
    UdpConversation,
)
from .net import DEFAULT_IO_TIMEOUT, ipv6_available, open_socket_count
from .options import OptionInput, ScenarioInfo, Transport
from .runner import DEFAULT_DURATION, ServerHandle, merge_parts, run_client, run_scenario, serve, start_server
from .scenarios import FOUR_WAY_MIN_DELAY, SCENARIOS

__all__ = [
    "DEFAULT_DURATION",
    "DEFAULT_IO_TIMEOUT",
    "FOUR_WAY_MIN_DELAY",
    "HEX_LIMIT",
    "SCENARIOS",
    "SCHEMA_VERSION",
    "TEARDOWN_KINDS",
    "ClosesFirst",
    "Datagram",
    "Endpoint",
    "Family",
    "GeneratorError",
    "Manifest",
    "NotLoopbackError",
    "OptionInput",
    "OptionValue",
    "Part",
    "Payload",
    "PortInUseError",
    "ScenarioInfo",
    "ServerHandle",
    "Side",
    "TcpConnection",
    "TeardownKind",
    "Transport",
    "UdpConversation",
    "ipv6_available",
    "merge_parts",
    "open_socket_count",
    "run_client",
    "run_scenario",
    "serve",
    "start_server",
]
