"""Persistent cameras are applied to MediaMTX live through its control API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nestmtx_sidecar.mediamtx.config import persistent_path
from tests.conftest import make_settings, serve_in_loop
from tests.mediamtx import add_camera
from tests.services import free_port, serving


class FakeMediaMtxApi:
    """MediaMTX's /v3/config/paths add, patch and delete, with its status codes."""

    def __init__(self) -> None:
        self.paths: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.changed = asyncio.Event()

    async def handle(self, request: Request) -> Response:
        action, name = request.path_params["action"], request.path_params["name"]
        self.calls.append((action, name))
        self.changed.set()
        if action == "add":
            if name in self.paths:
                return JSONResponse({"error": "path already exists"}, status_code=400)
            self.paths[name] = await request.json()
        elif action == "patch":
            if name not in self.paths:
                return JSONResponse({"error": "path not found"}, status_code=404)
            self.paths[name].update(await request.json())
        elif self.paths.pop(name, None) is None:
            return JSONResponse({"error": "path not found"}, status_code=404)
        return Response(status_code=200)

    async def settle(self, count: int) -> None:
        while len(self.calls) < count:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 5)

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v3/config/paths/{action}/{name:path}", self.handle,
                                       methods=["POST", "PATCH", "DELETE"])])


@contextlib.asynccontextmanager
async def fake_api() -> AsyncIterator[tuple[FakeMediaMtxApi, str]]:
    fake = FakeMediaMtxApi()
    port = free_port()
    async with serving(uvicorn.Config(fake.app, host="127.0.0.1", port=port, log_config=None,
                                      lifespan="off")):
        yield fake, f"http://127.0.0.1:{port}"


async def update_camera(url: str, token: str, camera_id: int, **values: Any) -> None:
    async with httpx.AsyncClient(base_url=url) as client:
        reply = await client.patch(f"/api/cameras/{camera_id}", json=values,
                                   headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code == 200, reply.text


async def test_persistent_paths_follow_camera_changes_without_a_mediamtx_restart(
        tmp_path: Path) -> None:
    async with fake_api() as (fake, api_url):
        settings = make_settings(tmp_path, mediamtx_api_url=api_url)
        async with serve_in_loop(settings) as running:
            camera = await add_camera(running.sidecar.store, "porch")
            token = await running.login()

            await update_camera(running.url, token, camera, is_persistent=True)
            await fake.settle(1)
            assert fake.paths == {"porch": persistent_path()}

            await update_camera(running.url, token, camera, mtx_path="porch-hd")
            await fake.settle(3)
            assert fake.calls[1:] == [("delete", "porch"), ("add", "porch-hd")]
            assert set(fake.paths) == {"porch-hd"}

            await update_camera(running.url, token, camera, is_enabled=False)
            await fake.settle(4)
            assert fake.paths == {}


async def test_start_up_applies_existing_persistent_cameras_even_when_present(
        tmp_path: Path) -> None:
    async with fake_api() as (fake, api_url):
        settings = make_settings(tmp_path, mediamtx_api_url=api_url)
        async with serve_in_loop(make_settings(tmp_path)) as first:  # no API: nothing applied
            await add_camera(first.sidecar.store, "garden", persistent=True)
            await add_camera(first.sidecar.store, "hall", persistent=False)
        fake.paths["garden"] = {"runOnInit": "stale"}
        async with serve_in_loop(settings):
            await fake.settle(2)
        assert fake.calls == [("add", "garden"), ("patch", "garden")]
        assert fake.paths == {"garden": persistent_path()}


async def test_an_unreachable_mediamtx_api_is_logged_not_fatal(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, mediamtx_api_url=f"http://127.0.0.1:{free_port()}")
    async with serve_in_loop(settings) as running:
        camera = await add_camera(running.sidecar.store, "shed")
        token = await running.login()
        await update_camera(running.url, token, camera, is_persistent=True)
        logged = [entry["msg"] for entry in running.sidecar.log_stream.recent]
        assert any("MediaMTX API unreachable (add shed)" in msg for msg in logged)
