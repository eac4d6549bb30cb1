"""Typed errors of the loopback traffic generators."""

from __future__ import annotations

from analyzers.errors import LoopcapError


class GeneratorError(LoopcapError):
    """A traffic generator could not run as asked: unknown scenario, bad option, timeout, a peer
    that did not follow the scenario's script, a thread that did not finish..."""


class NotLoopbackError(GeneratorError):
    """The host is not a loopback address (127.0.0.0/8 or ::1) and ``allow_non_loopback=True``
    was not given. Raised before any socket is created, so no packet leaves the machine."""


class PortInUseError(GeneratorError):
    """The server's port is already bound by another socket on that address."""

    def __init__(self, host: str, port: int, transport: str) -> None:
        super().__init__(
            f"port {port} on {host} is already in use ({transport.upper()})",
            hint=(
                "pass port=0 (or --port 0) for an ephemeral port, or find the program that holds it "
                f"with: ss -{'t' if transport == 'tcp' else 'u'}lnp 'sport = :{port}'"
            ),
        )
        self.host = host
        self.port = port
        self.transport = transport
