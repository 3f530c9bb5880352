"""The package's size limits: no module over 400 lines, no class over 200, no function over 60.

Past these a part usually does more than one thing; scripts/test runs this beside ruff.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

LIMITS = {"module": 400, "class": 200, "function": 60}


def oversized(root: Path) -> list[str]:
    found = []
    for file in sorted(root.rglob("*.py")):
        source = file.read_text()
        path = file.relative_to(root.parent)
        lines = len(source.splitlines())
        if lines > LIMITS["module"]:
            found.append(f"{path}: module of {lines} lines (limit {LIMITS['module']})")
        for node in ast.walk(ast.parse(source)):
            kind = ("class" if isinstance(node, ast.ClassDef) else "function"
                    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else None)
            if kind is None:
                continue
            length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
            if length > LIMITS[kind]:
                found.append(f"{path}:{node.lineno}: {kind} {node.name} of {length} lines "
                             f"(limit {LIMITS[kind]})")
    return found


if __name__ == "__main__":
    problems = oversized(Path(__file__).resolve().parent.parent / "nestmtx_sidecar")
    print(*problems, sep="\n", file=sys.stderr)
    sys.exit(1 if problems else 0)
