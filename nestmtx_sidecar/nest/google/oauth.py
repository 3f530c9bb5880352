"""Google OAuth: keeps each credential's access token fresh and tells subscribers how it goes."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import google.auth.exceptions
import google.auth.transport
import httpx
import sqlalchemy as sa
import tenacity
from google.oauth2.credentials import Credentials as GoogleCredentials

from ...errors import GoogleAuthError, SecretUnreadable
from ...events import Event, EventBus
from ...metrics import TOKEN_REFRESHES
from ...modules.credentials import Credentials, CredentialSecrets
from ...security import Redactor
from ...storage.store import Store, as_utc, credentials_table, utcnow
from ..leadership import Leadership
from .json_body import json_object

logger = logging.getLogger(__name__)

# Refresh this long before expiry: a fifth of the token's life, at most 5 minutes.
REFRESH_FRACTION, REFRESH_MARGIN_MAX = 0.2, 300.0
INVALID_GRANT_MESSAGE = (
    "Google refused the refresh token (invalid_grant): it was revoked or has expired. "
    "Re-authorize this credential: `credentials update` with {origin} returns the consent URL. "
    "If the OAuth consent screen of your Google Cloud project is in \"Testing\" status, Google "
    "expires its refresh tokens after 7 days; publish the app (\"In production\") to stop that."
)
# Token endpoint answers that mean "try again later" even with a 400 (RFC 6749 5.2 and Google).
_TRANSIENT_ERRORS = {"temporarily_unavailable", "server_error", "internal_failure"}
_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}


class TransientTokenError(google.auth.exceptions.TransportError):
    """The token endpoint could not answer now (5xx, 429, timeout, refused connection).

    google-auth's own kind, not the service's error tree: it crosses google-auth's refresh,
    which tells transport failures from refusals by it.
    """


class _Response(google.auth.transport.Response):
    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    @property
    def data(self) -> bytes:
        return self._response.content


class HttpxRequest(google.auth.transport.Request):
    """google-auth's transport interface over a (sync) httpx client, run in a worker thread.

    Transient failures are raised here rather than returned: google-auth would otherwise
    retry them itself with blocking sleeps, and tenacity owns retrying.
    """

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def __call__(self, url: str, method: str = "GET", body: Any = None,
                 headers: Mapping[str, str] | None = None, timeout: float | None = None,
                 **kwargs: Any) -> _Response:
        try:
            response = self._client.request(method, url, content=body, headers=headers,
                                            timeout=timeout or 30.0)
        except httpx.HTTPError as exc:
            raise TransientTokenError(f"token endpoint unreachable ({type(exc).__name__})"
                                      ) from None
        if response.status_code in _TRANSIENT_STATUS or _oauth_error(response) in \
                _TRANSIENT_ERRORS:
            raise TransientTokenError(f"token endpoint answered HTTP {response.status_code}")
        return _Response(response)


def _oauth_error(response: httpx.Response) -> str:
    return str((json_object(response) or {}).get("error", ""))


@dataclass
class _Account:
    """One credential's live OAuth state."""

    id: int
    description: str
    google: GoogleCredentials
    expiry: dt.datetime | None
    authenticated_before: bool
    unreachable_reported: bool = False
    task: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, row: Any, secrets: CredentialSecrets, token_uri: str) -> _Account:
        expiry = as_utc(row.token_expiry)
        return cls(id=row.id, description=row.description, google=GoogleCredentials(
            token=secrets.access_token, refresh_token=secrets.refresh_token,
            token_uri=token_uri, client_id=row.oauth_client_id,
            client_secret=secrets.client_secret,
            expiry=expiry.replace(tzinfo=None) if expiry else None),  # naive UTC there
            expiry=expiry, authenticated_before=row.authenticated_at is not None)

    def seconds_left(self) -> float:
        if self.google.token is None or self.expiry is None:
            return 0.0
        return (self.expiry - utcnow()).total_seconds()


class TokenKeeper:
    """Refreshes access tokens ahead of expiry; publishes `credentials:*` events.

    Expiry is tracked here, not with google-auth's `valid`/`expired`: those call a token
    expired 225 s early, which would refresh short-lived tokens in a loop.
    """

    def __init__(self, store: Store, credentials: Credentials, redactor: Redactor,
                 bus: EventBus, token_uri: str, leadership: Leadership,
                 retry_initial: float = 1.0, retry_max: float = 60.0) -> None:
        self._store = store
        self._credentials = credentials
        self._redactor = redactor
        self._bus = bus
        self.token_uri = token_uri
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._accounts: dict[int, _Account] = {}
        # Only the Nest leader refreshes: the others use the tokens it stores.
        self._leadership = leadership
        self._http = httpx.Client(timeout=30.0)
        self._request = HttpxRequest(self._http)

    async def start(self) -> None:
        for credential_id in await self._granted_ids():
            await self.load(credential_id)

    async def _granted_ids(self) -> set[int]:
        """The credentials with a grant (a refresh token) in the store."""
        async with self._store.begin() as conn:
            return set((await conn.execute(sa.select(credentials_table.c.id).where(
                credentials_table.c.refresh_token.is_not(None)))).scalars().all())

    async def stop(self) -> None:
        for credential_id in list(self._accounts):
            await self.forget(credential_id)
        self._http.close()

    async def on_credentials_change(self, credential_id: int, change: str) -> None:
        """Credentials.on_change listener: (re)start refreshing, or stop for a deleted one."""
        if change == "deleted":
            await self.forget(credential_id)
        else:
            await self.load(credential_id)

    def is_authenticated(self, credential_id: int) -> bool:
        account = self._accounts.get(credential_id)
        return account is not None and account.seconds_left() > 0

    async def access_token(self, credential_id: int) -> str:
        account = self._accounts.get(credential_id)
        if not self._leadership.held and (account is None or account.seconds_left() <= 0):
            await self.load(credential_id)  # the lease holder refreshed it into the store
            account = self._accounts.get(credential_id)
        if account is None or account.seconds_left() <= 0:
            raise GoogleAuthError(f"credential {credential_id} is not authenticated with Google",
                                  "UNAUTHENTICATED")
        assert account.google.token is not None
        return account.google.token

    async def forget(self, credential_id: int) -> None:
        await _stop_refreshing(self._accounts.pop(credential_id, None))

    async def load(self, credential_id: int) -> None:
        """Read a credential from the store and keep its token fresh from now on.

        The account read replaces the one held in a single step: an SDM call made while the
        store is read still finds the token (a reload runs at every lease take-over).
        """
        async with self._store.begin() as conn:
            row = (await conn.execute(
                sa.select(credentials_table).where(credentials_table.c.id == credential_id)
            )).first()
        if row is None or row.refresh_token is None:
            await self.forget(credential_id)
            return
        try:
            secrets = self._credentials.decrypted(row)
        except SecretUnreadable as exc:
            await self.forget(credential_id)
            await self._unreadable(row, exc.message)
            return
        self._redactor.hold(("credential", row.id), secrets.refresh_token, secrets.access_token,
                            secrets.client_secret)
        account = _Account.of(row, secrets, self.token_uri)
        replaced, self._accounts[credential_id] = self._accounts.get(credential_id), account
        await _stop_refreshing(replaced)
        if row.auth_error == INVALID_GRANT_MESSAGE or not self._leadership.held:
            return  # pointless until the user re-authorizes / the lease holder refreshes
        account.task = asyncio.create_task(self._keep_fresh(account))

    async def granted(self, credential_id: int) -> None:
        """The consent flow stored a new grant: use it from now on, announce it."""
        await self.load(credential_id)
        await self._succeeded(self._accounts[credential_id])

    async def _unreadable(self, row: Any, message: str) -> None:
        """Reported once (every replica and the lease holder's adoption read it again)."""
        if row.auth_error == message:
            return
        logger.error("%s", message)  # it names the credential
        await self._credentials.note_auth_error(row.id, message)
        await self._publish(row.id, row.description, "unauthenticated", error=message,
                            reason="secret_unreadable")

    async def pause(self) -> None:
        """The lease moved away: stop refreshing, keep the tokens for SDM calls."""
        for account in list(self._accounts.values()):
            await _stop_refreshing(account)

    async def adopt(self) -> None:
        """Lease holder: refresh credentials other replicas added or re-authorized (those not
        refreshing here), forget ones they deleted."""
        ids = await self._granted_ids()
        for credential_id in set(self._accounts) - ids:
            await self.forget(credential_id)
        for credential_id in ids:
            account = self._accounts.get(credential_id)
            if account is None or account.task is None or account.task.done():
                await self.load(credential_id)

    async def _keep_fresh(self, account: _Account) -> None:
        while True:
            left = account.seconds_left()
            if left > 0:
                lifetime = max(left, 1.0)
                await asyncio.sleep(max(0.0, left - min(REFRESH_MARGIN_MAX,
                                                        lifetime * REFRESH_FRACTION)))
            try:
                await self._refresh(account)
            except google.auth.exceptions.RefreshError as exc:
                await self._refused(account, exc)
                return

    async def _refresh(self, account: _Account) -> None:
        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(TransientTokenError),
            wait=functools.partial(self._retry_wait, account),
            # a partial of a coroutine function, so tenacity awaits it
            before_sleep=functools.partial(self._transient_failure, account),
            stop=tenacity.stop_never, reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await asyncio.to_thread(account.google.refresh, self._request)
        await self._succeeded(account)

    def _retry_wait(self, account: _Account, state: tenacity.RetryCallState) -> float:
        """Exponential backoff with full jitter, but wake at expiry to report it on time."""
        wait = tenacity.wait_random_exponential(multiplier=self.retry_initial,
                                                max=self.retry_max)(state)
        left = account.seconds_left()
        return min(wait, left + 0.05) if left > 0 else wait

    async def _transient_failure(self, account: _Account, state: tenacity.RetryCallState
                                 ) -> None:
        error = state.outcome.exception() if state.outcome else None
        logger.warning("refreshing credential %d (%s) failed, attempt %d: %s; retrying",
                       account.id, account.description, state.attempt_number, error)
        TOKEN_REFRESHES.labels("failed").inc()
        if account.seconds_left() > 0 or account.unreachable_reported:
            return
        account.unreachable_reported = True
        message = (f"Google's token endpoint is unreachable and the access token has expired "
                   f"({error}); still retrying")
        await self._credentials.note_auth_error(account.id, message)
        await self._publish(account.id, account.description, "unauthenticated", error=message,
                            reason="unreachable")

    async def _succeeded(self, account: _Account) -> None:
        google = account.google
        account.expiry = as_utc(google.expiry)
        self._redactor.hold(("credential", account.id), google.token, google.refresh_token,
                            google.client_secret)
        first = not account.authenticated_before
        account.authenticated_before = True
        account.unreachable_reported = False
        TOKEN_REFRESHES.labels("ok").inc()
        await self._credentials.store_tokens(account.id, google.token, google.refresh_token,
                                             account.expiry)
        logger.info("credential %d (%s) %s; access token valid until %s", account.id,
                    account.description, "authenticated" if first else "refreshed",
                    account.expiry)
        await self._publish(account.id, account.description,
                            "authenticated" if first else "reauthenticated")

    async def _refused(self, account: _Account, exc: google.auth.exceptions.RefreshError
                       ) -> None:
        reason, message = _refusal(exc, self._redactor)
        TOKEN_REFRESHES.labels("refused").inc()
        logger.error("credential %d (%s): %s", account.id, account.description, message)
        await self._credentials.token_refused(account.id, message)
        account.google.token = None
        await self._publish(account.id, account.description, "unauthenticated", error=message,
                            reason=reason)

    async def _publish(self, credential_id: int, description: str, event: str,
                       **extra: str) -> None:
        await self._bus.publish(Event("credentials", event, credential_id,
                                      {"description": description, **extra}))


def _refusal(exc: google.auth.exceptions.RefreshError, redactor: Redactor) -> tuple[str, str]:
    """(reason, message) of a refused refresh: Google's OAuth error code, what to do."""
    body = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
    reason = str(body.get("error") or "refresh_failed")
    if reason == "invalid_grant":
        return reason, INVALID_GRANT_MESSAGE
    return reason, f"Google refused to refresh the token: {redactor(str(exc.args[0]))}"


async def _stop_refreshing(account: _Account | None) -> None:
    if account and account.task:
        account.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await account.task
        account.task = None
