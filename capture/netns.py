"""A private network namespace that makes a simultaneous close happen for real.

On plain loopback the first FIN is delivered before the peer can send its own, so "both sides
close at once" shows up as a three- or four-way close.  Inside a throwaway namespace (root only)
an nftables rule drops the *first* FIN on the INPUT hook, after the packet capture has seen it:
the peer never learns of that FIN in time, so its own FIN leaves without acknowledging it, both
FINs are on the wire before either is received (RFC 9293's simultaneous close, both sides
passing through CLOSING/TIME_WAIT), and the dropped FIN is retransmitted and acknowledged later.
netem (a delay qdisc) would be the gentler tool, but it is often missing from kernels (it is here).

Everything is run as argument lists (never a shell); the namespace is deleted afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence

#: set inside the namespace so the generator knows the first FIN really is held back
ENV_FLAG = "LOOPCAP_NETNS_FIN_DROP"
#: bytes of FIN segments allowed through the quota before the rule stops matching: the first FIN
#: (52 bytes over IPv4 with timestamps, 72 over IPv6) is dropped, every later one passes
_QUOTA_BYTES = 100


def inside() -> bool:
    """True inside a namespace prepared by :func:`run_in_fin_drop_netns`."""
    return os.environ.get(ENV_FLAG) == "1"


def unavailable_reason() -> str | None:
    """Why forcing a simultaneous close is not possible here, or None when it is."""
    if os.geteuid() != 0:
        return "it needs root (a private network namespace and an nftables rule)"
    for tool, pkg in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"it needs the `{tool}` command (sudo apt-get install {pkg})"
    return None


def _run(cmd: Sequence[str]) -> None:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise OSError(f"{' '.join(cmd)} failed: {proc.stderr.strip() or proc.stdout.strip()}")


def run_in_fin_drop_netns(loopcap_args: Sequence[str]) -> int:
    """Run ``python -m loopcap ARGS`` inside a fresh namespace whose loopback drops the first FIN
    on input; returns its exit code.  Raises OSError when the namespace cannot be set up."""
    name = f"loopcap-sim-{os.getpid()}"
    _run(["ip", "netns", "add", name])
    try:
        ns = ["ip", "netns", "exec", name]
        _run([*ns, "ip", "link", "set", "lo", "up"])
        _run([*ns, "nft", "add", "table", "inet", "loopcap"])
        _run([*ns, "nft", "add", "chain", "inet", "loopcap", "input",
              "{ type filter hook input priority 0 ; policy accept ; }"])
        _run([*ns, "nft", "add", "rule", "inet", "loopcap", "input", "tcp", "flags", "&", "fin", "==", "fin",
              "quota", "until", str(_QUOTA_BYTES), "bytes", "drop"])
        env = dict(os.environ)
        env[ENV_FLAG] = "1"
        proc = subprocess.run([*ns, sys.executable, "-m", "loopcap", *loopcap_args], env=env, timeout=600)
        return proc.returncode
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
