"""Event pictures and clips kept in the data dir, at most `max_bytes` in all, oldest out first.

A file's name is derived from what names it (camera id, kind, Google's id), so a lookup needs
no index; the index in memory (files by age, and their total size) only serves eviction and is
rebuilt from the directory at start, so what was kept survives restarts. File I/O runs in a
thread: an image or a clip is too large to write or scan on the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import os
import threading
from pathlib import Path

from ...storage.private_files import FILE_MODE, private_dir

logger = logging.getLogger(__name__)

SUFFIX = {"image": ".jpg", "clip": ".mp4"}


class MediaStore:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self._dir = directory
        self.max_bytes = max_bytes
        self._files: collections.OrderedDict[Path, int] = collections.OrderedDict()  # by age
        self.total = 0
        self._lock = threading.Lock()  # writes run in threads, several at a time

    async def start(self) -> None:
        await asyncio.to_thread(self._scan)

    def path(self, camera_id: int, kind: str, key: str) -> Path:
        digest = hashlib.sha256(f"{camera_id}\0{kind}\0{key}".encode()).hexdigest()[:40]
        return self._dir / f"{camera_id}-{digest}{SUFFIX[kind]}"

    def find(self, camera_id: int, kind: str, key: str) -> Path | None:
        """The file if it is kept (no disk access: the index knows every file)."""
        path = self.path(camera_id, kind, key)
        return path if path in self._files else None

    async def put(self, camera_id: int, kind: str, key: str, data: bytes) -> bool:
        """Keep the file; False if it alone is over the bound (so it is not kept)."""
        return await asyncio.to_thread(self._write, self.path(camera_id, kind, key), data)

    async def read(self, camera_id: int, kind: str, key: str) -> bytes | None:
        """The kept file's bytes; None if it is not kept (or was evicted meanwhile)."""
        path = self.find(camera_id, kind, key)
        if path is None:
            return None
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None

    def _scan(self) -> None:
        found = []
        entries: list[os.DirEntry[str]] = []
        # Made at the first picture, not here: a sidecar without device events keeps none.
        if self._dir.exists():
            private_dir(self._dir)  # narrows a directory made wider by hand
            entries = list(os.scandir(self._dir))
        for entry in entries:
            if entry.is_file() and entry.name.endswith(tuple(SUFFIX.values())):
                stat = entry.stat()
                found.append((stat.st_mtime_ns, Path(entry.path), stat.st_size))
            elif entry.name.endswith(".part"):  # a write cut short by a crash
                os.unlink(entry.path)
        with self._lock:
            self._files.clear()
            self.total = 0
            for _, path, size in sorted(found):
                self._files[path] = size
                self.total += size
            self._evict()
        logger.info("media: %d files, %.1f MB kept in %s", len(self._files),
                    self.total / 1e6, self._dir)

    def _write(self, path: Path, data: bytes) -> bool:
        if len(data) > self.max_bytes:  # it would push out everything, then itself
            return False
        private_dir(self._dir)
        part = path.with_name(path.name + ".part")
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(part, path)  # readers see the whole file or none
        with self._lock:
            self.total -= self._files.pop(path, 0)
            self._files[path] = len(data)
            self.total += len(data)
            self._evict()
            return path in self._files

    def _evict(self) -> None:
        while self.total > self.max_bytes and self._files:
            oldest, size = self._files.popitem(last=False)
            self.total -= size
            with contextlib.suppress(FileNotFoundError):  # removed by hand meanwhile
                oldest.unlink()
            logger.debug("media: %s removed (store over %d bytes)", oldest.name,
                         self.max_bytes)
