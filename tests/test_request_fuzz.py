"""Hypothesis-generated bad input: every request gets a precise answer, never a 500 or silence.

The server and the client connection are shared by all examples of a test on purpose: a
connection dropped by one example fails the next one.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import socketio
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nestmtx_sidecar.modules import COMMANDS
from nestmtx_sidecar.modules.dispatch import RESERVED_EVENTS
from tests.conftest import RunningSidecar
from tests.doors import REPLY_TIMEOUT, insert_camera, insert_credential

EXAMPLES = settings(max_examples=150, deadline=None, derandomize=False,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
MODULES = ["auth", "users", "cameras", "credentials", "health", "version"]
FIELDS = ["username", "password", "can_login", "mtx_path", "is_enabled", "is_persistent",
          "description", "oauth_client_id", "oauth_client_secret", "dac_project_id",
          "refresh_token", "origin", "search", "page", "itemsPerPage", "sortBy"]
ERROR_CODES = {"bad_request", "unauthorized", "forbidden", "not_found", "conflict", "invalid",
               "too_large", "method_not_allowed"}

scalars = (st.none() | st.booleans() | st.integers(-(2**64), 2**64)
           | st.floats(allow_nan=False, allow_infinity=False)
           | st.text(max_size=20) | st.sampled_from(["", "1", "-1", "current", "²", "\ud800"]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                           max_leaves=8)
payloads = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), json_values,
                           max_size=4) | json_values
_ids = itertools.count()


@st.composite
def requests(draw: st.DrawFn) -> tuple[Any, str | None]:
    """(what is emitted, the requestId it carries when that is a usable one)."""
    request: dict[str, Any] = {}
    for key, values in (("command", st.sampled_from(COMMANDS) | json_values),
                        ("module", st.sampled_from(MODULES) | json_values),
                        ("requestId", st.just(f"fuzz-{next(_ids)}") | json_values),
                        ("entity", st.integers(-2, 3) | json_values),
                        ("payload", payloads),
                        ("extra", json_values)):
        if draw(st.booleans() if key in ("entity", "payload", "extra") else
                st.sampled_from([True] * 9 + [False])):
            request[key] = draw(values)
    # Logging out is a legitimate request that ends this connection by design.
    assume(not (request.get("module") == "auth" and request.get("command") == "delete"))
    # Clients choose their ids; "log" and python-socketio's catch-all "*" would be ambiguous
    # for this recorder, not for the server.
    assume(request.get("requestId") not in ("log", "*"))
    request_id = request.get("requestId")
    usable = isinstance(request_id, str) and 0 < len(request_id) <= 256 and \
        request_id not in RESERVED_EVENTS
    form = draw(st.sampled_from(["object", "json", "junk"]))
    if form == "json":
        return json.dumps(request), request_id if usable else None
    if form == "junk":
        return draw(json_values | st.text(max_size=30)), None
    return request, request_id if usable else None


class Recorder:
    """A python-socketio client recording every event it receives."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.sio.on("*", lambda event, data=None: self.events.put_nowait((event, data)))

    async def next_reply(self) -> tuple[str, Any]:
        while True:
            event, data = await asyncio.wait_for(self.events.get(), REPLY_TIMEOUT)
            if event != "log":
                return event, data


@pytest.fixture
async def recorder(server: RunningSidecar, token: str) -> AsyncIterator[Recorder]:
    credential = await insert_credential(server.sidecar)
    await insert_camera(server.sidecar, credential, "devices/1", mtx_path="cam-1")
    recorder = Recorder()
    await recorder.sio.connect(server.url, auth={"token": token}, transports=["websocket"])
    yield recorder
    await recorder.sio.disconnect()


def assert_precise(reply: Any) -> None:
    if isinstance(reply, dict) and set(reply) == {"error"}:
        error = reply["error"]
        assert error["code"] in ERROR_CODES, reply
        assert isinstance(error["message"], str) and error["message"]


@EXAMPLES
@given(request=requests())
async def test_socketio_requests_always_get_a_precise_answer(
        recorder: Recorder, request: tuple[Any, str | None]) -> None:
    emitted, request_id = request
    acked: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    await recorder.sio.emit("request", emitted, callback=acked.set_result)
    ack = await asyncio.wait_for(acked, REPLY_TIMEOUT)
    event, data = await recorder.next_reply()
    assert event == (request_id or "failure")
    assert data == ack
    assert_precise(ack)
    assert recorder.sio.connected


methods = st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"])
segments = st.sampled_from(MODULES) | st.text(min_size=1, max_size=12)
bodies = (json_values.map(lambda v: json.dumps(v).encode())
          | st.binary(max_size=64)
          | payloads.map(lambda v: json.dumps(v).encode()))
queries = st.dictionaries(st.sampled_from(["search", "page", "itemsPerPage", "sortBy", "x"]),
                          st.text(max_size=12), max_size=3)


@pytest.fixture
async def http(server: RunningSidecar, token: str) -> AsyncIterator[httpx.AsyncClient]:
    credential = await insert_credential(server.sidecar)
    await insert_camera(server.sidecar, credential, "devices/1", mtx_path="cam-1")
    async with httpx.AsyncClient(base_url=server.url, timeout=REPLY_TIMEOUT,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


@EXAMPLES
@given(method=methods, path=st.lists(segments, min_size=1, max_size=3), body=bodies,
       query=queries)
async def test_http_requests_always_get_a_precise_answer(
        http: httpx.AsyncClient, method: str, path: list[str], body: bytes,
        query: dict[str, str]) -> None:
    url = "/api/" + "/".join(quote(part, safe="") for part in path)
    assume(not (method == "DELETE" and path[0] == "auth"))  # logging out ends the session
    response = await http.request(method, url, content=body, params=query,
                                  headers={"content-type": "application/json"})
    assert response.status_code < 500, response.text
    reply = response.json()
    if response.status_code >= 400:
        assert set(reply) == {"error"}
        assert_precise(reply)
