"""loopcap: see TCP and UDP at work on loopback."""

__version__ = "0.1.0"
