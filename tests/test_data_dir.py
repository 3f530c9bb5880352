"""The data dir of a real `nestmtx-sidecar serve`: 0700, every file in it 0600, whatever the
umask; an existing wider one is narrowed at start with a warning."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from cryptography.fernet import Fernet

from tests.services import SidecarProcess, free_port, start_sidecar


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    """The umask the sidecar process inherits (the usual 022: files 0644, dirs 0755)."""
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


@contextlib.contextmanager
def running(tmp_path: Path, port: int) -> Iterator[SidecarProcess]:
    with umask(0o022):
        process = start_sidecar(tmp_path, port=port)
    try:
        yield process
    finally:
        process.stop()


def modes(data_dir: Path) -> dict[str, str]:
    found = {path.name: oct(stat.S_IMODE(path.stat().st_mode)) for path in data_dir.iterdir()}
    return {".": oct(stat.S_IMODE(data_dir.stat().st_mode)), **found}


async def test_a_new_data_dir_and_its_files_are_private_under_umask_022(tmp_path):
    port = free_port()
    with running(tmp_path, port) as sidecar:
        await sidecar.login()  # a write: the WAL and its index are in use now
        found = modes(sidecar.data_dir)
    assert found == {".": "0o700", "sidecar.db": "0o600", "sidecar.db-wal": "0o600",
                     "sidecar.db-shm": "0o600", "app_key": "0o600", "hook_secret": "0o600"}


async def test_an_existing_wider_data_dir_is_narrowed_with_a_warning(tmp_path):
    port = free_port()
    data_dir = tmp_path / f"data-{port}"  # where start_sidecar points NESTMTX_DATA_DIR
    with umask(0o022):  # as an older version left it
        data_dir.mkdir(mode=0o755)
        (data_dir / "app_key").write_text(Fernet.generate_key().decode())
        (data_dir / "sidecar.db").touch()
        (data_dir / "sidecar.db-wal").touch()
    with running(tmp_path, port) as sidecar:
        await sidecar.login()
        found = modes(sidecar.data_dir)
        log = sidecar.log()
    assert set(found.values()) == {"0o700", "0o600"} and found["."] == "0o700", found
    assert {"app_key", "hook_secret", "sidecar.db", "sidecar.db-wal"} <= set(found)
    for name, mode in ((str(data_dir), "755"), ("app_key", "644"), ("sidecar.db", "644"),
                       ("sidecar.db-wal", "644")):
        assert any(name in line and f"(mode {mode})" in line and "other users" in line
                   for line in log.splitlines()), (name, log)
