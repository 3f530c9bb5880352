"""compose.yaml, Dockerfile and .env.example checked without Docker: what they mount exists,
what they set is a real setting, and MediaMTX's hook commands point at the mounted script."""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
from pathlib import PurePosixPath
from typing import Any

import pytest
import yaml

from nestmtx_sidecar.config import ENV_PREFIX, Settings
from tests.services import ROOT

SETTING_NAMES = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)
                 if f.name != "secrets_generated"} | {ENV_PREFIX + "CONFIG"}
COMPOSE_NAMES = {"COMPOSE_PROFILES", "POSTGRES_PASSWORD"}  # read by Compose, not the sidecar
MEDIAMTX_API_PORT = "9997"
_HOOK_OPTIONS = ("Timeout", "CloseAfter", "Restart")  # runOn* settings that are not commands


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def sidecars(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Services that run this project's image."""
    return {name: s for name, s in services.items() if s.get("build") == "."}


def env_file(path: str) -> dict[str, str]:
    """KEY=value lines, commented-out ones included (they are settings users switch on)."""
    entries = {}
    for line in (ROOT / path).read_text().splitlines():
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            entries[match[1]] = match[2]
    return entries


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of every bind mount (the ones starting with . or /)."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith((".", "/")):
            mounts.append((source, target))
    return mounts


def hook_commands() -> list[str]:
    config = yaml.safe_load((ROOT / "config" / "mediamtx.yml").read_text()) or {}
    sections = [config.get("pathDefaults") or {}, *(config.get("paths") or {}).values()]
    return [value for section in sections for key, value in (section or {}).items()
            if key.startswith("runOn") and not key.endswith(_HOOK_OPTIONS)
            and isinstance(value, str) and value]


def test_compose_parses_with_the_expected_services(services: dict[str, dict[str, Any]]) -> None:
    assert services["mediamtx"]["image"] == "bluenviron/mediamtx:1-ffmpeg"
    assert set(sidecars(services)) == {"sidecar", "sidecar-2"}
    scale = {name for name, s in services.items() if "scale" in s.get("profiles", [])}
    assert scale == {"sidecar-2", "postgres", "redis"}
    assert "profiles" not in services["sidecar"]


def test_every_mounted_file_exists(services: dict[str, dict[str, Any]]) -> None:
    mounts = [m for service in services.values() for m in bind_mounts(service)]
    assert mounts, "compose.yaml mounts nothing from the checkout"
    for source, _ in mounts:
        assert (ROOT / source).exists(), f"compose.yaml mounts {source}, which does not exist"
    read_only = {v.split(":")[1] for v in services["mediamtx"]["volumes"] if v.endswith(":ro")}
    assert {"/mediamtx.yml", "/hooks"} <= read_only


def test_hook_commands_run_the_mounted_script(services: dict[str, dict[str, Any]]) -> None:
    commands = hook_commands()
    assert len(commands) >= 6, "config/mediamtx.yml does not wire the hooks"
    mounts = bind_mounts(services["mediamtx"])
    for command in commands:
        program, *args = shlex.split(command)
        in_container = PurePosixPath(program)
        host = next((ROOT / source / in_container.relative_to(target)
                     for source, target in mounts if in_container.is_relative_to(target)), None)
        assert host is not None, f"{program} is not inside any mount of the mediamtx service"
        assert host.is_file() and os.access(host, os.X_OK), f"{host} is not an executable file"
        assert host.resolve() == (ROOT / "hooks" / "nestmtx-hook").resolve()
        assert len(args) == 1


def test_every_sidecar_environment_name_is_a_setting(services: dict[str, dict[str, Any]]
                                                     ) -> None:
    for name, service in sidecars(services).items():
        unknown = set(service.get("environment", {})) - SETTING_NAMES
        assert not unknown, f"{name} sets {unknown}, which are not settings (config.py)"
        assert service["env_file"] == ".env"
    example = env_file(".env.example")
    unknown = {key for key in example if key.startswith(ENV_PREFIX)} - SETTING_NAMES
    assert not unknown, f".env.example has {unknown}, which are not settings"
    assert set(example) - SETTING_NAMES <= COMPOSE_NAMES


def test_mediamtx_gets_what_the_hook_script_reads(services: dict[str, dict[str, Any]]) -> None:
    script = (ROOT / "hooks" / "nestmtx-hook").read_text()
    read_by_script = set(re.findall(r"\b(NESTMTX_[A-Z_]+)", script))
    environment = services["mediamtx"]["environment"]
    assert set(environment) <= read_by_script
    assert {"NESTMTX_URL", "NESTMTX_HOOK_SECRET"} <= set(environment)
    # The secret comes from the one env file both services share, and must be set there.
    assert environment["NESTMTX_HOOK_SECRET"].startswith("${NESTMTX_HOOK_SECRET:?")
    assert "NESTMTX_HOOK_SECRET" in env_file(".env.example")
    # The hooks reach the sidecars by a name every replica answers to, on their port.
    url = environment["NESTMTX_URL"]
    host, port = url.removeprefix("http://").split(":")
    for name, service in sidecars(services).items():
        assert host in service["networks"]["media"]["aliases"], name
        assert service["environment"]["NESTMTX_PORT"] == port


def test_interpolated_variables_are_in_the_env_example(compose: dict[str, Any]) -> None:
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", (ROOT / "compose.yaml").read_text()))
    assert used <= set(env_file(".env.example"))


def test_mediamtx_control_api_is_reachable_only_by_sidecars(
        services: dict[str, dict[str, Any]]) -> None:
    assert all(MEDIAMTX_API_PORT not in str(p) for p in services["mediamtx"].get("ports", []))
    media_networks = set(services["mediamtx"]["networks"])
    for name, service in services.items():
        if name in sidecars(services) or name == "mediamtx":
            continue
        assert not media_networks & set(service.get("networks", [])), (
            f"{name} shares a network with MediaMTX and could reach its control API")


def test_scale_profile_shares_state(services: dict[str, dict[str, Any]]) -> None:
    example = env_file(".env.example")
    assert example["COMPOSE_PROFILES"] == "scale"
    database = example["NESTMTX_DATABASE_URL"]
    assert database.startswith("postgresql://") and "@postgres:5432/" in database
    assert example["NESTMTX_REDIS_URL"].startswith("redis://redis:")
    assert "NESTMTX_APP_KEY" in example  # replicas sharing a database must share the key
    volumes = [{v.split(":")[1]: v.split(":")[0] for v in s["volumes"]}
               for s in sidecars(services).values()]
    assert volumes[0]["/data"] != volumes[1]["/data"]
    assert volumes[0]["/spool"] == volumes[1]["/spool"] == "hook-spool"


def test_dockerfile_is_slim_non_root_and_health_checked() -> None:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")  # join continued lines
    bases = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert bases and all(re.fullmatch(r"python:3\.1[1-9]-slim", base) for base in bases)
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    health = re.search(r"^HEALTHCHECK\b(.*)$", text, re.MULTILINE)
    assert health and "/healthz" in health[1]
    assert re.search(r'^CMD \["serve"\]', text, re.MULTILINE)
    # Everything the image copies is in the checkout and let through .dockerignore.
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for sources in re.findall(r"^COPY\s+(?!--from)(.+)\s+\S+$", text, re.MULTILINE):
        for source in sources.split():
            assert (ROOT / source).exists(), source
            assert f"!{source.rstrip('/')}" in [line.rstrip("/") for line in ignore], source
