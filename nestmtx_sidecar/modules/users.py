"""`users`: list, create, read, update, delete the people who may log in."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from ..errors import Conflict, Forbidden, NotFound
from ..events import isoformat
from ..listing import ListQuery
from ..security import PasswordHasher
from ..store import Store, access_tokens, list_page, users
from . import (
    Caller,
    Module,
    bool_field,
    entity_id,
    reject_unknown,
    require_mapping,
    string_field,
)
from .auth import Auth

MIN_PASSWORD = 8
_FIELDS = {"username", "password", "can_login"}
_SORTABLE = {"id": users.c.id, "username": users.c.username, "can_login": users.c.can_login,
             "created_at": users.c.created_at, "updated_at": users.c.updated_at}


def _item(row: Any) -> dict[str, Any]:
    return {"id": row.id, "username": row.username, "can_login": row.can_login,
            "created_at": isoformat(row.created_at), "updated_at": isoformat(row.updated_at)}


_PUBLIC = sa.select(users.c.id, users.c.username, users.c.can_login, users.c.created_at,
                    users.c.updated_at)


class Users(Module):
    name = "users"

    def __init__(self, store: Store, auth: Auth, hasher: PasswordHasher) -> None:
        self._store = store
        self._auth = auth
        self._hasher = hasher

    async def list(self, caller: Caller | None, payload: Any) -> dict[str, Any]:
        query = ListQuery.parse(payload, _SORTABLE)
        async with self._store.begin() as conn:
            return await list_page(conn, query, _PUBLIC, [users.c.username], _SORTABLE, _item)

    async def create(self, caller: Caller | None, payload: Any) -> dict[str, Any]:
        payload = require_mapping(payload)
        reject_unknown(payload, _FIELDS)
        username = string_field(payload, "username", required=True, max_length=150)
        password = string_field(payload, "password", required=True, max_length=1024,
                                min_length=MIN_PASSWORD)
        can_login = bool_field(payload, "can_login")
        password_hash = await self._hasher.hash(password or "")
        try:
            async with self._store.begin() as conn:
                user_id = (await conn.execute(users.insert().values(
                    username=username, password_hash=password_hash,
                    can_login=True if can_login is None else can_login,
                ))).inserted_primary_key[0]
        except IntegrityError:
            raise Conflict(f"A user named {username!r} already exists") from None
        return await self.read(caller, user_id)

    async def read(self, caller: Caller | None, entity: Any) -> dict[str, Any]:
        user_id = entity_id(entity)
        async with self._store.begin() as conn:
            row = (await conn.execute(_PUBLIC.where(users.c.id == user_id))).first()
        if row is None:
            raise NotFound(f"No user with id {user_id}")
        return _item(row)

    async def update(self, caller: Caller | None, entity: Any, payload: Any) -> dict[str, Any]:
        user_id = entity_id(entity)
        payload = require_mapping(payload)
        reject_unknown(payload, _FIELDS)
        values: dict[str, Any] = {}
        if (username := string_field(payload, "username", required=False, max_length=150)):
            values["username"] = username
        password = string_field(payload, "password", required=False, max_length=1024,
                                min_length=MIN_PASSWORD)
        if password is not None:
            values["password_hash"] = await self._hasher.hash(password)
        can_login = bool_field(payload, "can_login")
        if can_login is not None:
            if not can_login and caller and caller.user_id == user_id:
                raise Forbidden("You cannot take away your own log-in")
            values["can_login"] = can_login
        await self.read(caller, user_id)
        if values:
            try:
                async with self._store.begin() as conn:
                    await conn.execute(users.update().where(users.c.id == user_id).values(values))
            except IntegrityError:
                raise Conflict(f"A user named {username!r} already exists") from None
        if password is not None or can_login is False:
            # A changed password or a withdrawn log-in ends every other session of that user.
            keep = caller.token_id if caller and caller.user_id == user_id else -1
            await self._auth.revoke_tokens(
                (access_tokens.c.user_id == user_id) & (access_tokens.c.id != keep)
            )
        return await self.read(caller, user_id)

    async def delete(self, caller: Caller | None, entity: Any) -> dict[str, Any]:
        user_id = entity_id(entity)
        item = await self.read(caller, user_id)
        if caller and caller.user_id == user_id:
            raise Forbidden("You cannot delete yourself")
        await self._auth.revoke_tokens(access_tokens.c.user_id == user_id)
        async with self._store.begin() as conn:
            # Two admins deleting each other at once must not leave zero users: PostgreSQL
            # locks the rows first; SQLite runs the count-and-delete statement atomically.
            await conn.execute(sa.select(users.c.id).with_for_update())
            others = sa.select(sa.func.count()).select_from(users).where(users.c.id != user_id)
            deleted = (await conn.execute(users.delete().where(
                users.c.id == user_id, others.scalar_subquery() > 0))).rowcount
        if not deleted:
            raise Forbidden("You cannot delete the last user")
        return item
