"""Command line: `serve`, `mediamtx-config`, `events`."""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from collections.abc import Sequence

from ..config import Settings, load_settings, with_generated_secrets
from ..errors import ConfigError, DatabaseUnreachable
from ..logs.setup import configure_logging
from ..mediamtx.config import DEFAULT_HOOK
from ..security import Redactor


def check_database(settings: Settings, redactor: Redactor) -> None:
    """One clear line, not a traceback from deep in start-up, when the database is down."""
    import asyncio

    import sqlalchemy as sa

    from ..storage.store import Store

    async def ping() -> None:
        store = Store(settings.resolved_database_url)
        try:
            await store.ping()
        finally:
            await store.close()

    redactor.pin(sa.engine.make_url(settings.resolved_database_url).password)
    try:
        asyncio.run(ping())
    except (OSError, sa.exc.SQLAlchemyError) as exc:
        reason = getattr(exc, "orig", None) or exc
        raise DatabaseUnreachable(redactor(f"cannot reach the database: {reason}")) from None


# Allocations between young-generation collections (CPython's default: 700). With 1000
# sockets the default ran a full collection every few seconds, each pausing the loop for
# 100-170 ms: that pause was the p99 of every event in flight (see bench/README.md).
GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Collect rarely, and never re-scan what start-up built: it lives as long as the process."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def serve(settings: Settings) -> None:
    import uvicorn

    from ..app import Sidecar, create_app

    settings = with_generated_secrets(settings)
    redactor = Redactor()
    check_database(settings, redactor)
    sidecar = Sidecar(settings, redactor)
    configure_logging(settings, redactor, sidecar.log_stream)
    for name in settings.secrets_generated:
        logging.getLogger(__name__).info("generated %s in %s", name, settings.data_dir)
    app = create_app(sidecar)
    tune_gc()
    uvicorn.run(
        app, host=settings.host, port=settings.port, log_config=None,
        # Deflate per message costs more than it saves on small JSON events.
        ws_per_message_deflate=False,
        # The client address is ours to read (NESTMTX_TRUSTED_PROXIES): uvicorn's own rule
        # would believe any X-Forwarded-For sent from 127.0.0.1.
        proxy_headers=False,
        # SIGTERM: 5 s to drain requests, then the sidecar stops its Nest streams and parts:
        # all within the 10 s Docker waits before SIGKILL.
        timeout_graceful_shutdown=5,
    )


def main(argv: Sequence[str] | None = None) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="YAML settings file (default: $NESTMTX_CONFIG)")
    parser = argparse.ArgumentParser(prog="nestmtx-sidecar", description=__doc__,
                                     parents=[common])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the sidecar", parents=[common])
    mtx = commands.add_parser("mediamtx-config", parents=[common],
                              help="print MediaMTX settings wiring every hook to the sidecar")
    mtx.add_argument("--hook", default=DEFAULT_HOOK,
                     help=f"hook script path as MediaMTX sees it (default {DEFAULT_HOOK})")
    events = commands.add_parser("events", help="tail events and logs of a running sidecar")
    events.add_argument("--url", default="http://127.0.0.1:2000", help="sidecar base URL")
    events.add_argument("--token", required=True, help="a bearer token (POST /api/auth)")
    args = parser.parse_args(argv)
    if args.command == "events":
        from .tail import run

        raise SystemExit(run(args.url, args.token))
    try:
        settings = load_settings(args.config)
        if args.command == "serve":
            serve(settings)
        elif args.command == "mediamtx-config":
            import asyncio

            from ..mediamtx.config import generate

            sys.stdout.write(asyncio.run(generate(settings, args.hook)))
    except ConfigError as exc:
        print(f"nestmtx-sidecar: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except DatabaseUnreachable as exc:
        print(f"nestmtx-sidecar: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
