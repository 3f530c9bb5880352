"""What a failed log-in costs: a warn line (repeats summarised) and, per client address,
a lockout that grows after 10 failures in a row.

Both are bounded: an attacker rotating addresses or usernames pushes the oldest entries
out instead of growing memory.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import TooManyRequests

logger = logging.getLogger(__name__)

FAILURES_BEFORE_LOCKOUT = 10
FIRST_LOCKOUT = 30.0  # seconds; doubles with each further failure
MAX_LOCKOUT = 15 * 60.0
MAX_ADDRESSES = 10_000
SUMMARY_WINDOW = 60.0
MAX_SUMMARIES = 1_000


@dataclass
class _Address:
    failures: int = 0  # in a row, the last one at `last`
    in_flight: int = 0  # attempts admitted and still being checked
    locked_until: float = 0.0
    last: float = 0.0


class LoginThrottle:
    """Per client address: after `limit` failures in a row, refuse it for a while.

    The lockout starts at FIRST_LOCKOUT and doubles with each failure after it, up to
    MAX_LOCKOUT; a success resets the address, and so do MAX_LOCKOUT quiet seconds after
    its last failure and lockout. Attempts still being checked count against the limit, so
    a burst of parallel guesses gets no more than `limit` password checks either.
    """

    def __init__(self, limit: int = FAILURES_BEFORE_LOCKOUT, first: float = FIRST_LOCKOUT,
                 ceiling: float = MAX_LOCKOUT, max_addresses: int = MAX_ADDRESSES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.first, self.ceiling = limit, first, ceiling
        self.max_addresses = max_addresses
        self.clock = clock
        self._addresses: collections.OrderedDict[str, _Address] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._addresses)

    def admit(self, address: str) -> None:
        """Let one attempt from `address` be checked, or raise TooManyRequests."""
        now = self.clock()
        self._forget_stale(now)
        entry = self._addresses.get(address)
        if entry is None:
            entry = self._addresses[address] = _Address(last=now)
            if len(self._addresses) > self.max_addresses:
                self._addresses.popitem(last=False)
        if now < entry.locked_until:
            raise TooManyRequests("Too many failed log-ins from this address",
                                  math.ceil(entry.locked_until - now))
        # Parallel guesses: up to the failures left before the lockout, one once past it.
        if entry.in_flight >= max(self.limit - entry.failures, 1):
            raise TooManyRequests("Too many log-ins in progress from this address", 1)
        entry.in_flight += 1

    def settle(self, address: str, accepted: bool | None) -> None:
        """The end of an admitted attempt: accepted, refused, or None (no verdict)."""
        entry = self._addresses.get(address)
        if entry is None:  # pushed out meanwhile
            return
        entry.in_flight = max(entry.in_flight - 1, 0)
        if accepted:
            entry.failures, entry.locked_until = 0, 0.0
        elif accepted is False:
            now = self.clock()
            entry.failures += 1
            entry.last = now
            self._addresses.move_to_end(address)
            if entry.failures >= self.limit:
                doublings = min(entry.failures - self.limit, 32)  # 2**1100 is no float
                lockout = min(self.first * 2 ** doublings, self.ceiling)
                entry.locked_until = now + lockout
                logger.warning("log-ins from %s refused for %d s after %d failed log-ins in a row",
                               address, lockout, entry.failures)

    def _forget_stale(self, now: float) -> None:
        """Drop addresses quiet for `ceiling` since their last failure and lockout, oldest
        first (they are kept in the order of their last failure)."""
        while self._addresses:
            address, entry = next(iter(self._addresses.items()))
            if entry.in_flight or now - max(entry.last, entry.locked_until) < self.ceiling:
                return
            del self._addresses[address]


@dataclass
class _Window:
    opened: float
    timer: asyncio.TimerHandle
    repeats: int = 0


class FailedLoginLog:
    """A warn line per failed log-in, with repeats summarised so a flood cannot flood the log.

    The first failure of a (username, address) is logged at once; further ones in the next
    `window` seconds are counted, and one line reports them when the window closes.
    """

    def __init__(self, window: float = SUMMARY_WINDOW, max_keys: int = MAX_SUMMARIES) -> None:
        self.window = window
        self.max_keys = max_keys
        self._open: collections.OrderedDict[tuple[str, str], _Window] = \
            collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def record(self, username: str, address: str) -> None:
        key = (username, address)
        window = self._open.get(key)
        if window is not None:
            window.repeats += 1
            return
        logger.warning("failed log-in for %r from %s", username, address)
        if len(self._open) >= self.max_keys:
            self._close(next(iter(self._open)))
        loop = asyncio.get_running_loop()
        self._open[key] = _Window(loop.time(), loop.call_later(self.window, self._close, key))

    def close(self) -> None:
        """Report what is still counted and cancel the timers (at stop)."""
        for key in list(self._open):
            self._close(key)

    def _close(self, key: tuple[str, str]) -> None:
        window = self._open.pop(key, None)
        if window is None:
            return
        window.timer.cancel()
        if window.repeats:
            elapsed = asyncio.get_running_loop().time() - window.opened
            logger.warning("%d more failed log-ins for %r from %s in the last %d s",
                           window.repeats, key[0], key[1], max(round(elapsed), 1))


class LoginGuard:
    """The throttle and the failure log, as one log-in attempt meets them."""

    def __init__(self, throttle: LoginThrottle | None = None,
                 log: FailedLoginLog | None = None) -> None:
        self.throttle = throttle or LoginThrottle()
        self.log = log or FailedLoginLog()

    def admit(self, username: str, address: str) -> None:
        try:
            self.throttle.admit(address)
        except TooManyRequests:
            self.log.record(username, address)
            raise

    def settle(self, username: str, address: str, accepted: bool | None) -> None:
        self.throttle.settle(address, accepted)
        if accepted is False:
            self.log.record(username, address)

    def close(self) -> None:
        self.log.close()
