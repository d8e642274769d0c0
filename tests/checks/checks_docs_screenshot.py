"""Make docs/check_report.png: a real check report (shapes@2 with its planted shortcut vs
shapes@1) rendered by headless Chromium.

    python tests/checks/checks_docs_screenshot.py [--out docs/check_report.png]

Trains the two tiny versions (a few seconds), runs the check with the test
policy, a reference set of clean images (path similarity plots) and a low
entanglement threshold (so the graph has edges to show),
writes the HTML next to the PNG's temporary folder and screenshots it.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch
from checks_browser import open_page
from checks_shortcut_models import CONFIG, build_store, write_reference
from PIL import Image
from protolens_server.checks import Policy, run_check, write_html
from protolens_server.models import ModelCatalog

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "check_report.png")
    parser.add_argument("--html", type=Path, help="also keep the HTML report here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    policy = Policy.from_dict(
        {
            "min_confidence": 0.5,
            "max_drift": 0.6,
            "min_cross_confidence": 0.5,
            "forbidden_entanglements": [["disc", "ring"]],
            "entanglement": {"threshold": 0.001, "top_k": 2},
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        build_store(store)
        result = run_check(
            "shapes@2",
            baseline="shapes@1",
            catalog=ModelCatalog(store, builtins=False),
            config=CONFIG,
            policy=policy,
            cache_dir=Path(tmp) / "cache",
            reference=write_reference(Path(tmp) / "reference"),
        )
        html = write_html(result, args.html or Path(tmp) / "report.html")
        page = open_page(html, width=1100)
    if page.errors:
        raise SystemExit(f"the report logged errors: {page.errors}")
    img = Image.open(io.BytesIO(page.screenshot)).convert("RGB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    img.save(args.out, optimize=True)
    print(f"{args.out}: {img.width}x{img.height}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
