"""Fast Socket.IO fan-out: one encoding per emit, no task per recipient, coalesced writes.

python-socketio's stock `AsyncManager.emit` encodes a broadcast once but then creates a
task per recipient, each waking that socket's writer task, which writes one frame per
system call. For small events to many sockets that overhead dominates (see
bench/README.md). `FastManager` keeps python-socketio's rooms, sids and multi-node
managers, and changes only how an already-encoded packet reaches each local socket:

- over a websocket served by uvicorn's `websockets-sansio` protocol, with nothing queued
  and the transport writable, the websocket frame (built once per emit) is appended to a
  per-connection buffer that is written with one system call per loop turn ("cork");
- otherwise the engine.io packet goes on the socket's own queue (`put_nowait`), exactly
  where the stock path would have put it, so order is kept and long-polling works;
- emits with an acknowledgement callback or binary data take the stock path unchanged.

Every socket has a bound: a client whose queue or write buffer passes it is disconnected
and counted instead of growing memory without limit. The fast path is tied to the engine.io
and uvicorn internals it reads; `fast_path_supported()` checks them and the stock path is
used whenever anything is not as expected.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import engineio
import socketio
from engineio import packet as eio_packet
from engineio.async_drivers import asgi as engineio_asgi
from socketio import packet as sio_packet

logger = logging.getLogger(__name__)

MAX_QUEUED_PACKETS = 1000  # per socket; queued packets are shared, so this bounds references
MAX_WRITE_BUFFER = 8 * 1024 * 1024  # per connection: corked plus unsent bytes
# Corked frames between yields, so a burst lets the loop flush and breathe. Large enough that
# one event (three frames) to 1000 sockets is corked whole: a yield inside it would flush
# each socket's three frames as three writes (and three reads at the client), not one.
YIELD_EVERY = 4096

try:  # the one uvicorn protocol whose transport we know how to write frames to
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError:  # pragma: no cover - uvicorn without websockets
    WebSocketsSansIOProtocol = None  # type: ignore[assignment,misc]


# The releases whose internals the fast path was written against and is tested with.
TESTED_RELEASES = {"python-engineio": ("4.",), "uvicorn": ("0.",)}


def fast_path_supported() -> bool:
    """True when the engine.io and uvicorn internals the fast path relies on are as expected."""
    for distribution, prefixes in TESTED_RELEASES.items():
        if not version(distribution).startswith(prefixes):
            return False
    return (
        WebSocketsSansIOProtocol is not None
        and hasattr(engineio.async_socket.AsyncSocket, "_websocket_handler")
        and hasattr(engineio_asgi, "WebSocket")
    )


def text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented websocket text frame (RFC 6455 section 5.2)."""
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 65536:
        header = bytes((0x81, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + size.to_bytes(8, "big")
    return header + payload


class RecordingWebSocket(engineio_asgi.WebSocket):  # type: ignore[misc]
    """engine.io's ASGI websocket wrapper, remembering the uvicorn protocol behind it."""

    def __init__(self, handler: Any, server: Any) -> None:
        super().__init__(handler, server)
        self._socket = getattr(handler, "__self__", None)

    async def __call__(self, environ: dict[str, Any]) -> str:
        protocol = getattr(environ.get("asgi.send"), "__self__", None)
        if self._socket is not None and isinstance(protocol, WebSocketsSansIOProtocol):
            self._socket.uvicorn_protocol = protocol
        result: str = await super().__call__(environ)
        return result


class _Cork:
    """Per-connection write buffers flushed once per loop turn."""

    def __init__(self) -> None:
        self._pending: dict[Any, list[bytes]] = {}
        self._pending_bytes: dict[Any, int] = {}
        self._scheduled = False
        self.frames = 0  # corked since the last flush
        self.writes = 0  # transport writes (system calls) so far

    def buffered(self, transport: Any) -> int:
        """Bytes bound for this connection that it has not taken yet."""
        return transport.get_write_buffer_size() + self._pending_bytes.get(transport, 0)

    def write(self, transport: Any, frame: bytes) -> None:
        chunks = self._pending.get(transport)
        if chunks is None:
            self._pending[transport] = [frame]
            self._pending_bytes[transport] = len(frame)
        else:
            chunks.append(frame)
            self._pending_bytes[transport] += len(frame)
        self.frames += 1
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        self.frames = 0
        pending, self._pending = self._pending, {}
        self._pending_bytes.clear()
        for transport, chunks in pending.items():
            if not transport.is_closing():
                transport.write(b"".join(chunks) if len(chunks) > 1 else chunks[0])
                self.writes += 1


class FastManager(socketio.AsyncManager):
    """A client manager whose local delivery skips the per-recipient task."""

    on_overflow: Callable[[], None] | None = None  # told of every client cut loose

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cork = _Cork()
        self.fast_path = fast_path_supported()
        self.dropped_clients = 0
        self.direct_writes = 0  # frames corked onto a transport
        self.queued_writes = 0  # packets put on an engine.io queue

    @property
    def transport_writes(self) -> int:
        """Corked frames reach their transports in this many writes (one per socket per turn)."""
        return self._cork.writes

    def initialize(self) -> None:
        super().initialize()
        if self.fast_path:
            eio = self.server.eio
            eio._async = {**eio._async, "websocket": RecordingWebSocket}

    async def emit(self, event: str, data: Any, namespace: str, room: Any = None,
                   skip_sid: Any = None, callback: Any = None, to: Any = None,
                   **kwargs: Any) -> None:
        room = to or room
        if callback is not None or namespace not in self.rooms:
            await super().emit(event, data, namespace, room=room, skip_sid=skip_sid,
                               callback=callback, **kwargs)
            return
        args = list(data) if isinstance(data, tuple) else ([] if data is None else [data])
        encoded = self.server.packet_class(
            sio_packet.EVENT, namespace=namespace, data=[event, *args]).encode()
        if isinstance(encoded, list):  # binary attachments: leave them to the stock path
            await super().emit(event, data, namespace, room=room, skip_sid=skip_sid, **kwargs)
            return
        await self._deliver(encoded, namespace, room, skip_sid)

    async def _deliver(self, encoded: str, namespace: str, room: Any, skip_sid: Any) -> None:
        skip = set(skip_sid) if isinstance(skip_sid, list) else {skip_sid}
        eio_pkt = eio_packet.Packet(eio_packet.MESSAGE, encoded)
        frame: bytes | None = None
        sockets = self.server.eio.sockets
        for sid, eio_sid in self.get_participants(namespace, room):
            if sid in skip:
                continue
            socket = sockets.get(eio_sid)
            if socket is None or socket.closed or socket.closing:
                continue
            transport = self._direct_transport(socket)
            if transport is not None:
                if self._cork.buffered(transport) > MAX_WRITE_BUFFER:
                    self._overflow(sid, namespace, socket)
                    continue
                if frame is None:
                    frame = text_frame(eio_pkt.encode().encode())
                self._cork.write(transport, frame)
                self.direct_writes += 1
            elif socket.queue.qsize() >= MAX_QUEUED_PACKETS:
                self._overflow(sid, namespace, socket)
            else:
                socket.queue.put_nowait(eio_pkt)
                self.queued_writes += 1
            if self._cork.frames >= YIELD_EVERY:
                await asyncio.sleep(0)

    def _direct_transport(self, socket: Any) -> Any:
        """The transport to write frames to, if writing directly keeps the socket's order."""
        if not self.fast_path or not socket.upgraded or not socket.queue.empty():
            return None
        protocol = getattr(socket, "uvicorn_protocol", None)
        if protocol is None or protocol.close_sent or protocol.disconnected or \
                not protocol.writable.is_set() or protocol.conn.extensions:
            return None
        transport = protocol.transport
        return None if transport.is_closing() else transport

    def _overflow(self, sid: str, namespace: str, socket: Any) -> None:
        """A client that stopped reading: cut it loose rather than buffer without bound."""
        if getattr(socket, "overflowed", False):
            return
        socket.overflowed = True
        self.dropped_clients += 1
        if self.on_overflow:
            self.on_overflow()
        logger.warning("disconnecting socket %s: it is not reading its events", sid)
        protocol = getattr(socket, "uvicorn_protocol", None)
        if protocol is not None:
            protocol.transport.abort()
        self.server.start_background_task(self.server.disconnect, sid, namespace=namespace)


def fast_manager_class(base: type[socketio.AsyncManager]) -> type[socketio.AsyncManager]:
    """`base` (e.g. AsyncRedisManager) with FastManager's local delivery under it."""
    if base is socketio.AsyncManager:
        return FastManager
    return type(f"Fast{base.__name__}", (base, FastManager), {})
