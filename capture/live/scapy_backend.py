"""The scapy backend: an ``AsyncSniffer`` reading our own Linux packet socket.

Who does what:

* **scapy** runs the capture thread (:class:`scapy.sendrecv.AsyncSniffer`: its select loop, its
  stop pipe, ``count``, ``started_callback``) and, through its libpcap binding, compiles the BPF
  filter (see :mod:`capture.live.bpf`).
* **this module** supplies the socket the sniffer reads (``opened_socket=``), hands each packet as it
  arrives to the writer process (:mod:`capture.live.writer_process`, which appends it as one whole
  record, so even a SIGKILL of the capturing process leaves a valid file), and finishes the capture.

Why our own socket instead of scapy's ``L2ListenSocket`` (facts measured on Linux 6.x, scapy 2.8):

* **Loopback duplicates.** A packet socket on ``lo`` receives every packet twice: once as it is
  transmitted (``sll_pkttype == PACKET_OUTGOING``) and once as it is received (``PACKET_HOST``).
  ``L2ListenSocket`` keeps both (a 14-packet TCP exchange gave 28 packets), and scapy leaves
  ``pkt.direction`` unset, so they cannot be told apart afterwards. We drop the outgoing copy on
  interfaces of type ``ARPHRD_LOOPBACK`` only, exactly as libpcap does; on other interfaces
  outgoing packets are real and kept (and marked outbound in pcapng).
* **conf.use_pcap was measured and rejected.** libpcap also removes the duplicate (14 of 14), but it
  reads a TPACKET_V3 ring whose blocks are handed over only when full or when the read timeout
  retires them, so stopping right after the traffic lost it: 0 of 14 packets when stopping 0 or
  50 ms after the exchange, 14 of 14 at 200 ms. It is also a process-wide setting that switches
  every scapy socket to libpcap.
* **Snap length.** scapy compiles filters for 65535 bytes, which truncates 64 KiB GSO frames on
  ``lo``; we compile for the capture's snap length and take the original length from
  ``PACKET_AUXDATA`` (``tp_len``).
* **No dissection.** Frames go to the file as bytes; building scapy packets would only cost time.

Readiness: the socket is created, filtered and bound in ``start()`` itself, so from the instant
``bind`` returns every matching packet is queued in it; ``start()`` then starts the writer process
(it reports ``READY`` once the file header is written) and waits (bounded) for the sniffer's
``started_callback``, checking ``AsyncSniffer.exception``, before returning. Measured: 38-52 ms,
most of it the writer process's interpreter start-up; traffic sent the moment ``start()`` returns
is captured from its SYN on (10 of 10 runs).

Stopping: after the sniffer thread ends, the packets still queued in the socket are drained (up to
the stop instant, or the duration deadline) so nothing that arrived before ``stop()`` is lost, then
the writer process finishes the file (~20 ms in all). Kernel drops come from
``PACKET_STATISTICS``; the socket buffer is ``buffer_mib`` (32 MiB, forced with SO_RCVBUFFORCE when
we hold CAP_NET_ADMIN, else capped by ``net.core.rmem_max``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

from scapy.supersocket import SuperSocket  # gives AsyncSniffer select(), fileno(), __del__

from .base import (
    CaptureSession,
    CaptureStats,
    check_interface,
    interface_rx_dropped,
    prepare_output,
)
from .bpf import attach_filter, compile_bpf
from .errors import (
    CaptureBackendError,
    CaptureConfigError,
    CapturePermissionError,
    CaptureStartTimeout,
    InterfaceNotFoundError,
)
from .pcapwriter import DIRECTION_INBOUND, DIRECTION_OUTBOUND
from .privileges import check_raw_socket_privileges, setcap_python_command
from .writer_process import WriterProcess

__all__ = ["LinuxPacketSocket", "ScapyCaptureSession"]

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_AUXDATA = 8
PACKET_OUTGOING = 4
SO_TIMESTAMPNS = 35
SO_RCVBUFFORCE = 33
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
ETH_P_8021Q = 0x8100

ARPHRD_ETHER = 1
ARPHRD_IEEE802 = 6
ARPHRD_LOOPBACK = 772
ARPHRD_RAWIP = 519
ARPHRD_NONE = 0xFFFE
_DLT_EN10MB = 1
_DLT_RAW = 12  # libpcap's DLT_RAW on Linux (compile time)
_LINKTYPE_RAW = 101  # what the file says

#: ARPHRD (what the socket reports) -> (DLT to compile filters for, LINKTYPE written to the file)
_LINK_TYPES: dict[int, tuple[int, int]] = {
    ARPHRD_ETHER: (_DLT_EN10MB, 1),
    ARPHRD_IEEE802: (_DLT_EN10MB, 1),
    ARPHRD_LOOPBACK: (_DLT_EN10MB, 1),
    ARPHRD_NONE: (_DLT_RAW, _LINKTYPE_RAW),
    ARPHRD_RAWIP: (_DLT_RAW, _LINKTYPE_RAW),
}

_AUXDATA = struct.Struct("=IIIHHHH")  # struct tpacket_auxdata
_TIMESPEC = struct.Struct("=qq")
_CMSG_SPACE = socket.CMSG_SPACE(_AUXDATA.size) + socket.CMSG_SPACE(_TIMESPEC.size) + 64



class Frame:
    """One captured frame, not dissected. AsyncSniffer sets ``sniffed_on`` on it."""

    __slots__ = ("data", "direction", "sniffed_on", "ts_ns", "wirelen")

    def __init__(self, ts_ns: int, data: bytes, wirelen: int, direction: int | None) -> None:
        self.ts_ns = ts_ns
        self.data = data
        self.wirelen = wirelen
        self.direction = direction
        self.sniffed_on: object = None


class LinuxPacketSocket(SuperSocket):
    """An ``AF_PACKET``/``SOCK_RAW`` socket on one interface, usable as scapy's ``opened_socket``.

    Opening sequence (as libpcap does): create with protocol 0 (receives nothing), bind to the
    interface with protocol 0 to learn its hardware type, attach the compiled filter, then bind
    with ``ETH_P_ALL``: capture starts at that bind, already filtered, so no stale or unfiltered
    packet is ever queued.
    """

    nonblocking_socket = False
    desc = "loopcap: AF_PACKET socket, loopback outgoing copies dropped, snaplen-exact BPF"

    def __init__(self, interface: str, bpf: str | None, snaplen: int, rcvbuf: int = 32 << 20) -> None:
        # SuperSocket.__init__ is deliberately not called: it would open an unrelated TCP socket.
        self.closed = False
        self.iface = interface
        self.promisc = False
        self.snaplen = snaplen
        self.loopback_copies_skipped = 0
        self._received = 0
        self._dropped = 0
        self.ins = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self.outs = None
        try:
            self.ins.bind((interface, 0))
            hatype = self.ins.getsockname()[3]
            if hatype not in _LINK_TYPES:
                raise CaptureConfigError(
                    f"The scapy backend cannot capture on {interface!r}: its link type (ARPHRD {hatype}) "
                    f"is not Ethernet, loopback or raw IP.",
                    hint=f"Fix: use the pyshark backend (dumpcap), e.g. `loopcap capture --backend pyshark -i {interface}`.",
                )
            dlt, self.linktype = _LINK_TYPES[hatype]
            self.is_loopback = hatype == ARPHRD_LOOPBACK
            self.is_ethernet = self.linktype == 1
            attach_filter(self.ins, compile_bpf(bpf, linktype=dlt, snaplen=snaplen))
            try:
                self.ins.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            except OSError:  # needs CAP_NET_ADMIN; fall back to the rmem_max-capped option
                self.ins.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.ins.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            self.ins.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self.ins.bind((interface, ETH_P_ALL))  # <- capture is live from here
        except BaseException:
            self.ins.close()
            self.closed = True
            raise
        self._buf = bytearray(snaplen)

    # -- reading -------------------------------------------------------------------------
    def _read(self, flags: int) -> Frame | None:
        nbytes, ancdata, _msg_flags, addr = self.ins.recvmsg_into([self._buf], _CMSG_SPACE, flags | socket.MSG_TRUNC)
        pkttype = addr[2]
        if self.is_loopback and pkttype == PACKET_OUTGOING:
            self.loopback_copies_skipped += 1
            return None
        caplen = min(nbytes, self.snaplen)
        data = bytes(self._buf[:caplen])
        wirelen = nbytes
        ts_ns: int | None = None
        for level, kind, cdata in ancdata:
            if level == SOL_PACKET and kind == PACKET_AUXDATA and len(cdata) >= _AUXDATA.size:
                status, tp_len, _snap, _mac, _net, vlan_tci, vlan_tpid = _AUXDATA.unpack_from(cdata)
                wirelen = tp_len
                if self.is_ethernet and (vlan_tci or status & TP_STATUS_VLAN_VALID) and len(data) >= 12:
                    tpid = vlan_tpid if status & TP_STATUS_VLAN_TPID_VALID else ETH_P_8021Q
                    data = (data[:12] + struct.pack("!HH", tpid, vlan_tci) + data[12:])[: self.snaplen]
                    wirelen += 4
            elif level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(cdata) >= _TIMESPEC.size:
                sec, nsec = _TIMESPEC.unpack_from(cdata)
                ts_ns = sec * 1_000_000_000 + nsec
        if ts_ns is None:
            ts_ns = time.time_ns()
        direction = None
        if not self.is_loopback:
            direction = DIRECTION_OUTBOUND if pkttype == PACKET_OUTGOING else DIRECTION_INBOUND
        return Frame(ts_ns, data, wirelen, direction)

    # AsyncSniffer only needs a truthy object it can set ``sniffed_on`` on; returning undissected
    # frames instead of scapy Packets is the point (no per-packet dissection cost).
    def recv(self, x: int = 0, **kwargs: Any) -> Frame | None:  # type: ignore[override]
        return self._read(0)

    def drain(self) -> Iterator[Frame]:
        """Frames still queued in the socket, without blocking."""
        while True:
            try:
                frame = self._read(socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            if frame is not None:
                yield frame

    def statistics(self) -> tuple[int, int]:
        """(packets, drops) counted by the kernel since the socket opened (``PACKET_STATISTICS``;
        packets include loopback outgoing copies and drops)."""
        if not self.closed:
            raw = self.ins.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
            packets, drops = struct.unpack("=II", raw)  # reading resets the kernel counters
            self._received += packets
            self._dropped += drops
        return self._received, self._dropped

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.ins.close()


class ScapyCaptureSession(CaptureSession):
    """Live capture with scapy's AsyncSniffer (see the module docstring for the design)."""

    backend = "scapy"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sock: LinuxPacketSocket | None = None
        self._writer: WriterProcess | None = None
        self._sniffer: Any = None
        self._timer: threading.Timer | None = None
        self._ready = threading.Event()
        self._write_lock = threading.Lock()
        self._write_error: BaseException | None = None
        self._live_wall_ns = 0
        self._ifdrop_start: int | None = None

    @property
    def packets_written(self) -> int:
        return self._writer.sent if self._writer is not None else 0

    # -- start ----------------------------------------------------------------------------
    def _open_socket(self) -> LinuxPacketSocket:
        cfg = self.config
        try:
            return LinuxPacketSocket(cfg.interface, cfg.bpf, cfg.snaplen, rcvbuf=cfg.buffer_mib << 20)
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                raise InterfaceNotFoundError(
                    f"The interface {cfg.interface!r} disappeared or cannot be captured on ({exc.strerror}).",
                    interface=cfg.interface, hint="Fix: check it with `ip link show`.",
                ) from exc
            if exc.errno in (errno.EPERM, errno.EACCES):
                raise CapturePermissionError(
                    f"The kernel refused a raw packet socket on {cfg.interface!r} ({exc.strerror}): "
                    f"live capture needs root or CAP_NET_RAW.",
                    hint=f"Fix: {setcap_python_command()}",
                ) from exc
            raise CaptureBackendError(
                f"Could not open a packet socket on {cfg.interface!r}: {exc.strerror or exc}.",
                hint="Fix: check the interface with `ip link show`, or try the pyshark backend.",
            ) from exc

    def _make_sniffer(self, sock: LinuxPacketSocket) -> Any:
        from scapy.sendrecv import AsyncSniffer

        return AsyncSniffer(opened_socket=sock, prn=self._on_frame, store=False,
                            count=self.config.count or 0, started_callback=self._ready.set)

    def _start(self) -> None:
        cfg = self.config
        if cfg.interface == "any":
            raise CaptureConfigError(
                "The scapy backend captures on one interface; the pseudo-interface 'any' needs "
                "cooked (SLL) framing, which dumpcap provides.",
                hint="Fix: use the pyshark backend for 'any' (--backend pyshark -i any), or name one interface.",
            )
        check_raw_socket_privileges()
        check_interface(cfg.interface)
        fd, self._created_output = prepare_output(cfg.output)
        try:
            self._sock = sock = self._open_socket()
            self._writer = WriterProcess(fd, cfg.output, cfg.file_format, linktype=sock.linktype,
                                         snaplen=cfg.snaplen, interface=cfg.interface,
                                         ready_timeout=cfg.ready_timeout)
        finally:
            os.close(fd)  # the writer process holds its own copy
        self._ifdrop_start = interface_rx_dropped(cfg.interface)
        self._live_wall_ns = time.time_ns()
        self._sniffer = sniffer = self._make_sniffer(sock)
        sniffer.start()
        deadline = time.monotonic() + cfg.ready_timeout
        while not self._ready.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
            thread = sniffer.thread
            if thread is not None and not thread.is_alive() and not self._ready.is_set():
                raise CaptureBackendError(
                    f"scapy's sniffer thread ended before it started capturing: {sniffer.exception!r}.",
                    hint="Fix: run with the pyshark backend, or report this with the traceback above.",
                )
            if time.monotonic() >= deadline:
                raise CaptureStartTimeout(
                    f"scapy's AsyncSniffer did not signal that it was sniffing on {cfg.interface!r} "
                    f"within {cfg.ready_timeout:g} s (started_callback never ran).",
                    hint="Fix: retry; if the machine is very loaded raise ready_timeout, or use --backend pyshark.",
                )
        if sniffer.exception is not None:
            raise CaptureBackendError(f"scapy's sniffer failed while starting: {sniffer.exception!r}.")
        if cfg.duration is not None:
            self._timer = threading.Timer(cfg.duration, self._halt_sniffer)
            self._timer.daemon = True
            self._timer.start()

    def _on_frame(self, frame: Frame) -> None:
        """AsyncSniffer's ``prn``: write the frame at once (one whole record)."""
        if self._write_error is not None or self._writer is None:
            return
        try:
            with self._write_lock:
                self._writer.write(frame.ts_ns, frame.data, frame.wirelen, direction=frame.direction)
        except OSError as exc:
            self._write_error = exc
            self._halt_sniffer()

    def _halt_sniffer(self) -> None:
        sniffer = self._sniffer
        if sniffer is None:
            return
        with contextlib.suppress(Exception):  # "Not running": it already ended, as wanted
            sniffer.stop(join=False)

    def _backend_finished(self, timeout: float) -> bool:
        sniffer = self._sniffer
        thread = None if sniffer is None else sniffer.thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    # -- stop -----------------------------------------------------------------------------
    def _stop(self, reason: str) -> CaptureStats:
        cfg = self.config
        stop_ns = time.time_ns()
        elapsed = self._elapsed()
        notes: list[str] = []
        if self._timer is not None:
            self._timer.cancel()
        self._halt_sniffer()
        if not self._backend_finished(5.0):
            notes.append("scapy's sniffer thread did not end within 5 s; it was abandoned")
        sock, writer = self._sock, self._writer
        assert sock is not None and writer is not None
        cutoff_ns = stop_ns
        if cfg.duration is not None:
            cutoff_ns = min(cutoff_ns, self._live_wall_ns + int(cfg.duration * 1e9))
        drained = 0
        if self._write_error is None:
            with self._write_lock:
                for frame in sock.drain():
                    if cfg.count is not None and writer.sent >= cfg.count:
                        break
                    if frame.ts_ns > cutoff_ns:
                        continue
                    try:
                        writer.write(frame.ts_ns, frame.data, frame.wirelen, direction=frame.direction)
                    except OSError as exc:
                        self._write_error = exc
                        break
                    drained += 1
        if drained:
            notes.append(f"{drained} packet(s) drained from the socket after the sniffer stopped")
        received, dropped = sock.statistics()
        ifdrop_end = interface_rx_dropped(cfg.interface)
        ifdrop = None
        if self._ifdrop_start is not None and ifdrop_end is not None:
            ifdrop = max(0, ifdrop_end - self._ifdrop_start)
        skipped = sock.loopback_copies_skipped if sock.is_loopback else None
        summary = self._finish_writer(received=received - (skipped or 0), dropped=dropped)
        written = int(summary.get("packets", 0))
        if self._write_error is not None or summary.get("error"):
            raise CaptureBackendError(
                f"Writing {str(cfg.output)!r} failed after {written} packet(s): "
                f"{summary.get('error') or self._write_error}. The file holds those packets and is valid.",
                hint="Fix: free disk space or write to another file system.",
            )
        if written != writer.sent:
            notes.append(f"sent {writer.sent} packets to the writer but it wrote {written}")
        sniffer_exc = None if self._sniffer is None else self._sniffer.exception
        if sniffer_exc is not None:
            notes.append(f"scapy's sniffer reported: {sniffer_exc!r}")
        return CaptureStats(
            backend=self.backend, interface=cfg.interface, output=cfg.output, file_format=cfg.file_format,
            packets_written=written, packets_dropped=dropped, interface_dropped=ifdrop,
            duration=elapsed, ready_latency=self._ready_latency or 0.0, stop_reason=reason,
            bpf=cfg.bpf, snaplen=cfg.snaplen, loopback_copies_skipped=skipped, notes=tuple(notes),
        )

    def _finish_writer(self, *, received: int | None, dropped: int | None) -> dict[str, Any]:
        """Stop sniffing, close the socket and let the writer process finish the file."""
        self._release_capture()
        if self._writer is None:
            return {}
        return self._writer.close(received=received, dropped=dropped)

    def _release_capture(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._halt_sniffer()
        if self._sniffer is not None and self._sniffer.thread is not None:
            self._sniffer.thread.join(5.0)
        if self._sock is not None:
            self._sock.close()

    def _release(self) -> None:
        """After a failed start: stop everything; the writer process is killed."""
        self._release_capture()
        if self._writer is not None:
            self._writer.kill()
