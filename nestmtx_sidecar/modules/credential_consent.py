"""The consent flow's state on a credential: a one-time state and PKCE verifier, and the
URL of Google's consent page for it."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import sqlalchemy as sa

from ..errors import BadRequest, Invalid, field_error
from ..security import SecretBox
from ..storage.store import Store, as_utc, credentials_table, utcnow
from .credential_pubsub import pubsub_names
from .schema import Body, Field

SDM_SCOPE = "https://www.googleapis.com/auth/sdm.service"
PUBSUB_SCOPE = "https://www.googleapis.com/auth/pubsub"
CALLBACK_PATH = "/api/oauth2/callback"
STATE_LIFETIME = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class Consent:
    """A consent flow whose state a callback has just consumed."""

    credential_id: int
    redirect_uri: str
    code_verifier: str


def _digest(state: str) -> str:
    """Only a digest of the state is stored: a copy of the database cannot finish a flow."""
    return hashlib.sha256(state.encode()).hexdigest()


def _pkce_challenge(verifier: str) -> str:
    """RFC 7636 S256: BASE64URL(SHA256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def consent_url(base: str, row: Any, redirect_uri: str, state: str, code_challenge: str
                ) -> str:
    """Google's Partner Connections page for the credential's project (`<base>/<project>/auth`).

    With Pub/Sub configured it asks for the pubsub scope too: pulls need it.
    """
    scope = SDM_SCOPE + (f" {PUBSUB_SCOPE}" if pubsub_names(row)[1] else "")
    query = urlencode({
        "redirect_uri": redirect_uri, "access_type": "offline", "prompt": "consent",
        "client_id": row.oauth_client_id, "response_type": "code", "scope": scope,
        "state": state, "code_challenge": code_challenge, "code_challenge_method": "S256",
    })
    return f"{base.rstrip('/')}/{quote(row.dac_project_id, safe='')}/auth?{query}"


def _origin(value: Any) -> str:
    try:
        parts = urlsplit(value) if isinstance(value, str) else None
    except ValueError:  # such as "http://[", an unclosed IPv6 address
        parts = None
    if not parts or parts.scheme not in ("http", "https") or not parts.netloc or \
            parts.path not in ("", "/") or parts.query or parts.fragment:
        raise Invalid("origin must be a URL like https://sidecar.example:2000",
                      [field_error("origin", "not an origin")])
    if "@" in parts.netloc:  # a user name or password would end up in Google's redirect
        raise Invalid("origin must not contain a user name or password",
                      [field_error("origin", "must not contain user info")])
    return f"{parts.scheme}://{parts.netloc}"


ORIGIN = Field("origin", "string", required=True, check=_origin,
               description="The sidecar's origin as the browser sees it; Google redirects to "
               f"`<origin>{CALLBACK_PATH}` after consent.",
               schema_extra={"format": "uri", "examples": ["https://sidecar.example:2000"]})
AUTHORIZE = Body((ORIGIN,), "Start Google's consent flow: the reply is the consent URL to open.")
CONSENT_URL = {"type": "string", "format": "uri", "description": "Google's consent page."}


class ConsentStates:
    """Issues and takes the state of each credential's consent flow (one at a time)."""

    def __init__(self, store: Store, box: SecretBox, consent_base: str,
                 clock: Callable[[], dt.datetime] = utcnow) -> None:
        self._store = store
        self._box = box
        self._consent_base = consent_base
        self.clock = clock  # when states are issued and checked; tests move it

    async def begin(self, row: Any, redirect_uri: str) -> str:
        """A new state and PKCE verifier for this credential (replacing any earlier flow)."""
        state = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)  # 86 characters: RFC 7636 allows 43 to 128
        async with self._store.begin() as conn:
            await conn.execute(credentials_table.update()
                               .where(credentials_table.c.id == row.id)
                               .values(oauth_state=_digest(state),
                                       oauth_state_issued_at=self.clock(),
                                       oauth_code_verifier=self._box.encrypt(verifier),
                                       oauth_redirect_uri=redirect_uri))
        return consent_url(self._consent_base, row, redirect_uri, state,
                           _pkce_challenge(verifier))

    async def consume(self, state: str) -> Consent:
        """The flow a callback's state belongs to, taken so no later callback can use it.

        Raises BadRequest (a message for the user) when the state is unknown, already used
        or older than STATE_LIFETIME; an expired state is consumed all the same.
        """
        digest = _digest(state)
        async with self._store.begin() as conn:
            row = (await conn.execute(sa.select(
                credentials_table.c.id, credentials_table.c.oauth_redirect_uri,
                credentials_table.c.oauth_code_verifier, credentials_table.c.oauth_state_issued_at,
            ).where(credentials_table.c.oauth_state == digest))).first()
            # Conditional on the digest: of two concurrent callbacks only one takes it.
            taken = row is not None and (await conn.execute(
                credentials_table.update()
                .where(credentials_table.c.id == row.id, credentials_table.c.oauth_state == digest)
                .values(oauth_state=None, oauth_state_issued_at=None, oauth_code_verifier=None,
                        oauth_redirect_uri=None)
            )).rowcount == 1
        if row is None or not taken or not row.oauth_redirect_uri:
            raise BadRequest("This authorization link is unknown or was already used; "
                             "start again from the credential's consent URL.")
        issued = as_utc(row.oauth_state_issued_at)
        verifier = self._box.decrypt(row.oauth_code_verifier)
        if issued is None or verifier is None or self.clock() - issued > STATE_LIFETIME:
            raise BadRequest("This authorization link has expired (it is valid for "
                             f"{STATE_LIFETIME.seconds // 60} minutes); start again from the "
                             "credential's consent URL.")
        return Consent(row.id, row.oauth_redirect_uri, verifier)
