"""`nestmtx-sidecar events`: tail a running sidecar's events and logs in the terminal."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from typing import Any, TextIO

import socketio

from ..events import APP_WILDCARD

LEVEL_NAMES = {20: "TRACE", 30: "DEBUG", 40: "INFO", 50: "WARN", 60: "ERROR", 70: "FATAL"}
# Control characters would break the one-line-per-item promise or drive the terminal
# (hook values reach here unfiltered: a path or query may carry ESC sequences).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: Any) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def format_event(payload: dict[str, Any]) -> str:
    details = json.dumps(payload.get("details"), ensure_ascii=False, sort_keys=True)
    return printable(f"{payload.get('at')} {payload.get('domain')}:{payload.get('event')} "
                     f"entity={json.dumps(payload.get('entity'))} {details}")


def format_log(entry: dict[str, Any]) -> str:
    level = LEVEL_NAMES.get(entry.get("level"), str(entry.get("level")))  # type: ignore[arg-type]
    return printable(f"{entry.get('timestamp')} {level:<5} {entry.get('service')}: "
                     f"{entry.get('msg')}")


async def tail(url: str, token: str, out: TextIO = sys.stdout, err: TextIO = sys.stderr
               ) -> int:
    """Print every event (once, from the app-wide topic) and log line until SIGINT/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Our own SIGINT handling: python-socketio's would cancel every task, us included.
    client = socketio.AsyncClient(reconnection=True, handle_sigint=False)

    def show(line: str) -> None:
        print(line, file=out, flush=True)

    async def on_event(payload: Any) -> None:
        show(format_event(payload) if isinstance(payload, dict) else printable(payload))

    async def on_log(entry: Any) -> None:
        show(format_log(entry) if isinstance(entry, dict) else printable(entry))

    async def on_connect() -> None:
        print(f"connected to {url}", file=err, flush=True)

    async def on_disconnect(*reason: Any) -> None:
        if not stop.is_set():
            print(f"disconnected from {url}; reconnecting", file=err, flush=True)

    client.on(APP_WILDCARD, on_event)
    client.on("log", on_log)
    client.on("connect", on_connect)
    client.on("disconnect", on_disconnect)
    try:
        try:
            await client.connect(url, auth={"token": token}, transports=["websocket"],
                                 wait_timeout=10)
        except socketio.exceptions.ConnectionError as exc:
            print(f"nestmtx-sidecar events: cannot connect to {url}: {exc}", file=err,
                  flush=True)
            return 1
        await stop.wait()
        await client.disconnect()
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run(url: str, token: str) -> int:
    return asyncio.run(tail(url, token))
