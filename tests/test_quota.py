"""The SDM quota limiter: sliding windows per credential and per device command."""

from __future__ import annotations

import asyncio
import time

import pytest

from nestmtx_sidecar.errors import QuotaExhausted
from nestmtx_sidecar.nest.google.quota import QuotaLimiter, Quotas


def limiter(window: float = 1.0) -> QuotaLimiter:
    return QuotaLimiter(Quotas(window=window, commands_per_user=2, commands_per_device=1))


async def test_a_slot_counts_from_the_answer_not_from_the_request() -> None:
    quota = limiter()
    answered = await quota.acquire(1, "cam", "Generate", time.monotonic() + 5)
    await asyncio.sleep(0.4)  # Google took its time to answer
    answered()
    asked = time.monotonic()
    (await quota.acquire(1, "cam", "Generate", time.monotonic() + 5))()
    assert time.monotonic() - asked >= quota.quotas.window  # a full window after the answer


async def test_devices_share_the_credential_quota_but_not_each_other_s() -> None:
    quota = limiter()
    deadline = time.monotonic() + 0.2
    (await quota.acquire(1, "cam-a", "Generate", deadline))()
    (await quota.acquire(1, "cam-b", "Generate", deadline))()  # own device quota: no wait
    with pytest.raises(QuotaExhausted) as refused:
        await quota.acquire(1, "cam-c", "Generate", deadline)  # credential: 2 per window
    assert refused.value.retry_after is not None and refused.value.retry_after > 0.2
    (await quota.acquire(2, "cam-a", "Generate", deadline))()  # another credential: free
