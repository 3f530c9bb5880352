"""How the process logs: its handlers, its level, and library loggers held at a fixed level.

`NESTMTX_LOG_LEVEL` sets how much of the sidecar's own detail is written. Libraries log every
packet, frame, payload or SQL row below some level; those loggers are held at the level in
`LIBRARY_LEVELS` whatever the setting, so no level writes request payloads, websocket frames
or SQL parameters, and `debug` does not flood the log stream with RTP packets.
"""

from __future__ import annotations

import logging
import sys

from ..config import Settings
from ..security import Redactor
from .stream import TRACE, LogStream

# Each library logger, the lowest level it may write, and what it writes below that.
LIBRARY_LEVELS: dict[str, int] = {
    # websockets (uvicorn's websocket protocol) logs here at debug every frame, truncated in
    # the middle (`< TEXT '42["request",...]'`), and every handshake header.
    "uvicorn.error": logging.INFO,
    # At uvicorn's trace level, every ASGI message with its body.
    "uvicorn.asgi": logging.INFO,
    # One line per request: access lines would flood the log stream; errors still come through.
    "uvicorn.access": logging.WARNING,
    # The same frame trace when the websockets library logs under its own name.
    "websockets": logging.INFO,
    # At info, every Engine.IO / Socket.IO packet received or sent, with its payload.
    "engineio.server": logging.WARNING,
    "socketio.server": logging.WARNING,
    # At info every SQL statement, at debug every result row: password hashes, secrets.
    "sqlalchemy": logging.WARNING,
    # At debug, every statement with its parameters.
    "aiosqlite": logging.INFO,
    # At debug, every RTP/RTCP packet and SCTP chunk (~950 lines/s for a 1080p camera).
    "aiortc": logging.INFO,
    # At debug, every STUN message (connectivity checks, consent every few seconds).
    "aioice": logging.INFO,
    # FFmpeg through PyAV (PyAV's own default, kept): below it, per-frame decoder messages.
    "libav": logging.WARNING,
    # At debug, every MQTT packet sent and received (paho through aiomqtt).
    "mqtt": logging.INFO,
    # At debug, every HTTP request to Google with its body (google-auth's request log).
    "google": logging.INFO,
    # At debug, each step of every HTTP request (connect, headers, body) to Google.
    "httpcore": logging.INFO,
}


class RedactingFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(super().format(record))


def _websocket_access_line(record: logging.LogRecord) -> bool:
    """False for uvicorn's per-websocket INFO lines (handshake, open, close): access lines,
    which the log stream would send to every subscriber on every connect."""
    return not (record.levelno == logging.INFO and (
        record.msg in ("connection open", "connection closed")
        or str(record.msg).startswith('%s - "WebSocket ')))


def configure_logging(settings: Settings, redactor: Redactor, stream: LogStream) -> None:
    logging.addLevelName(TRACE, "TRACE")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(RedactingFormatter(redactor))
    root = logging.getLogger()
    root.handlers[:] = [console, stream]
    root.setLevel(settings.python_log_level)
    for name, level in LIBRARY_LEVELS.items():
        logging.getLogger(name).setLevel(level)
    logging.getLogger("uvicorn.error").addFilter(_websocket_access_line)
