"""Hook script -> receiver -> bus -> Socket.IO: JavaScript and Python subscribers, no loss."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio

from tests.conftest import Events, RunningSidecar
from tests.mediamtx import MediaMTX, add_camera, busybox_path, hook_settings
from tests.services import ROOT, require

JS = ROOT / "tests" / "js"
TOPICS = ("camera:read", "camera:*", "nestmtx:*")


class JsSubscriber:
    """tests/js/subscribe.js in node: socket.io-client as browsers and integrations use it."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, url: str, token: str | None) -> tuple[JsSubscriber, dict[str, Any]]:
        node = shutil.which("node")
        require(node is not None and (JS / "node_modules" / "socket.io-client").is_dir(),
                "Node.js with tests/js packages", "apt-get install nodejs npm; "
                "npm ci --prefix tests/js")
        assert node is not None
        proc = await asyncio.create_subprocess_exec(
            node, str(JS / "subscribe.js"), url, *([token] if token else []),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=2**20)
        subscriber = cls(proc)
        return subscriber, await subscriber.next_line()

    async def next_line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 20)
        assert line, "subscribe.js exited"
        return json.loads(line)

    async def events(self, count: int) -> list[dict[str, Any]]:
        """The next `count` events, skipping log lines."""
        out: list[dict[str, Any]] = []
        while len(out) < count:
            line = await self.next_line()
            if line.get("topic") not in (None, "log"):
                out.append(line)
        return out

    async def close(self) -> list[dict[str, Any]]:
        """Stop it and return whatever else it printed."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        stdout, _ = await asyncio.wait_for(self.proc.communicate(), 20)
        return [json.loads(line) for line in stdout.splitlines()]


class PySubscriber:
    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.received: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.client.on("*", self._any)

    async def _any(self, topic: str, payload: Any = None) -> None:
        self.received.put_nowait((topic, payload))

    async def events(self, count: int) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        while len(out) < count:
            topic, payload = await asyncio.wait_for(self.received.get(), 20)
            if topic != "log":
                out.append((topic, payload))
        return out


@pytest.mark.node
async def test_hook_reaches_js_and_python_subscribers_on_all_three_topics(
        server: RunningSidecar, tmp_path: Path) -> None:
    camera = await add_camera(server.sidecar.store, "porch", name="Porch")
    token = await server.login()
    js, status = await JsSubscriber.start(server.url, token)
    assert status == {"status": "connected"}
    py = PySubscriber()
    await py.client.connect(server.url, auth={"token": token}, transports=["websocket"])
    stranger_js, stranger_status = await JsSubscriber.start(server.url, None)
    assert stranger_status["status"] == "connect_error"
    stranger_py = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await stranger_py.connect(server.url, transports=["websocket"])
    published = Events.subscribed(server.sidecar.bus).seen
    mtx = MediaMTX(hook_settings(), {"PATH": busybox_path(tmp_path / "bin"),
                                     "NESTMTX_URL": server.url,
                                     "NESTMTX_HOOK_SECRET": server.hook_secret})
    query = "a=1&b='two' \"3\" %20 é"
    result = await mtx.run("read", "porch", MTX_QUERY=query, MTX_READER_TYPE="rtspSession",
                           MTX_READER_ID="c0ffee")
    assert result.returncode == 0, result.stderr
    await server.sidecar.bus.drain()
    [event] = published
    expected = {"domain": "camera", "entity": camera, "event": "read", "at": event.payload()["at"],
                "details": {"path": "porch", "query": query, "name": "Porch", "enabled": True,
                            "readerType": "rtspSession", "readerId": "c0ffee"}}
    assert event.payload() == expected
    assert [(e["topic"], e["payload"]) for e in await js.events(3)] == [
        (topic, expected) for topic in TOPICS]
    assert await py.events(3) == [(topic, expected) for topic in TOPICS]
    await py.client.disconnect()
    await js.close()
    # The refused socket saw nothing but its refusal.
    assert [line for line in await stranger_js.close() if "topic" in line] == []


@pytest.mark.node
async def test_500_concurrent_hook_calls_arrive_exactly_once_at_every_subscriber(
        server: RunningSidecar, tmp_path: Path) -> None:
    await add_camera(server.sidecar.store, "busy")
    token = await server.login()
    js, status = await JsSubscriber.start(server.url, token)
    assert status == {"status": "connected"}
    py = PySubscriber()
    await py.client.connect(server.url, auth={"token": token}, transports=["websocket"])
    # 500 real hook processes at once, run the MediaMTX way (BusyBox sh + wget).
    mtx = MediaMTX(hook_settings(), {"PATH": busybox_path(tmp_path / "bin"),
                                     "NESTMTX_URL": server.url,
                                     "NESTMTX_HOOK_SECRET": server.hook_secret})
    count = 500
    hooks = await asyncio.gather(*(
        mtx.start("read" if n % 2 else "unread", "busy", MTX_READER_ID=str(n))
        for n in range(count)))
    results = await asyncio.gather(*(hook.wait(within=60) for hook in hooks))
    assert [r.returncode for r in results] == [0] * count, [r.stderr for r in results][:3]
    expected = Counter((topic, str(n)) for n in range(count)
                       for topic in ("camera:read" if n % 2 else "camera:unread",
                                     "camera:*", "nestmtx:*"))
    js_seen = Counter((e["topic"], e["payload"]["details"]["readerId"])
                      for e in await js.events(3 * count))
    py_seen = Counter((topic, payload["details"]["readerId"])
                      for topic, payload in await py.events(3 * count))
    assert js_seen == expected
    assert py_seen == expected
    await py.client.disconnect()
    # Nothing more arrived (no duplicates) by the time the JS client is closed.
    assert [line for line in await js.close() if line.get("topic") not in (None, "log")] == []


@pytest.mark.parametrize(("query", "shown"), [
    # MediaMTX before v1.18.1 passes the reader's query raw...
    ("jwt=eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl&view=hd&Password=hunter2%21&a=%20b",
     "jwt=REDACTED&view=hd&Password=REDACTED&a=%20b"),
    # ...and url.QueryEscape'd since.
    ("jwt%3DeyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl%26view%3Dhd%26Password%3Dhunter2%2521",
     "jwt%3DREDACTED%26view%3Dhd%26Password%3DREDACTED"),
])
async def test_reader_credentials_in_the_query_reach_no_subscriber_nor_log(
        server: RunningSidecar, tmp_path: Path, query: str, shown: str) -> None:
    await add_camera(server.sidecar.store, "porch", name="Porch")
    py = PySubscriber()
    await py.client.connect(server.url, auth={"token": await server.login()},
                            transports=["websocket"])
    mtx = MediaMTX(hook_settings(), {"PATH": busybox_path(tmp_path / "bin"),
                                     "NESTMTX_URL": server.url,
                                     "NESTMTX_HOOK_SECRET": server.hook_secret})
    for hook in ("read", "unread"):
        result = await mtx.run(hook, "porch", MTX_QUERY=query, MTX_READER_TYPE="rtspSession",
                               MTX_READER_ID="r1")
        assert result.returncode == 0, result.stderr
    received = await py.events(6)
    await py.client.disconnect()
    assert {payload["details"]["query"] for _, payload in received} == {shown}
    logs = "\n".join(entry["msg"] for entry in server.sidecar.log_stream.recent)
    for secret in ("eyJhbGciOiJIUzI1NiJ9", "hunter2"):
        assert secret not in json.dumps(received) and secret not in logs


async def test_events_command_tails_events_and_logs_and_stops_on_ctrl_c(
        server: RunningSidecar) -> None:
    token = await server.login()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nestmtx_sidecar", "events", "--url", server.url, "--token", token,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        connected = await asyncio.wait_for(proc.stderr.readline(), 20)
        assert connected.decode().strip() == f"connected to {server.url}"
        logging.getLogger("nestmtx_sidecar.testing").warning("tail me")
        reply = await asyncio.to_thread(
            httpx.post, f"{server.url}/hooks/read",
            json={"MTX_PATH": "p\x1b[2Jx", "MTX_QUERY": "a=1\nb=2", "MTX_READER_ID": "r1"},
            headers={"Authorization": f"Bearer {server.hook_secret}"})
        assert reply.status_code == 202
        lines: list[str] = []
        while not any(" camera:read " in line for line in lines):
            lines.append((await asyncio.wait_for(proc.stdout.readline(), 10)).decode())
        event_line = next(line for line in lines if " camera:read " in line)
        # One line per event, control characters shown, not obeyed by the terminal.
        assert event_line.endswith(" camera:read entity=null {\"enabled\": false, "
                                   "\"name\": null, \"path\": \"p\\u001b[2Jx\", \"query\": "
                                   "\"a=1\\nb=2\", \"readerId\": \"r1\", \"readerType\": \"\"}\n")
        assert any(line.split()[1:] == ["WARN", "testing:", "tail", "me"] for line in lines)
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        assert await proc.stderr.read() == b""  # no traceback on Ctrl-C
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_events_command_with_a_bad_token_exits_1_with_one_line(
        server: RunningSidecar) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nestmtx_sidecar", "events", "--url", server.url, "--token", "bad",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 1 and stdout == b""
    assert len(stderr.decode().splitlines()) == 1 and "cannot connect" in stderr.decode()
