"""Google's SDM quotas, kept on our side: a call waits for a free slot or fails fast."""

from __future__ import annotations

import asyncio
import bisect
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass

from ...errors import QuotaExhausted


@dataclass(frozen=True)
class Quotas:
    """Sandbox quotas from Google's Device Access docs (per user = per credential)."""

    window: float = 60.0
    commands_per_user: int = 10
    commands_per_device: int = 5  # for each command name
    lists_per_user: int = 5

    @property
    def slack(self) -> float:
        # A margin for clock differences between us and Google.
        return self.window / 20


class _Window:
    """Times of the calls made in the last window, in order."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self.times: list[float] = []

    def wait(self, now: float) -> float:
        stale = bisect.bisect_right(self.times, now - self.window)
        del self.times[:stale]
        if len(self.times) < self.limit:
            return 0.0
        return self.times[-self.limit] + self.window - now

    def restamp(self, old: float, new: float) -> None:
        index = bisect.bisect_left(self.times, old)
        if index < len(self.times) and self.times[index] == old:
            del self.times[index]
        bisect.insort(self.times, new)


class QuotaLimiter:
    """Sliding-window limits per credential and per (device, command).

    One lock per credential serialises its callers, so stamps are recorded in time order and
    a waiting call never lets a later one overtake it into the same slot.
    """

    def __init__(self, quotas: Quotas | None = None) -> None:
        self.quotas = quotas or Quotas()
        self._windows: dict[tuple[object, ...], _Window] = {}
        self._locks: collections.defaultdict[int, asyncio.Lock] = collections.defaultdict(
            asyncio.Lock)

    async def acquire(self, credential_id: int, device: str | None, command: str,
                      deadline: float) -> Callable[[], None]:
        """Take a slot for one call, waiting at most until `deadline` (time.monotonic()).

        Call the returned function when Google's answer (or failure) is in: the slot then
        counts from that moment, which Google has certainly seen the call by, however long
        the request took to reach it.
        """
        q = self.quotas
        window = q.window + q.slack
        if device is None:
            keys = [((credential_id, "list"), q.lists_per_user)]
        else:
            keys = [((credential_id, "command"), q.commands_per_user),
                    ((credential_id, device, command), q.commands_per_device)]
        windows = [self._windows.setdefault(key, _Window(limit, window)) for key, limit in keys]
        lock = self._locks[credential_id]
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await lock.acquire()
        except TimeoutError:
            raise QuotaExhausted(None) from None
        try:
            now = time.monotonic()
            wait = max(w.wait(now) for w in windows)
            if now + wait > deadline:
                raise QuotaExhausted(wait)
            if wait > 0:
                await asyncio.sleep(wait)
            stamp = time.monotonic()
            for w in windows:
                w.restamp(stamp, stamp)
        finally:
            lock.release()

        def answered() -> None:
            now = time.monotonic()
            for w in windows:
                w.restamp(stamp, now)

        return answered
