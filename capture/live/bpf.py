"""Compile BPF capture filters with libpcap (through scapy's ctypes binding) and attach them.

We compile ourselves instead of calling :func:`scapy.arch.common.compile_filter` because that
function compiles for a snapshot length of 65535: the filter's ``ret`` value is what the kernel
keeps of each packet, and Linux loopback frames reach 65549 bytes (MTU 65536 + Ethernet header)
under GSO, so scapy's filter would silently truncate them. Here the snapshot length is the
capture's own (default 262144, like tcpdump and dumpcap).

An empty expression compiles to "accept everything, keep ``snaplen`` bytes", so a filter is always
attached and the kernel does the truncation.
"""

from __future__ import annotations

import ctypes
import socket
from dataclasses import dataclass

from .errors import CaptureFilterError, CaptureToolMissingError

__all__ = ["BpfProgram", "attach_filter", "compile_bpf"]

#: PCAP_NETMASK_UNKNOWN: only matters for "ip broadcast" filters.
_NETMASK_UNKNOWN = 0xFFFFFFFF
_SO_ATTACH_FILTER = 26


@dataclass(frozen=True)
class BpfProgram:
    """A compiled classic-BPF program: ``(code, jt, jf, k)`` instructions."""

    expression: str
    linktype: int
    snaplen: int
    instructions: tuple[tuple[int, int, int, int], ...]


def compile_bpf(expression: str | None, *, linktype: int, snaplen: int) -> BpfProgram:
    """Compile ``expression`` for ``linktype`` (a DLT value) with libpcap.

    Raises :class:`CaptureFilterError` with libpcap's own message when the filter is invalid, and
    :class:`CaptureToolMissingError` when libpcap cannot be loaded.
    """
    expr = expression or ""
    try:
        from scapy.libs import winpcapy
        from scapy.libs.structures import bpf_program
    except OSError as exc:  # scapy raises OSError when libpcap.so is absent
        raise CaptureToolMissingError(
            f"Compiling a capture filter needs libpcap, which could not be loaded ({exc}).",
            hint="Fix: sudo apt-get install libpcap0.8",
        ) from exc
    handle = winpcapy.pcap_open_dead(linktype, snaplen)
    if not handle:
        raise CaptureToolMissingError(
            f"libpcap refused to open a dead handle for link type {linktype}.",
            hint="Fix: sudo apt-get install --reinstall libpcap0.8",
        )
    try:
        prog = bpf_program()
        rc = winpcapy.pcap_compile(handle, ctypes.byref(prog), expr.encode("utf-8"), 1, _NETMASK_UNKNOWN)
        if rc != 0:
            raw_err = winpcapy.pcap_geterr(handle)
            reason = raw_err.decode("utf-8", "replace") if isinstance(raw_err, bytes) else str(raw_err)
            raise CaptureFilterError(
                f"The capture filter {expr!r} is not valid BPF syntax: {reason}.",
                bpf=expr,
                hint="Fix: check it with `tcpdump -d '<filter>'`; examples: 'tcp port 9999', "
                "'udp and host 127.0.0.1', 'ip6 and tcp'.",
            )
        try:
            insns = tuple(
                (prog.bf_insns[i].code, prog.bf_insns[i].jt, prog.bf_insns[i].jf, prog.bf_insns[i].k)
                for i in range(prog.bf_len)
            )
        finally:
            winpcapy.pcap_freecode(ctypes.byref(prog))
    finally:
        winpcapy.pcap_close(handle)
    return BpfProgram(expression=expr, linktype=linktype, snaplen=snaplen, instructions=insns)


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [
        ("len", ctypes.c_ushort),
        ("filter", ctypes.POINTER(_SockFilter)),
    ]


def attach_filter(sock: socket.socket, program: BpfProgram) -> None:
    """Attach ``program`` to a packet socket (SO_ATTACH_FILTER)."""
    n = len(program.instructions)
    array = (_SockFilter * n)(*(_SockFilter(c, jt, jf, k & 0xFFFFFFFF) for c, jt, jf, k in program.instructions))
    fprog = _SockFprog(n, ctypes.cast(array, ctypes.POINTER(_SockFilter)))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, bytes(memoryview(fprog)))
