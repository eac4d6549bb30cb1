"""loopcap analyzers: read pcap/pcapng, decode, track TCP connections and UDP conversations."""
