"""loopcap analyzers: read pcap/pcapng, decode, track TCP connections and UDP conversations."""


def compiled() -> bool:
    """Whether the analysis path runs as mypyc-compiled extension modules (a ``LOOPCAP_MYPYC=1``
    build, see setup.py) rather than as the Python sources."""
    from importlib.machinery import EXTENSION_SUFFIXES

    from analyzers import tcp

    return (tcp.__file__ or "").endswith(tuple(EXTENSION_SUFFIXES))
