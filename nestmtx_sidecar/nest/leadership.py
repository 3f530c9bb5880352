"""Leadership of the Nest singletons: this replica leads while it holds the `nest` lease.

Token refresh, stream extension and device events run on the leader only. Each takes this
object in its constructor and asks `held`, as httpx's client asks its transport, instead of
holding a flag someone else sets.
"""

from __future__ import annotations

import functools

from ..storage.lease import Job, Lease


class Leadership:
    """`held` while the lease is held and its lead job runs; `run` orders the transitions."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    async def run(self, lead: Job, step_down: Job) -> None:
        """Until cancelled: each time the lease is taken, `lead` until it is lost, then
        `step_down` (with `held` already False), before the lease is given up."""
        await self.lease.run_while_held(functools.partial(self._term, lead, step_down))

    async def _term(self, lead: Job, step_down: Job) -> None:
        self._held = True
        try:
            await lead()
        finally:
            self._held = False
            await step_down()
