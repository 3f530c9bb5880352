"""POST /hooks/<hook>: authentication, validation (never a 500), and byte-exact values."""

from __future__ import annotations

import asyncio
import queue
import subprocess
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nestmtx_sidecar.events import Event
from nestmtx_sidecar.hooks.camera_details import redact_query
from nestmtx_sidecar.hooks.receiver import MAX_BODY
from nestmtx_sidecar.modules.cameras import has_dot_segment
from tests.conftest import Events, RunningSidecar
from tests.mediamtx import (
    MediaMTX,
    add_camera,
    busybox_path,
    curl_path,
    hook_settings,
    hook_variables,
)


def post(server: RunningSidecar, hook: str, body: bytes | None = None,
         json_body: object = None, secret: str | None = "") -> httpx.Response:
    headers = {}
    if secret is not None:
        headers["Authorization"] = f"Bearer {secret or server.hook_secret}"
    return httpx.post(f"{server.url}/hooks/{hook}", content=body, json=json_body,
                      headers=headers)


async def apost(server: RunningSidecar, hook: str, **kwargs: object) -> httpx.Response:
    return await asyncio.to_thread(post, server, hook, **kwargs)  # type: ignore[arg-type]


async def test_aliases_map_to_ready_and_not_ready(server: RunningSidecar) -> None:
    seen = Events.subscribed(server.sidecar.bus).seen
    for hook in ("available", "unavailable"):
        reply = await apost(server, hook, json_body={"MTX_PATH": "x", "MTX_SOURCE_ID": "s"})
        assert reply.status_code == 202, reply.text
    await server.sidecar.bus.drain()
    assert [e.event for e in seen] == ["ready", "notReady"]
    assert seen[0].details["sourceId"] == "s" and seen[0].details["sourceType"] == ""


@pytest.mark.parametrize("secret", [None, "wrong", "Basic abc"])
async def test_missing_or_wrong_secret_is_401(server: RunningSidecar, secret: str | None) -> None:
    if secret == "Basic abc":
        reply = await asyncio.to_thread(
            httpx.post, f"{server.url}/hooks/ready", json={"MTX_PATH": "x"},
            headers={"Authorization": f"Basic {server.hook_secret}"})
    else:
        reply = await apost(server, "ready", json_body={"MTX_PATH": "x"}, secret=secret)
    assert reply.status_code == 401
    assert reply.json()["error"]["code"]
    assert server.hook_secret not in reply.text


async def test_unknown_hook_is_404(server: RunningSidecar) -> None:
    reply = await apost(server, "runOnFoo", json_body={"MTX_PATH": "x"})
    assert reply.status_code == 404
    assert "runOnFoo" in reply.json()["error"]["message"]


@pytest.mark.parametrize(("body", "status", "fragment"), [
    (b"not json", 400, "not valid JSON"),
    (b"", 400, "not valid JSON"),
    (b"[1, 2]", 422, "JSON object"),
    (b'"MTX_PATH"', 422, "JSON object"),
    (b'{"MTX_PATH": 5}', 422, "must be a string"),
    (b'{"MTX_PATH": "x", "MTX_QUERY": null}', 422, "must be a string"),
    (b'{"MTX_PATH": "x", "MTX_QUERY": {"a": 1}}', 422, "must be a string"),
    (b'{"MTX_QUERY": "a"}', 422, "MTX_PATH"),
    (b'{"MTX_PATH": ""}', 422, "MTX_PATH"),
    (b'{"MTX_PATH": "x", "lower case": "v"}', 422, "variable name"),
    (b"{" + b'"MTX_PATH": "' + b"x" * 70_000 + b'"}', 400, "larger"),
    (b'{"MTX_PATH": "\xff\xfe"}', 202, ""),  # not UTF-8: still an event, bytes replaced
    (b"[" * 60_000, 400, "not valid JSON"),  # deeper than the parser's recursion limit
    (b'{"MTX_PATH": "x", "\\ud800": "v"}', 422, "variable name"),  # echoed, then encoded
    (b'{"MTX_PATH": "x", "MTX_QUERY": ' + b'{"a": ' * 9_000 + b"1" + b"}" * 9_001, 400,
     "not valid JSON"),
])
async def test_malformed_bodies_get_precise_4xx(server: RunningSidecar, body: bytes,
                                                status: int, fragment: str) -> None:
    reply = await apost(server, "read", body=body)
    assert reply.status_code == status, reply.text
    if status != 202:
        error = reply.json()["error"]
        assert fragment in error["message"] + str(error["details"])


# Values as MediaMTX may pass them: anything but NUL (environment strings cannot hold it).
values = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                 max_size=40)
# Less what is refused or redacted on purpose: dot segments, reader credentials.
paths = values.filter(lambda path: bool(path) and not has_dot_segment(path))
queries = values.filter(lambda query: redact_query(query) == query)


@pytest.mark.parametrize("backend", ["busybox", "curl"])
async def test_fuzzed_values_round_trip_byte_exact_through_the_script(
        server: RunningSidecar, tmp_path: Path, backend: str) -> None:
    tools = (busybox_path if backend == "busybox" else curl_path)(tmp_path / "bin")
    mtx = MediaMTX(hook_settings(), {"PATH": tools, "NESTMTX_URL": server.url,
                                     "NESTMTX_HOOK_SECRET": server.hook_secret})
    received: queue.Queue[Event] = queue.Queue()

    async def subscriber(event: Event) -> None:
        received.put(event)

    server.sidecar.bus.subscribe(subscriber)

    # Hypothesis drives a plain function; it runs in a thread so the server keeps serving.
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(path=paths, query=queries, source_type=values, source_id=values)
    def round_trip(path: str, query: str, source_type: str, source_id: str) -> None:
        variables = hook_variables("ready", path, MTX_QUERY=query, MTX_SOURCE_TYPE=source_type,
                                   MTX_SOURCE_ID=source_id)
        argv = mtx.argv("ready", variables)
        result = subprocess.run(argv, env={**mtx.environ, **variables}, capture_output=True,
                                timeout=15, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stderr
        event = received.get(timeout=5)
        assert event.details["path"] == path
        assert event.details["query"] == query
        assert event.details["sourceType"] == source_type
        assert event.details["sourceId"] == source_id

    await asyncio.to_thread(round_trip)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.one_of(
    st.binary(max_size=200),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                 lambda inner: st.lists(inner, max_size=3)
                 | st.dictionaries(st.text(max_size=10), inner, max_size=3),
                 max_leaves=8).map(lambda v: httpx.Request("POST", "/", json=v).content),
))
def test_arbitrary_bodies_never_500(body: bytes, fuzz_server: RunningSidecar) -> None:
    reply = post(fuzz_server, "read", body=body)
    assert reply.status_code in (202, 400, 422), reply.text


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The sidecar in a thread of its own, for a synchronous hypothesis test."""
    import threading

    from tests.conftest import make_settings, serve_in_loop

    ready: queue.Queue[RunningSidecar] = queue.Queue()
    stop = threading.Event()

    async def main() -> None:
        async with serve_in_loop(make_settings(tmp_path_factory.mktemp("fuzz"))) as running:
            ready.put(running)
            await asyncio.to_thread(stop.wait)

    thread = threading.Thread(target=asyncio.run, args=(main(),))
    thread.start()
    try:
        yield ready.get(timeout=30)
    finally:
        stop.set()
        thread.join(30)


DOT_PATHS = ["public/../../source/cam1", "..", ".", "a/./b", "a/.."]


@pytest.mark.parametrize("path", DOT_PATHS)
async def test_a_hook_for_a_path_with_dot_segments_is_refused(server: RunningSidecar,
                                                              path: str) -> None:
    reply = await apost(server, "unDemand", json_body={"MTX_PATH": path})
    assert reply.status_code == 422, reply.text
    error = reply.json()["error"]
    assert error["details"] == [{"field": "MTX_PATH", "message": "must not have . or .. segments"}]


async def raw_request(server: RunningSidecar, request: bytes) -> tuple[int, bytes]:
    """Bytes sent as they are (an HTTP client would resolve dot segments, or finish the
    body); the answer's status and body, read without waiting for the request to end."""
    port = int(server.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = next(int(line.split(b":")[1]) for line in head.lower().splitlines()
                      if line.startswith(b"content-length:"))
        body = await asyncio.wait_for(reader.readexactly(length), 5)
    finally:
        writer.close()
    return int(head.split()[1]), body


def hook_request(server: RunningSidecar, line: str, *headers: str) -> bytes:
    return "\r\n".join([line, "Host: 127.0.0.1", f"Authorization: Bearer {server.hook_secret}",
                         *headers, "", ""]).encode()


async def test_the_source_of_a_path_with_dot_segments_is_refused(server: RunningSidecar) -> None:
    await add_camera(server.sidecar.store, "cam1")
    status, body = await raw_request(server, hook_request(
        server, "GET /hooks/source/public/../../source/cam1 HTTP/1.1"))
    assert status == 422 and b". or .. segments" in body


@pytest.mark.parametrize("path", DOT_PATHS)
async def test_mtx_path_with_dot_segments_is_refused(server: RunningSidecar, token: str,
                                                     path: str) -> None:
    camera = await add_camera(server.sidecar.store, "cam")
    async with httpx.AsyncClient(base_url=server.url,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        reply = await client.put(f"/api/cameras/{camera}", json={"mtx_path": path})
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"]["details"] == [
        {"field": "mtx_path", "message": "must not have . or .. segments"}]


async def test_a_body_past_the_limit_is_refused_before_it_ends(server: RunningSidecar) -> None:
    chunk = b'{"MTX_PATH": "' + b"x" * (MAX_BODY + 1)
    # The chunked body never ends: the answer must come anyway.
    status, body = await raw_request(server, hook_request(
        server, "POST /hooks/read HTTP/1.1", "Transfer-Encoding: chunked"
    ) + f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
    assert status == 400 and b"larger" in body


async def test_a_declared_length_past_the_limit_is_refused_unread(server: RunningSidecar
                                                                  ) -> None:
    status, body = await raw_request(server, hook_request(
        server, "POST /hooks/read HTTP/1.1", f"Content-Length: {10 * MAX_BODY}"))
    assert status == 400 and b"larger" in body
