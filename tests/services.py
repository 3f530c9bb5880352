"""Real external services for tests: PostgreSQL, Redis, binaries, and the sidecar itself.

A missing service skips its tests with one line saying what to install, except under CI
(`CI=true`), where it fails them: nothing is skipped where it counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(available: bool, what: str, install: str) -> None:
    """Skip (locally) or fail (under CI) when a system service or tool is missing."""
    if available:
        return
    message = f"{what} is not available: install it ({install})"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_binary(name: str, install: str) -> str:
    path = shutil.which(name)
    require(path is not None, name, install)
    assert path is not None
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None
                  ) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _postgres_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a loopback port; yields its postgresql:// URL."""
    initdb, postgres = _postgres_bin("initdb"), _postgres_bin("postgres")
    require(initdb is not None and postgres is not None, "PostgreSQL server",
            "apt-get install postgresql")
    assert initdb and postgres
    workdir = Path(tempfile.mkdtemp(prefix="nestmtx-pg-"))
    # PostgreSQL refuses to run as root; use its own system user when we are root.
    as_user: list[str] = []
    if os.geteuid() == 0:
        require(shutil.which("runuser") is not None, "runuser", "apt-get install util-linux")
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(workdir, "postgres")
    data = workdir / "data"
    subprocess.run([*as_user, initdb, "-D", str(data), "-U", "postgres", "--auth=trust",
                    "-E", "UTF8"], check=True, capture_output=True)
    port = free_port()
    proc = subprocess.Popen(
        [*as_user, postgres, "-D", str(data), "-p", str(port), "-k", str(workdir),
         "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc=proc)
        _wait_until_accepting(port, proc)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        _stop(proc, signal.SIGINT)
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_until_accepting(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0
                          ) -> None:
    """PostgreSQL listens before it accepts: until then it answers "the database system is
    starting up", so wait for pg_isready's yes, not just for the port."""
    pg_isready = _postgres_bin("pg_isready")
    require(pg_isready is not None, "pg_isready", "apt-get install postgresql-client")
    assert pg_isready
    deadline = time.monotonic() + timeout
    while subprocess.run([pg_isready, "-q", "-h", "127.0.0.1", "-p", str(port)]).returncode:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"PostgreSQL on port {port} did not accept connections")
        time.sleep(0.1)


async def create_database(server_url: str, name: str) -> str:
    """A fresh database on the server, so each test starts empty."""
    import asyncpg

    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return server_url.rsplit("/", 1)[0] + "/" + name


@contextlib.contextmanager
def redis_server(port: int | None = None, persist_in: Path | None = None) -> Iterator[str]:
    """A Redis server on a loopback port; with `persist_in`, one that keeps its data there
    (append-only file, synced per write) when restarted on the same port."""
    binary = require_binary("redis-server", "apt-get install redis-server")
    port = port or free_port()
    persistence = ["--appendonly", "no"] if persist_in is None else [
        "--appendonly", "yes", "--appendfsync", "always", "--dir", str(persist_in)]
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", *persistence],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc=proc)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(proc)


@dataclass
class SidecarProcess:
    """A real `nestmtx-sidecar serve` process on a loopback port."""

    url: str
    port: int
    data_dir: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    log_path: Path
    admin_username: str = "admin"
    admin_password: str = "correct horse battery"
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def hook_secret(self) -> str:
        return self.env.get("NESTMTX_HOOK_SECRET") or (self.data_dir / "hook_secret").read_text()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def login(self) -> str:
        async with httpx.AsyncClient(base_url=self.url) as client:
            reply = await client.post("/api/auth", json={
                "username": self.admin_username, "password": self.admin_password})
            reply.raise_for_status()
            return reply.json()["bearer"]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        _stop(self.proc, sig)


def start_sidecar(tmp_path: Path, env: Mapping[str, str] | None = None,
                  port: int | None = None) -> SidecarProcess:
    port = port or free_port()
    data_dir = tmp_path / f"data-{port}"
    full_env = {
        **os.environ,
        "NESTMTX_HOST": "127.0.0.1",
        "NESTMTX_PORT": str(port),
        "NESTMTX_DATA_DIR": str(data_dir),
        "NESTMTX_ADMIN_PASSWORD": "correct horse battery",
        "NESTMTX_LOG_LEVEL": "debug",
        **(env or {}),
    }
    log_path = tmp_path / f"sidecar-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "nestmtx_sidecar", "serve"], env=full_env,
                                stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    sidecar = SidecarProcess(f"http://127.0.0.1:{port}", port, data_dir, full_env, proc, log_path,
                             admin_password=full_env["NESTMTX_ADMIN_PASSWORD"])
    try:
        wait_for_port(port, proc=proc)
        _wait_healthy(sidecar.url)
    except Exception:
        sidecar.stop()
        raise RuntimeError(f"sidecar did not start:\n{sidecar.log()}") from None
    return sidecar


def _wait_healthy(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{url}/healthz did not answer 200")


async def wait_until(predicate: Callable[[], object], seconds: float = 10.0,
                     interval: float = 0.02) -> None:
    """Poll a condition that has no event to await (a file appearing, a process ending)."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def serving(config: uvicorn.Config) -> AsyncIterator[uvicorn.Server]:
    """Real uvicorn serving `config` inside the running event loop, until the block ends."""
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:  # uvicorn offers no event for this
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        yield server
    finally:
        server.should_exit = True
        await task
