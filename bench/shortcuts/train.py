"""Train the suite's models (seeded, CPU minutes) and cache them as ``.pt2`` + sidecar.

    python bench/shortcuts/train.py --arch cnn_bn --norm spec --kind patch --target 2
    python bench/shortcuts/train.py --arch cnn --norm model --lr 2e-3   # a recipe variant

A ``Recipe`` says everything that decides the weights; its key (the recipe plus the
source of this package) names the cache folder, so a model is trained once per
machine and a changed recipe or data generator is never served stale. Weights are
made at run time and never committed. The cache lives under
``$PROTOLENS_CACHE_DIR/shortcut_suite`` (else ``~/.cache/protolens/shortcut_suite``).

Each trained model records its clean test accuracy and its *reliance* on the
shortcut: the share of other classes' clean images that it calls the shortcut
class once the pure shortcut is pasted on them (minus the share without it). A
planted shortcut that the model did not learn would make the suite meaningless, so
the suite reports both for the shortcut model and its twin.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

if __package__ in (None, ""):  # run as a script: make ``shortcuts`` importable
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shortcuts import data, models

PACKAGE = Path(__file__).resolve().parent
RECIPE_VERSION = 1


@dataclass(frozen=True)
class Recipe:
    """Everything that decides a trained model's weights."""

    arch: str
    norm: str
    kind: str | None = None  # None: the twin, trained without any shortcut
    target: int = -1  # the shortcut's class; -1: the kind's usual one (data.TARGETS)
    seed: int = 0
    n_train: int = 2000
    epochs: int = 6
    width: int = 24
    lr: float = 2e-3
    batch: int = 64
    object_free: float = 0.3

    def __post_init__(self) -> None:
        if self.target < 0 and self.kind is not None:
            object.__setattr__(self, "target", data.TARGETS[self.kind])

    @property
    def planting(self) -> data.Planting | None:
        if self.kind is None:
            return None
        return data.Planting(self.kind, self.target, self.object_free)

    @property
    def name(self) -> str:
        """A model-store name: ``<kind or twin>-<arch>-<norm>-s<seed>``."""
        base = self.kind or "twin"
        target = f"-c{self.target}" if self.kind else ""
        return f"{base}{target}-{self.arch.replace('_', '')}-{self.norm}-s{self.seed}"

    def key(self) -> str:
        h = hashlib.sha256(f"shortcut-recipe/{RECIPE_VERSION}".encode())
        h.update(json.dumps(asdict(self), sort_keys=True).encode())
        h.update(torch.__version__.encode())
        for name in ("data.py", "models.py", "train.py"):
            h.update(code_of(PACKAGE / name).encode())
        return h.hexdigest()[:16]


def code_of(path: Path) -> str:
    """A module's code without docstrings, comments or layout: what keys a trained model
    (reformatting or re-documenting the generator retrains nothing; changing it does)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]  # type: ignore[attr-defined]
    return ast.dump(tree)


@dataclass(frozen=True)
class Trained:
    recipe: Recipe
    path: Path  # the .pt2 program; its sidecar is path.with_suffix(".json")
    meta: dict[str, Any]


def default_cache() -> Path:
    root = os.environ.get("PROTOLENS_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "protolens") / "shortcut_suite"


def fit(recipe: Recipe) -> nn.Module:
    """Train ``recipe``'s network from its seed (Adam, cross-entropy, cosine decay)."""
    images, labels = data.make_dataset(recipe.n_train, recipe.seed, recipe.planting)
    torch.manual_seed(recipe.seed)
    net = models.build(recipe.arch, recipe.norm, len(data.CLASSES), width=recipe.width)
    x = models.model_input(images, recipe.norm)
    opt = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=0.01)
    steps = recipe.epochs * ((len(x) + recipe.batch - 1) // recipe.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=steps)
    g = torch.Generator().manual_seed(recipe.seed + 1)
    net.train()
    for _ in range(recipe.epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), recipe.batch):
            idx = perm[i : i + recipe.batch]
            loss = nn.functional.cross_entropy(net(x[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()


@torch.no_grad()
def predict(net: nn.Module, images: torch.Tensor, norm: str) -> torch.Tensor:
    return torch.cat([net(models.model_input(b, norm)).argmax(1) for b in images.split(256)])


def accuracy(net: nn.Module, norm: str, seed: int, n: int = 1000) -> float:
    images, labels = data.make_dataset(n, seed + 100_003)
    return float((predict(net, images, norm) == labels).float().mean())


def reliance(net: nn.Module, norm: str, kind: str, target: int, n: int = 270) -> dict[str, float]:
    """Share of other classes' images called ``target``: clean, with the shortcut pasted."""
    clean, pasted = data.neutral_with_shortcut(kind, n, seed=424_242, exclude=target)
    before = float((predict(net, clean, norm) == target).float().mean())
    after = float((predict(net, pasted, norm) == target).float().mean())
    return {
        "clean": round(before, 4),
        "pasted": round(after, 4),
        "reliance": round(after - before, 4),
    }


def save(net: nn.Module, recipe: Recipe, folder: Path, meta: dict[str, Any]) -> Path:
    program = torch.export.export(
        net,
        (torch.rand(2, 3, data.SIZE, data.SIZE),),
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    path = folder / "model.pt2"
    torch.export.save(program, str(path))
    sidecar = {
        "channels": 3,
        "height": data.SIZE,
        "width": data.SIZE,
        **models.sidecar_spec(recipe.norm),
        "class_names": list(data.CLASSES),
        "description": f"shortcut suite: {recipe.name} (acc {meta['accuracy']:.3f})",
    }
    (folder / "model.json").write_text(json.dumps(sidecar, indent=1))
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))
    return path


def ensure(recipe: Recipe, cache: Path | None = None) -> Trained:
    """The cached model for ``recipe``, trained and saved first if missing."""
    cache = cache or default_cache()
    entry = cache / f"{recipe.name}-{recipe.key()}"
    if (entry / "meta.json").is_file():
        return Trained(recipe, entry / "model.pt2", json.loads((entry / "meta.json").read_text()))
    import time

    t0 = time.perf_counter()
    net = fit(recipe)
    meta: dict[str, Any] = {
        "recipe": asdict(recipe),
        "train_seconds": round(time.perf_counter() - t0, 1),
        "accuracy": round(accuracy(net, recipe.norm, recipe.seed), 4),
    }
    meta["reliance"] = {
        kind: reliance(net, recipe.norm, kind, target) for kind, target in data.TARGETS.items()
    }
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache))
    try:
        save(net, recipe, tmp, meta)
        try:
            tmp.rename(entry)
        except OSError:  # trained twice at once: keep the first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Trained(recipe, entry / "model.pt2", meta)


def publish(trained: Trained, store: Path) -> str:
    """Copy ``trained`` into a flat model store as ``<name>.pt2`` + sidecar; its store name."""
    store.mkdir(parents=True, exist_ok=True)
    name = trained.recipe.name
    shutil.copyfile(trained.path, store / f"{name}.pt2")
    shutil.copyfile(trained.path.with_suffix(".json"), store / f"{name}.json")
    return name


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--arch", choices=models.ARCHS, default="cnn_bn")
    p.add_argument("--norm", choices=models.NORMS, default="spec")
    p.add_argument("--kind", choices=data.KINDS, help="the shortcut (default: none, the twin)")
    p.add_argument("--target", type=int, default=-1, help="the shortcut's class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=Recipe.lr, help="peak learning rate")
    p.add_argument("--epochs", type=int, default=Recipe.epochs)
    p.add_argument("--cache", type=Path, default=None)
    p.add_argument("--store", type=Path, help="also copy the model into this model store")
    args = p.parse_args()
    recipe = Recipe(
        args.arch, args.norm, args.kind, args.target, args.seed, epochs=args.epochs, lr=args.lr
    )
    trained = ensure(recipe, args.cache)
    print(json.dumps({"path": str(trained.path), **trained.meta}, indent=1))
    if args.store:
        print("store name:", publish(trained, args.store))


if __name__ == "__main__":
    main()
