"""Can this process capture? Checks that fail early with the command that fixes them.

Linux live capture opens an ``AF_PACKET`` socket, which needs ``CAP_NET_RAW`` in the *effective*
capability set (bit 13 of ``CapEff`` in ``/proc/self/status``). Root normally has it, but root in
a container started without ``NET_RAW`` does not, so the capability bit is what is tested; the
effective uid only chooses the wording of the message.

The pyshark backend runs ``dumpcap``: it needs ``dumpcap`` (and ``tshark``, which pyshark drives)
on ``PATH``, and ``dumpcap`` must be able to gain ``CAP_NET_RAW`` itself: because we are root, or
through file capabilities (``security.capability`` extended attribute, as Debian's
``wireshark-common`` sets them), or by being set-uid root, or through ambient capabilities.

Every probe is a small module-level function so tests can monkeypatch it.
"""

from __future__ import annotations

import os
import shutil
import struct
import sys
from pathlib import Path

from .errors import CapturePermissionError, CaptureToolMissingError

__all__ = [
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "check_dumpcap",
    "check_raw_socket_privileges",
    "find_tool",
    "has_cap_net_raw",
    "read_capabilities",
    "setcap_python_command",
]

CAP_NET_ADMIN = 12
CAP_NET_RAW = 13

_VFS_CAP_REVISION_MASK = 0xFF000000
_VFS_CAP_FLAGS_EFFECTIVE = 0x000001


# -- seams: every probe of the system goes through one of these (tests monkeypatch them) --------
def geteuid() -> int:
    """The effective uid."""
    return os.geteuid()


def which(name: str) -> str | None:
    return shutil.which(name)


def can_execute(path: str) -> bool:
    return os.access(path, os.X_OK)


def file_stat(path: str) -> os.stat_result:
    return os.stat(path)


def read_xattr(path: str, name: str) -> bytes:
    return os.getxattr(path, name)


def read_capabilities(field: str = "CapEff", status_path: str = "/proc/self/status") -> int | None:
    """Return a capability mask (``CapEff``, ``CapBnd``, ``CapAmb``...) of this process, or None
    when ``/proc`` cannot tell (not Linux, or ``/proc`` not mounted)."""
    try:
        text = Path(status_path).read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == field:
            try:
                return int(value.strip(), 16)
            except ValueError:
                return None
    return None


def has_cap_net_raw() -> bool:
    """True when this process may open raw packet sockets."""
    eff = read_capabilities("CapEff")
    if eff is None:  # no /proc: fall back on the uid
        return geteuid() == 0
    return bool(eff >> CAP_NET_RAW & 1)


def python_executable() -> str:
    """The real interpreter binary (file capabilities must be set on the target of symlinks)."""
    return os.path.realpath(sys.executable)


def setcap_python_command() -> str:
    """The command that grants this interpreter the capture capabilities."""
    return f"sudo setcap cap_net_raw,cap_net_admin=eip {python_executable()}"


def check_raw_socket_privileges() -> None:
    """Raise :class:`CapturePermissionError` unless a raw packet socket can be opened."""
    if has_cap_net_raw():
        return
    if geteuid() == 0:
        raise CapturePermissionError(
            "Live capture needs CAP_NET_RAW to open a raw packet socket. This process runs as root "
            "but CAP_NET_RAW is not in its effective capability set (CapEff bit 13 in "
            "/proc/self/status is clear), which happens in containers started without NET_RAW.",
            hint="Fix: restart the container with `--cap-add=NET_RAW --cap-add=NET_ADMIN` "
            "(docker/podman run), or run the capture on the host.",
        )
    raise CapturePermissionError(
        f"Live capture needs root or the CAP_NET_RAW capability to open a raw packet socket, and "
        f"this process has neither (uid {geteuid()}, CapEff bit 13 clear). Either run the capture "
        f"with sudo, or give the Python interpreter the capability once "
        f"(it then applies to every script that interpreter runs).",
        hint=f"Fix: {setcap_python_command()}   (or: sudo {python_executable()} -m loopcap ...)",
    )


def find_tool(name: str) -> str:
    """Absolute path of a Wireshark tool (``dumpcap``, ``tshark``, ``capinfos``) or a typed error."""
    path = which(name)
    if path is None:
        raise CaptureToolMissingError(
            f"The pyshark capture backend needs the Wireshark command-line tool '{name}', which is "
            f"not on PATH. pyshark only drives tshark/dumpcap; it does not contain them.",
            hint="Fix: sudo apt-get install tshark   (Fedora: sudo dnf install wireshark-cli; "
            "macOS: brew install wireshark)",
        )
    return path


def file_capabilities(path: str) -> tuple[int, bool] | None:
    """(permitted mask, effective flag) of a file's ``security.capability`` xattr, None if unset."""
    try:
        raw = read_xattr(path, "security.capability")
    except OSError:
        return None
    if len(raw) < 12:
        return None
    magic, permitted_lo, _inheritable_lo = struct.unpack_from("<III", raw)
    permitted = permitted_lo
    revision = magic & _VFS_CAP_REVISION_MASK
    if revision >= 0x02000000 and len(raw) >= 20:
        permitted_hi, _inheritable_hi = struct.unpack_from("<II", raw, 12)
        permitted |= permitted_hi << 32
    return permitted, bool(magic & _VFS_CAP_FLAGS_EFFECTIVE)


def capture_bounding_ok() -> bool:
    """False when CAP_NET_RAW is outside the bounding set: no child can ever gain it (containers)."""
    bounding = read_capabilities("CapBnd")
    return bounding is None or bool(bounding >> CAP_NET_RAW & 1)


def dumpcap_can_capture(path: str) -> bool:
    """True when running ``path`` would give dumpcap CAP_NET_RAW."""
    if not capture_bounding_ok():
        return False
    if geteuid() == 0:
        return True
    ambient = read_capabilities("CapAmb")
    if ambient is not None and ambient >> CAP_NET_RAW & 1:
        return True
    try:
        st = file_stat(path)
    except OSError:
        return False
    if st.st_mode & 0o4000 and st.st_uid == 0:
        return True
    caps = file_capabilities(path)
    return caps is not None and bool(caps[0] >> CAP_NET_RAW & 1) and caps[1]


def check_dumpcap() -> str:
    """Return the path of a dumpcap that can capture, or raise a typed error saying why not."""
    path = find_tool("dumpcap")
    if not can_execute(path):
        raise CapturePermissionError(
            f"dumpcap ({path}) exists but this user may not run it: Wireshark packages restrict it "
            f"to members of the 'wireshark' group, and you are not one (or have not logged in again "
            f"since being added).",
            hint="Fix: sudo usermod -aG wireshark $USER   then log out and back in (or run `newgrp wireshark`)",
        )
    if not capture_bounding_ok():
        raise CapturePermissionError(
            f"dumpcap ({path}) cannot capture here: CAP_NET_RAW is not in this process's capability "
            f"bounding set (CapBnd bit 13 in /proc/self/status is clear), so no program started from "
            f"it can open a raw socket, whatever its file capabilities. This happens in containers "
            f"started without NET_RAW.",
            hint="Fix: restart the container with `--cap-add=NET_RAW --cap-add=NET_ADMIN` "
            "(docker/podman run), or run the capture on the host.",
        )
    if not dumpcap_can_capture(path):
        raise CapturePermissionError(
            f"dumpcap ({path}) cannot capture: it runs without root and has no CAP_NET_RAW file "
            f"capability (Wireshark was installed with 'non-superusers may capture' answered No), so "
            f"opening an interface would fail with 'permission denied'.",
            hint="Fix: sudo dpkg-reconfigure wireshark-common (answer Yes) && sudo usermod -aG wireshark "
            f"$USER   (or directly: sudo setcap cap_net_raw,cap_net_admin=eip {os.path.realpath(path)})",
        )
    return path
