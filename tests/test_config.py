"""Settings: defaults, YAML, NESTMTX_* overrides, validation naming the key, generated secrets."""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

import pytest
import yaml
from cryptography.fernet import Fernet

from nestmtx_sidecar.config import (
    CASTS,
    Broker,
    ConfigError,
    Settings,
    load_settings,
    with_generated_secrets,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "sidecar.example.yaml"


def test_defaults_need_no_config() -> None:
    settings = load_settings(environ={})
    assert settings == Settings()
    assert (settings.host, settings.port, settings.data_dir) == ("127.0.0.1", 2000,
                                                                 Path("./data"))
    assert settings.resolved_database_url.startswith("sqlite+aiosqlite:///")
    assert settings.resolved_database_url.endswith("/data/sidecar.db")


def test_yaml_then_environment(tmp_path: Path) -> None:
    config = tmp_path / "sidecar.yaml"
    config.write_text("port: 2100\nlog_level: debug\ntoken_ttl: 3600\n"
                      "database_url: postgresql://u:p@db:5432/nest\n")
    settings = load_settings(config, environ={"NESTMTX_PORT": "2200"})
    assert (settings.port, settings.log_level, settings.token_ttl) == (2200, "debug", 3600)
    assert settings.resolved_database_url == "postgresql+asyncpg://u:p@db:5432/nest"
    # NESTMTX_CONFIG names the file when --config does not.
    assert load_settings(environ={"NESTMTX_CONFIG": str(config)}).port == 2100


def test_the_example_config_documents_every_setting_with_its_default() -> None:
    assert load_settings(EXAMPLE, environ={}) == Settings()
    documented = set(yaml.safe_load(EXAMPLE.read_text()))
    assert documented == {f.name for f in dataclasses.fields(Settings)} - {"secrets_generated"}


@pytest.mark.parametrize("yaml_text,key", [
    ("port: 70000", "NESTMTX_PORT"),
    ("port: 1.5", "NESTMTX_PORT"),
    ("port: true", "NESTMTX_PORT"),
    ("port: [1]", "NESTMTX_PORT"),
    ("token_ttl: 10", "NESTMTX_TOKEN_TTL"),
    ("stream_start_timeout: .nan", "NESTMTX_STREAM_START_TIMEOUT"),
    ("stream_start_timeout: -1", "NESTMTX_STREAM_START_TIMEOUT"),
    ("log_level: loud", "NESTMTX_LOG_LEVEL"),
    ("database_url: mysql://x/y", "NESTMTX_DATABASE_URL"),
    ("redis_url: 'redis://[::1'", "NESTMTX_REDIS_URL"),
    ("mediamtx_api_url: 'http://h:99999'", "NESTMTX_MEDIAMTX_API_URL"),
    ("google_consent_url: ftp://consent.example/", "NESTMTX_GOOGLE_CONSENT_URL"),
    ("app_key: not-a-fernet-key", "NESTMTX_APP_KEY"),
    ("data_dir: {a: 1}", "NESTMTX_DATA_DIR"),
    ("host: \"a\\0b\"", "NESTMTX_HOST"),
    ("trusted_proxies: 10.0.0.0/8,proxy.lan", "NESTMTX_TRUSTED_PROXIES"),
    ("trusted_proxies: 10.0.0.0/33", "NESTMTX_TRUSTED_PROXIES"),
    ("colour: blue", "unknown setting 'colour'"),
    ("- a list", "expected a mapping"),
    ("port: [", "not valid YAML"),
])
def test_bad_yaml_values_name_the_key(tmp_path: Path, yaml_text: str, key: str) -> None:
    config = tmp_path / "sidecar.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ConfigError, match=key.replace("[", r"\[")):
        load_settings(config, environ={})


@pytest.mark.parametrize("name,value", [
    ("NESTMTX_PORT", "twenty"), ("NESTMTX_PORT", "-1"), ("NESTMTX_PORT", "0"),
    ("NESTMTX_TOKEN_TTL", "1e3"), ("NESTMTX_LOG_LEVEL", "INFO"),
    ("NESTMTX_SDM_API_URL", "ftp://x"), ("NESTMTX_MQTT_URL", "tcp://x"),
    ("NESTMTX_ADMIN_PASSWORD", "7-chars"),  # the users module's minimum is 8
    ("NESTMTX_PUBSUB_API_URL", "grpc://x"), ("NESTMTX_EVENT_MAX_AGE", "-5"),
    # A broker URL is decided here, not later while the app is built.
    ("NESTMTX_MQTT_URL", "mqtt://:1883"), ("NESTMTX_MQTT_URL", "mqtt://"),
    ("NESTMTX_MQTT_URL", "mqtt://broker:99999"), ("NESTMTX_MQTT_URL", "mqtt://broker:0"),
    ("NESTMTX_MQTT_URL", "mqtt://broker:port"), ("NESTMTX_MQTT_URL", "mqtt://[::1"),
    ("NESTMTX_MQTT_URL", "mqtt+ws://broker"),
])
def test_bad_environment_values_name_the_key(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings(environ={name: value})


def test_the_admin_password_is_held_to_the_users_minimum_and_never_echoed() -> None:
    with pytest.raises(ConfigError, match="at least 8 characters") as failed:
        load_settings(environ={"NESTMTX_ADMIN_PASSWORD": "1234567"})
    assert "1234567" not in str(failed.value)
    assert load_settings(environ={"NESTMTX_ADMIN_PASSWORD": "12345678"}).admin_password


def test_unreadable_config_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        load_settings(tmp_path / "missing.yaml", environ={})
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings(binary, environ={})


def test_secrets_are_generated_once_with_mode_0600(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    first = with_generated_secrets(settings)
    assert first.secrets_generated == ("app_key", "hook_secret")
    Fernet(first.app_key)
    assert len(first.hook_secret) >= 32
    for name in ("app_key", "hook_secret"):
        mode = stat.S_IMODE((tmp_path / "data" / name).stat().st_mode)
        assert mode == 0o600, oct(mode)
    again = with_generated_secrets(settings)
    assert (again.app_key, again.hook_secret) == (first.app_key, first.hook_secret)
    assert again.secrets_generated == ()


def test_configured_secrets_are_not_written_but_the_data_dir_exists(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    settings = with_generated_secrets(Settings(data_dir=tmp_path / "d", app_key=key,
                                               hook_secret="h" * 32))
    assert settings.app_key == key and settings.secrets_generated == ()
    assert (tmp_path / "d").is_dir() and not list((tmp_path / "d").iterdir())


def test_unusable_data_dir_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="NESTMTX_DATA_DIR"):
        with_generated_secrets(Settings(data_dir=blocker / "data"))


def test_trusted_proxies_are_addresses_and_cidrs() -> None:
    settings = load_settings(environ={"NESTMTX_TRUSTED_PROXIES": "10.0.0.5, fd00::/8"})
    assert [str(n) for n in settings.trusted_proxy_networks] == ["10.0.0.5/32", "fd00::/8"]
    assert load_settings(environ={}).trusted_proxy_networks == ()


def test_every_setting_is_read_through_an_explicit_cast() -> None:
    settable = {f.name for f in dataclasses.fields(Settings)} - {"secrets_generated"}
    assert set(CASTS) == settable
    for name, cast in CASTS.items():  # each default is what its own cast would give
        default = getattr(Settings(), name)
        assert cast(str(default)) == default, name


@pytest.mark.parametrize("name", sorted(CASTS))
def test_each_cast_rejects_wrong_input_with_a_line_naming_the_key(tmp_path: Path,
                                                                  name: str) -> None:
    key = "NESTMTX_" + name.upper()
    config = tmp_path / "sidecar.yaml"
    for wrong in ([1], {"a": 1}, True, None):
        config.write_text(yaml.safe_dump({name: wrong}))
        with pytest.raises(ConfigError, match=f"^{key}: expected ") as failed:
            load_settings(config, environ={})
        assert "\n" not in str(failed.value)
    kind = type(getattr(Settings(), name))
    if kind in (int, float):  # numbers from the environment: text that is no number
        with pytest.raises(ConfigError, match=f"^{key}: expected a (whole )?number"):
            load_settings(environ={key: "twelve"})


def test_mqtt_urls_are_parsed_once_in_the_settings() -> None:
    settings = load_settings(environ={"NESTMTX_MQTT_URL": "mqtts://u:p%40ss@broker.lan:8884"})
    assert settings.mqtt_broker == Broker("broker.lan", 8884, "u", "p@ss", True)
    assert load_settings(environ={}).mqtt_broker is None


def test_the_default_sqlite_file_is_named_in_one_place(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.sqlite_file == tmp_path / "sidecar.db"
    assert settings.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path / 'sidecar.db'}"
    assert Settings(database_url="postgresql://db/nest").sqlite_file is None
