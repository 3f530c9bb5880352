"""Runs hook commands the way MediaMTX (v1.20, internal/externalcmd) does, for tests.

- The command string is split with shell-style quoting (go-shellquote ~ shlex, POSIX mode),
  then `$VAR` / `${VAR}` is expanded in every argv element by us, like Go's os.Expand,
  even inside single quotes: hook variables first, then MediaMTX's own environment,
  unknown -> empty. No shell is involved.
- The child gets MediaMTX's environment plus the hook variables of its hook type, stdin
  /dev/null, and its own process group; a long-running hook is stopped with SIGINT to that
  whole group, and MediaMTX waits for it (never SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.services import ROOT

HOOK_SCRIPT = ROOT / "hooks" / "nestmtx-hook"
_QUERY = ("MTX_QUERY",)
_SOURCE = ("MTX_QUERY", "MTX_SOURCE_TYPE", "MTX_SOURCE_ID")
_READER = ("MTX_QUERY", "MTX_READER_TYPE", "MTX_READER_ID")


@dataclass(frozen=True)
class HookKind:
    setting: str  # the path setting in mediamtx.yml
    variables: tuple[str, ...]  # set (maybe empty) on top of MTX_PATH, RTSP_PATH, RTSP_PORT, G<n>
    long_running: bool


HOOKS = {
    "init": HookKind("runOnInit", (), True),
    "demand": HookKind("runOnDemand", _QUERY, True),
    "unDemand": HookKind("runOnUnDemand", _QUERY, False),
    "ready": HookKind("runOnReady", _SOURCE, True),
    "notReady": HookKind("runOnNotReady", _SOURCE, False),
    "read": HookKind("runOnRead", _READER, True),
    "unread": HookKind("runOnUnread", _READER, False),
}


def expand(text: str, lookup: Callable[[str], str]) -> str:
    """Go's os.Expand: `$name`, `${name}`, `$1`, `$$`...; bad syntax is eaten, a lone `$` kept."""
    out: list[str] = []
    i = j = 0
    while j < len(text):
        if text[j] == "$" and j + 1 < len(text):
            out.append(text[i:j])
            name, width = _shell_name(text[j + 1:])
            if name:
                out.append(lookup(name))
            elif width == 0:
                out.append("$")  # `$` not followed by a name stays
            j += width
            i = j + 1
        j += 1
    out.append(text[i:])
    return "".join(out)


def _shell_name(s: str) -> tuple[str, int]:
    special = "*#$@!?-0123456789"
    if s[0] == "{":
        if len(s) > 2 and s[1] in special and s[2] == "}":
            return s[1], 3
        end = s.find("}", 1)
        if end == 1:
            return "", 2
        return ("", 1) if end < 0 else (s[1:end], end + 1)
    if s[0] in special:
        return s[0], 1
    width = 0
    while width < len(s) and (s[width] == "_" or (s[width].isascii() and s[width].isalnum())):
        width += 1
    return s[:width], width


def hook_variables(hook: str, path: str, rtsp_port: int = 8554, groups: tuple[str, ...] = (),
                   **values: str) -> dict[str, str]:
    """The variables MediaMTX sets for one hook run: all of its type, empty when unknown."""
    kind = HOOKS[hook]
    unknown = set(values) - set(kind.variables)
    if unknown:
        raise ValueError(f"MediaMTX does not set {sorted(unknown)} for {hook}")
    variables = {"MTX_PATH": path, "RTSP_PATH": path, "RTSP_PORT": str(rtsp_port)}
    variables.update({f"G{n}": group for n, group in enumerate(groups, 1)})
    variables.update({name: values.get(name, "") for name in kind.variables})
    return variables


@dataclass
class HookResult:
    argv: list[str]
    returncode: int
    stdout: bytes
    stderr: bytes
    left_running: bool = False  # something of the group outlived SIGINT (MediaMTX would hang)

    @property
    def stderr_lines(self) -> list[str]:
        return self.stderr.decode(errors="replace").splitlines()


class HookProcess:
    """One running hook command."""

    def __init__(self, argv: list[str], proc: asyncio.subprocess.Process) -> None:
        self.argv = argv
        self.proc = proc

    async def wait(self, within: float = 15.0) -> HookResult:
        """Wait for the hook to exit on its own; a test fails rather than hangs."""
        stdout, stderr = await asyncio.wait_for(self.proc.communicate(), within)
        assert self.proc.returncode is not None
        return HookResult(self.argv, self.proc.returncode, stdout, stderr)

    async def stop(self, within: float = 15.0) -> HookResult:
        """What MediaMTX does when the hook's reason ends: SIGINT to the group, then wait."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)
        try:
            result = await self.wait(within)
            result.left_running = self.group_alive()
            return result
        finally:
            self.kill_leftovers()

    def kill_leftovers(self) -> None:
        """Test hygiene only (MediaMTX never does this): nothing of the group may outlive us."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def group_commands(self) -> list[str]:
        """Command names of the processes in the hook's process group (from /proc)."""
        names = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                text = stat.read_text()
                comm, rest = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:]
                if int(rest.split()[2]) == self.proc.pid:
                    names.append(comm)
        return names

    def group_alive(self) -> bool:
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        return True


class MediaMTX:
    """The hook-running half of MediaMTX, driven by a `paths` entry of mediamtx.yml."""

    def __init__(self, path_settings: Mapping[str, Any], environ: Mapping[str, str],
                 rtsp_port: int = 8554) -> None:
        self.path_settings = dict(path_settings)
        self.environ = dict(environ)
        self.rtsp_port = rtsp_port

    def argv(self, hook: str, variables: Mapping[str, str]) -> list[str]:
        command = self.path_settings.get(HOOKS[hook].setting) or ""
        if not command:
            raise LookupError(f"{HOOKS[hook].setting} is not set")

        def lookup(name: str) -> str:
            return variables.get(name, self.environ.get(name, ""))

        return [expand(part, lookup) for part in shlex.split(command)]

    async def start(self, hook: str, path: str, groups: tuple[str, ...] = (),
                    **values: str) -> HookProcess:
        variables = hook_variables(hook, path, self.rtsp_port, groups, **values)
        argv = self.argv(hook, variables)
        proc = await asyncio.create_subprocess_exec(
            *argv, env={**self.environ, **variables}, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, process_group=0,
        )
        return HookProcess(argv, proc)

    async def run(self, hook: str, path: str, within: float = 15.0, **values: str
                  ) -> HookResult:
        """Fire a hook and wait for it to exit by itself (one-shot, or send-and-exit)."""
        process = await self.start(hook, path, **values)
        try:
            return await process.wait(within)
        finally:
            process.kill_leftovers()


def hook_settings(script: Path = HOOK_SCRIPT) -> dict[str, str]:
    """The pathDefaults the sidecar generates, pointing at this checkout's script."""
    from nestmtx_sidecar.mediamtx.config import path_defaults

    return path_defaults(str(script))


def busybox_path(directory: Path) -> str:
    """A PATH holding only BusyBox applets (like the mediamtx:*-ffmpeg image: no curl)."""
    from tests.services import require_binary

    busybox = require_binary("busybox", "apt-get install busybox")
    directory.mkdir(parents=True, exist_ok=True)
    applets = subprocess.run([busybox, "--list"], check=True, capture_output=True, text=True)
    for applet in applets.stdout.split():
        link = directory / applet
        if not link.exists():
            link.symlink_to(busybox)
    return str(directory)


def curl_path(directory: Path) -> str:
    """BusyBox applets plus curl and nothing else: proves curl is used when present."""
    from tests.services import require_binary

    curl = require_binary("curl", "apt-get install curl")
    path = busybox_path(directory)
    (directory / "wget").unlink()
    (directory / "curl").symlink_to(curl)
    return path


async def add_camera(store: Any, mtx_path: str, name: str = "Front door", enabled: bool = True,
                     persistent: bool = False, protocols: tuple[str, ...] = ("RTSP",)) -> int:
    """A camera row as device sync would leave it (with its credential); returns its id."""
    from nestmtx_sidecar.storage.store import cameras_table, credentials_table

    async with store.begin() as conn:
        credential_id = (await conn.execute(credentials_table.insert().values(
            description=f"for {mtx_path}", oauth_client_id="client", oauth_client_secret="x",
            dac_project_id="project"))).inserted_primary_key[0]
        return (await conn.execute(cameras_table.insert().values(
            credential_id=credential_id, uid=f"enterprises/p/devices/{mtx_path}", name=name,
            protocols=list(protocols), mtx_path=mtx_path, is_enabled=enabled,
            is_persistent=persistent))).inserted_primary_key[0]
