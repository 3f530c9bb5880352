"""What each part of the stack adds to a process's RSS just by being imported.

Usage: bench/.venv/bin/python bench/import_rss.py   (the runtime-only install run.py builds)
Imports the serving process's dependencies one at a time, in the order the sidecar needs
them, and prints the RSS each adds, ending with the sidecar's own modules: the floor under
run.py's "RSS idle". Each figure depends on what came before it (a module shared by two
parts counts once, for the first).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

# (modules, what they are) in the order the sidecar's start-up pulls them in.
STACK = [
    (("asyncio",), "asyncio, with ssl and OpenSSL's libcrypto"),
    (("uvloop",), "uvloop"),
    (("uvicorn",), "uvicorn (its CLI pulls click and watchfiles)"),
    (("starlette.applications",), "Starlette"),
    (("sqlalchemy",), "SQLAlchemy Core"),
    (("sqlalchemy.ext.asyncio",), "SQLAlchemy asyncio (its package imports the ORM)"),
    (("aiosqlite",), "aiosqlite"),
    (("socketio",), "python-socketio and python-engineio (and redis, for the Redis manager)"),
    (("prometheus_client",), "prometheus-client"),
    (("cryptography.fernet",), "cryptography (Fernet)"),
    (("yaml",), "PyYAML"),
    (("httpx", "tenacity"), "httpx and tenacity"),
    (("google.oauth2.credentials",), "google-auth"),
    (("nestmtx_sidecar.cli", "nestmtx_sidecar.app"), "nestmtx-sidecar's own modules"),
]


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    before = rss_mib()
    print(f"| import | adds | RSS |\n|---|---|---|\n| the interpreter | | {before:.1f} MiB |")
    for modules, what in STACK:
        for module in modules:
            importlib.import_module(module)
        now = rss_mib()
        print(f"| {what} | {now - before:+.1f} MiB | {now:.1f} MiB |")
        before = now


if __name__ == "__main__":
    main()
