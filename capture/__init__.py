"""loopcap capture layer: loopback traffic generators and live capture backends (scapy, pyshark)."""
