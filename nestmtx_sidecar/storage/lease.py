"""Singleton lease: at most one replica runs a job at a time, and a dead holder's lease lapses.

Backends: a PostgreSQL session advisory lock (released by the server when the holder's
connection dies), a Redis key set with NX and a TTL that the holder renews, or, on SQLite
(one node by construction), a lease that is always held.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
import sqlalchemy as sa
from redis.asyncio.lock import Lock
from redis.exceptions import LockError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .store import Store

logger = logging.getLogger(__name__)

# A dead holder's Redis lease lapses after TTL; standbys try every RETRY, so another replica
# takes over within TTL + RETRY (11 s), inside the 15 s the deployment promises.
TTL = 9.0
RETRY = 2.0

Job = Callable[[], Awaitable[Any]]


class Lease(abc.ABC):
    """Runs a job only while this replica holds the named lease; cancels it when lost."""

    def __init__(self, name: str, ttl: float = TTL, retry: float = RETRY) -> None:
        self.name = name
        self.ttl = ttl
        self.retry = retry
        self.held = False
        self.holder_id = uuid.uuid4().hex

    async def run_while_held(self, job: Job) -> None:
        """Acquire, run `job` while renewing, start over when the lease is lost; until cancelled.

        The holder checks its lease every ttl/3 with a ttl/3 timeout, so it stops the job before
        the lease can lapse and be taken by another replica.
        """
        while True:
            if not await self._attempt("acquire", self._acquire):
                await asyncio.sleep(self.retry)
                continue
            self.held = True
            logger.info("holding lease %r; running its job here", self.name)
            task = asyncio.create_task(job())
            try:
                while not task.done():
                    await asyncio.wait({task}, timeout=self.ttl / 3)
                    if not task.done() and not await self._attempt("renew", self._renew):
                        logger.warning("lost lease %r; stopping its job here", self.name)
                        break
                if task.done() and not task.cancelled() and task.exception() is not None:
                    logger.error("job of lease %r failed", self.name, exc_info=task.exception())
            finally:
                self.held = False
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                # Also on shutdown (cancelled): hand over now instead of after the TTL.
                await asyncio.shield(self._attempt("release", self._release))
            await asyncio.sleep(self.retry)

    async def _attempt(self, action: str, call: Callable[[], Awaitable[bool]]) -> bool:
        """A backend call bounded by ttl/3; an unreachable backend means "not held"."""
        try:
            async with asyncio.timeout(self.ttl / 3):
                return await call()
        except (OSError, TimeoutError, aioredis.RedisError, sa.exc.SQLAlchemyError) as exc:
            logger.warning("lease %r: %s failed: %s", self.name, action, type(exc).__name__)
            return False

    @abc.abstractmethod
    async def _acquire(self) -> bool:
        """Take the lease if free; True when this replica now holds it."""

    @abc.abstractmethod
    async def _renew(self) -> bool:
        """True while still held; extends the expiry where the backend has one."""

    @abc.abstractmethod
    async def _release(self) -> bool:
        """Give the lease up (best effort)."""


class LocalLease(Lease):
    """One node on SQLite: nobody else can hold it."""

    async def _acquire(self) -> bool:
        return True

    async def _renew(self) -> bool:
        return True

    async def _release(self) -> bool:
        return True


class RedisLease(Lease):
    """`SET key token NX PX ttl`, renewed by the holder (redis-py's token-checked Lock)."""

    def __init__(self, client: aioredis.Redis, name: str, ttl: float = TTL,
                 retry: float = RETRY) -> None:
        super().__init__(name, ttl, retry)
        # Not thread-local: the token must survive being used from different tasks.
        self._lock = Lock(client, f"nestmtx:lease:{name}", timeout=ttl, blocking=False,
                          thread_local=False)

    async def _acquire(self) -> bool:
        return bool(await self._lock.acquire(token=self.holder_id))

    async def _renew(self) -> bool:
        return await _held(self._lock.reacquire())

    async def _release(self) -> bool:
        return await _held(self._lock.release())


class PostgresLease(Lease):
    """A session advisory lock held on a dedicated connection.

    The server releases it when that connection ends: at once when the holder's process dies,
    and after the TCP keepalive/user timeouts set below when its host goes silent.
    """

    def __init__(self, engine: AsyncEngine, name: str, ttl: float = TTL,
                 retry: float = RETRY) -> None:
        super().__init__(name, ttl, retry)
        self._engine = engine
        self._key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(),
                                   "big", signed=True)
        self._conn: AsyncConnection | None = None

    async def _acquire(self) -> bool:
        conn = await self._engine.connect()
        try:
            # Autocommit: a session lock needs no transaction, and an idle open one would
            # hold back vacuum for as long as the lease is held.
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            lapse = int(self.ttl * 1000)
            await conn.execute(sa.text(
                "SELECT set_config('tcp_keepalives_idle', '3', false), "
                "set_config('tcp_keepalives_interval', '1', false), "
                "set_config('tcp_keepalives_count', '3', false), "
                "set_config('tcp_user_timeout', :lapse, false)"), {"lapse": str(lapse)})
            got = (await conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"),
                                      {"key": self._key})).scalar_one()
        except BaseException:
            await _discard(conn)
            raise
        if not got:
            await conn.close()
            return False
        self._conn = conn
        return True

    async def _renew(self) -> bool:
        if self._conn is None:
            return False
        try:
            await self._conn.execute(sa.text("SELECT 1"))
        except BaseException:
            await self._drop()
            raise
        return True

    async def _release(self) -> bool:
        if self._conn is None:
            return False
        try:
            await self._conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"),
                                     {"key": self._key})
        finally:
            await self._drop()
        return True

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await _discard(conn)


async def _discard(conn: AsyncConnection) -> None:
    """Close a connection that may be broken, never returning a dead one to the pool."""
    try:
        await conn.invalidate()
    except Exception:
        logger.debug("closing a broken lease connection failed", exc_info=True)
    await conn.close()


def make_lease(name: str, store: Store, redis_client: aioredis.Redis | None) -> Lease:
    """The lease the deployment supports: PostgreSQL's, else Redis's, else local (SQLite)."""
    if store.engine.dialect.name == "postgresql":
        return PostgresLease(store.engine, name)
    if redis_client is not None:
        return RedisLease(redis_client, name)
    return LocalLease(name)


async def _held(operation: Awaitable[Any]) -> bool:
    """False when redis-py says the lock is no longer ours (expired or taken over)."""
    try:
        await operation
    except LockError:
        return False
    return True
