"""free_port: the port stays ours until a server of ours binds it."""

import errno
import socket

import pytest
from kubeinfer.localcluster.ports import LOOPBACK, free_port


def test_a_server_with_reuseaddr_binds_and_serves_the_reserved_port() -> None:
    port = free_port()
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((LOOPBACK, port))
        server.listen()
        with socket.create_connection((LOOPBACK, port), timeout=5) as client:
            accepted, _ = server.accept()
            client.sendall(b"ping")
            assert accepted.recv(4) == b"ping"
            accepted.close()


def test_no_one_else_can_take_the_port_meanwhile() -> None:
    port = free_port()
    with socket.socket() as other, pytest.raises(OSError, match="in use") as caught:
        other.bind((LOOPBACK, port))  # no SO_REUSEADDR: someone else's socket
    assert caught.value.errno == errno.EADDRINUSE


def test_ports_are_distinct() -> None:
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
