#!/usr/bin/env python3
"""The server's import graph against its layer rules (docs/architecture.md).

Reads every module of ``server/protolens_server`` (AST: module-level and function-level
imports alike), groups modules into rooms (a sub-package, or a top-level module), and
prints: the rooms with their layer, every import that points up the layers (a room
importing a room of a higher layer), and the import cycles between modules (strongly
connected components of the module graph). ``--check`` exits 1 if any import points up
or any cycle exists (tests/test_import_layers.py runs it).

    python scripts/import_layers.py [--check] [--json]
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "protolens_server"
SOURCE = ROOT / "server" / PACKAGE

# Layer of each room, lowest first; a room may import rooms of its own layer or lower.
LAYERS: dict[str, int] = {
    # 0: foundations, no protolens imports above them
    "errors": 0,
    "paths": 0,
    "principal": 0,
    "registered_names": 0,
    "__init__": 0,  # ENGINE_VERSION
    # 1: process-wide services and pure helpers
    "logging": 1,
    "metrics": 1,
    "config": 1,
    "quotas": 1,
    "blobs": 1,
    "lr_memory": 1,  # the finder's rates on disk for local commands
    "imageio": 1,
    "heap": 1,
    "cpu_budget": 1,  # torch threads from the cgroup quota and the free CPUs
    # 2: the engine (torch) and the models it runs
    "engine": 2,
    "models": 3,
    "scores": 4,
    "plots": 4,
    # 5: the one place that talks to Redis (and the blob store)
    "queue": 5,
    # 6: what runs on top of the queue
    "worker": 6,
    "checks": 6,
    "torchserve": 6,
    # 7: the gRPC API and what serves people
    "api": 7,
    "web": 8,
    "healthcheck": 8,
    # 9: commands
    "cli": 9,
}


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SOURCE.rglob("*.py")):
        rel = path.relative_to(SOURCE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(path: Path, module: str, known: set[str]) -> set[str]:
    """The protolens_server modules ``module`` imports (``from a import b``: a.b if a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_pkg else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from a import b``: a.b when that is a module, else a
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module and name.startswith(PACKAGE):
                found.add(name)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def measure() -> dict[str, object]:
    mods = modules()
    known = set(mods)
    graph = {m: imports(p, m, known) for m, p in mods.items()}
    # A package's __init__ re-exporting its own modules is not a cycle of design.
    graph = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in graph.items()}
    rooms = sorted({room(m) for m in mods})
    unknown = [r for r in rooms if r not in LAYERS]
    arrows: set[tuple[str, str]] = set()
    up: list[str] = []
    for m, deps in graph.items():
        for d in deps:
            a, b = room(m), room(d)
            if a == b:
                continue
            arrows.add((a, b))
            if LAYERS.get(b, 99) > LAYERS.get(a, 99):
                up.append(f"{m} -> {d} ({a} {LAYERS.get(a)} < {b} {LAYERS.get(b)})")
    return {
        "rooms": len(rooms),
        "unlayered_rooms": unknown,
        "arrows_between_rooms": len(arrows),
        "imports_pointing_up": sorted(up),
        "cycles": cycles(graph),
        "modules": len(mods),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = measure()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{result['modules']} modules in {result['rooms']} rooms, "
            f"{result['arrows_between_rooms']} arrows between rooms, "
            f"{len(result['imports_pointing_up'])} imports pointing up, "  # type: ignore[arg-type]
            f"{len(result['cycles'])} cycles"  # type: ignore[arg-type]
        )
        for line in result["imports_pointing_up"]:  # type: ignore[attr-defined]
            print("  up:", line)
        for cycle in result["cycles"]:  # type: ignore[attr-defined]
            print("  cycle:", " <-> ".join(cycle))
        if result["unlayered_rooms"]:
            rooms = ", ".join(result["unlayered_rooms"])  # type: ignore[arg-type]
            print(f"  rooms without a layer: {rooms} (give each one in LAYERS, {__file__})")
    bad = result["imports_pointing_up"] or result["cycles"] or result["unlayered_rooms"]
    return 1 if args.check and bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
