"""SQL store: SQLAlchemy Core tables, the engine, and the list query shared by modules."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, overload

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ..modules.listing import ListQuery
from .private_files import FILE_MODE, narrow, private_file

logger = logging.getLogger(__name__)

metadata = sa.MetaData()


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@overload
def as_utc(value: dt.datetime) -> dt.datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """A naive datetime read as UTC: SQLite and google-auth hand those back."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.UTC)


def _timestamps() -> list[sa.Column[Any]]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, default=utcnow),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, default=utcnow,
                  onupdate=utcnow),
    ]


users_table = sa.Table(
    "users", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("username", sa.String(150), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("can_login", sa.Boolean, nullable=False, default=True),
    *_timestamps(),
)

access_tokens_table = sa.Table(
    "access_tokens", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False,
              index=True),
    sa.Column("digest", sa.String(64), nullable=False, unique=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, default=utcnow),
)

credentials_table = sa.Table(
    "credentials", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("description", sa.String(255), nullable=False),
    sa.Column("oauth_client_id", sa.String(255), nullable=False),
    sa.Column("oauth_client_secret", sa.Text, nullable=False),  # encrypted
    sa.Column("dac_project_id", sa.String(255), nullable=False),
    sa.Column("refresh_token", sa.Text),  # encrypted
    sa.Column("access_token", sa.Text),  # encrypted
    sa.Column("token_expiry", sa.DateTime(timezone=True)),
    sa.Column("authenticated_at", sa.DateTime(timezone=True)),
    sa.Column("auth_error", sa.Text),
    # The consent flow in progress: SHA-256 of its state, when issued, the PKCE verifier.
    sa.Column("oauth_state", sa.String(64), index=True),
    sa.Column("oauth_state_issued_at", sa.DateTime(timezone=True)),
    sa.Column("oauth_code_verifier", sa.Text),  # encrypted
    sa.Column("oauth_redirect_uri", sa.Text),
    # Device events (Pub/Sub): the names given (null: the defaults derived from the project),
    # when set-up last completed, the last message, and what stops events now (null: nothing).
    sa.Column("gcp_project_id", sa.String(64)),
    sa.Column("pubsub_topic", sa.String(512)),
    sa.Column("pubsub_subscription", sa.String(512)),
    sa.Column("pubsub_ready_at", sa.DateTime(timezone=True)),
    sa.Column("pubsub_last_event_at", sa.DateTime(timezone=True)),
    sa.Column("pubsub_error", sa.Text),
    *_timestamps(),
)

cameras_table = sa.Table(
    "cameras", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("credential_id", sa.ForeignKey("credentials.id", ondelete="CASCADE"),
              nullable=False, index=True),
    sa.Column("uid", sa.String(512), nullable=False),
    sa.Column("name", sa.String(255), nullable=False, default=""),
    sa.Column("room", sa.String(255), nullable=False, default=""),
    sa.Column("type", sa.String(255), nullable=False, default=""),
    sa.Column("info", sa.JSON, nullable=False, default=dict),
    sa.Column("protocols", sa.JSON, nullable=False, default=list),
    sa.Column("mtx_path", sa.String(255), unique=True),
    sa.Column("is_enabled", sa.Boolean, nullable=False, default=False),
    sa.Column("is_persistent", sa.Boolean, nullable=False, default=False),
    sa.Column("is_missing", sa.Boolean, nullable=False, default=False),
    # WebRTC cameras: opus (forwarded), aac (transcoded) or none.
    sa.Column("audio", sa.String(8), nullable=False, server_default="opus"),
    *_timestamps(),
    sa.UniqueConstraint("credential_id", "uid"),
)

stream_sessions_table = sa.Table(
    "stream_sessions", metadata,
    sa.Column("camera_id", sa.ForeignKey("cameras.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("protocol", sa.String(16), nullable=False),
    sa.Column("source_url", sa.Text),  # encrypted: carries the stream token
    sa.Column("extension_token", sa.Text),  # encrypted
    sa.Column("expires_at", sa.DateTime(timezone=True)),
    sa.Column("generation", sa.Integer, nullable=False, default=1),
    *_timestamps(),
)


# SDM events already emitted, by key: the insert that wins emits (any replica, any restart).
nest_events_table = sa.Table(
    "nest_events", metadata,
    sa.Column("key", sa.String(640), primary_key=True),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, index=True),
)


class Store:
    """The engine plus schema management; modules run their queries on its connections."""

    def __init__(self, url: str) -> None:
        # An unexpected database error names its statement but not its values: they are
        # password hashes and encrypted secrets, and the error reaches the log.
        options: dict[str, Any] = {"hide_parameters": True}
        if url.startswith("sqlite"):
            _private_sqlite_files(url)
            options["connect_args"] = {"timeout": 30}
        else:
            options.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(url, **options)
        if url.startswith("sqlite"):
            sa.event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)

    async def migrate(self) -> None:
        """Create missing tables, then add columns that newer versions define."""
        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            await conn.run_sync(_add_missing_columns)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.begin() as conn:
            yield conn

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()


def _private_sqlite_files(url: str) -> None:
    """The database file exists 0600 before SQLite opens it: its -wal and -shm get its mode."""
    database = sa.engine.make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        private_file(Path(database))
        for suffix in ("-wal", "-shm"):  # left by an older version or a crash
            with contextlib.suppress(FileNotFoundError):
                narrow(Path(database + suffix), FILE_MODE)
    except FileNotFoundError:
        return  # no such directory: SQLite's own error says so when it connects
    except OSError as exc:  # e.g. another user's file: SQLite decides whether it can open it
        logger.warning("cannot make %s private: %s", database, exc.strerror or exc)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def _add_missing_columns(sync_conn: sa.Connection) -> None:
    inspector = sa.inspect(sync_conn)
    preparer = sync_conn.dialect.identifier_preparer
    for table in metadata.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            kind = column.type.compile(dialect=sync_conn.dialect)
            if isinstance(column.server_default, sa.DefaultClause):
                # Rows that exist get the default; only then can the column be NOT NULL.
                default = sa.literal(column.server_default.arg).compile(
                    dialect=sync_conn.dialect, compile_kwargs={"literal_binds": True})
                kind += f" DEFAULT {default}" + ("" if column.nullable else " NOT NULL")
            sync_conn.execute(sa.text(
                f"ALTER TABLE {preparer.quote(table.name)} "
                f"ADD COLUMN {preparer.quote(column.name)} {kind}"
            ))


async def list_page(
    conn: AsyncConnection,
    query: ListQuery,
    select: sa.Select[Any],
    searchable: list[sa.ColumnElement[Any]],
    sortable: Mapping[str, sa.ColumnElement[Any]],
    to_item: Callable[[Mapping[str, Any]], dict[str, Any]],
) -> dict[str, Any]:
    """Run a NestMTX list: search over some columns, sort by known keys, one page."""
    if query.search:
        pattern = "%" + query.search.lower().replace("\\", "\\\\").replace("%", "\\%")\
            .replace("_", "\\_") + "%"
        select = select.where(sa.or_(*(
            sa.func.lower(sa.cast(c, sa.String)).like(pattern, escape="\\") for c in searchable
        )))
    total = (await conn.execute(
        sa.select(sa.func.count()).select_from(select.subquery())
    )).scalar_one()
    order = []
    for key, descending in query.sort_by:
        column = sortable[key]
        order.append(column.desc() if descending else column.asc())
    select = select.order_by(*order, *(c.asc() for c in select.selected_columns if c.key == "id"))
    if query.items_per_page > 0:
        select = select.limit(query.items_per_page).offset(
            (query.page - 1) * query.items_per_page
        )
    rows = (await conn.execute(select)).mappings().all()
    return {**query.echo(), "total": total, "items": [to_item(row) for row in rows]}
