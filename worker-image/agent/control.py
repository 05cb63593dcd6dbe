"""The control channel between the agent and the simulated engine.

A socketpair: the engine gets one end as an inherited file descriptor
(`--control-fd`). JSON lines both ways; messages are rare (a fault change,
a utilisation sample a second), so plain json is fine.

agent -> engine: {"type": "faults", "faults": {EngineFaults, camelCase}}
engine -> agent: {"type": "loaded"}
                 {"type": "utilization", "percent": 0-100}
                 {"type": "xid", "xid": 79}
"""

import asyncio
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

Message = dict[str, Any]


class ControlChannel:
    """One end of the channel, on an asyncio loop."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, sock: socket.socket) -> "ControlChannel":
        reader, writer = await asyncio.open_connection(sock=sock)
        return cls(reader, writer)

    def send(self, message: Message) -> None:
        """Queue one message; a closed peer is not an error (it is exiting)."""
        if self._writer.is_closing():
            return
        self._writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    async def serve(self, handle: Callable[[Message], Awaitable[None] | None]) -> None:
        """Call `handle` for each message until the peer closes."""
        while True:
            try:
                line = await self._reader.readline()
            except (ConnectionError, asyncio.IncompleteReadError):
                return
            if not line:
                return
            try:
                message = json.loads(line)
            except ValueError:
                log.warning("control channel: ignoring a malformed line")
                continue
            result = handle(message)
            if result is not None:
                await result

    def close(self) -> None:
        self._writer.close()
