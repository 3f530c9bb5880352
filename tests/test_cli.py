"""`nestmtx-sidecar serve` as a real process: defaults, generated secrets, config errors."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import socketio

from nestmtx_sidecar.security import new_token
from tests.services import free_port, log_in, wait_for_port

SERVE = ([shutil.which("nestmtx-sidecar")] if shutil.which("nestmtx-sidecar")
         else [sys.executable, "-m", "nestmtx_sidecar"])
GENERATED = re.compile(r"Created user 'admin' with password (\S+) ")


def clean_env(**values: str) -> dict[str, str]:
    """The environment without any NESTMTX_* setting of the developer's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NESTMTX_")}
    return {**env, **values}


@pytest.mark.parametrize("env,config,key", [
    ({"NESTMTX_PORT": "http"}, None, "NESTMTX_PORT"),
    ({"NESTMTX_DATABASE_URL": "mysql://db/x"}, None, "NESTMTX_DATABASE_URL"),
    ({"NESTMTX_APP_KEY": "short"}, None, "NESTMTX_APP_KEY"),
    ({"NESTMTX_ADMIN_PASSWORD": "short"}, None, "NESTMTX_ADMIN_PASSWORD"),
    ({}, "token_ttl: 5\n", "NESTMTX_TOKEN_TTL"),
    ({}, "log_level: [info]\n", "NESTMTX_LOG_LEVEL"),
    ({}, "portt: 2000\n", "unknown setting 'portt'"),
])
def test_bad_config_stops_serve_with_one_line(tmp_path: Path, env: dict[str, str],
                                              config: str | None, key: str) -> None:
    args = [*SERVE, "serve"]
    if config is not None:
        (tmp_path / "sidecar.yaml").write_text(config)
        args += ["--config", str(tmp_path / "sidecar.yaml")]
    done = subprocess.run(args, env=clean_env(**env), cwd=tmp_path, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("nestmtx-sidecar: configuration error: ") and key in lines[0]
    assert not (tmp_path / "data").exists()


def test_unusable_data_dir_stops_serve_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file where the data dir should be")
    done = subprocess.run([*SERVE, "serve"], env=clean_env(NESTMTX_PORT=str(free_port())),
                          cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "NESTMTX_DATA_DIR" in done.stderr


def test_unreachable_database_stops_serve_with_one_line_and_no_password(tmp_path: Path) -> None:
    url = f"postgresql://nestmtx:s3cr3t-pw@127.0.0.1:{free_port()}/nestmtx"
    done = subprocess.run([*SERVE, "serve"], env=clean_env(NESTMTX_DATABASE_URL=url),
                          cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("nestmtx-sidecar: cannot reach the database: ")
    assert "s3cr3t-pw" not in done.stderr


@contextlib.asynccontextmanager
async def serving(cwd: Path, env: dict[str, str], log_path: Path) -> AsyncIterator[str]:
    """`nestmtx-sidecar serve` in cwd, output to log_path; yields its URL once it listens."""
    port = int(env["NESTMTX_PORT"])
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(*SERVE, "serve", env=env, cwd=cwd,
                                                    stdout=log, stderr=subprocess.STDOUT)
    try:
        await asyncio.to_thread(wait_for_port, port, 30.0)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 15)


async def test_first_start_on_defaults_generates_secrets_and_a_password_shown_once(
        tmp_path: Path) -> None:
    env = clean_env(NESTMTX_PORT=str(free_port()), NESTMTX_LOG_LEVEL="debug")
    first_log = tmp_path / "first.log"
    async with serving(tmp_path, env, first_log) as url:
        password = _generated_password(first_log)
        response = await log_in(url, password=password)
        assert response.status_code == 201
        bearer = response.json()["bearer"]
        logs = await _replayed_logs(url, bearer)
        # Debug level logs SQL and websocket frames: still no password, hash or bearer.
        for secret in (password, "scrypt$", bearer):
            assert all(secret not in entry["msg"] for entry in logs)
            assert secret not in first_log.read_text().replace(
                f"with password {password} ", "")
    data = tmp_path / "data"
    assert sorted(p.name for p in data.iterdir() if not p.name.startswith("sidecar.db")) == [
        "app_key", "hook_secret"]
    assert (data / "sidecar.db").is_file()
    for name in ("app_key", "hook_secret"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600
    assert first_log.read_text().count(password) == 1

    # A second start keeps the user, its password and the secrets; nothing is printed again.
    app_key = (data / "app_key").read_text()
    second_log = tmp_path / "second.log"
    async with serving(tmp_path, env, second_log) as url:
        assert (await log_in(url, password=password)).status_code == 201
    assert "Created user" not in second_log.read_text()
    assert (data / "app_key").read_text() == app_key


def _generated_password(log: Path) -> str:
    """Printed during start-up, before uvicorn opens its port."""
    match = GENERATED.search(log.read_text())
    assert match, log.read_text()
    return match.group(1)


async def _replayed_logs(url: str, token: str) -> list[dict]:
    """The last log entries a new socket gets on connect (everything since start-up)."""
    client = socketio.AsyncClient(reconnection=False)
    entries: list[dict] = []
    ready = asyncio.Event()

    def on_log(entry: dict) -> None:
        entries.append(entry)
        if "ready" in entry["msg"]:
            ready.set()

    client.on("log", on_log)
    await client.connect(url, auth={"token": token}, transports=["websocket"])
    try:
        await asyncio.wait_for(ready.wait(), 10)
    finally:
        await client.disconnect()
    return entries


def test_serve_collects_rarely_and_never_rescans_start_up_objects() -> None:
    from nestmtx_sidecar.cli import GC_YOUNG_THRESHOLD, tune_gc

    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() > 10_000  # every module and object start-up made
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_tokens_never_look_like_a_command_line_option() -> None:
    # Bare urlsafe base64 starts with "-" once in 64: `events --token <it>` would fail.
    tokens = {new_token() for _ in range(2000)}
    assert len(tokens) == 2000
    assert all(t.startswith("nmx_") and len(t) == 47 for t in tokens)
