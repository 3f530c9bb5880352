"""Leadership of the Nest singletons on a real lease (Redis, PostgreSQL): `held` while
leading, not while stepping down, and a step-down done before another replica leads."""

from __future__ import annotations

import asyncio

from nestmtx_sidecar.nest.leadership import Leadership
from tests.test_lease import FAST, Backend, backend

__all__ = ["backend"]  # the fixture, shared with test_lease


class Replica:
    """One replica's leadership, recording what its parts would see."""

    def __init__(self, leadership: Leadership, step_down_gate: asyncio.Event | None = None
                 ) -> None:
        self.leadership = leadership
        self.seen: list[tuple[str, bool]] = []  # (phase, held then)
        self.leading = asyncio.Event()
        self.stepping_down = asyncio.Event()
        self.stepped_down = asyncio.Event()
        self._gate = step_down_gate
        self.task = asyncio.create_task(leadership.run(self._lead, self._step_down))

    async def _lead(self) -> None:
        self.seen.append(("lead", self.leadership.held))
        self.leading.set()
        await asyncio.Event().wait()

    async def _step_down(self) -> None:
        self.leading.clear()
        self.seen.append(("step down", self.leadership.held))
        self.stepping_down.set()
        if self._gate is not None:
            await self._gate.wait()
        self.stepped_down.set()

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def test_a_lost_lease_steps_down_unheld_and_leads_again_once_retaken(
        backend: Backend) -> None:
    replica = Replica(Leadership(backend.lease(**FAST)))
    try:
        await asyncio.wait_for(replica.leading.wait(), 5)
        assert replica.leadership.held
        await backend.break_holder()
        await asyncio.wait_for(replica.stepped_down.wait(), FAST["ttl"])
        await asyncio.wait_for(replica.leading.wait(), 5)  # the lease was free again
        assert replica.seen == [("lead", True), ("step down", False), ("lead", True)]
    finally:
        await replica.stop()
    assert not replica.leadership.held


async def test_the_next_replica_leads_only_after_the_step_down(backend: Backend) -> None:
    gate = asyncio.Event()
    first = Replica(Leadership(backend.lease(**FAST)), gate)
    await asyncio.wait_for(first.leading.wait(), 5)
    second = Replica(Leadership(backend.lease(**FAST)))
    try:
        stopping = asyncio.create_task(first.stop())  # shutdown: the lease is given up after
        await asyncio.wait_for(first.stepping_down.wait(), 5)
        # Several of the standby's tries (one every `retry`) while the step-down is not done:
        # a non-event, so it can only be waited out.
        await asyncio.sleep(3 * FAST["retry"])
        assert not second.leadership.held and not second.seen
        gate.set()
        await stopping
        await asyncio.wait_for(second.leading.wait(), 5)
        assert first.seen == [("lead", True), ("step down", False)]
        assert second.seen == [("lead", True)]
    finally:
        gate.set()
        await first.stop()
        await second.stop()

