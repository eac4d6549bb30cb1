from loopcap._entry import main

main()
