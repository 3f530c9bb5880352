"""Holds a lease in a process of its own, so a test can SIGKILL the holder.

`python -m tests.lease_holder redis|postgresql URL NAME` prints `held` once its job runs.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from nestmtx_sidecar.config import Settings
from nestmtx_sidecar.storage.lease import Lease, PostgresLease, RedisLease
from nestmtx_sidecar.storage.store import Store


def lease_for(kind: str, url: str, name: str, **timing: float
              ) -> tuple[Lease, Callable[[], Awaitable[None]]]:
    """A lease with a client (connection pool) of its own, as a replica has, and its closer."""
    if kind == "redis":
        client = aioredis.from_url(url)
        return RedisLease(client, name, **timing), client.aclose
    store = Store(Settings(database_url=url).resolved_database_url)
    return PostgresLease(store.engine, name, **timing), store.close


async def main(kind: str, url: str, name: str) -> None:
    async def job() -> None:
        print("held", flush=True)
        await asyncio.Event().wait()

    lease, _ = lease_for(kind, url, name)
    await lease.run_while_held(job)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
