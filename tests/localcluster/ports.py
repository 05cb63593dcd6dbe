"""Free loopback ports for servers that tests and bench start, without races.

Picking a port by binding port 0 and closing the socket leaves a window in
which another process (or the kernel, for an outgoing connection) takes the
same port before our server binds it. Instead the picking socket stays
bound, with SO_REUSEADDR and never listening, for the life of this process:
the kernel gives the port to no one else, while our servers, which all set
SO_REUSEADDR (aiohttp, asyncio's create_server, uvicorn/vLLM, Go's net
package, Python's http.server), may still bind and listen on it, since
Linux allows that when the other socket is not listening.
"""

import socket
import threading

LOOPBACK = "127.0.0.1"

_reserved: list[socket.socket] = []
_lock = threading.Lock()


def free_port(host: str = LOOPBACK) -> int:
    """A port on ``host`` that stays reserved for our own server to bind."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    with _lock:
        _reserved.append(sock)
    return int(sock.getsockname()[1])
