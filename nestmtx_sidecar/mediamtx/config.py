"""The MediaMTX settings that wire every hook to the sidecar (`nestmtx-sidecar mediamtx-config`)."""

from __future__ import annotations

import shlex
from typing import Any

import sqlalchemy as sa
import yaml

from ..config import Settings
from ..errors import DatabaseUnreachable
from ..storage.store import Store, cameras_table

DEFAULT_HOOK = "/hooks/nestmtx-hook"
# MediaMTX's path setting -> the hook argument the script sends as.
HOOK_SETTINGS = {
    "runOnDemand": "demand",
    "runOnUnDemand": "unDemand",
    "runOnReady": "ready",
    "runOnNotReady": "notReady",
    "runOnRead": "read",
    "runOnUnread": "unread",
}
HEADER = """\
# MediaMTX settings written by `nestmtx-sidecar mediamtx-config`: every path hook runs
# the nestmtx-hook script, which reports to the sidecar (NESTMTX_URL, NESTMTX_HOOK_SECRET
# in MediaMTX's environment). Merge into your mediamtx.yml; unset settings keep
# MediaMTX's defaults.
"""


def path_defaults(hook: str = DEFAULT_HOOK) -> dict[str, Any]:
    """pathDefaults: every hook wired, and time for Google to start a stream on demand."""
    settings: dict[str, Any] = {}
    for setting, name in HOOK_SETTINGS.items():
        settings[setting] = _command(hook, name)
        if setting == "runOnDemand":
            # A Nest stream takes several seconds to start; MediaMTX's default is 10 s.
            settings["runOnDemandStartTimeout"] = "30s"
            settings["runOnDemandCloseAfter"] = "10s"
    return settings


def persistent_path(hook: str = DEFAULT_HOOK) -> dict[str, Any]:
    """A path that streams without readers: runOnInit holds the demand hook, restarted."""
    # No runOnDemand here: a reader arriving before the stream would start a second one.
    return {"runOnInit": _command(hook, "demand"), "runOnInitRestart": True, "runOnDemand": ""}


def render(persistent_paths: list[str], hook: str = DEFAULT_HOOK) -> str:
    paths: dict[str, Any] = {name: persistent_path(hook) for name in sorted(persistent_paths)}
    paths["all_others"] = {}  # every other path name is served on demand
    document = {"pathDefaults": path_defaults(hook), "paths": paths}
    return HEADER + yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


async def persistent_paths(store: Store) -> list[str]:
    """mtx_path of every enabled, persistent camera."""
    async with store.begin() as conn:
        rows = await conn.execute(
            sa.select(cameras_table.c.mtx_path)
            .where(cameras_table.c.is_enabled, cameras_table.c.is_persistent,
                   cameras_table.c.mtx_path.is_not(None))
            .order_by(cameras_table.c.mtx_path))
        return [row.mtx_path for row in rows]


async def persistent_camera_paths(settings: Settings) -> list[str]:
    """The persistent paths in the configured store (none before the sidecar's first start)."""
    if settings.sqlite_file is not None and not settings.sqlite_file.exists():
        return []  # the sidecar has never run here: no cameras, and no file to create
    store = Store(settings.resolved_database_url)
    try:
        return await persistent_paths(store)
    except sa.exc.SQLAlchemyError as exc:
        raise DatabaseUnreachable(f"cannot read cameras from the database: "
                              f"{getattr(exc, 'orig', None) or exc}") from None
    finally:
        await store.close()


async def generate(settings: Settings, hook: str = DEFAULT_HOOK) -> str:
    return render(await persistent_camera_paths(settings), hook)


def _command(hook: str, name: str) -> str:
    # MediaMTX splits with shell quoting; it would also expand a `$` in the script path.
    if "$" in hook:
        raise ValueError(f"hook script path must not contain '$': {hook!r}")
    return f"{shlex.quote(hook)} {name}"
