"""Make the gallery screenshots in docs/: a real stack, real prototypes, headless Chromium.

    python tests/web/web_docs_screenshots.py [--out docs/] [--steps 64]

Starts ``protolens up``'s stack (embedded Redis, API, one worker, the gallery) with
the built-in efficientnet_lite0, a reference set of scikit-image's sample photos and
the two ``shapes`` versions of tests/checks (the second with a planted shortcut);
generates eight ImageNet prototypes (four scored), the shapes prototypes and a check
of shapes@2 against shapes@1; then screenshots the home page, a version's grid, a
prototype page, the check's side-by-side view and a job while it runs. Takes a few
minutes on a 2-core CPU (the ImageNet prototypes dominate).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "checks"))

from checks_shortcut_models import CONFIG, build_store, write_reference  # noqa: E402
from PIL import Image  # noqa: E402
from protolens import Client  # noqa: E402
from protolens_server.api.stack import Stack  # noqa: E402
from protolens_server.config import Settings  # noqa: E402
from protolens_server.scores.samples import write_reference_set  # noqa: E402
from web_browser import Browser  # noqa: E402

ROOT = HERE.parents[1]
SCORED = [285, 967, 872, 657]  # the classes scikit-image's photos show (scores/samples.py)
UNSCORED = [948, 417, 817, 980]  # Granny Smith apple, balloon, sports car, volcano
POLICY = "min_confidence: 0.5\nmax_drift: 0.6\nmin_cross_confidence: 0.5\n"


def scene(client: Client, steps: int) -> dict[str, str]:
    """Jobs and a check; returns the ids the screenshots need."""
    config = {"steps": steps}
    scored = client.create_prototype_job(
        "efficientnet_lite0", SCORED, config=config, reference_set="photos"
    )
    plain = client.create_prototype_job("efficientnet_lite0", UNSCORED, config=config)
    shapes = {"steps": CONFIG.steps, "lr": CONFIG.lr, "transforms": CONFIG.transforms}
    for version in ("1", "2"):
        job = client.create_prototype_job(
            f"shapes@{version}", [0, 1, 2, 3], config=shapes, reference_set="shapes"
        )
        client.wait(job, timeout=600)
    check = client.start_check(
        "shapes@2", baseline="shapes@1", classes=[0, 1, 2, 3], steps=CONFIG.steps,
        prototypes=CONFIG.prototypes, config={"lr": CONFIG.lr, "transforms": CONFIG.transforms},
        reference_set="shapes", policy_yaml=POLICY,
    )  # fmt: skip
    scored = client.wait(scored, timeout=1800)
    client.wait(plain, timeout=1800)
    check = client.wait_check(check, timeout=600)
    assert check.state == "SUCCEEDED", check
    return {"scored": scored.id, "check": check.name.removeprefix("checks/")}


def shoot(b: Browser, url: str, out: Path, *, full: bool = True) -> None:
    load = b.goto(url, settle_s=1.0)
    assert not load.errors, (url, load.errors)
    b.eval("document.activeElement && document.activeElement.blur()")
    img = Image.open(io.BytesIO(b.screenshot(full_page=full))).convert("RGB")
    img.save(out, optimize=True)
    print(f"{out}: {img.width}x{img.height}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--steps", type=int, default=64)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_store(root / "models")
        write_reference_set(root / "refs" / "photos")
        write_reference(root / "refs" / "shapes")
        settings = Settings(
            grpc_port=0, metrics_port=0, web_port=0, model_store=root / "models",
            reference_root=root / "refs", device="cpu", heartbeat_s=0.5,
        )  # fmt: skip
        with Stack(settings, root / "stack", workers=1) as stack:
            url = stack.start_web().rstrip("/")
            with Client(stack.address, timeout=60) as client:
                ids = scene(client, args.steps)
                with Browser(width=1280, height=860) as b:
                    shoot(b, url + "/", args.out / "gallery_home.png")
                    shoot(b, url + "/models/efficientnet_lite0", args.out / "gallery_version.png")
                    proto = f"{url}/jobs/{ids['scored']}/prototypes/0"
                    shoot(b, proto, args.out / "gallery_prototype.png")
                    shoot(b, f"{url}/checks/{ids['check']}", args.out / "gallery_check.png")
                    # a new seed: the worker finds that seed's equidistant start first
                    running = client.create_prototype_job(
                        "efficientnet_lite0", [963], config={"steps": 400}, seed=7
                    )
                    deadline = time.monotonic() + 300
                    while client.get_job(running).progress.phase != "PREPARING":
                        assert time.monotonic() < deadline, "the job did not start"
                        time.sleep(0.05)
                    shoot(b, f"{url}/jobs/{running.id}", args.out / "gallery_progress.png")
                    client.cancel_job(running)
    return 0


if __name__ == "__main__":
    sys.exit(main())
