"""`users`: list, create, read, update, delete the people who may log in."""

from __future__ import annotations

import secrets
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from ..errors import Conflict, Forbidden, NotFound
from ..events import isoformat
from ..security import PasswordHasher
from ..storage.store import Store, access_tokens_table, list_page, users_table
from . import ID_SCHEMA, Caller, Contract, Module, entity_id, entity_replies
from .auth import Auth
from .listing import ListQuery
from .schema import DATE_TIME, Body, Field, record

MIN_PASSWORD = 8
_CREATE = Body((
    Field("username", "string", required=True, max_length=150,
          description="The name to log in with; unique."),
    Field("password", "string", required=True, min_length=MIN_PASSWORD, max_length=1024),
    Field("can_login", "boolean", description="Whether the user may log in (default true)."),
))
_UPDATE = _CREATE.optional()
_PUBLIC_COLUMNS = ("id", "username", "can_login", "created_at", "updated_at")  # no hash
_SORTABLE = {key: users_table.c[key] for key in _PUBLIC_COLUMNS}
ITEM = record({"id": ID_SCHEMA, "username": {"type": "string"}, "can_login": {"type": "boolean"},
               "created_at": DATE_TIME, "updated_at": DATE_TIME}, "A user who may log in.")


def _item(row: Any) -> dict[str, Any]:
    return {"id": row.id, "username": row.username, "can_login": row.can_login,
            "created_at": isoformat(row.created_at), "updated_at": isoformat(row.updated_at)}


_PUBLIC = sa.select(*(users_table.c[key] for key in _PUBLIC_COLUMNS))


class Users(Module):
    name = "users"
    contract = Contract(
        bodies={"create": (_CREATE,), "update": (_UPDATE,)},
        replies=entity_replies(ITEM),
        failures={"create": {409: "A user with that username exists."},
                  "update": {403: "You cannot take away your own log-in.",
                             409: "A user with that username exists."},
                  "delete": {403: "You cannot delete yourself or the last user."}},
        sortable=frozenset(_SORTABLE),
    )

    def __init__(self, store: Store, auth: Auth, hasher: PasswordHasher) -> None:
        self._store = store
        self._auth = auth
        self._hasher = hasher

    async def list(self, caller: Caller | None, payload: Any) -> dict[str, Any]:
        """List users."""
        query = ListQuery.parse(payload, _SORTABLE)
        async with self._store.begin() as conn:
            return await list_page(conn, query, _PUBLIC, [users_table.c.username], _SORTABLE, _item)

    async def create(self, caller: Caller | None, payload: Any) -> dict[str, Any]:
        """Add a user.

        Passwords are at least 8 characters; `can_login` defaults to true.
        """
        fields = _CREATE.parse(payload)
        username = fields["username"]
        password_hash = await self._hasher.hash(fields["password"])
        try:
            async with self._store.begin() as conn:
                user_id = (await conn.execute(users_table.insert().values(
                    username=username, password_hash=password_hash,
                    can_login=fields.get("can_login", True),
                ))).inserted_primary_key[0]
        except IntegrityError:
            raise Conflict(f"A user named {username!r} already exists") from None
        return await self.read(caller, user_id)

    async def read(self, caller: Caller | None, entity: Any) -> dict[str, Any]:
        """Read a user."""
        user_id = entity_id(entity)
        async with self._store.begin() as conn:
            row = (await conn.execute(_PUBLIC.where(users_table.c.id == user_id))).first()
        if row is None:
            raise NotFound(f"No user with id {user_id}")
        return _item(row)

    async def update(self, caller: Caller | None, entity: Any, payload: Any) -> dict[str, Any]:
        """Change a user's name, password or log-in.

        A new password or a withdrawn log-in ends that user's other sessions.
        """
        user_id = entity_id(entity)
        fields = _UPDATE.parse(payload)
        values: dict[str, Any] = {}
        if (username := fields.get("username")):
            values["username"] = username
        password = fields.get("password")
        if password is not None:
            values["password_hash"] = await self._hasher.hash(password)
        can_login = fields.get("can_login")
        if can_login is not None:
            if not can_login and caller and caller.user_id == user_id:
                raise Forbidden("You cannot take away your own log-in")
            values["can_login"] = can_login
        await self.read(caller, user_id)
        if values:
            try:
                async with self._store.begin() as conn:
                    await conn.execute(users_table.update()
                                       .where(users_table.c.id == user_id).values(values))
            except IntegrityError:
                raise Conflict(f"A user named {username!r} already exists") from None
        if password is not None or can_login is False:
            # A changed password or a withdrawn log-in ends every other session of that user.
            keep = caller.token_id if caller and caller.user_id == user_id else -1
            await self._auth.revoke_tokens(
                (access_tokens_table.c.user_id == user_id) & (access_tokens_table.c.id != keep)
            )
        return await self.read(caller, user_id)

    async def ensure_admin(self, username: str, password: str) -> str | None:
        """The configured admin exists with this password and may log in. With no password
        configured, one is made only while there are no users: returned, to show once."""
        made = None
        async with self._store.begin() as conn:
            existing = (await conn.execute(
                sa.select(users_table.c.id).where(users_table.c.username == username)
            )).scalar_one_or_none()
            if not password:
                if (await conn.execute(
                        sa.select(sa.func.count()).select_from(users_table))).scalar():
                    return None
                password = made = secrets.token_urlsafe(12)
            password_hash = await self._hasher.hash(password)
            if existing is None:
                await conn.execute(users_table.insert().values(
                    username=username, password_hash=password_hash, can_login=True))
            else:
                await conn.execute(users_table.update().where(users_table.c.id == existing)
                                   .values(password_hash=password_hash, can_login=True))
        return made

    async def delete(self, caller: Caller | None, entity: Any) -> dict[str, Any]:
        """Delete a user and end their sessions; returns the user as it was."""
        user_id = entity_id(entity)
        item = await self.read(caller, user_id)
        if caller and caller.user_id == user_id:
            raise Forbidden("You cannot delete yourself")
        await self._auth.revoke_tokens(access_tokens_table.c.user_id == user_id)
        async with self._store.begin() as conn:
            # Two admins deleting each other at once must not leave zero users: PostgreSQL
            # locks the rows first; SQLite runs the count-and-delete statement atomically.
            await conn.execute(sa.select(users_table.c.id).with_for_update())
            others = sa.select(sa.func.count()).select_from(users_table).where(
                users_table.c.id != user_id)
            deleted = (await conn.execute(users_table.delete().where(
                users_table.c.id == user_id, others.scalar_subquery() > 0))).rowcount
        if not deleted:
            raise Forbidden("You cannot delete the last user")
        return item
