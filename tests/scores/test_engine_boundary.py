"""Nothing outside ``engine/`` imports the engine's private modules (STYLE.md): server code,
bench scripts and tests use the public names in ``engine/__init__.py``.

tests/engine is exempt: its unit tests check private pieces (objectives, parameterisations,
transforms, robustness draws) that no public verb exposes, each saying so.
"""

from __future__ import annotations

import ast

from source_scan import ROOT, imported_modules, python_files, scan

ENGINE = "protolens_server.engine"
SCANNED = ("server", "bench", "tests", "client", "scripts")
EXEMPT = (ROOT / "server" / "protolens_server" / "engine", ROOT / "tests" / "engine")


def _private(module: str) -> bool:
    return module.startswith(f"{ENGINE}._")


def violations(source: str, name: str) -> list[str]:
    """``name:line: module`` for every use of a private engine module in ``source``."""
    tree = ast.parse(source, filename=name)
    found = []
    for node in ast.walk(tree):
        names = imported_modules(node)
        if isinstance(node, ast.ImportFrom) and node.module == ENGINE and node.level == 0:
            names += [f"{ENGINE}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value] if _private(node.value) else []  # importlib.import_module(...)
        found += [f"{name}:{node.lineno}: {n}" for n in names if _private(n)]
    return found


def test_nothing_outside_the_engine_imports_its_private_modules() -> None:
    files = python_files([ROOT / top for top in SCANNED], exempt=EXEMPT)
    assert len(files) > 100  # the scan sees the repository
    bad = scan(files, violations)
    assert bad == [], "use the public names in engine/__init__.py:\n" + "\n".join(bad)


def test_the_scan_finds_each_form_of_private_import() -> None:
    sample = (
        "import protolens_server.engine._fold\n"
        "from protolens_server.engine._scores import x\n"
        "from protolens_server.engine import _activations, generate\n"
        "import importlib; importlib.import_module('protolens_server.engine._loop')\n"
        "from protolens_server.engine import score\n"
    )
    lines = [v.split(": ")[1] for v in violations(sample, "sample.py")]
    assert lines == [f"{ENGINE}.{m}" for m in ("_fold", "_scores", "_activations", "_loop")]
