"""The end of Google's consent flow: the callback page, and the code traded for tokens."""

from __future__ import annotations

import datetime as dt
import html
import logging

import httpx
from starlette.requests import Request
from starlette.responses import HTMLResponse

from ...errors import (
    GoogleAuthError,
    GoogleUnreachable,
    NotFound,
    SecretUnreadable,
    SidecarError,
)
from ...modules.credential_consent import Consent
from ...modules.credentials import Credentials
from ...storage.store import utcnow
from .json_body import json_object
from .oauth import TokenKeeper

logger = logging.getLogger(__name__)

CONSOLE_CREDENTIALS = "/#credentials"  # the web console's page the callback leads back to


class ConsentCallback:
    """`GET /api/oauth2/callback`: where Google sends the browser back after consent."""

    def __init__(self, keeper: TokenKeeper, credentials: Credentials, http: httpx.AsyncClient
                 ) -> None:
        self._keeper = keeper
        self._credentials = credentials
        self._http = http

    async def endpoint(self, request: Request) -> HTMLResponse:
        query = request.query_params  # Google adds fields such as `iss` and `scope`: ignored
        state, code, error = query.get("state"), query.get("code"), query.get("error")
        consent: Consent | None = None
        refusal: SidecarError | None = None
        if state:  # consumed first, whatever follows: a state works for one callback only
            try:
                consent = await self._credentials.consents.consume(state)
            except SidecarError as exc:
                refusal = exc
                logger.warning("OAuth callback refused: %s", exc.message)
        if error and consent is not None:
            logger.info("credential %d: Google answered the consent with %r",
                        consent.credential_id, error[:200])
        if error == "access_denied":
            return _page(400, "Authorization cancelled",
                         "Authorization was cancelled at Google, so nothing changed. To connect "
                         "the credential, press Authorize with Google again on the console's "
                         "Credentials page (or start again from its consent URL).")
        if error:
            return _page(400, "Authorization was not granted", f"Google answered: {error[:200]}")
        if refusal is not None:
            return _failure_page(refusal)
        if consent is None:
            return _page(400, "Incomplete callback",
                         "The callback needs both `state` and `code` query parameters.")
        if not code:
            return _page(400, "Incomplete callback", "Google's answer carries no `code`; start "
                         "again from the credential's consent URL.")
        try:
            description = await self._exchange(consent, code)
        except SidecarError as exc:
            logger.log(logging.ERROR if isinstance(exc, SecretUnreadable) else logging.WARNING,
                       "credential %d: authorization failed: %s", consent.credential_id,
                       exc.message)
            return _failure_page(exc)
        return _page(200, "Authorized",
                     f"Credential “{description}” is connected to Google; its cameras appear "
                     "in the console in a few seconds. Returning to the console…",
                     return_after=2)

    async def _exchange(self, consent: Consent, code: str) -> str:
        """Trade the callback's code for tokens and store them; returns the description."""
        try:
            row = await self._credentials.row(consent.credential_id)
        except NotFound:
            raise NotFound("This credential was deleted while it was being authorized.") from None
        client_secret = self._credentials.client_secret(row)
        try:
            response = await self._http.post(self._keeper.token_uri, data={
                "grant_type": "authorization_code", "code": code,
                "client_id": row.oauth_client_id, "client_secret": client_secret,
                "redirect_uri": consent.redirect_uri, "code_verifier": consent.code_verifier})
        except httpx.HTTPError as exc:
            raise GoogleUnreachable(f"Google's token endpoint is unreachable "
                                    f"({type(exc).__name__})") from None
        body = json_object(response) or {}
        if response.status_code != 200 or not body.get("refresh_token"):
            error = str(body.get("error") or f"HTTP {response.status_code}")
            raise GoogleAuthError(f"Google did not accept the authorization code ({error}).",
                                  error, response.status_code)
        expiry = utcnow() + dt.timedelta(seconds=int(body.get("expires_in", 3600)))
        await self._credentials.store_grant(row.id, body["refresh_token"],
                                            body.get("access_token"), expiry)
        await self._keeper.granted(row.id)
        return str(row.description)


def _failure_page(error: SidecarError) -> HTMLResponse:
    """The one place the callback turns an error into a page: what failed, what to do."""
    if isinstance(error, SecretUnreadable):
        return _page(error.status, "Stored secrets cannot be decrypted", error.message)
    return _page(502 if isinstance(error, GoogleUnreachable) else 400, "Authorization failed",
                 error.message)


def _page(status: int, title: str, text: str, return_after: int | None = None) -> HTMLResponse:
    """The page the browser lands on after Google; it leads back to the console's Credentials.

    Success returns there by itself; a failure stays, so its reason can be read.
    """
    back = CONSOLE_CREDENTIALS
    refresh = (f'<meta http-equiv="refresh" content="{return_after}; url={back}">'
               if return_after is not None else "")
    body = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"{refresh}<title>{html.escape(title)}</title>"
            "<link rel=\"icon\" href=\"/console/favicon.svg\" type=\"image/svg+xml\">"
            "<link rel=\"stylesheet\" href=\"/console/style.css\"></head><body><main>"
            f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>"
            f"<p><a href=\"{back}\">Back to Credentials in the console</a></p>"
            "</main></body></html>")
    return HTMLResponse(body, status_code=status)
