"""The singleton lease against real Redis and PostgreSQL: one holder, handover, expiry."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa

from nestmtx_sidecar.config import Settings
from nestmtx_sidecar.storage.lease import Lease, LocalLease, PostgresLease, RedisLease, make_lease
from nestmtx_sidecar.storage.store import Store
from tests.lease_holder import lease_for
from tests.services import ROOT, create_database

FAST = {"ttl": 3.0, "retry": 0.3}
MakeLease = Callable[..., Lease]


class Backend:
    """Leases of one name, each with a client (connection pool) of its own, like replicas."""

    def __init__(self, kind: str, url: str, stack: contextlib.AsyncExitStack) -> None:
        self.kind, self.url, self.name = kind, url, f"test-{uuid.uuid4().hex[:8]}"
        self._stack = stack

    def lease(self, **timing: float) -> Lease:
        lease, close = lease_for(self.kind, self.url, self.name, **timing)
        self._stack.push_async_callback(close)
        return lease

    async def break_holder(self) -> None:
        """What a lapsed lease looks like to its holder: its key or session is gone."""
        if self.kind == "redis":
            async with aioredis.from_url(self.url) as client:
                assert await client.delete(f"nestmtx:lease:{self.name}") == 1
            return
        store = Store(Settings(database_url=self.url).resolved_database_url)
        try:
            async with store.begin() as conn:
                killed = (await conn.execute(sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND granted"))).scalars().all()
            assert killed == [True]
        finally:
            await store.close()


@pytest.fixture(params=["redis", "postgresql"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
    else:
        url = await create_database(request.getfixturevalue("postgres_url"),
                                    f"lease{uuid.uuid4().hex}")
    async with contextlib.AsyncExitStack() as stack:
        yield Backend(request.param, url, stack)


class Runner:
    """Runs a lease with a job that reports when it starts and when it is stopped."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.started = asyncio.Event()
        self.stopped = asyncio.Event()
        self.task = asyncio.create_task(lease.run_while_held(self._job))

    async def _job(self) -> None:
        self.started.set()
        try:
            await asyncio.Event().wait()
        finally:
            self.stopped.set()

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def _first(*runners: Runner) -> Runner:
    """The runner whose job starts first."""
    waits = {asyncio.create_task(r.started.wait()): r for r in runners}
    try:
        async with asyncio.timeout(5):
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
    return waits[done.pop()]


async def test_one_holder_at_a_time_and_handover_on_shutdown(backend: Backend) -> None:
    a, b = Runner(backend.lease(**FAST)), Runner(backend.lease(**FAST))
    try:
        holder = await _first(a, b)
        standby = b if holder is a else a
        assert holder.lease.held and not standby.lease.held
        # A third contender is refused outright while the lease is held.
        assert not await backend.lease(**FAST)._acquire()
        assert not standby.started.is_set()

        await holder.stop()
        assert holder.stopped.is_set()
        # Released on the way out, so the standby takes over on its next try, not after a TTL.
        await asyncio.wait_for(standby.started.wait(), FAST["retry"] + 2)
        assert standby.lease.held and not holder.lease.held
    finally:
        await a.stop()
        await b.stop()


async def test_holder_that_loses_its_lease_stops_its_job(backend: Backend) -> None:
    runner = Runner(backend.lease(**FAST))
    try:
        await asyncio.wait_for(runner.started.wait(), 5)
        await backend.break_holder()
        # The next renewal (every ttl/3) finds the lease gone and cancels the job.
        await asyncio.wait_for(runner.stopped.wait(), FAST["ttl"])
        assert not runner.lease.held
    finally:
        await runner.stop()


async def test_sigkilled_holder_is_replaced_within_15_seconds(backend: Backend) -> None:
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.lease_holder", backend.kind, backend.url, backend.name,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE)
    standby: Runner | None = None
    try:
        assert holder.stdout is not None
        assert await asyncio.wait_for(holder.stdout.readline(), 20) == b"held\n"
        standby = Runner(backend.lease())  # the production timings
        assert not await backend.lease()._acquire()
        holder.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        await holder.wait()
        await asyncio.wait_for(standby.started.wait(), 15)
        assert time.monotonic() - killed_at < 15
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
        if standby is not None:
            await standby.stop()


async def test_sqlite_deployment_always_holds(tmp_path: Path) -> None:
    store = Store(Settings(data_dir=tmp_path).resolved_database_url)
    try:
        lease = make_lease("nest", store, None)
        assert isinstance(lease, LocalLease)
        runner = Runner(lease)
        await asyncio.wait_for(runner.started.wait(), 1)
        assert lease.held
        await runner.stop()
    finally:
        await store.close()


async def test_make_lease_prefers_the_database_then_redis(postgres_url: str,
                                                           redis_url: str,
                                                           tmp_path: Path) -> None:
    client = aioredis.from_url(redis_url)
    postgres = Store(Settings(database_url=postgres_url).resolved_database_url)
    sqlite = Store(Settings(data_dir=tmp_path).resolved_database_url)
    try:
        assert isinstance(make_lease("nest", postgres, client), PostgresLease)
        assert isinstance(make_lease("nest", sqlite, client), RedisLease)
    finally:
        await client.aclose()
        await postgres.close()
        await sqlite.close()
