"""SDM events already emitted, in the shared database: each is emitted once, whatever
Pub/Sub redelivers, whichever replica pulls it, across restarts.

The key's insert comes before the publish and the one that wins emits. Rows are kept a
little longer than NESTMTX_EVENT_MAX_AGE: a redelivery after that is stale, dropped anyway.
"""

from __future__ import annotations

import datetime as dt
import time

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from ...storage.store import Store, nest_events_table, utcnow

KEEP_BEYOND_MAX_AGE = 600.0  # seconds
KEEP_WITHOUT_MAX_AGE = 7 * 86400.0  # Pub/Sub's longest retention of an unacknowledged message
PRUNE_EVERY = 60.0


class EventLedger:
    def __init__(self, store: Store, max_age: float) -> None:
        self._store = store
        self._keep = dt.timedelta(seconds=max_age + KEEP_BEYOND_MAX_AGE if max_age
                                  else KEEP_WITHOUT_MAX_AGE)
        self._pruned = 0.0

    async def claim(self, key: str) -> bool:
        """True for the first claim of a key anywhere (emit it), False for every later one."""
        await self._prune()
        try:
            async with self._store.begin() as conn:
                await conn.execute(nest_events_table.insert().values(key=key, received_at=utcnow()))
        except IntegrityError:
            return False
        return True

    async def _prune(self) -> None:
        if time.monotonic() - self._pruned < PRUNE_EVERY:
            return
        self._pruned = time.monotonic()
        async with self._store.begin() as conn:
            await conn.execute(sa.delete(nest_events_table).where(
                nest_events_table.c.received_at < utcnow() - self._keep))
