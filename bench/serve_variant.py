"""Serve the sidecar with one fan-out variant, to measure what each optimisation buys.

Usage: python bench/serve_variant.py <variant>, configured like `nestmtx-sidecar serve`
(NESTMTX_* environment). Variants, each adding one step:
  stock-deflate  python-socketio's AsyncManager, per-message deflate negotiated (defaults)
  stock          AsyncManager, deflate off
  queue          FastManager, packets put on each socket's queue (fast_path=False)
  direct         FastManager, frames built once and corked straight onto transports
                 (what `nestmtx-sidecar serve` runs)
"""

from __future__ import annotations

import logging
import sys

import socketio
import uvicorn

from nestmtx_sidecar.app import Sidecar, create_app
from nestmtx_sidecar.cli import tune_gc
from nestmtx_sidecar.config import load_settings, with_generated_secrets
from nestmtx_sidecar.fanout import FastManager

VARIANTS = ("stock-deflate", "stock", "queue", "direct")


def main(variant: str) -> None:
    if variant not in VARIANTS:
        raise SystemExit(f"unknown variant {variant!r}; one of {', '.join(VARIANTS)}")
    sidecar = Sidecar(with_generated_secrets(load_settings()))
    logging.basicConfig(level=logging.WARNING)
    sio = sidecar.gateway.sio
    if variant.startswith("stock"):
        sio.manager = socketio.AsyncManager()
        sio.manager.set_server(sio)
    elif variant == "queue":
        assert isinstance(sio.manager, FastManager)
        sio.manager.fast_path = False
    app = create_app(sidecar)
    tune_gc()  # as `serve` does: only the fan-out step differs between variants
    uvicorn.run(app, host=sidecar.settings.host, port=sidecar.settings.port,
                log_config=None, ws_per_message_deflate=variant == "stock-deflate")


if __name__ == "__main__":
    main(sys.argv[1])
