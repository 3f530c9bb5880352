"""A loopback TCP proxy a test controls: cut every connection without a clean close."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class LoopbackProxy:
    """Forwards 127.0.0.1:`port` to `target`. `cut()` resets every connection (no websocket
    close, no FIN: what a dead Wi-Fi or a killed proxy looks like to both ends) and turns new
    ones away until `resume()`; `target` may change in between (another replica)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self._open = True
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> None:
        self._open = False
        for pair in list(self._pairs):
            for writer in pair:
                writer.transport.abort()
        self._pairs.clear()

    def resume(self, target: int | None = None) -> None:
        self.target = target or self.target
        self._open = True

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._open:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        self._pairs.discard(pair)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()


@contextlib.asynccontextmanager
async def proxy_to(port: int) -> AsyncIterator[LoopbackProxy]:
    proxy = LoopbackProxy(port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
