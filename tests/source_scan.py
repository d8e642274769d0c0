"""Shared by the boundary tests (tests/scores/test_engine_boundary.py,
tests/queue/test_redis_boundary.py): the repository's Python files and what an AST node
imports. A unique module name: tests/ has no packages."""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def python_files(tops: Iterable[Path], exempt: Iterable[Path] = ()) -> list[Path]:
    """Every .py file under ``tops``, outside ``exempt`` folders and virtual envs."""
    skip = tuple(exempt)
    return [
        path
        for top in tops
        for path in sorted(top.rglob("*.py"))
        if not any(path.is_relative_to(e) for e in skip) and ".venv" not in path.parts
    ]


def scan(files: list[Path], violations: Callable[[str, str], list[str]]) -> list[str]:
    """``violations(source, name)`` over ``files``, names relative to the repository."""
    return [
        v
        for path in files
        for v in violations(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    ]


def imported_modules(node: ast.AST) -> list[str]:
    """The modules an ``import`` / absolute ``from ... import`` node names ([] otherwise)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        return [node.module]
    return []
