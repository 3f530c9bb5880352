"""The benchmark: the sidecar beside a bare Node.js socket.io and a bare python-socketio server.

Usage: python bench/run.py [--only SCENARIO ...] [--servers NAME ...]
Installs its npm dependencies (`npm ci --prefix bench`), runs every scenario against every
server in one run, prints a table with ratios and writes bench/results/<time>.json.
Only loopback is used; every scenario is bounded in events and seconds. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
HOOK = ROOT / "hooks" / "nestmtx-hook"
ADMIN_PASSWORD = "bench-admin-password"
CAMERA_PATH = "bench-cam"  # the camera row the sidecar's events carry as their entity
PER_PROCESS = 250  # sockets per subscriber process
POSTERS = 4  # keep-alive hook posters in the throughput scenarios, one camera path each
SERVERS = ("node", "python", "sidecar")
VARIANTS = ("stock-deflate", "stock", "queue")  # the sidecar itself is the `direct` variant
SCENARIOS = ("latency", "throughput", "rss", "variants", "subscription", "hook")
PAGE = 1024 * 1024
RUNTIME_VENV = BENCH / ".venv"
POST_TIMEOUT = 30.0  # a server that falls behind shows as latency, not as a crashed run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(hist: dict[int, int], fraction: float) -> float | None:
    """From the subscribers' merged 2%-bucket histogram, in ms (bucket midpoint)."""
    total = sum(hist.values())
    if not total:
        return None
    rank, seen = fraction * total, 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen >= rank:
            return round(0.01 * 1.02 ** (bucket + 0.5), 3)
    return None


# Servers ---------------------------------------------------------------------------------


def runtime_python() -> str:
    """An interpreter with only the project's runtime dependencies, as the image installs.

    The Python servers run on it, so their RSS is the product's: the test extras (aiohttp,
    and what python-engineio's client imports when it finds them) add ~16 MiB to any
    process that imports socketio. The project itself comes from this tree (PYTHONPATH).
    Built once into bench/.venv and rebuilt when pyproject's dependency list changes.
    """
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"]
    python, stamp = RUNTIME_VENV / "bin" / "python", RUNTIME_VENV / "dependencies.txt"
    wanted = "\n".join(deps)
    if not python.exists() or not stamp.exists() or stamp.read_text() != wanted:
        print("installing the runtime dependencies into bench/.venv ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(RUNTIME_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                        "--disable-pip-version-check", *deps], check=True)
        stamp.write_text(wanted)
    # The project's own metadata, which the `version` module reads (the code itself comes
    # from PYTHONPATH): what an install would leave, without building this tree.
    site = next((RUNTIME_VENV / "lib").glob("python*/site-packages"))
    for old in site.glob("nestmtx_sidecar-*.dist-info"):
        shutil.rmtree(old)
    info = site / f"nestmtx_sidecar-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\n"
                                   f"Version: {project['version']}\n")
    return str(python)


@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    token: str | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid


async def wait_healthy(url: str, path: str, proc: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(400):
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                await client.get(url + path, timeout=1)
                return
            await asyncio.sleep(0.05)
    raise TimeoutError(f"{url} did not start")


async def seed_sidecar(env: dict[str, str]) -> None:
    """A credential and an enabled camera at CAMERA_PATH, so events carry an entity."""
    from nestmtx_sidecar.config import load_settings
    from nestmtx_sidecar.security import SecretBox
    from nestmtx_sidecar.storage.store import Store, cameras_table, credentials_table

    settings = load_settings(environ=env)
    store = Store(settings.resolved_database_url)
    try:
        await store.migrate()
        async with store.begin() as conn:
            credential = (await conn.execute(credentials_table.insert().values(
                description="bench", oauth_client_id="bench.apps.googleusercontent.com",
                oauth_client_secret=SecretBox(settings.app_key).encrypt("bench-secret"),
                dac_project_id="bench"))).inserted_primary_key[0]
            for path in (CAMERA_PATH, *(f"{CAMERA_PATH}-{n}" for n in range(POSTERS))):
                await conn.execute(cameras_table.insert().values(
                    credential_id=credential, uid=f"enterprises/bench/devices/{path}",
                    name=path, mtx_path=path, is_enabled=True, protocols=["RTSP"]))
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def serve(name: str, workdir: Path, settings: dict[str, str] | None = None
                ) -> AsyncIterator[Server]:
    """One server process: `node`, `python`, `sidecar` or a sidecar variant; `settings`:
    more NESTMTX_* variables for a sidecar (NESTMTX_REDIS_URL, say)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if name == "node":
        argv, probe = ["node", str(BENCH / "baselines" / "node_reemitter.js"), str(port)], "/"
    elif name == "python":
        argv = [runtime_python(), str(BENCH / "baselines" / "python_reemitter.py"), str(port)]
        probe = "/"
    else:
        from cryptography.fernet import Fernet

        data = workdir / f"data-{name}-{port}"
        data.mkdir()
        env.update(NESTMTX_HOST="127.0.0.1", NESTMTX_PORT=str(port), NESTMTX_DATA_DIR=str(data),
                   NESTMTX_ADMIN_PASSWORD=ADMIN_PASSWORD, NESTMTX_LOG_LEVEL="info",
                   NESTMTX_APP_KEY=Fernet.generate_key().decode(),
                   NESTMTX_HOOK_SECRET="bench-hook-secret", **(settings or {}))
        await seed_sidecar(env)
        argv = ([runtime_python(), "-m", "nestmtx_sidecar", "serve"] if name == "sidecar" else
                [runtime_python(), str(BENCH / "serve_variant.py"), name])
        probe = "/healthz"
    log = (workdir / f"{name}-{port}.log").open("wb")
    # Popen returns at once (output goes to a file): nothing here blocks the loop.
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,  # noqa: ASYNC220
                            cwd=workdir)
    server = Server(name, url, proc)
    try:
        await wait_healthy(url, probe, proc)
        if name not in ("node", "python"):
            async with httpx.AsyncClient() as client:
                reply = await client.post(url + "/api/auth", json={
                    "username": "admin", "password": ADMIN_PASSWORD})
                server.token = reply.raise_for_status().json()["bearer"]
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def hook_headers(server: Server) -> dict[str, str]:
    return ({"authorization": "Bearer bench-hook-secret"}
            if server.name not in ("node", "python") else {})


# Subscribers -----------------------------------------------------------------------------


class SubscriberProcess:
    """A Node.js process of socket.io-client sockets (bench/subscriber.js)."""

    def __init__(self, proc: asyncio.subprocess.Process, sockets: int) -> None:
        self.proc = proc
        self.sockets = sockets
        self.disconnects = 0

    @classmethod
    async def start(cls, server: Server, sockets: int, subscribe: list[str] | None = None,
                    node_modules: Path = BENCH / "node_modules", recovery: bool = False
                    ) -> SubscriberProcess:
        """`node_modules`: where socket.io-client is installed (the tests use tests/js's);
        `recovery`: the sockets opt in to connection state recovery."""
        options = {"url": server.url, "token": server.token, "sockets": sockets,
                   "subscribe": subscribe, "recovery": recovery}
        proc = await asyncio.create_subprocess_exec(
            "node", str(BENCH / "subscriber.js"), json.dumps(options),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "NODE_PATH": str(node_modules)})
        sub = cls(proc, sockets)
        ready = await sub.expect("ready", 120)
        assert ready["sockets"] == sockets
        return sub

    async def expect(self, status: str, seconds: float = 60) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), seconds)
            if not line:
                raise RuntimeError("subscriber process exited")
            message = json.loads(line)
            if message["status"] == "disconnected":
                self.disconnects += 1
            elif message["status"] == status:
                return message
            elif message["status"] == "connect_error":
                raise RuntimeError(f"subscriber could not connect: {message['message']}")

    async def ask(self, command: str, status: str, seconds: float = 60) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.expect(status, seconds)

    async def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        await self.proc.wait()


@dataclass
class Fleet:
    """All subscriber processes connected to one server."""

    server: Server
    procs: list[SubscriberProcess] = field(default_factory=list)
    node_modules: Path = BENCH / "node_modules"
    recovery: bool = False  # every socket opts in to connection state recovery

    @property
    def sockets(self) -> int:
        return sum(p.sockets for p in self.procs)

    async def grow_to(self, total: int, subscribe: list[str] | None = None) -> None:
        while self.sockets < total:
            self.procs.append(await SubscriberProcess.start(
                self.server, min(PER_PROCESS, total - self.sockets), subscribe,
                self.node_modules, self.recovery))

    async def reset(self) -> None:
        await asyncio.gather(*(p.ask("reset", "reset") for p in self.procs))

    def cpu_seconds(self) -> float:
        """CPU time of all subscriber processes so far."""
        return sum(cpu_seconds(p.proc.pid) for p in self.procs)

    async def report(self) -> dict[str, Any]:
        reports = await asyncio.gather(*(p.ask("report", "report") for p in self.procs))
        hist: dict[int, int] = {}
        for report in reports:
            for bucket, count in report["hist"].items():
                hist[int(bucket)] = hist.get(int(bucket), 0) + count
        received = [n for report in reports for n in report["received"]]
        lasts = [r["last"] for r in reports if r["last"] is not None]
        return {"received": received, "hist": hist, "last": max(lasts) if lasts else None,
                "order_errors": sum(r["orderErrors"] for r in reports),
                "connected": sum(r["connected"] for r in reports)}

    async def stop(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.procs))
        self.procs.clear()


# Measurements ----------------------------------------------------------------------------


async def post_hook(client: httpx.AsyncClient, server: Server, path: str, seq: int) -> bool:
    query = f"seq={seq}&t={time.time() * 1000:.3f}"
    reply = await client.post(f"{server.url}/hooks/ready", headers=hook_headers(server),
                              json={"MTX_PATH": path, "MTX_QUERY": query,
                                    "MTX_SOURCE_TYPE": "rtspSession", "MTX_SOURCE_ID": "bench"})
    return reply.status_code == 202


async def drain(fleet: Fleet, events: int, receivers: int, seconds: float) -> dict[str, Any]:
    """Wait (bounded) until every subscriber has every frame, then report."""
    deadline = time.monotonic() + seconds
    while True:
        report = await fleet.report()
        if sum(report["received"]) >= events * 3 * receivers or time.monotonic() > deadline:
            return report
        await asyncio.sleep(0.2)  # no event to await across processes: poll the reports


def summarise(report: dict[str, Any], events: int, receivers: int) -> dict[str, Any]:
    expected = events * 3
    counted = sorted(report["received"], reverse=True)[:receivers]
    return {"events": events, "subscribers": receivers,
            "p50_ms": percentile(report["hist"], 0.50), "p99_ms": percentile(report["hist"], 0.99),
            "lost_frames": sum(max(expected - n, 0) for n in counted),
            "order_errors": report["order_errors"]}


async def latency(fleet: Fleet, events: int, rate: float,
                  receivers: int | None = None) -> dict[str, Any]:
    """POST to receipt: one poster at a steady rate well below capacity."""
    await fleet.reset()
    receivers = receivers or fleet.sockets
    cpu = cpu_seconds(fleet.server.pid)
    sent = 0
    async with httpx.AsyncClient(timeout=POST_TIMEOUT) as client:
        start = time.monotonic()
        for seq in range(events):
            await asyncio.sleep(max(start + seq / rate - time.monotonic(), 0))
            sent += await post_hook(client, fleet.server, CAMERA_PATH, seq)
    report = await drain(fleet, sent, receivers, 30)
    result = summarise(report, sent, receivers)
    result["server_cpu_us_per_event"] = round(
        (cpu_seconds(fleet.server.pid) - cpu) / max(sent, 1) * 1e6)
    return result


async def throughput(fleet: Fleet, events: int, seconds: float = 10) -> dict[str, Any]:
    """Sustained events/s: keep-alive posters as fast as the server takes them (bounded)."""
    await fleet.reset()
    deadline = time.monotonic() + seconds
    sent = [0] * POSTERS

    async def poster(index: int) -> None:
        async with httpx.AsyncClient(timeout=POST_TIMEOUT) as client:
            for seq in range(events // POSTERS):
                if time.monotonic() > deadline:
                    return
                assert await post_hook(client, fleet.server, f"{CAMERA_PATH}-{index}", seq)
                sent[index] += 1

    server_cpu, client_cpu = cpu_seconds(fleet.server.pid), fleet.cpu_seconds()
    started = time.time() * 1000
    await asyncio.gather(*(poster(i) for i in range(POSTERS)))
    report = await drain(fleet, sum(sent), fleet.sockets, 30)
    result = summarise(report, sum(sent), fleet.sockets)
    events = max(sum(sent), 1)
    result["server_cpu_us_per_event"] = round(
        (cpu_seconds(fleet.server.pid) - server_cpu) / events * 1e6)
    result["subscriber_cpu_us_per_event"] = round(
        (fleet.cpu_seconds() - client_cpu) / events * 1e6)
    last = report["last"] or started
    result["events_per_s"] = round(sum(sent) / max((last - started) / 1000, 1e-6), 1)
    return result


def hook_wall_ms(path_dir: str | None, url: str, runs: int) -> float:
    """Median wall time of one hook invocation the MediaMTX way: argv and env, no shell."""
    env = {"NESTMTX_URL": url, "NESTMTX_HOOK_SECRET": "bench-hook-secret",
           "MTX_PATH": CAMERA_PATH, "MTX_QUERY": "seq=0&t=0", "MTX_SOURCE_TYPE": "rtspSession",
           "MTX_SOURCE_ID": "bench", "PATH": path_dir or os.environ["PATH"]}
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([str(HOOK), "ready"], env=env, check=True, stdout=subprocess.DEVNULL)
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 2)


@contextlib.contextmanager
def busybox_path() -> Iterator[str]:
    """A PATH of BusyBox applets only (sh, awk, date, wget, ...), as in MediaMTX's image."""
    busybox = shutil.which("busybox")
    if busybox is None:
        raise RuntimeError("busybox is not installed (apt-get install busybox)")
    with tempfile.TemporaryDirectory(prefix="busybox-") as directory:
        for applet in ("sh", "awk", "date", "wget", "adjtimex", "printf", "cat", "mkdir",
                       "mv", "rm", "sleep", "sed", "tr", "head"):
            os.symlink(busybox, Path(directory) / applet)
        yield directory


# Scenarios -------------------------------------------------------------------------------


async def measure_server(name: str, workdir: Path, scenarios: set[str]) -> dict[str, Any]:
    """Everything measured against one server, growing one fleet of subscribers."""
    out: dict[str, Any] = {}
    async with serve(name, workdir) as server:
        fleet = Fleet(server)
        await asyncio.sleep(1)  # let start-up work settle before reading idle RSS
        out["rss_idle_mib"] = round(rss_mib(server.pid), 1)
        try:
            if "latency" in scenarios:
                await fleet.grow_to(1)
                out["latency_1"] = await latency(fleet, 200, 100)
            await fleet.grow_to(100)
            if "latency" in scenarios:
                out["latency_100"] = await latency(fleet, 300, 100)
            if "throughput" in scenarios:
                out["throughput_100"] = await throughput(fleet, 2000)
            if scenarios & {"latency", "throughput"}:
                await fleet.grow_to(300)
            if "latency" in scenarios:
                out["latency_300"] = await latency(fleet, 300, 30)
            if "throughput" in scenarios:
                out["throughput_300"] = await throughput(fleet, 1200)
            if "latency" in scenarios or "rss" in scenarios:
                await fleet.grow_to(1000)
                out["rss_1000_mib"] = round(rss_mib(server.pid), 1)
            if "latency" in scenarios:
                out["latency_1000"] = await latency(fleet, 150, 10)
        finally:
            await fleet.stop()
    return out


async def measure_variant(name: str, workdir: Path) -> dict[str, Any]:
    async with serve(name, workdir) as server:
        fleet = Fleet(server)
        try:
            await fleet.grow_to(100)
            return {"latency_100": await latency(fleet, 300, 100),
                    "throughput_100": await throughput(fleet, 2000)}
        finally:
            await fleet.stop()


async def measure_subscription(workdir: Path) -> dict[str, Any]:
    """1000 sockets: 10 take everything, 990 chose a topic nobody publishes, vs all 1000."""
    out = {}
    for label, quiet in (("everything", None), ("subscribed", ["credentials:authenticated"])):
        async with serve("sidecar", workdir) as server:
            fleet = Fleet(server)
            try:
                await fleet.grow_to(10)
                await fleet.grow_to(1000, subscribe=quiet)
                out[label] = await latency(fleet, 100, 20, receivers=10)
                out[label]["rss_mib"] = round(rss_mib(server.pid), 1)
            finally:
                await fleet.stop()
    return out


def node_start_ms(runs: int) -> float:
    """Median wall time of a bare `node -e ""`: the floor of any node-per-hook design."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(["node", "-e", ""], check=True)
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 2)


async def measure_hooks(workdir: Path) -> dict[str, Any]:
    async with serve("sidecar", workdir) as server:
        with busybox_path() as busybox:
            return {"curl_ms": await asyncio.to_thread(hook_wall_ms, None, server.url, 40),
                    "busybox_wget_ms": await asyncio.to_thread(
                        hook_wall_ms, busybox, server.url, 40),
                    "node_e_ms": await asyncio.to_thread(node_start_ms, 20)}


# Report ----------------------------------------------------------------------------------


def ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "-"
    return f"x{value / base:.2f}"


def figure(servers: dict[str, Any], name: str, key: str, metric: str) -> Any:
    value = servers.get(name, {}).get(key)
    return (value or {}).get(metric) if metric else value


def round_ratio(rounds: list[dict[str, Any]], key: str, metric: str, base: str) -> str:
    """The sidecar's figure over `base`'s: the median of the ratios taken within each round.

    Both servers in a round ran minutes apart on the same machine; a ratio within a round
    cancels most of what the machine's load does to both, a ratio of medians would not.
    """
    ratios = []
    for servers in rounds:
        side, other = figure(servers, "sidecar", key, metric), figure(servers, base, key, metric)
        if isinstance(side, int | float) and isinstance(other, int | float) and other:
            ratios.append(side / other)
    return f"x{statistics.median(ratios):.2f}" if ratios else "-"


def combine(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One server's figures over rounds: medians, except losses and order errors, which add up
    (one lost frame in any round must show). Failed rounds are left out."""
    good = [r for r in rounds if "error" not in r]
    if not good:
        return rounds[-1] if rounds else {}
    out: dict[str, Any] = {}
    for key, value in good[0].items():
        values = [r[key] for r in good if key in r]
        if isinstance(value, dict):
            out[key] = combine(values)
        elif key in ("lost_frames", "order_errors"):
            out[key] = sum(values)
        elif all(isinstance(v, int | float) for v in values):
            out[key] = round(statistics.median(values), 3)
        else:
            out[key] = value
    return out


def table(results: dict[str, Any]) -> str:
    servers = results.get("servers", {})
    rounds = results.get("rounds") or [servers]
    rows = []

    def row(label: str, key: str, metric: str, unit: str) -> None:
        values = {n: figure(servers, n, key, metric) for n in SERVERS}
        if all(v is None for v in values.values()):
            return
        rows.append(f"| {label} | " + " | ".join(
            "-" if values[n] is None else f"{values[n]}{unit}" for n in SERVERS) +
            f" | {round_ratio(rounds, key, metric, 'node')} | "
            f"{round_ratio(rounds, key, metric, 'python')} |")

    for n in (1, 100, 300, 1000):
        row(f"latency p50, {n} subscribers", f"latency_{n}", "p50_ms", " ms")
        row(f"latency p99, {n} subscribers", f"latency_{n}", "p99_ms", " ms")
    for n in (100, 300):
        row(f"events/s, {n} subscribers", f"throughput_{n}", "events_per_s", "")
        row(f"lost frames, {n} subscribers", f"throughput_{n}", "lost_frames", "")
        row(f"p99 while saturated, {n} subscribers", f"throughput_{n}", "p99_ms", " ms")
        row(f"subscriber CPU per event, {n} subscribers", f"throughput_{n}",
            "subscriber_cpu_us_per_event", " us")
    row("server CPU per event, 100 subscribers", "latency_100", "server_cpu_us_per_event", " us")
    row("RSS idle", "rss_idle_mib", "", " MiB")
    row("RSS with 1000 sockets", "rss_1000_mib", "", " MiB")
    lines = ["| figure | " + " | ".join(SERVERS) + " | sidecar/node | sidecar/python |",
             "|---|---|---|---|---|---|", *rows]
    variants = results.get("variants")
    if variants:
        lines += ["", "| variant (100 subscribers) | p50 ms | p99 ms | events/s | lost | "
                  "p99 vs node | events/s vs node |", "|---|---|---|---|---|---|---|"]
        node = servers.get("node", {})
        for name, v in variants.items():
            if "error" in v:
                lines.append(f"| {name} | failed: {v['error']} |")
                continue
            lat, thr = v["latency_100"], v["throughput_100"]
            lines.append(
                f"| {name} | {lat['p50_ms']} | {lat['p99_ms']} | {thr['events_per_s']} | "
                f"{thr['lost_frames']} | "
                f"{ratio(lat['p99_ms'], node.get('latency_100', {}).get('p99_ms'))} | "
                f"{ratio(thr['events_per_s'], node.get('throughput_100', {}).get('events_per_s'))}"
                " |")
    sub = results.get("subscription")
    if sub and "error" not in sub:
        lines += ["", "| 1000 sockets, 10 receiving | p50 ms | p99 ms | server CPU us/event |",
                  "|---|---|---|---|"]
        for label, v in sub.items():
            lines.append(f"| {label} | {v['p50_ms']} | {v['p99_ms']} | "
                         f"{v['server_cpu_us_per_event']} |")
    hooks = results.get("hook")
    if hooks and "error" not in hooks:
        lines += ["", "| one hook invocation (median wall) | ms |", "|---|---|",
                  f"| hooks/nestmtx-hook with curl | {hooks['curl_ms']} |",
                  f"| hooks/nestmtx-hook with BusyBox wget | {hooks['busybox_wget_ms']} |",
                  f"| bare `node -e \"\"` start | {hooks['node_e_ms']} |"]
    return "\n".join(lines)


async def attempt(results: dict[str, Any], key: str, label: str, measure: Any) -> None:
    """One measurement; a failure is recorded (and the run goes on) rather than losing all."""
    print(f"measuring {label} ...", file=sys.stderr, flush=True)
    try:
        results[key] = await measure
    except Exception as exc:
        print(f"  {label} failed: {exc!r}", file=sys.stderr, flush=True)
        results[key] = {"error": repr(exc)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    scenarios = set(args.only)
    results: dict[str, Any] = {"started": dt.datetime.now(dt.UTC).isoformat(),
                               "machine": machine(), "rounds": [], "servers": {}, "variants": {}}
    with tempfile.TemporaryDirectory(prefix="nestmtx-bench-") as tmp:
        workdir = Path(tmp)
        if scenarios & {"latency", "throughput", "rss"}:
            for number in range(1, args.rounds + 1):
                measured: dict[str, Any] = {}
                for name in args.servers:
                    await attempt(measured, name, f"{name} (round {number}/{args.rounds})",
                                  measure_server(name, workdir, scenarios))
                results["rounds"].append(measured)
            results["servers"] = {name: combine([r[name] for r in results["rounds"]])
                                  for name in args.servers}
        if "variants" in scenarios:
            for name in args.variants:
                await attempt(results["variants"], name, f"variant {name}",
                              measure_variant(name, workdir))
            product = results["servers"].get("sidecar", {})
            if "latency_100" in product and "throughput_100" in product:
                results["variants"]["direct"] = {
                    k: product[k] for k in ("latency_100", "throughput_100")}
        if "subscription" in scenarios:
            await attempt(results, "subscription", "topic subscription",
                          measure_subscription(workdir))
        if "hook" in scenarios:
            await attempt(results, "hook", "hook invocations", measure_hooks(workdir))
    return results


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               "unknown")
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "python": sys.version.split()[0], "node": node,
            "memory_gib": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
                                / PAGE / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--rounds", type=int, default=3,
                        help="measure every server this many times, in turn (default 3)")
    args = parser.parse_args()
    subprocess.run(["npm", "ci", "--prefix", str(BENCH), "--no-audit", "--no-fund", "--silent"],
                   check=True)
    if {"python", "sidecar"} & set(args.servers):
        runtime_python()  # built before the run, not inside a measurement
    results = asyncio.run(run(args))
    print(table(results))
    out = BENCH / "results" / f"{results['started'][:19].replace(':', '')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
