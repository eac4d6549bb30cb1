"""Port names: well-known services, the walkthrough demo ports, and ephemeral ports.

A fixed table (not /etc/services) so that output is the same on every machine.
"""

from __future__ import annotations

from typing import Any, Final

WELL_KNOWN: Final[dict[int, str]] = {
    7: "echo", 20: "ftp-data", 21: "ftp", 22: "ssh", 23: "telnet", 25: "smtp", 53: "domain (DNS)",
    67: "dhcp server", 68: "dhcp client", 69: "tftp", 80: "http", 110: "pop3", 123: "ntp", 143: "imap",
    161: "snmp", 389: "ldap", 443: "https", 465: "smtps", 514: "syslog", 587: "submission", 631: "ipp",
    853: "dns over tls", 993: "imaps", 995: "pop3s", 1080: "socks", 1433: "mssql", 1883: "mqtt",
    3306: "mysql", 3389: "rdp", 5353: "mdns", 5432: "postgresql", 5672: "amqp", 6379: "redis",
    8000: "http-alt", 8080: "http-alt", 8443: "https-alt", 9092: "kafka", 11211: "memcache",
    27017: "mongodb",
}
#: the classic socket tutorials' ports, used by loopcap's generators
DEMO_PORTS: Final[dict[int, str]] = {9999: "tcp-echo demo", 12345: "tcp-welcome demo", 1060: "udp-echo demo"}

#: Linux's default ip_local_port_range is 32768-60999; IANA's dynamic range is 49152-65535
EPHEMERAL_START: Final = 32768


def port_info(port: int) -> dict[str, Any]:
    """``{"name": "http", "ephemeral": False}`` or ``{"name": None, "ephemeral": True}``."""
    name = WELL_KNOWN.get(port) or DEMO_PORTS.get(port)
    return {"name": name, "ephemeral": name is None and port >= EPHEMERAL_START}


def port_label(port: int) -> str:
    """``80 (http)``, ``51234 (ephemeral)`` or ``31003``."""
    info = port_info(port)
    if info["name"]:
        return f"{port} ({info['name']})"
    if info["ephemeral"]:
        return f"{port} (ephemeral)"
    return str(port)
