from loopcap.cli import main

main()
