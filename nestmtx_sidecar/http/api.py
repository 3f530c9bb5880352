"""HTTP door: `/api/auth` and `/api/<module>[/<id>]` onto the same dispatcher as Socket.IO."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import BadRequest, SidecarError, TooManyRequests, Unauthorized, internal_error
from ..modules import Caller
from ..modules.auth import Auth
from ..modules.dispatch import Dispatcher, Request, parse_json
from ..security import bearer, client_address
from ..wire import ApiResponse, read_body
from .openapi import OPENAPI_PATH, document

logger = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
_COMMAND_STATUS = {"create": 201}
# The command each module route runs, by method; the API document is built from it too.
ROUTE_COMMANDS = {
    "/api/auth": {"POST": "create", "DELETE": "delete"},  # log in; log out the calling token
    "/api/{module}": {"GET": "list", "POST": "create"},
    "/api/{module}/{entity}": {"GET": "read", "PUT": "update", "PATCH": "update",
                               "DELETE": "delete"},
}
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "bad_request",
               413: "too_large"}


def error_response(error: SidecarError) -> JSONResponse:
    headers = {}
    if error.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(error, TooManyRequests):
        headers["Retry-After"] = str(error.retry_after)
    return ApiResponse(error.to_dict(), status_code=error.status, headers=headers)


class IgnoreTrailingSlash:
    """Serves `/api/cameras/` as `/api/cameras` instead of redirecting to it.

    Starlette answers a trailing slash with an empty 307, which API clients rarely follow
    and cannot parse; NestMTX's router matches either form.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and len(path) > 1 and path.endswith("/"):
            scope = {**scope, "path": path.rstrip("/") or "/"}
        await self.app(scope, receive, send)


class HttpApi:
    def __init__(self, dispatcher: Dispatcher, auth: Auth,
                 trusted_proxies: Sequence[client_address.Network] = ()) -> None:
        self._dispatcher = dispatcher
        self._auth = auth
        self._trusted_proxies = trusted_proxies
        self._document: dict[str, Any] | None = None

    @property
    def routes(self) -> list[Route]:
        return [
            Route(OPENAPI_PATH, self.openapi, methods=["GET"]),  # before /api/{module}
            Route("/api/auth", self.login, methods=["POST"]),
            Route("/api/auth", self.logout, methods=["DELETE"]),
            Route("/api/{module}", self.collection, methods=list(ROUTE_COMMANDS["/api/{module}"])),
            Route("/api/{module}/{entity}", self.item,
                  methods=list(ROUTE_COMMANDS["/api/{module}/{entity}"])),
        ]

    async def openapi(self, request: HttpRequest) -> Response:
        """The OpenAPI document of every route, built once from the app's route table."""
        if self._document is None:
            self._document = document(request.app.routes, self._dispatcher.modules,
                                      ROUTE_COMMANDS, MAX_BODY)
        return ApiResponse(self._document)

    async def login(self, request: HttpRequest) -> Response:
        return await self._run(request, "create", "auth", None)

    async def logout(self, request: HttpRequest) -> Response:
        return await self._run(request, "delete", "auth", "current")

    async def collection(self, request: HttpRequest) -> Response:
        command = ROUTE_COMMANDS["/api/{module}"][request.method]
        return await self._run(request, command, request.path_params["module"], None)

    async def item(self, request: HttpRequest) -> Response:
        command = ROUTE_COMMANDS["/api/{module}/{entity}"][request.method]
        return await self._run(request, command, request.path_params["module"],
                               request.path_params["entity"])

    async def _run(self, request: HttpRequest, command: str, module: str,
                   entity: str | None) -> Response:
        try:
            payload = await self._payload(request, command)
            caller = await self._caller(request)
            result = await self._dispatcher.run(
                Request(command, module, "http", entity, payload), caller,
                client_address.from_scope(request.scope, self._trusted_proxies),
            )
        except SidecarError as exc:
            return error_response(exc)
        return ApiResponse(result, status_code=_COMMAND_STATUS.get(command, 200))

    async def _caller(self, request: HttpRequest) -> Caller | None:
        return await bearer_caller(self._auth, request)

    async def _payload(self, request: HttpRequest, command: str) -> Any:
        if command == "list":
            return _list_payload(request)
        if command in ("read", "delete"):
            return None
        body = await read_body(request, MAX_BODY)
        payload = parse_json(body or b"{}")
        if not isinstance(payload, dict):
            raise BadRequest("Body must be a JSON object")
        return payload


async def bearer_caller(auth: Auth, request: HttpRequest) -> Caller | None:
    """The caller of `Authorization: Bearer <token>`; None without the header."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    token = bearer(header)
    if token is None:
        raise Unauthorized("Authorization must be 'Bearer <token>'")
    return await auth.authenticate(token)


def _list_payload(request: HttpRequest) -> dict[str, Any]:
    """Query string -> list payload; numbers stay strings and the list parser checks them."""
    return {key: request.query_params.get(key) for key in
            ("search", "page", "itemsPerPage", "sortBy") if key in request.query_params}


async def http_error(request: HttpRequest, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return ApiResponse({"error": {"message": exc.detail, "code": code, "details": []}},
                       status_code=exc.status_code, headers=exc.headers)


async def server_error(request: HttpRequest, exc: Exception) -> Response:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return ApiResponse(internal_error(), status_code=500)
