"""Hook event ids already delivered, so a retried or replayed hook call counts once.

The hook script retries a POST whose answer it did not get, and spools the event when it
gives up; either can repeat an event the sidecar already published. Each call carries an
`Idempotency-Key` (the spool file keeps it in its name), and the first claim wins. With
Redis the claims are shared by every replica; without it they live in this process.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

logger = logging.getLogger(__name__)

REMEMBER_SECONDS = 600  # longer than any retry or spool replay of the same call
REMEMBER_LOCALLY = 50_000
_REDIS_PREFIX = "nestmtx:hook-event:"


class DeliveredIds:
    def __init__(self, redis: Any = None) -> None:
        self._redis = redis
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()

    async def claim(self, event_id: str) -> bool:
        """True the first time an id is claimed (then deliver it), False afterwards."""
        if self._redis is not None:
            try:
                return bool(await self._redis.set(_REDIS_PREFIX + event_id, 1, nx=True,
                                                  ex=REMEMBER_SECONDS))
            except Exception as exc:  # a duplicate is better than a lost event
                logger.warning("cannot check hook event %s in Redis: %s", event_id, exc)
                return True
        if event_id in self._seen:
            return False
        self._seen[event_id] = None
        if len(self._seen) > REMEMBER_LOCALLY:
            self._seen.popitem(last=False)
        return True

    async def release(self, event_id: str) -> None:
        """Forget a claim whose delivery failed, so the retry is delivered."""
        if self._redis is not None:
            try:
                await self._redis.delete(_REDIS_PREFIX + event_id)
            except Exception as exc:
                logger.warning("cannot release hook event %s in Redis: %s", event_id, exc)
            return
        self._seen.pop(event_id, None)
