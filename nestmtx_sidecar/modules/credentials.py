"""`credentials`: Google OAuth clients and Device Access projects; secrets never leave."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..errors import Invalid, NotFound, SecretUnreadable, field_error
from ..events import isoformat
from ..security import Redactor, SecretBox
from ..storage.store import Store, as_utc, credentials_table, list_page, utcnow
from . import ID_SCHEMA, Caller, Contract, Module, entity_id, entity_replies
from .credential_consent import (
    AUTHORIZE,
    CALLBACK_PATH,
    CONSENT_URL,
    ORIGIN,
    ConsentStates,
)
from .credential_pubsub import (
    PROJECT_RE,
    PUBSUB_FIELDS,
    SUBSCRIPTION_RE,
    TOPIC_RE,
    check_pubsub,
    pubsub_names,
    pubsub_status,
)
from .listing import ListQuery
from .schema import DATE_TIME, Body, Field, nullable, record

_SORTABLE = {key: credentials_table.c[key] for key in (
    "id", "description", "oauth_client_id", "dac_project_id", "created_at", "updated_at")}

CredentialChange = Callable[[int, str], Awaitable[None]]  # (credential id, created|updated|deleted)
UNREADABLE_MESSAGE = (
    "The stored secrets of credential {id} ({description}) cannot be decrypted: "
    "NESTMTX_APP_KEY is not the key they were encrypted with (the app key changed). Start the "
    "sidecar with the previous NESTMTX_APP_KEY, or enter the OAuth client secret again "
    "(`credentials update` with oauth_client_secret) and authorize the credential again "
    "(`credentials update` with {{origin}})."
)


@dataclass(frozen=True)
class CredentialSecrets:
    """A credential's secrets in clear, for the token keeper and the code exchange only."""

    client_secret: str
    refresh_token: str | None
    access_token: str | None


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
    Field("gcp_project_id", "string", nullable=True, pattern=PROJECT_RE,
          hint="must be a Google Cloud project id (6-30 lowercase letters, digits, -)",
          description="Your Google Cloud project: the sidecar sets up device events there "
          "(topic, publisher grant, subscription). null turns that off.",
          schema_extra={"examples": ["my-home-123"]}),
    Field("pubsub_topic", "string", nullable=True, max_length=512, pattern=TOPIC_RE,
          hint="must be a topic name, projects/<project>/topics/<id>",
          description="The Pub/Sub topic; null: `projects/<gcp_project_id>/topics/"
          "nestmtx-<dac_project_id>`."),
    Field("pubsub_subscription", "string", nullable=True, max_length=512, pattern=SUBSCRIPTION_RE,
          hint="must be a subscription name, projects/<project>/subscriptions/<id>",
          description="The pull subscription; null: `projects/<gcp_project_id>/subscriptions/"
          "nestmtx-<dac_project_id>`. Alone (no gcp_project_id) it is only pulled."),
))
_UPDATE = _CREATE.optional()
_OPTIONAL_DATE_TIME = nullable(DATE_TIME)
ITEM = record({
    "id": ID_SCHEMA, "description": {"type": "string"}, "oauth_client_id": {"type": "string"},
    "dac_project_id": {"type": "string"}, "has_refresh_token": {"type": "boolean"},
    "authenticated": {"type": "boolean",
                      "description": "Google accepted the last token refresh."},
    "authenticated_at": _OPTIONAL_DATE_TIME, "token_expiry": _OPTIONAL_DATE_TIME,
    "auth_error": nullable({"type": "string"}),
    "gcp_project_id": nullable({"type": "string"}),
    "pubsub_topic": nullable({"type": "string", "description": "Given or default."}),
    "pubsub_subscription": nullable({"type": "string", "description": "Given or default."}),
    "pubsub": nullable(record({
        "topic": nullable({"type": "string"}), "subscription": {"type": "string"},
        "status": {"enum": ["pending", "waiting", "receiving", "no_events", "error"],
                   "description": "pending: not set up yet; waiting: set up, no event yet; "
                   "no_events: none long after set-up; error: see message."},
        "message": nullable({"type": "string", "description": "What is wrong, what to do."}),
        "last_event_at": _OPTIONAL_DATE_TIME,
        "instruction": {"type": "string", "description": "The step only you can do."},
    }, "Device events: where they come from and how that goes; null without Pub/Sub.")),
    "created_at": DATE_TIME, "updated_at": DATE_TIME,
}, "A Google OAuth client and Device Access project; its secrets are never shown.")


def _item(row: Any) -> dict[str, Any]:
    expiry = as_utc(row.token_expiry)
    topic, subscription = pubsub_names(row)
    return {
        "id": row.id, "description": row.description, "oauth_client_id": row.oauth_client_id,
        "dac_project_id": row.dac_project_id,
        "has_refresh_token": row.refresh_token is not None,
        "authenticated": bool(row.authenticated_at and not row.auth_error),
        "authenticated_at": isoformat(row.authenticated_at) if row.authenticated_at else None,
        "token_expiry": isoformat(expiry) if expiry else None,
        "auth_error": row.auth_error,
        "gcp_project_id": row.gcp_project_id,
        "pubsub_topic": topic, "pubsub_subscription": subscription,
        "pubsub": pubsub_status(row, utcnow()),
        "created_at": isoformat(row.created_at), "updated_at": isoformat(row.updated_at),
    }


class Credentials(Module):
    name = "credentials"
    contract = Contract(
        bodies={"create": (_CREATE,), "update": (_UPDATE, AUTHORIZE)},
        replies={**entity_replies(ITEM), "update": {"oneOf": [ITEM, CONSENT_URL]}},
        failures={"update": {409: "With `{origin}`: the stored client secret cannot be "
                             "decrypted (NESTMTX_APP_KEY changed), `secret_unreadable`."}},
        sortable=frozenset(_SORTABLE),
    )

    def __init__(self, store: Store, box: SecretBox, redactor: Redactor, consent_base: str
                 ) -> None:
        self._store = store
        self.consents = ConsentStates(store, box, consent_base)
        self._box = box
        self._redactor = redactor
        self._listeners: list[CredentialChange] = []

    def on_change(self, listener: CredentialChange) -> None:
        """Called when a credential is created, its settings updated, or it is deleted; not
        for its token and Pub/Sub state, which the token keeper and device events announce."""
        self._listeners.append(listener)

    async def list(self, caller: Caller | None, payload: Any) -> dict[str, Any]:
        """List credentials."""
        query = ListQuery.parse(payload, _SORTABLE)
        searchable = [credentials_table.c.description, credentials_table.c.oauth_client_id,
                      credentials_table.c.dac_project_id]
        async with self._store.begin() as conn:
            return await list_page(conn, query, sa.select(credentials_table), searchable, _SORTABLE,
                                   _item)

    async def create(self, caller: Caller | None, payload: Any) -> dict[str, Any]:
        """Add credentials.

        Then authorize them with `{origin}` (update), or give a `refresh_token` here.
        """
        fields = _CREATE.parse(payload)
        check_pubsub(fields, None)
        values = self._values(fields, required=True)
        async with self._store.begin() as conn:
            credential_id = (await conn.execute(
                credentials_table.insert().values(values)
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
        payload = Body.shape(payload, _UPDATE.names | AUTHORIZE.names)
        row = await self.row(credential_id)
        if "origin" in payload:
            if len(payload) > 1:
                raise Invalid("origin cannot be combined with other fields",
                              [field_error("origin", "must be alone")])
            redirect_uri = ORIGIN.validate(payload["origin"]) + CALLBACK_PATH
            self.client_secret(row)  # the exchange needs it: say so before going to Google
            return await self.consents.begin(row, redirect_uri)
        fields = _UPDATE.values(payload)
        check_pubsub(fields, row)
        values = self._values(fields, required=False)
        if values:
            async with self._store.begin() as conn:
                await conn.execute(
                    credentials_table.update().where(credentials_table.c.id == credential_id)
                    .values(values)
                )
            await self._notify(credential_id, "updated")
        return await self.read(caller, credential_id)

    async def delete(self, caller: Caller | None, entity: Any) -> dict[str, Any]:
        """Delete credentials and their cameras; returns them as they were."""
        credential_id = entity_id(entity)
        item = _item(await self.row(credential_id))
        await self._notify(credential_id, "deleted")  # streams stop before their cameras go
        async with self._store.begin() as conn:
            await conn.execute(credentials_table.delete().where(
                credentials_table.c.id == credential_id))
        return item

    def decrypted(self, row: Any) -> CredentialSecrets:
        """The row's secrets in clear; SecretUnreadable, naming the credential and the way
        out, when the app key changed since they were stored."""
        return CredentialSecrets(self.client_secret(row), self._decrypt(row, row.refresh_token),
                                 self._decrypt(row, row.access_token))

    def client_secret(self, row: Any) -> str:
        """The OAuth client secret alone: what the consent flow needs (a refresh token stored
        under an earlier app key is replaced by it)."""
        return self._decrypt(row, row.oauth_client_secret) or ""

    def _decrypt(self, row: Any, ciphertext: str | None) -> str | None:
        try:
            return self._box.decrypt(ciphertext)
        except SecretUnreadable:
            raise SecretUnreadable(UNREADABLE_MESSAGE.format(
                id=row.id, description=row.description)) from None

    # -- token and Pub/Sub state: written by their owners through these, announced by them --

    async def store_grant(self, credential_id: int, refresh_token: str,
                          access_token: str | None, expiry: dt.datetime) -> None:
        """A new grant (the consent flow's code exchange): its first refresh announces
        `authenticated`, not `reauthenticated`."""
        await self._save_state(credential_id, refresh_token=self._box.encrypt(refresh_token),
                               access_token=self._box.encrypt(access_token),
                               token_expiry=expiry, authenticated_at=None, auth_error=None)

    async def store_tokens(self, credential_id: int, access_token: str | None,
                           refresh_token: str | None, expiry: dt.datetime | None) -> None:
        """Google accepted the grant: the tokens it answered with; authenticated now."""
        await self._save_state(credential_id, access_token=self._box.encrypt(access_token),
                               refresh_token=self._box.encrypt(refresh_token),
                               token_expiry=expiry, authenticated_at=utcnow(), auth_error=None)

    async def token_refused(self, credential_id: int, message: str) -> None:
        """Google refused the grant: the access token is gone; `message` says what to do."""
        await self._save_state(credential_id, access_token=None, token_expiry=None,
                               auth_error=message)

    async def note_auth_error(self, credential_id: int, message: str) -> None:
        """Authentication fails for now (Google unreachable, secrets unreadable)."""
        await self._save_state(credential_id, auth_error=message)

    async def pubsub_ready(self, credential_id: int) -> None:
        """Device events are set up (or first pulled): the no-events warning counts from the
        first time, so later set-ups keep it."""
        await self._save_state(credential_id, credentials_table.c.pubsub_ready_at.is_(None),
                               pubsub_ready_at=utcnow(), updated_at=credentials_table.c.updated_at)

    async def pubsub_heard(self, credential_id: int) -> None:
        await self._save_state(credential_id, pubsub_last_event_at=utcnow(),
                               updated_at=credentials_table.c.updated_at)

    async def pubsub_failing(self, credential_id: int, message: str | None) -> None:
        """What stops device events now (None: nothing)."""
        await self._save_state(credential_id, pubsub_error=message,
                               updated_at=credentials_table.c.updated_at)

    async def _save_state(self, credential_id: int, *where: sa.ColumnElement[bool],
                          **values: Any) -> None:
        """State, not settings: `updated_at` moves unless the caller keeps it, and no change
        listener hears of it (the token keeper reloads on settings changes)."""
        async with self._store.begin() as conn:
            await conn.execute(credentials_table.update()
                               .where(credentials_table.c.id == credential_id, *where)
                               .values({"updated_at": utcnow(), **values}))

    async def row(self, credential_id: int) -> Any:
        async with self._store.begin() as conn:
            row = (await conn.execute(
                sa.select(credentials_table).where(credentials_table.c.id == credential_id)
            )).first()
        if row is None:
            raise NotFound(f"No credentials with id {credential_id}")
        return row

    def _values(self, fields: dict[str, Any], *, required: bool) -> dict[str, Any]:
        """Validated fields -> columns: secrets encrypted (and redacted from logs)."""
        values = {key: fields[key] for key in ("description", "oauth_client_id",
                                               "dac_project_id", *PUBSUB_FIELDS)
                  if key in fields}
        if values.keys() & {"dac_project_id", *PUBSUB_FIELDS}:
            # Other names (or projects): set-up runs again, and its status starts over.
            values.update(pubsub_ready_at=None, pubsub_last_event_at=None, pubsub_error=None)
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
