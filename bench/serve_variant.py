"""Serve the sidecar with one fan-out variant, to measure what each optimisation buys.

Usage: python bench/serve_variant.py <variant>, configured like `nestmtx-sidecar serve`
(NESTMTX_* environment). Variants, each adding one step:
  stock-deflate  python-socketio's AsyncManager, per-message deflate negotiated (defaults)
  stock          AsyncManager, deflate off
  queue          FastManager, packets put on each socket's queue (fast_path=False)
  direct         FastManager, frames built once and corked straight onto transports
                 (what `nestmtx-sidecar serve` runs)
  pubsub         direct, with events crossing replicas over python-socketio's Redis pub/sub
                 instead of the Redis stream (how they did before; needs NESTMTX_REDIS_URL)
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import socketio
import uvicorn

from nestmtx_sidecar.app import Sidecar, create_app
from nestmtx_sidecar.cli import tune_gc
from nestmtx_sidecar.config import load_settings, with_generated_secrets
from nestmtx_sidecar.socketio.fanout import FastManager, emit_in_order
from nestmtx_sidecar.socketio.topics import rooms

VARIANTS = ("stock-deflate", "stock", "queue", "direct", "pubsub")


def main(variant: str) -> None:
    if variant not in VARIANTS:
        raise SystemExit(f"unknown variant {variant!r}; one of {', '.join(VARIANTS)}")
    sidecar = Sidecar(with_generated_secrets(load_settings()))
    logging.basicConfig(level=logging.WARNING)
    sio = sidecar.socketio_door.sio
    if variant.startswith("stock"):
        sio.manager = socketio.AsyncManager()
        sio.manager.set_server(sio)
    elif variant == "queue":
        assert isinstance(sio.manager, FastManager)
        sio.manager.fast_path = False
    elif variant == "pubsub":
        assert sidecar.settings.redis_url, "the pubsub variant needs NESTMTX_REDIS_URL"

        async def over_pubsub(topics: tuple[str, ...], payload: dict[str, Any]) -> None:
            await emit_in_order(sio, [(topic, payload, rooms(topic))
                                      for topic in topics])

        sidecar.event_log.append = over_pubsub  # type: ignore[method-assign]
    app = create_app(sidecar)
    tune_gc()  # as `serve` does: only the fan-out step differs between variants
    uvicorn.run(app, host=sidecar.settings.host, port=sidecar.settings.port,
                log_config=None, ws_per_message_deflate=variant == "stock-deflate")


if __name__ == "__main__":
    main(sys.argv[1])
