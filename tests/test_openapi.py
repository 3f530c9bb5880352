"""`GET /api/openapi.json`: a valid OpenAPI 3.1 document of every route, and the server keeps it.

Schemathesis generates requests from the document and runs them against the real server:
no reply may be a 500 or break the schema, status codes and content types it declares.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Route

from nestmtx_sidecar.app import create_app
from nestmtx_sidecar.http.api import MAX_BODY, ROUTE_COMMANDS
from nestmtx_sidecar.http.openapi import document
from nestmtx_sidecar.modules.cameras import Cameras
from nestmtx_sidecar.modules.credentials import Credentials
from nestmtx_sidecar.modules.users import Users
from tests.conftest import RunningSidecar, make_settings, serve_in_loop
from tests.doors import insert_camera, insert_credential
from tests.fakes.google import FakeGoogle

MAX_EXAMPLES = 20  # per operation and generation mode: the whole run stays well under 2 min
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance,
          content_type_conformance]


@pytest.fixture
async def google() -> AsyncIterator[FakeGoogle]:
    async with FakeGoogle().serve() as fake:
        yield fake


@pytest.fixture
async def nest_server(tmp_path: Path, google: FakeGoogle) -> AsyncIterator[RunningSidecar]:
    """The sidecar on the fake Google, so nothing the fuzzer triggers leaves this machine."""
    settings = make_settings(tmp_path, google_token_uri=google.token_endpoint,
                             sdm_api_url=google.sdm_url, log_level="info")
    async with serve_in_loop(settings) as running:
        yield running


async def fetch_document(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url) as client:
        reply = await client.get("/api/openapi.json")  # no token
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/json"
    return reply.json()


async def test_the_document_is_valid_openapi_3_1_and_needs_no_token(
        server: RunningSidecar) -> None:
    document = await fetch_document(server.url)
    assert document["openapi"].startswith("3.1")
    validate(document)  # raises on anything the OpenAPI 3.1 meta-schema refuses


async def test_every_route_is_an_operation_with_a_summary(server: RunningSidecar) -> None:
    document = await fetch_document(server.url)
    paths = document["paths"]
    expected = {
        ("/healthz", "get"), ("/readyz", "get"), ("/metrics", "get"), ("/hooks/{hook}", "post"),
        ("/hooks/source/{path}", "get"), ("/api/oauth2/callback", "get"),
        ("/api/openapi.json", "get"), ("/api/auth", "post"), ("/api/auth", "delete"),
        ("/api/auth/{id}", "delete"), ("/api/health", "get"), ("/api/version", "get"),
        ("/api/users", "get"), ("/api/users", "post"), ("/api/cameras", "get"),
        ("/api/credentials", "get"), ("/api/credentials", "post"),
        *((f"/api/{module}/{{id}}", method) for module in ("users", "cameras", "credentials")
          for method in ("get", "put", "patch")),
        ("/api/users/{id}", "delete"), ("/api/credentials/{id}", "delete"),
    }
    found = {(path, method) for path, operations in paths.items() for method in operations}
    assert expected <= found
    for path, method in found:
        operation = paths[path][method]
        # A route added without a description in nestmtx_sidecar/http/openapi.py lands here.
        assert "default" not in operation["responses"], f"{method} {path} is not described"
        assert operation["summary"] and operation["tags"], (path, method)
    # The commands a module lacks are not offered: cameras come from Google, not from POST.
    assert "post" not in paths["/api/cameras"] and "delete" not in paths["/api/cameras/{id}"]


async def test_a_route_nobody_described_still_appears_from_its_docstring(
        server: RunningSidecar) -> None:
    async def example(request: Any) -> Any:
        """An example page.

        Served at /example.
        """

    operation = document([Route("/example", example)], server.sidecar.dispatcher.modules,
                         ROUTE_COMMANDS, MAX_BODY)["paths"]["/example"]["get"]
    assert operation["summary"] == "An example page." and \
        operation["description"] == "Served at /example."
    assert "default" in operation["responses"]  # what the completeness test above refuses


async def test_every_served_route_is_in_the_document(server: RunningSidecar) -> None:
    """Drift check from the other side: a route added to the app shows up, described."""
    document = await fetch_document(server.url)
    for route in create_app(server.sidecar).other_asgi_app.routes:
        if isinstance(route, Route) and "{module}" not in route.path:
            path = re.sub(r"{(\w+):\w+}", r"{\1}", route.path)  # {x:int} is {x}
            for method in (route.methods or set()) - {"HEAD"}:
                assert method.lower() in document["paths"][path], (method, path)


async def test_bodies_and_list_parameters_are_the_validating_declarations(
        server: RunningSidecar) -> None:
    paths = (await fetch_document(server.url))["paths"]

    def body(path: str, method: str) -> Any:
        return paths[path][method]["requestBody"]["content"]["application/json"]["schema"]

    assert body("/api/users", "post") == Users.contract.bodies["create"][0].schema()
    assert body("/api/cameras/{id}", "put") == Cameras.contract.bodies["update"][0].schema()
    update = body("/api/credentials/{id}", "patch")
    assert update == {"oneOf": [b.schema() for b in Credentials.contract.bodies["update"]]}
    users_create = body("/api/users", "post")
    assert users_create["required"] == ["username", "password"]
    assert users_create["properties"]["password"]["minLength"] == 8
    assert users_create["additionalProperties"] is False
    sort_by = {p["name"]: p for p in paths["/api/cameras"]["get"]["parameters"]}["sortBy"]
    assert "mtx_path" in sort_by["description"]
    # Public commands say so; the rest need the bearer scheme.
    assert paths["/api/auth"]["post"]["security"] == []
    assert paths["/api/users"]["get"]["security"] == [{"bearer": []}]


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
        nest_server: RunningSidecar) -> None:
    credential = await insert_credential(nest_server.sidecar)
    camera = await insert_camera(nest_server.sidecar, credential, "enterprises/p/devices/cam-1",
                                 name="Door", mtx_path="door", protocols=["RTSP"])
    await insert_camera(nest_server.sidecar, credential, "enterprises/p/devices/cam-2",
                        name="Yard", protocols=["WEB_RTC"])
    token = await nest_server.login()
    existing = {"users": 1, "cameras": camera, "credentials": credential, "auth": "current"}
    failures = await asyncio.to_thread(
        fuzz, nest_server.url, token, nest_server.hook_secret, nest_server.login, existing)
    assert not failures, "\n\n".join(failures)


def fuzz(url: str, token: str, hook_secret: str, login: Callable[[], Any],
         existing: dict[str, Any]) -> list[str]:
    """Every operation, with positive and negative examples; what failed, per operation.

    Random ids rarely hit a row, so operations on one entity also run on an existing id.
    """
    schema = schemathesis.openapi.from_url(url + "/api/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    # Every operation runs, so none passes unseen; schemathesis leaves out the document's own.
    documented = {f"{method.upper()} {path}" for path, methods in schema.raw_schema["paths"].items()
                  for method in methods} - {"GET /api/openapi.json"}
    assert {operation.label for operation in operations} == documented
    # Log-outs first: each logs in anew, which must happen before the fuzzer renames the
    # admin or changes their password, and before its wrong log-ins get this address
    # throttled; deletes last, so the other operations find rows.
    operations.sort(key=lambda operation: (not _is_log_out(operation),
                                           operation.method.upper() == "DELETE"))
    failures = []
    for operation in operations:
        runs: list[tuple[GenerationMode, dict[str, Any] | None]] = [
            (mode, None) for mode in GenerationMode]
        if operation.path.endswith("{id}"):
            runs.append((GenerationMode.POSITIVE, {"id": existing[operation.path.split("/")[2]]}))
        for mode, path_parameters in runs:
            strategy = operation.as_strategy(generation_mode=mode,
                                             path_parameters=path_parameters)

            @hypothesis.settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                                 phases=[Phase.explicit, Phase.generate],
                                 suppress_health_check=list(HealthCheck))
            @hypothesis.given(case=strategy)
            def run(case: schemathesis.Case) -> None:
                case.call_and_validate(headers=_auth_header(case, token, hook_secret, login),
                                       checks=CHECKS, timeout=30)

            try:
                run()
            except hypothesis.errors.Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # nothing to get wrong: no parameters
            except Exception as exc:
                failures.append(f"{operation.label} ({mode.value}, {path_parameters}): {exc}")
    return failures


def _is_log_out(operation: Any) -> bool:
    return operation.method.upper() == "DELETE" and operation.path.startswith("/api/auth")


def _auth_header(case: schemathesis.Case, token: str, hook_secret: str,
                 login: Callable[[], Any]) -> dict[str, str]:
    if case.operation.path.startswith("/hooks/"):
        return {"Authorization": f"Bearer {hook_secret}"}
    if _is_log_out(case.operation):
        # Logging out revokes the token: each log-out gets a session of its own.
        token = asyncio.run(login())
    return {"Authorization": f"Bearer {token}"}


# Bugs the fuzzer found, pinned where a user meets them.

NEW_CREDENTIAL = {"description": "Home", "oauth_client_id": "id.apps.googleusercontent.com",
                  "oauth_client_secret": "secret", "dac_project_id": "4f1c2a9e-project_1.x"}


async def test_a_project_id_that_would_break_google_urls_is_refused(
        server: RunningSidecar, token: str) -> None:
    """The project id goes into URL paths: `?` or `/` in it made a wrong consent URL."""
    async with httpx.AsyncClient(base_url=server.url,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        for project in ("4[7!?t1L", "a/b", "..", "p#1", "a b"):
            reply = await client.post("/api/credentials",
                                      json={**NEW_CREDENTIAL, "dac_project_id": project})
            assert reply.status_code == 422, (project, reply.text)
            assert reply.json()["error"]["details"] == [{
                "field": "dac_project_id",
                "message": "must be a Device Access project ID (letters, digits, - _ .)"}]
        created = await client.post("/api/credentials", json=NEW_CREDENTIAL)
        assert created.status_code == 201, created.text
        reply = await client.put(f"/api/credentials/{created.json()['id']}",
                                 json={"origin": "https://nvr.example"})
        assert reply.status_code == 200, reply.text
        consent = httpx.URL(reply.json())
        assert consent.path == "/partnerconnections/4f1c2a9e-project_1.x/auth"


async def test_an_unclosed_ipv6_origin_is_an_invalid_field_not_a_server_error(
        server: RunningSidecar, token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        created = await client.post("/api/credentials", json=NEW_CREDENTIAL)
        for origin in ("http://[", "https://[::1"):
            reply = await client.put(f"/api/credentials/{created.json()['id']}",
                                     json={"origin": origin})
            assert reply.status_code == 422, reply.text
            assert reply.json()["error"]["details"] == [
                {"field": "origin", "message": "not an origin"}]
