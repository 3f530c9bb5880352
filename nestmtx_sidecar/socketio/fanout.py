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
- emits with an acknowledgement callback or binary data take the stock path unchanged;
- `emit_each` takes several emits (an event's three topics, a burst of log lines) in one
  pass: each socket is checked once and gets the frames meant for it as one piece;
- deliveries run one at a time, so every socket sees the same order even when one yields.
- `deliver_local` takes events from the event log, which reaches every node by itself:
  sockets resuming missed events (connection state recovery) get a second variant of the
  frames, with the event's offset as last argument, built only when one of them is a
  recipient; every other socket gets the very frames it would get without recovery.

Every socket has a bound: a client whose queue or write buffer passes it is disconnected
and counted instead of growing memory without limit. The fast path is tied to the engine.io
and uvicorn internals it reads; `fast_path_supported()` checks them and the stock path is
used whenever anything is not as expected.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, cast

import engineio
import socketio
from engineio import packet as eio_packet
from engineio.async_drivers import asgi as engineio_asgi
from socketio import packet as sio_packet
from socketio.async_pubsub_manager import AsyncPubSubManager

from ..metrics import SOCKETS_CUT
from .event_log import Offset

logger = logging.getLogger(__name__)

MAX_QUEUED_PACKETS = 1000  # per socket; queued packets are shared, so this bounds references
MAX_WRITE_BUFFER = 8 * 1024 * 1024  # per connection: corked plus unsent bytes
# Corked frames between yields, so a burst lets the loop flush and breathe. Large enough that
# an event's frames to 1000 sockets are corked whole: every yield flushes, and where the
# three emits arrive one by one (from Redis, with several nodes) a yield between them would
# reach each socket as three writes (and three reads at the client), not one.
YIELD_EVERY = 4096

try:  # the one uvicorn protocol whose transport we know how to write frames to
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError:  # pragma: no cover - uvicorn without websockets
    WebSocketsSansIOProtocol = None  # type: ignore[assignment,misc]


# The releases whose internals the fast path reads, as pinned in pyproject.toml (a test holds
# the two together, and CI asserts the fast path is on with them). Any other release gets
# the stock path until the internals are checked again and the pin moved.
TESTED_RELEASES = {"python-engineio": "4.15.", "uvicorn": "0.54."}


def fast_path_supported() -> bool:
    """True when the engine.io and uvicorn internals the fast path relies on are as expected."""
    for distribution, release in TESTED_RELEASES.items():
        if not version(distribution).startswith(release):
            logger.warning("%s %s is not the release the Socket.IO fast path was checked "
                           "against (%sx): using the stock path", distribution,
                           version(distribution), release)
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

    def write(self, transport: Any, data: bytes, frames: int = 1) -> None:
        """Cork `data` (whole websocket frames, `frames` of them) for this connection."""
        chunks = self._pending.get(transport)
        if chunks is None:
            self._pending[transport] = [data]
            self._pending_bytes[transport] = len(data)
        else:
            chunks.append(data)
            self._pending_bytes[transport] += len(data)
        self.frames += frames
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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cork = _Cork()
        self._order = asyncio.Lock()
        self.fast_path = fast_path_supported()
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
        encoded = None
        if callback is None and namespace in self.rooms:
            encoded = self._encode(event, data, namespace)
        if encoded is None:  # acks and binary attachments: python-socketio's own path
            await super().emit(event, data, namespace, room=room, skip_sid=skip_sid,
                               callback=callback, **kwargs)
            return
        rooms = list(room) if isinstance(room, list | tuple) else [room]
        await self._deliver([encoded], namespace, {r: (0,) for r in rooms}, skip_sid)

    async def emit_each(self, emits: Sequence[tuple[str, Any, list[str]]],
                        namespace: str = "/") -> None:
        """(event, data, rooms) emits in order, as `emit` one after the other would send them.

        On one node, each socket is visited once and gets the frames meant for it in one
        piece. A pub/sub manager publishes each emit for every node to deliver.
        """
        packets = ([] if isinstance(self, AsyncPubSubManager) or
                   namespace not in self.rooms else
                   [self._encode(event, data, namespace) for event, data, _ in emits])
        if not packets or None in packets:
            for event, data, rooms in emits:
                await self.emit(event, data, namespace, room=rooms)
            return
        await self._deliver(cast(list[str], packets), namespace, _targets(emits), None)

    def _encode(self, event: str, data: Any, namespace: str, *extra: str) -> str | None:
        """The packet every recipient gets; None when it has binary attachments."""
        args = list(data) if isinstance(data, tuple) else ([] if data is None else [data])
        encoded = self.server.packet_class(
            sio_packet.EVENT, namespace=namespace, data=[event, *args, *extra]).encode()
        return None if isinstance(encoded, list) else encoded

    def _tagged_packet(self, event: str, data: Any, key: str, namespace: str) -> Any:
        encoded = self._encode(event, data, namespace, key)
        if encoded is None:
            raise ValueError("binary data cannot take the local fan-out")
        return eio_packet.Packet(eio_packet.MESSAGE, encoded)

    async def deliver_local(self, emits: Sequence[tuple[str, Any, list[str]]],
                            tagged: Tagged | None = None, namespace: str = "/") -> None:
        """`emit_each` to this node's sockets only, whatever the manager: for emits that reach
        every node another way (the event log). `tagged`: the variant for recovering sockets."""
        packets = [self._encode(event, data, namespace) for event, data, _ in emits]
        if None in packets:
            raise ValueError("binary data cannot take the local fan-out")
        await self._deliver(cast(list[str], packets), namespace, _targets(emits), None, tagged)

    def send_now(self, sid: str, packets: Sequence[tuple[str, Any, str]],
                 namespace: str = "/") -> None:
        """(event, data, offset) packets to one socket at once, ahead of any later delivery."""
        socket = self._open_socket(self.eio_sid_from_sid(sid, namespace))
        if socket is None or not packets:
            return
        eio_pkts = [self._tagged_packet(event, data, key, namespace)
                    for event, data, key in packets]
        self._put(sid, namespace, socket, eio_pkts, range(len(eio_pkts)), {}, None)

    async def _deliver(self, packets: list[str], namespace: str,
                       targets: dict[Any, tuple[int, ...]], skip_sid: Any,
                       tagged: Tagged | None = None) -> None:
        """Each socket in the target rooms gets the packets its rooms call for, in order, once.

        One delivery at a time: one that yields mid-way must finish before the next starts,
        or sockets later in its loop would get the next packets first.
        """
        async with self._order:
            await self._deliver_now(packets, namespace, targets, skip_sid, tagged)

    async def _deliver_now(self, packets: list[str], namespace: str,
                           targets: dict[Any, tuple[int, ...]], skip_sid: Any,
                           tagged: Tagged | None) -> None:
        skip = set(skip_sid) if isinstance(skip_sid, list) else {skip_sid}
        recipients: dict[str, tuple[str, tuple[int, ...]]] = {}
        for room, indices in targets.items():
            for sid, eio_sid in self.get_participants(namespace, room):
                known = recipients.get(eio_sid)
                if known is not None and known[1] != indices:  # in several target rooms
                    indices = tuple(sorted({*known[1], *indices}))
                recipients[eio_sid] = (sid, indices)
        plain = [eio_packet.Packet(eio_packet.MESSAGE, p) for p in packets]
        variants = [plain]
        pieces: dict[Any, bytes] = {}  # frames built once per (variant, packets) combination
        for eio_sid, (sid, indices) in recipients.items():
            if sid in skip:
                continue
            kind = 0
            if tagged is not None and sid in tagged.sockets:
                if tagged.sockets[sid] >= tagged.offset:
                    continue  # it had this one in its replay
                if len(variants) == 1:
                    variants.append([self._tagged_packet(event, data, tagged.key, namespace)
                                     for event, data, _ in tagged.emits])
                kind = 1
            socket = self._open_socket(eio_sid)
            if socket is None:
                continue
            self._put(sid, namespace, socket, variants[kind], indices, pieces, (kind, indices))
            if self._cork.frames >= YIELD_EVERY:
                await asyncio.sleep(0)

    def _open_socket(self, eio_sid: str | None) -> Any:
        socket = self.server.eio.sockets.get(eio_sid)
        if socket is None or socket.closed or socket.closing:
            return None
        return socket

    def _put(self, sid: str, namespace: str, socket: Any, eio_pkts: list[Any],
             indices: Sequence[int], pieces: dict[Any, bytes], key: Any) -> None:
        """Packets `indices` of `eio_pkts` to one socket: as frames straight to its transport
        when that keeps its order (built once per `key` in `pieces`), else on its engine.io
        queue; a socket past its bound is cut loose."""
        transport = self._direct_transport(socket)
        if transport is not None:
            if self._cork.buffered(transport) > MAX_WRITE_BUFFER:
                self._overflow(sid, namespace, socket)
                return
            piece = pieces.get(key)
            if piece is None:
                piece = pieces[key] = b"".join(
                    text_frame(eio_pkts[i].encode().encode()) for i in indices)
            self._cork.write(transport, piece, len(indices))
            self.direct_writes += len(indices)
        elif socket.queue.qsize() + len(indices) > MAX_QUEUED_PACKETS:
            self._overflow(sid, namespace, socket)
        else:
            for i in indices:
                socket.queue.put_nowait(eio_pkts[i])
            self.queued_writes += len(indices)

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
        SOCKETS_CUT.inc()
        logger.warning("disconnecting socket %s: it is not reading its events", sid)
        protocol = getattr(socket, "uvicorn_protocol", None)
        if protocol is not None:
            protocol.transport.abort()
        self.server.start_background_task(self.server.disconnect, sid, namespace=namespace)


def _targets(emits: Sequence[tuple[str, Any, list[str]]]) -> dict[str, tuple[int, ...]]:
    """room -> the emits it receives, in order."""
    targets: dict[str, tuple[int, ...]] = {}
    for index, (_, _, rooms) in enumerate(emits):
        for room in rooms:
            targets[room] = (*targets.get(room, ()), index)
    return targets


@dataclass(frozen=True, slots=True)
class Tagged:
    """For sockets that resume (connection state recovery): the same emits with the event's
    offset as last argument, encoded only if one of those sockets is a recipient."""

    emits: Sequence[tuple[str, Any, list[str]]]
    offset: Offset
    key: str  # the offset as the client sees it
    sockets: Mapping[str, Offset]  # sid -> the offset up to which it already has every event


def fast_manager_class(base: type[socketio.AsyncManager]) -> type[socketio.AsyncManager]:
    """`base` (e.g. AsyncRedisManager) with FastManager's local delivery under it."""
    if base is socketio.AsyncManager:
        return FastManager
    return type(f"Fast{base.__name__}", (base, FastManager), {})


async def emit_logged(sio: socketio.AsyncServer, emits: Sequence[tuple[str, Any, list[str]]],
                      tagged: Tagged | None, namespace: str = "/") -> None:
    """Emits the event log brings to every node: to this node's sockets only."""
    if isinstance(sio.manager, FastManager):
        await sio.manager.deliver_local(emits, tagged, namespace)
        return
    # python-socketio's own single-node manager (bench/serve_variant.py's baselines): no
    # socket resumes there (the Socket.IO door offers recovery with FastManager only).
    for event, data, rooms in emits:
        await sio.emit(event, data, to=rooms, namespace=namespace)


async def emit_in_order(sio: socketio.AsyncServer, emits: Sequence[tuple[str, Any, list[str]]],
                        namespace: str = "/") -> None:
    """(event, data, rooms) emits in order: in one pass over the sockets where the manager can."""
    if isinstance(sio.manager, FastManager):
        await sio.manager.emit_each(emits, namespace)
        return
    for event, data, rooms in emits:
        await sio.emit(event, data, to=rooms, namespace=namespace)
