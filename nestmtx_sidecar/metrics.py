"""Prometheus metrics: every definition in one place, and the `/metrics` route.

Counters are process-wide (prometheus-client's usual module-level style) and move in the
modules that do the work. Values that belong to one running sidecar (sockets, sessions,
leases) are read from it at scrape time, through its own registry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    ProcessCollector,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response

if TYPE_CHECKING:  # events.py counts its drops here
    from .events import Event

# registry=None: registered per sidecar below, so tests can run several in one process.
EVENTS = Counter("nestmtx_events", "Events published on the bus",
                 ["domain", "event"], registry=None)
HOOK_CALLS = Counter("nestmtx_hook_calls", "MediaMTX hook calls by hook and outcome "
                     "(accepted, or the error code of the reply)",
                     ["hook", "outcome"], registry=None)
TOKEN_REFRESHES = Counter("nestmtx_token_refreshes", "Google OAuth access-token refreshes",
                          ["outcome"], registry=None)
SDM_CALLS = Counter("nestmtx_sdm_calls", "Smart Device Management API calls by command and "
                    "HTTP status (or `error` when no reply came)",
                    ["command", "status"], registry=None)
LOG_RECORDS_DROPPED = Counter("nestmtx_log_records_dropped", "Log records not streamed "
                              "because subscribers could not keep up", registry=None)
EVENTS_DROPPED = Counter("nestmtx_events_dropped", "Events a bus subscriber missed because "
                         "its queue was full", ["subscriber"], registry=None)
SOCKETS_CUT = Counter("nestmtx_sockets_cut", "Socket.IO clients disconnected because they "
                      "stopped reading their events", registry=None)
_PROCESS_WIDE = (EVENTS, HOOK_CALLS, TOKEN_REFRESHES, SDM_CALLS, LOG_RECORDS_DROPPED,
                 EVENTS_DROPPED, SOCKETS_CUT)


async def count_event(event: Event) -> None:
    """Bus subscriber: counts each event by domain and event name."""
    EVENTS.labels(event.domain, event.event).inc()


class Metrics:
    """One sidecar's `/metrics`: the process-wide counters plus its live gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        for collector in _PROCESS_WIDE:
            self.registry.register(collector)
        ProcessCollector(registry=self.registry)
        self._leases = Gauge("nestmtx_lease_held", "1 while this replica holds the lease",
                             ["lease"], registry=self.registry)

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge whose value is read from the running sidecar at scrape time."""
        Gauge(name, documentation, registry=self.registry).set_function(read)

    def lease(self, name: str, held: Callable[[], bool]) -> None:
        self._leases.labels(name).set_function(lambda: float(held()))

    async def endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
