"""Helpers for tests that drive `nestmtx-sidecar serve` processes over HTTP only."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.google import FakeGoogle
from tests.services import SidecarProcess, wait_until


async def metric(replica: SidecarProcess, name: str, **labels: str) -> float:
    """One sample of the replica's /metrics (0 when absent)."""
    async with httpx.AsyncClient(base_url=replica.url) as client:
        text = (await client.get("/metrics")).text
    return next((s.value for family in text_string_to_metric_families(text)
                 for s in family.samples if s.name == name and s.labels == labels), 0.0)


async def enable_cameras(replica: SidecarProcess, google: FakeGoogle) -> list[str]:
    """Add an authorized credential, wait for the device sync, enable every camera as its
    device id (d1 -> path `d1`); returns the paths."""
    headers = {"Authorization": f"Bearer {await replica.login()}"}
    async with httpx.AsyncClient(base_url=replica.url, headers=headers) as client:
        reply = await client.post("/api/credentials", json={
            "description": "Home", "oauth_client_id": google.client_id,
            "oauth_client_secret": google.client_secret, "dac_project_id": "project-1",
            "refresh_token": google.issue_refresh_token()})
        assert reply.status_code == 201, reply.text
        expected = len(google.devices["project-1"])

        async def synced() -> bool:
            return (await client.get("/api/cameras")).json()["total"] == expected

        await wait_until(synced, 15)  # the lease holder refreshes the token, then syncs
        paths = []
        for item in (await client.get("/api/cameras")).json()["items"]:
            path = item["uid"].rsplit("/", 1)[1]
            reply = await client.put(f"/api/cameras/{item['id']}",
                                     json={"mtx_path": path, "is_enabled": True})
            assert reply.status_code == 200, reply.text
            paths.append(path)
    return paths


async def source(replica: SidecarProcess, path: str) -> httpx.Response:
    """What the demand hook asks: starts (or joins) the camera's Nest stream."""
    async with httpx.AsyncClient(base_url=replica.url, timeout=30) as client:
        return await client.get(f"/hooks/source/{path}",
                                headers={"Authorization": f"Bearer {replica.hook_secret}"})
