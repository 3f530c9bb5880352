"""`auth`: log in for an expiring bearer token, look tokens up, revoke them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from ..errors import Invalid, Unauthorized, field_error
from ..events import isoformat
from ..security import PasswordHasher, client_address, new_token, token_digest
from ..security.login_guard import LoginGuard
from ..storage.store import (
    Store,
    access_tokens_table,
    as_utc,
    users_table,
    utcnow,
)
from . import ID_SCHEMA, Caller, Contract, Module
from .schema import DATE_TIME, Body, Field, record

RevocationListener = Callable[[list[int]], None]

# Checked when a login names no existing user, so timing does not reveal which names exist.
# A constant (hash_password("timing-equaliser") with today's parameters): hashing at import
# would cost every start a tenth of a second and 32 MiB.
_DUMMY_HASH = ("scrypt$32768$8$1$AP66ydwu7AyLwjqhPd_Vig$"
               "rL-MUoO2ZlXCPNjRKvZkrIoYWl1C1tjrtbFxD8zZqLY")


_LOGIN = Body((Field("username", "string", required=True, max_length=150),
                Field("password", "string", required=True, max_length=1024)))
_USER = record({"id": ID_SCHEMA, "username": {"type": "string"}, "can_login": {"type": "boolean"}})
_SESSION = record({"bearer": {"type": "string", "description": "Send as `Authorization: Bearer`."},
                   "expiration": DATE_TIME, "user": _USER}, "A new session.")
CURRENT = "current"


def user_summary(row: Any) -> dict[str, Any]:
    return {"id": row.id, "username": row.username, "can_login": row.can_login}


class Auth(Module):
    name = "auth"
    public_commands = frozenset({"create"})
    contract = Contract(
        bodies={"create": (_LOGIN,)},
        replies={"create": _SESSION, "delete": record({"revoked": {"const": True}})},
        failures={"create": {
            401: "Wrong username or password, or the user may not log in.",
            429: "Too many failed log-ins from this address; retry after `Retry-After` seconds.",
        }},
        entity={"const": CURRENT},
    )

    def __init__(self, store: Store, token_ttl: int, hasher: PasswordHasher,
                 guard: LoginGuard) -> None:
        self._store = store
        self._ttl = dt.timedelta(seconds=token_ttl)
        self._hasher = hasher
        self._guard = guard
        self._listeners: list[RevocationListener] = []

    def on_revoke(self, listener: RevocationListener) -> None:
        """Called with token ids whenever tokens stop being valid before their expiry."""
        self._listeners.append(listener)

    async def create(self, caller: Caller | None, payload: Any) -> dict[str, Any]:
        """Log in: `{username, password}` -> `{bearer, expiration, user}`.

        The bearer is opaque and expires after the configured token TTL.
        """
        fields = _LOGIN.parse(payload)
        username, password = fields["username"], fields["password"]
        address = client_address.CURRENT.get()
        self._guard.admit(username, address)
        accepted = None
        try:
            async with self._store.begin() as conn:
                row = (await conn.execute(
                    sa.select(users_table).where(users_table.c.username == username)
                )).first()
            stored = row.password_hash if row else _DUMMY_HASH
            # A disabled user's password is checked too and refused alike: the answer must
            # neither confirm the password nor take less time.
            valid = await self._hasher.verify(password, stored)
            accepted = valid and row is not None and bool(row.can_login)
        finally:
            self._guard.settle(username, address, accepted)
        if not accepted:
            raise Unauthorized("Invalid username or password")
        assert row is not None
        token = new_token()
        expires_at = utcnow() + self._ttl
        async with self._store.begin() as conn:
            await conn.execute(access_tokens_table.insert().values(
                user_id=row.id, digest=token_digest(token), expires_at=expires_at
            ))
            await conn.execute(access_tokens_table.delete().where(
                access_tokens_table.c.expires_at < utcnow()))
        return {"bearer": token, "expiration": isoformat(expires_at), "user": user_summary(row)}

    async def delete(self, caller: Caller | None, entity: Any) -> dict[str, Any]:
        """Log out: `entity` must be `current`; the calling token stops working everywhere."""
        if entity != CURRENT:
            raise Invalid("auth delete takes the entity 'current'",
                          [field_error("entity", "must be 'current'")])
        if caller is None:
            raise Unauthorized("Not logged in")
        await self.revoke_tokens(access_tokens_table.c.id == caller.token_id)
        return {"revoked": True}

    async def authenticate(self, token: str | None) -> Caller:
        if not token:
            raise Unauthorized("A bearer token is required")
        async with self._store.begin() as conn:
            row = (await conn.execute(
                sa.select(access_tokens_table.c.id, access_tokens_table.c.expires_at,
                          users_table.c.id.label("uid"), users_table.c.username,
                          users_table.c.can_login)
                .join(users_table, users_table.c.id == access_tokens_table.c.user_id)
                .where(access_tokens_table.c.digest == token_digest(token))
            )).first()
        if row is None:
            raise Unauthorized("Invalid or revoked token")
        expires_at = as_utc(row.expires_at)
        assert expires_at is not None
        if expires_at <= utcnow():
            raise Unauthorized("Token expired")
        if not row.can_login:
            raise Unauthorized("This user may not log in")
        return Caller(user_id=row.uid, username=row.username, token_id=row.id,
                      expires_at=expires_at)

    async def valid_token_ids(self, token_ids: set[int]) -> set[int]:
        if not token_ids:
            return set()
        async with self._store.begin() as conn:
            rows = await conn.execute(sa.select(access_tokens_table.c.id).where(
                access_tokens_table.c.id.in_(token_ids), access_tokens_table.c.expires_at > utcnow()
            ))
            return set(rows.scalars())

    async def revoke_tokens(self, where: sa.ColumnElement[bool]) -> None:
        async with self._store.begin() as conn:
            ids = (await conn.execute(
                access_tokens_table.delete().where(where).returning(access_tokens_table.c.id)
            )).scalars().all()
        if ids:
            for listener in self._listeners:
                listener(list(ids))
