"""Settings: one typed object, built once from the YAML file and NESTMTX_* variables."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml
from cryptography.fernet import Fernet

from .errors import ConfigError
from .modules.users import MIN_PASSWORD
from .security.client_address import Network, parse_networks
from .storage.private_files import private_dir, private_file

ENV_PREFIX = "NESTMTX_"
LOG_LEVELS = ("trace", "debug", "info", "warn", "warning", "error", "fatal")
SQLITE_FILE = "sidecar.db"  # the default database, in the data dir


@dataclass(frozen=True)
class Broker:
    """Where the MQTT broker is, from NESTMTX_MQTT_URL; str() never shows the credentials."""

    host: str
    port: int
    username: str | None
    password: str | None = field(repr=False)
    tls: bool

    @classmethod
    def from_url(cls, url: str) -> Broker:
        key = "NESTMTX_MQTT_URL"
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ConfigError(f"{key}: not a valid URL; the port must be a number from 1 to "
                              "65535") from None
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ConfigError(f"{key}: expected a mqtt/mqtts URL, got scheme {parts.scheme!r}")
        if not parts.hostname:
            raise ConfigError(f"{key}: a host is required (mqtt://host:1883)")
        if port == 0:  # urlsplit accepts 0, which no broker listens on
            raise ConfigError(f"{key}: the port must be a number from 1 to 65535")
        tls = parts.scheme == "mqtts"
        return cls(parts.hostname, port or (8883 if tls else 1883),
                   unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password is not None else None, tls)

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 2000
    data_dir: Path = Path("./data")
    database_url: str = ""
    app_key: str = ""
    hook_secret: str = ""
    admin_username: str = "admin"
    admin_password: str = ""
    token_ttl: int = 86400
    redis_url: str = ""
    google_token_uri: str = "https://oauth2.googleapis.com/token"
    google_consent_url: str = "https://nestservices.google.com/partnerconnections"
    sdm_api_url: str = "https://smartdevicemanagement.googleapis.com/v1"
    pubsub_api_url: str = "https://pubsub.googleapis.com/v1"
    event_max_age: float = 120.0  # seconds; older device events are dropped (0: no limit)
    media_max_mb: int = 500  # event pictures and clips kept in data_dir/media, oldest out
    mediamtx_api_url: str = ""  # MediaMTX control API; set to apply persistent paths live
    mediamtx_rtsp_url: str = "rtsp://127.0.0.1:8554"
    # Where readers reach MediaMTX, shown in the console (empty: its host, MediaMTX's ports).
    public_rtsp_url: str = ""
    public_webrtc_url: str = ""
    public_hls_url: str = ""
    mediamtx_webrtc_url: str = ""  # MediaMTX's WebRTC page for the console's preview frame
    log_level: str = "info"
    spool_dir: str = ""
    spool_replay_delay: float = 5.0  # seconds for subscribers to reconnect first
    device_sync_interval: int = 3600
    stream_start_timeout: float = 30.0
    mqtt_url: str = ""
    mqtt_base: str = "nestmtx"
    mqtt_discovery_prefix: str = "homeassistant"
    trusted_proxies: str = ""  # addresses/CIDRs whose X-Forwarded-For names the client
    secrets_generated: tuple[str, ...] = field(default=(), compare=False)

    @property
    def sqlite_file(self) -> Path | None:
        """The default SQLite database file, used when no database_url is configured."""
        return None if self.database_url else self.data_dir / SQLITE_FILE

    @property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL with the async driver this service uses."""
        url = self.database_url or f"sqlite:///{self.data_dir.resolve() / SQLITE_FILE}"
        scheme, sep, rest = url.partition("://")
        drivers = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg",
                   "postgres": "postgresql+asyncpg"}
        return drivers.get(scheme, scheme) + sep + rest

    @property
    def mqtt_broker(self) -> Broker | None:
        """The MQTT broker (None: MQTT is off)."""
        return Broker.from_url(self.mqtt_url) if self.mqtt_url else None

    @property
    def trusted_proxy_networks(self) -> tuple[Network, ...]:
        return parse_networks(self.trusted_proxies)

    @property
    def python_log_level(self) -> int:
        name = {"trace": "DEBUG", "warn": "WARNING", "fatal": "CRITICAL"}.get(
            self.log_level, self.log_level.upper()
        )
        return logging.getLevelNamesMapping()[name]


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read the YAML file (if any), apply NESTMTX_* overrides, validate every value."""
    environ = os.environ if environ is None else environ
    config_file = config_file or environ.get(ENV_PREFIX + "CONFIG")
    raw: dict[str, Any] = {}
    if config_file:
        raw.update(_read_yaml(Path(config_file)))
    for name in CASTS:
        value = environ.get(ENV_PREFIX + name.upper())
        if value is not None:
            raw[name] = value
    values = {name: _cast(name, value) for name, value in raw.items()}
    settings = Settings(**values)
    _validate(settings)
    return settings


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of settings")
    unknown = sorted(set(map(str, data)) - set(CASTS))
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting {unknown[0]!r}")
    return data


def whole_number(value: Any) -> int:
    """An int >= 0; YAML gives ints, the environment strings; 1.5 or true are mistakes."""
    text = value.strip() if isinstance(value, str) else value
    if isinstance(text, str) and text.isascii() and text.isdigit():
        return int(text)
    if isinstance(text, int) and not isinstance(text, bool) and text >= 0:
        return text
    raise ValueError(f"expected a whole number >= 0, got {value!r}")


def number(value: Any) -> float:
    """A finite float >= 0."""
    try:
        result = float(value)
    except (TypeError, ValueError):
        result = math.nan
    if isinstance(value, bool) or not math.isfinite(result) or result < 0:
        raise ValueError(f"expected a number >= 0, got {value!r}")
    return result


def text(value: Any) -> str:
    """A string; a bare YAML number (port-like or version-like) is taken as its text."""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ValueError(f"expected a string, got {value!r}")
    result = str(value)
    if "\x00" in result:
        raise ValueError("must not contain NUL characters")
    return result


def path(value: Any) -> Path:
    return Path(text(value))


# How each setting is read from YAML or the environment: one explicit cast per field.
CASTS: dict[str, Callable[[Any], Any]] = {
    "host": text, "port": whole_number, "data_dir": path, "database_url": text,
    "app_key": text, "hook_secret": text, "admin_username": text, "admin_password": text,
    "token_ttl": whole_number, "redis_url": text, "google_token_uri": text,
    "google_consent_url": text, "sdm_api_url": text, "pubsub_api_url": text,
    "event_max_age": number, "media_max_mb": whole_number, "mediamtx_api_url": text,
    "mediamtx_rtsp_url": text,
    "public_rtsp_url": text, "public_webrtc_url": text, "public_hls_url": text,
    "mediamtx_webrtc_url": text, "log_level": text, "spool_dir": text,
    "spool_replay_delay": number, "device_sync_interval": whole_number,
    "stream_start_timeout": number, "mqtt_url": text, "mqtt_base": text,
    "mqtt_discovery_prefix": text, "trusted_proxies": text,
}


def _cast(name: str, value: Any) -> Any:
    try:
        return CASTS[name](value)
    except ValueError as exc:
        raise ConfigError(f"{ENV_PREFIX}{name.upper()}: {exc}") from None


def _validate(settings: Settings) -> None:
    if not 1 <= settings.port <= 65535:
        raise ConfigError(f"NESTMTX_PORT: expected 1-65535, got {settings.port}")
    if settings.log_level not in LOG_LEVELS:
        raise ConfigError(
            f"NESTMTX_LOG_LEVEL: expected one of {', '.join(LOG_LEVELS)}, "
            f"got {settings.log_level!r}"
        )
    if settings.admin_password and len(settings.admin_password) < MIN_PASSWORD:
        raise ConfigError(f"NESTMTX_ADMIN_PASSWORD: expected at least {MIN_PASSWORD} characters")
    if settings.token_ttl < 60:
        raise ConfigError("NESTMTX_TOKEN_TTL: expected at least 60 seconds")
    _check_url("NESTMTX_DATABASE_URL", settings.database_url, ("sqlite", "postgresql", "postgres"))
    _check_url("NESTMTX_REDIS_URL", settings.redis_url, ("redis", "rediss", "unix"))
    _check_url("NESTMTX_GOOGLE_TOKEN_URI", settings.google_token_uri, ("http", "https"))
    _check_url("NESTMTX_GOOGLE_CONSENT_URL", settings.google_consent_url, ("http", "https"))
    _check_url("NESTMTX_SDM_API_URL", settings.sdm_api_url, ("http", "https"))
    _check_url("NESTMTX_PUBSUB_API_URL", settings.pubsub_api_url, ("http", "https"))
    _check_url("NESTMTX_MEDIAMTX_API_URL", settings.mediamtx_api_url, ("http", "https"))
    _check_url("NESTMTX_MEDIAMTX_RTSP_URL", settings.mediamtx_rtsp_url, ("rtsp", "rtsps"))
    _check_url("NESTMTX_PUBLIC_RTSP_URL", settings.public_rtsp_url, ("rtsp", "rtsps"))
    for key in ("public_webrtc_url", "public_hls_url", "mediamtx_webrtc_url"):
        _check_url(ENV_PREFIX + key.upper(), getattr(settings, key), ("http", "https"))
    settings.mqtt_broker  # noqa: B018 -- parsing is the check
    try:
        settings.trusted_proxy_networks  # noqa: B018 -- parsing is the check
    except ValueError as exc:
        raise ConfigError(f"NESTMTX_TRUSTED_PROXIES: {exc}") from None
    if settings.app_key:
        try:
            Fernet(settings.app_key)
        except ValueError:
            raise ConfigError(
                "NESTMTX_APP_KEY: expected a Fernet key (32 url-safe base64-encoded bytes)"
            ) from None


def _check_url(key: str, value: str, schemes: tuple[str, ...]) -> None:
    if not value:
        return
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises on a bad port, which is what we want to know here
    except ValueError as exc:
        raise ConfigError(f"{key}: not a valid URL ({exc})") from None
    scheme = parts.scheme.split("+")[0]
    if scheme not in schemes:
        raise ConfigError(f"{key}: expected a {'/'.join(schemes)} URL, got scheme {scheme!r}")


def with_generated_secrets(settings: Settings) -> Settings:
    """Fill app key and hook secret from the data dir, creating them (mode 0600) when absent.

    The data dir is made (or narrowed to) mode 0700.
    """
    generated: list[str] = []
    updates: dict[str, str] = {}
    try:
        # Also when both secrets are configured: the default SQLite database lives here.
        private_dir(settings.data_dir)
        for name, make in (("app_key", lambda: Fernet.generate_key().decode()),
                           ("hook_secret", lambda: secrets.token_urlsafe(32))):
            if getattr(settings, name):
                continue
            path = settings.data_dir / name
            if private_file(path):
                path.write_text(make())
                generated.append(name)
            updates[name] = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = (exc.strerror or str(exc)) if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"NESTMTX_DATA_DIR: cannot use {settings.data_dir}: {reason}") from None
    settings = dataclasses.replace(settings, **updates, secrets_generated=tuple(generated))
    _validate(settings)
    return settings
