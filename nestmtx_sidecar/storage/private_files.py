"""Files only the service's own user may read: the data dir 0700, the files in it 0600.

Modes are set at creation, whatever the umask, and an existing path with a wider mode (from
an older version, or copied in) is narrowed at start with a warning.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

logger = logging.getLogger(__name__)

DIR_MODE, FILE_MODE = 0o700, 0o600


def private_dir(path: Path) -> None:
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)  # parents keep the umask's mode
    narrow(path, DIR_MODE)


def private_file(path: Path) -> bool:
    """Create the (empty) file 0600 unless it exists, narrowing it if it does; True if new."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        narrow(path, FILE_MODE)
        return False
    os.close(fd)
    return True


def narrow(path: Path, mode: int) -> None:
    """Take away every permission bit outside `mode` (a warning when there was one)."""
    current = stat.S_IMODE(path.stat().st_mode)
    if current & ~mode:
        path.chmod(current & mode)
        logger.warning("%s was accessible to other users (mode %03o); changed to %03o",
                       path, current, current & mode)
