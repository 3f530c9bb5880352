"""hooks/nestmtx-hook run the way MediaMTX runs it, with BusyBox alone and with curl."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from nestmtx_sidecar.events import Event, EventBus
from nestmtx_sidecar.mediamtx.config import persistent_path, render
from nestmtx_sidecar.modules.cameras import CameraRef
from tests.conftest import RunningSidecar
from tests.mediamtx import (
    HOOK_SCRIPT,
    MediaMTX,
    add_camera,
    busybox_path,
    curl_path,
    expand,
    hook_settings,
)
from tests.services import ROOT, free_port, wait_until

VALUES = {
    "demand": {"MTX_QUERY": "a=1&b=2"},
    "unDemand": {"MTX_QUERY": "a=1&b=2"},
    "ready": {"MTX_QUERY": "", "MTX_SOURCE_TYPE": "rtspSession", "MTX_SOURCE_ID": "f3a1"},
    "notReady": {"MTX_QUERY": "", "MTX_SOURCE_TYPE": "rtspSession", "MTX_SOURCE_ID": "f3a1"},
    "read": {"MTX_QUERY": "token=x y", "MTX_READER_TYPE": "webRTCSession", "MTX_READER_ID": "r9"},
    "unread": {"MTX_QUERY": "token=x y", "MTX_READER_TYPE": "webRTCSession",
               "MTX_READER_ID": "r9"},
}
EXTRA = {"sourceType": "MTX_SOURCE_TYPE", "sourceId": "MTX_SOURCE_ID",
         "readerType": "MTX_READER_TYPE", "readerId": "MTX_READER_ID"}


@pytest.fixture(params=["busybox", "curl"])
def tools(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """PATH for the hook: BusyBox only (sh + wget), or BusyBox plus curl."""
    make = busybox_path if request.param == "busybox" else curl_path
    return make(tmp_path / "bin")


def mediamtx(url: str, secret: str, tools: str, **environ: str) -> MediaMTX:
    return MediaMTX(hook_settings(), {"PATH": tools, "NESTMTX_URL": url,
                                      "NESTMTX_HOOK_SECRET": secret, **environ})


@pytest.fixture
def events(server: RunningSidecar) -> Iterator[asyncio.Queue[Event]]:
    yield from capture(server.sidecar.bus)


def capture(bus: EventBus) -> Iterator[asyncio.Queue[Event]]:
    queue: asyncio.Queue[Event] = asyncio.Queue()

    async def subscriber(event: Event) -> None:
        queue.put_nowait(event)

    unsubscribe = bus.subscribe(subscriber)
    yield queue
    unsubscribe()


# What subscribers see of a query: a reader's `token` is a credential.
SHOWN_QUERY = {"token=x y": "token=REDACTED"}


def expected_details(hook: str, path: str, name: str | None, enabled: bool) -> dict[str, object]:
    values = VALUES[hook]
    query = values["MTX_QUERY"]
    details: dict[str, object] = {"path": path, "query": SHOWN_QUERY.get(query, query),
                                  "name": name, "enabled": enabled}
    details.update({key: values[var] for key, var in EXTRA.items() if var in values})
    return details


async def test_every_hook_becomes_its_camera_event(server: RunningSidecar, tools: str,
                                                   events: asyncio.Queue[Event]) -> None:
    camera = await add_camera(server.sidecar.store, "front", name="Front door")
    mtx = mediamtx(server.url, server.hook_secret, tools)
    for hook, values in VALUES.items():
        if hook == "demand":
            continue  # holds the path: tested on its own below
        before = time.time()
        # ready and read are long-running in MediaMTX: the script must send and exit.
        result = await mtx.run(hook, "front", within=5, **values)
        assert (result.returncode, result.stderr) == (0, b""), hook
        event = await asyncio.wait_for(events.get(), 5)
        assert (event.domain, event.event, event.entity) == ("camera", hook, camera)
        assert event.details == expected_details(hook, "front", "Front door", True)
        assert before - 1 <= event.at.timestamp() <= time.time()


async def test_unknown_path_gives_entity_null(server: RunningSidecar, tools: str,
                                              events: asyncio.Queue[Event]) -> None:
    mtx = mediamtx(server.url, server.hook_secret, tools)
    result = await mtx.run("read", "nobody/here", **VALUES["read"])
    assert result.returncode == 0
    event = await asyncio.wait_for(events.get(), 5)
    assert event.entity is None
    assert event.details == expected_details("read", "nobody/here", None, False)


async def test_demand_for_a_path_without_camera_exits_at_once(
        server: RunningSidecar, tools: str, events: asyncio.Queue[Event]) -> None:
    mtx = mediamtx(server.url, server.hook_secret, tools)
    started = time.monotonic()
    result = await mtx.run("demand", "nocam", within=10, **VALUES["demand"])
    assert time.monotonic() - started < 5
    assert result.returncode == 1
    assert len(result.stderr_lines) == 1, result.stderr_lines
    assert "nestmtx-hook" in result.stderr_lines[0] and "'nocam'" in result.stderr_lines[0]
    assert "404" in result.stderr_lines[0]
    event = await asyncio.wait_for(events.get(), 5)  # the demand itself is still reported
    assert (event.event, event.entity) == ("demand", None)


@pytest.mark.parametrize("hook", ["demand", "read"])
async def test_dot_segments_are_refused_before_anything_is_sent(
        server: RunningSidecar, tools: str, events: asyncio.Queue[Event], hook: str) -> None:
    # Resolved, as curl does by default, this demand would ask /hooks/source/cam1 and
    # publish cam1's stream under an alias path, past MediaMTX's per-path permissions.
    await add_camera(server.sidecar.store, "cam1", protocols=("WEB_RTC",))
    source = WaitSource()
    server.sidecar.receiver.streams = source
    mtx = mediamtx(server.url, server.hook_secret, tools)
    result = await mtx.run(hook, "public/../../source/cam1", within=5, **VALUES[hook])
    assert result.returncode == 2
    assert len(result.stderr_lines) == 1, result.stderr_lines
    line = result.stderr_lines[0]
    assert line.startswith("nestmtx-hook: ") and "'public/../../source/cam1'" in line
    assert ". or .. segment" in line
    assert source.asked == []
    await server.sidecar.bus.drain()
    assert events.empty()  # the script sent nothing at all


async def test_huge_values_are_cut_with_a_marker_and_the_hook_stays_fast(
        server: RunningSidecar, tools: str, events: asyncio.Queue[Event]) -> None:
    # 300 KB in three variables (Linux takes 128 KiB per environment string): BusyBox awk
    # needed 14 s to escape that much, far past what a hook may take.
    huge = {"MTX_QUERY": "q" * 100_000, "MTX_READER_TYPE": "t" * 100_000,
            "MTX_READER_ID": 'i"\\' * 33_333}
    mtx = mediamtx(server.url, server.hook_secret, tools)
    started = time.monotonic()
    result = await mtx.run("read", "cam", within=30, **huge)
    assert time.monotonic() - started < 5
    assert (result.returncode, result.stderr) == (0, b"")
    event = await asyncio.wait_for(events.get(), 5)
    for key, variable in (("query", "MTX_QUERY"), ("readerType", "MTX_READER_TYPE"),
                          ("readerId", "MTX_READER_ID")):
        assert event.details[key] == huge[variable][:16384] + "...[truncated]"
    assert event.details["path"] == "cam"


class WaitSource:
    """A StreamSource for a camera the sidecar publishes itself (WebRTC)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def source_for(self, camera: CameraRef) -> str:
        self.asked.append(camera.mtx_path)
        return "wait"


async def test_demand_waits_until_sigint_then_exits_cleanly(
        server: RunningSidecar, tools: str, events: asyncio.Queue[Event]) -> None:
    await add_camera(server.sidecar.store, "webrtc-cam", protocols=("WEB_RTC",))
    source = WaitSource()
    server.sidecar.receiver.streams = source
    mtx = mediamtx(server.url, server.hook_secret, tools)
    process = await mtx.start("demand", "webrtc-cam", **VALUES["demand"])
    try:
        # Holding: the script sleeps in the background of its own wait loop.
        await wait_until(lambda: "sleep" in process.group_commands(), seconds=10)
        assert source.asked == ["webrtc-cam"]
        assert process.proc.returncode is None
        result = await process.stop(within=5)
    finally:
        process.kill_leftovers()
    assert result.returncode == 0
    assert not result.left_running  # no orphaned sleep to block MediaMTX's shutdown
    assert result.stderr == b""
    assert (await asyncio.wait_for(events.get(), 5)).event == "demand"


def spooled(directory: Path) -> list[Path]:
    return sorted(directory.iterdir(), key=lambda p: tuple(
        int(part) if part.isdigit() else 0 for part in p.name.split(".")[:2]))


async def test_unreachable_sidecar_spools_each_event_in_firing_order(
        tmp_path: Path, tools: str) -> None:
    spool = tmp_path / "spool"
    mtx = mediamtx(f"http://127.0.0.1:{free_port()}", "secret", tools,
                   NESTMTX_SPOOL_DIR=str(spool))
    fired = [("read", "cam"), ("unread", "cam"), ("notReady", "cam"), ("unDemand", "other")]
    for hook, path in fired:
        started = time.monotonic()
        result = await mtx.run(hook, path, **VALUES[hook])
        assert time.monotonic() - started < 5  # a few quick tries, then give up
        assert result.returncode == 0
        assert len(result.stderr_lines) == 1 and "spooled" in result.stderr_lines[0]
    files = spooled(spool)
    assert [f.name.split(".")[3] for f in files] == [hook for hook, _ in fired]
    assert all(f.name.endswith(".json") for f in files)  # no half-written temporaries left
    for file, (hook, path) in zip(files, fired, strict=True):
        millis, seq, pid, _ = file.name.split(".", 3)
        assert abs(int(millis) / 1000 - time.time()) < 60 and seq.isdigit() and pid.isdigit()
        body = json.loads(file.read_bytes())
        assert body == {"MTX_PATH": path, "RTSP_PATH": path, "RTSP_PORT": "8554",
                        **VALUES[hook]}


async def test_unreachable_sidecar_without_spool_says_the_event_is_lost(
        tmp_path: Path, tools: str) -> None:
    mtx = mediamtx(f"http://127.0.0.1:{free_port()}", "secret", tools)
    result = await mtx.run("unread", "cam", **VALUES["unread"])
    assert result.returncode == 1
    assert len(result.stderr_lines) == 1 and "lost" in result.stderr_lines[0]


async def test_wrong_secret_is_reported_not_retried_nor_spooled(
        server: RunningSidecar, tmp_path: Path, tools: str) -> None:
    spool = tmp_path / "spool"
    mtx = mediamtx(server.url, "not-the-secret", tools, NESTMTX_SPOOL_DIR=str(spool))
    started = time.monotonic()
    result = await mtx.run("ready", "cam", **VALUES["ready"])
    assert time.monotonic() - started < 2
    assert result.returncode == 1
    assert len(result.stderr_lines) == 1 and "401" in result.stderr_lines[0]
    assert "not-the-secret" not in result.stderr_lines[0]
    assert not spool.exists() or not list(spool.iterdir())


async def test_bad_invocations_fail_with_one_line(tmp_path: Path, tools: str) -> None:
    mtx = MediaMTX({"runOnRead": f"{hook_settings()['runOnRead'].split()[0]} bogus"},
                   {"PATH": tools})
    result = await mtx.run("read", "cam", **VALUES["read"])
    assert result.returncode == 2 and len(result.stderr_lines) == 1
    assert "unknown hook 'bogus'" in result.stderr_lines[0]


def test_harness_expands_like_go_os_expand() -> None:
    env = {"MTX_PATH": "cam 1", "A": "x"}.get

    def lookup(name: str) -> str:
        return env(name) or ""

    # Even inside what was single-quoted in mediamtx.yml: the shell never sees it.
    assert expand("'$MTX_PATH'", lookup) == "'cam 1'"
    assert expand("${A}b $Ab $1 $$ a$ ${} ${A", lookup) == "xb    a$  A"
    assert expand("$-x $", lookup) == "x $"



async def test_mediamtx_config_wires_every_hook_and_persistent_cameras(
        server: RunningSidecar) -> None:
    store = server.sidecar.store
    await add_camera(store, "always", persistent=True)
    await add_camera(store, "yard/cam", persistent=True)
    await add_camera(store, "disabled", persistent=True, enabled=False)
    await add_camera(store, "on-demand")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nestmtx_sidecar", "mediamtx-config", "--hook", "/opt/my hooks/h",
        env={**os.environ, "NESTMTX_DATA_DIR": str(server.settings.data_dir)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr
    config = yaml.safe_load(stdout)
    hook = "'/opt/my hooks/h'"  # quoted: MediaMTX splits the command like a shell
    assert config["pathDefaults"] == {
        "runOnDemand": f"{hook} demand", "runOnDemandStartTimeout": "30s",
        "runOnDemandCloseAfter": "10s", "runOnUnDemand": f"{hook} unDemand",
        "runOnReady": f"{hook} ready", "runOnNotReady": f"{hook} notReady",
        "runOnRead": f"{hook} read", "runOnUnread": f"{hook} unread"}
    persistent = {"runOnInit": f"{hook} demand", "runOnInitRestart": True, "runOnDemand": ""}
    assert config["paths"] == {"always": persistent, "yard/cam": persistent, "all_others": {}}
    assert shlex.split(config["paths"]["always"]["runOnInit"]) == ["/opt/my hooks/h", "demand"]


def test_shipped_mediamtx_yml_is_the_generated_static_part() -> None:
    shipped = (ROOT / "config" / "mediamtx.yml").read_text()
    assert shipped == render([])
    assert yaml.safe_load(shipped)["pathDefaults"]["runOnDemandStartTimeout"] == "30s"


async def test_persistent_path_runs_the_demand_hook_from_run_on_init(
        server: RunningSidecar, tools: str, events: asyncio.Queue[Event]) -> None:
    camera = await add_camera(server.sidecar.store, "always", persistent=True)
    server.sidecar.receiver.streams = WaitSource()
    mtx = MediaMTX(persistent_path(str(HOOK_SCRIPT)),
                   {"PATH": tools, "NESTMTX_URL": server.url,
                    "NESTMTX_HOOK_SECRET": server.hook_secret})
    process = await mtx.start("init", "always")
    try:
        event = await asyncio.wait_for(events.get(), 10)
        assert (event.event, event.entity, event.details["query"]) == ("demand", camera, "")
        await wait_until(lambda: "sleep" in process.group_commands(), seconds=10)
        result = await process.stop(within=5)
    finally:
        process.kill_leftovers()
    assert (result.returncode, result.left_running) == (0, False)
