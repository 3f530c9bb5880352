"""`credentials`: Google OAuth clients and Device Access projects; secrets never leave."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

import sqlalchemy as sa

from ..errors import Invalid, NotFound, field_error
from ..events import isoformat
from ..listing import ListQuery
from ..schema import DATE_TIME, Body, Field, nullable, record
from ..security import Redactor, SecretBox
from ..store import Store, as_utc, credentials, list_page, utcnow
from . import ID_SCHEMA, Caller, Contract, Module, entity_id, entity_replies

CONSENT_URL = "https://nestservices.google.com/partnerconnections/{project}/auth"
SDM_SCOPE = "https://www.googleapis.com/auth/sdm.service"
CALLBACK_PATH = "/api/oauth2/callback"

_SORTABLE = {key: credentials.c[key] for key in (
    "id", "description", "oauth_client_id", "dac_project_id", "created_at", "updated_at")}

CredentialChange = Callable[[int, str], Awaitable[None]]  # (credential id, created|updated|deleted)


_CREATE = Body((
    Field("description", "string", required=True, description="A name to tell it apart."),
    Field("oauth_client_id", "string", required=True,
          description="The Google Cloud OAuth client ID."),
    # It goes into URL paths (consent page, SDM API): no character that would end a segment.
    Field("dac_project_id", "string", required=True, pattern=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
          hint="must be a Device Access project ID (letters, digits, - _ .)",
          description="The Device Access project ID."),
    Field("oauth_client_secret", "string", required=True, max_length=1024,
          description="The OAuth client secret; stored encrypted, never returned."),
    Field("refresh_token", "string", max_length=2048,
          description="A refresh token obtained elsewhere; stored encrypted, never returned."),
))
_UPDATE = _CREATE.optional()
_OPTIONAL_DATE_TIME = nullable(DATE_TIME)
ITEM = record({
    "id": ID_SCHEMA, "description": {"type": "string"}, "oauth_client_id": {"type": "string"},
    "dac_project_id": {"type": "string"}, "has_refresh_token": {"type": "boolean"},
    "authenticated": {"type": "boolean",
                      "description": "Google accepted the last token refresh."},
    "authenticated_at": _OPTIONAL_DATE_TIME, "token_expiry": _OPTIONAL_DATE_TIME,
    "auth_error": nullable({"type": "string"}), "created_at": DATE_TIME, "updated_at": DATE_TIME,
}, "A Google OAuth client and Device Access project; its secrets are never shown.")


def _item(row: Any) -> dict[str, Any]:
    expiry = as_utc(row.token_expiry)
    return {
        "id": row.id, "description": row.description, "oauth_client_id": row.oauth_client_id,
        "dac_project_id": row.dac_project_id,
        "has_refresh_token": row.refresh_token is not None,
        "authenticated": bool(row.authenticated_at and not row.auth_error),
        "authenticated_at": isoformat(row.authenticated_at) if row.authenticated_at else None,
        "token_expiry": isoformat(expiry) if expiry else None,
        "auth_error": row.auth_error,
        "created_at": isoformat(row.created_at), "updated_at": isoformat(row.updated_at),
    }


def consent_url(row: Any, redirect_uri: str, state: str) -> str:
    query = urlencode({
        "redirect_uri": redirect_uri, "access_type": "offline", "prompt": "consent",
        "client_id": row.oauth_client_id, "response_type": "code", "scope": SDM_SCOPE,
        "state": state,
    })
    return CONSENT_URL.format(project=row.dac_project_id) + "?" + query


def _origin(value: Any) -> str:
    try:
        parts = urlsplit(value) if isinstance(value, str) else None
    except ValueError:  # such as "http://[", an unclosed IPv6 address
        parts = None
    if not parts or parts.scheme not in ("http", "https") or not parts.netloc or \
            parts.path not in ("", "/") or parts.query or parts.fragment:
        raise Invalid("origin must be a URL like https://sidecar.example:2000",
                      [field_error("origin", "not an origin")])
    return f"{parts.scheme}://{parts.netloc}"


_ORIGIN = Field("origin", "string", required=True, check=_origin,
                description="The sidecar's origin as the browser sees it; Google redirects to "
                f"`<origin>{CALLBACK_PATH}` after consent.",
                schema_extra={"format": "uri", "examples": ["https://sidecar.example:2000"]})
_AUTHORIZE = Body((_ORIGIN,), "Start Google's consent flow: the reply is the consent URL to open.")
_CONSENT_URL = {"type": "string", "format": "uri", "description": "Google's consent page."}


class Credentials(Module):
    name = "credentials"
    contract = Contract(
        bodies={"create": (_CREATE,), "update": (_UPDATE, _AUTHORIZE)},
        replies={**entity_replies(ITEM), "update": {"oneOf": [ITEM, _CONSENT_URL]}},
        sortable=frozenset(_SORTABLE),
    )

    def __init__(self, store: Store, box: SecretBox, redactor: Redactor) -> None:
        self._store = store
        self._box = box
        self._redactor = redactor
        self._listeners: list[CredentialChange] = []

    def on_change(self, listener: CredentialChange) -> None:
        self._listeners.append(listener)

    async def list(self, caller: Caller | None, payload: Any) -> dict[str, Any]:
        """List credentials."""
        query = ListQuery.parse(payload, _SORTABLE)
        searchable = [credentials.c.description, credentials.c.oauth_client_id,
                      credentials.c.dac_project_id]
        async with self._store.begin() as conn:
            return await list_page(conn, query, sa.select(credentials), searchable, _SORTABLE,
                                   _item)

    async def create(self, caller: Caller | None, payload: Any) -> dict[str, Any]:
        """Add credentials.

        Then authorize them with `{origin}` (update), or give a `refresh_token` here.
        """
        values = self._values(_CREATE.parse(payload), required=True)
        async with self._store.begin() as conn:
            credential_id = (await conn.execute(
                credentials.insert().values(values)
            )).inserted_primary_key[0]
        await self._notify(credential_id, "created")
        return await self.read(caller, credential_id)

    async def read(self, caller: Caller | None, entity: Any) -> dict[str, Any]:
        """Read credentials."""
        return _item(await self.row(entity_id(entity)))

    async def update(self, caller: Caller | None, entity: Any, payload: Any) -> Any:
        """Change fields, or with `{origin}` start Google's consent flow and return its URL.

        `{origin}` comes alone; the reply is then the consent URL (a string) to open in the
        browser, which Google sends back to `<origin>/api/oauth2/callback`.
        """
        credential_id = entity_id(entity)
        payload = Body.shape(payload, _UPDATE.names | _AUTHORIZE.names)
        row = await self.row(credential_id)
        if "origin" in payload:
            if len(payload) > 1:
                raise Invalid("origin cannot be combined with other fields",
                              [field_error("origin", "must be alone")])
            redirect_uri = _ORIGIN.validate(payload["origin"]) + CALLBACK_PATH
            state = secrets.token_urlsafe(24)
            async with self._store.begin() as conn:
                await conn.execute(credentials.update().where(credentials.c.id == credential_id)
                                   .values(oauth_state=state, oauth_redirect_uri=redirect_uri))
            return consent_url(row, redirect_uri, state)
        values = self._values(_UPDATE.values(payload), required=False)
        if values:
            async with self._store.begin() as conn:
                await conn.execute(
                    credentials.update().where(credentials.c.id == credential_id).values(values)
                )
            await self._notify(credential_id, "updated")
        return await self.read(caller, credential_id)

    async def delete(self, caller: Caller | None, entity: Any) -> dict[str, Any]:
        """Delete credentials and their cameras; returns them as they were."""
        credential_id = entity_id(entity)
        item = _item(await self.row(credential_id))
        await self._notify(credential_id, "deleted")  # streams stop before their cameras go
        async with self._store.begin() as conn:
            await conn.execute(credentials.delete().where(credentials.c.id == credential_id))
        return item

    async def row(self, credential_id: int) -> Any:
        async with self._store.begin() as conn:
            row = (await conn.execute(
                sa.select(credentials).where(credentials.c.id == credential_id)
            )).first()
        if row is None:
            raise NotFound(f"No credentials with id {credential_id}")
        return row

    def _values(self, fields: dict[str, Any], *, required: bool) -> dict[str, Any]:
        """Validated fields -> columns: secrets encrypted (and redacted from logs)."""
        values = {key: fields[key] for key in ("description", "oauth_client_id",
                                               "dac_project_id") if key in fields}
        secret = fields.get("oauth_client_secret")
        if secret is not None:
            self._redactor.add(secret)
            values["oauth_client_secret"] = self._box.encrypt(secret)
        refresh_token = fields.get("refresh_token")
        if refresh_token is not None:
            self._redactor.add(refresh_token)
            # A new grant: its first successful refresh is `authenticated`, not `reauthenticated`.
            values.update(refresh_token=self._box.encrypt(refresh_token), access_token=None,
                          token_expiry=None, auth_error=None, authenticated_at=None)
        if values and not required:
            values["updated_at"] = utcnow()
        return values

    async def _notify(self, credential_id: int, change: str) -> None:
        for listener in self._listeners:
            await listener(credential_id, change)
