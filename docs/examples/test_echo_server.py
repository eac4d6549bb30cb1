from capture.generators import run_client, start_server


def test_echo_server_closes_cleanly(loopback_capture):
    server = start_server("tcp-echo", port=0)                # start your own server here
    with loopback_capture(port=server.address.port) as cap:  # records lo, "port N", during the block
        run_client("tcp-echo", port=server.address.port)     # ... and talk to it here
        server.close()                                       # the server's side of the close, too
    assert cap.tcp[0].handshake.complete                     # the loopcap/1 JSON contract's names
    assert cap.tcp[0].teardown.kind == "four-way"
    assert cap.tcp[0].payload.client.bytes == len("MichaelTracySarahexit")
