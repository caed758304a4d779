"""A bare TCP byte relay on uvloop: the floor of what a Python proxy costs on this machine.

    .venv/bin/python benchmarks/bare_relay.py LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT

No protocol, no policy, no audit: bytes from each side are written to the other in the protocol
callbacks, with flow control. ``benchmarks/proxy.py`` runs it beside PgBouncer and pgwarden, so the
difference between it and pgwarden is pgwarden's own per-statement work, and between it and PgBouncer
what Python and the event loop cost.
"""

from __future__ import annotations

import asyncio
import sys

import uvloop


class _Side(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.early: list[bytes] = []  # bytes that arrived before the other side connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.early.append(data)
        else:
            peer.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


_PENDING: set[asyncio.Future] = set()


def _client_factory(host: str, port: int):
    def make() -> _Side:
        client = _Side()
        upstream = _Side()
        client.peer, upstream.peer = upstream, client

        async def connect() -> None:
            loop = asyncio.get_running_loop()
            try:
                transport, _ = await loop.create_connection(lambda: upstream, host, port)
            except OSError:
                if client.transport is not None:
                    client.transport.close()
                return
            for data in client.early:
                transport.write(data)
            client.early.clear()

        _PENDING.add(task := asyncio.ensure_future(connect()))
        task.add_done_callback(_PENDING.discard)
        return client

    return make


async def _serve(listen: int, host: str, port: int) -> None:
    server = await asyncio.get_running_loop().create_server(_client_factory(host, port), "127.0.0.1", listen)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(_serve(int(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
