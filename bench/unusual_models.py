"""Unusual models through the real user path (``protolens generate``), as an outside
evaluator would try them.

Each case builds a tiny classifier (seeded, trained a few CPU seconds on synthetic
class templates so its logits mean something), saves it the way a user would
(TorchScript ``.pt``, ``torch.export`` ``.pt2`` with a dynamic batch, or a state dict +
factory), runs ``protolens generate`` on it in a subprocess and records the exit code,
the one-line message, the prototype's probability (a multi-label model's: the label's
own sigmoid, marked ``multi_label``), stop reason and wall time.

    python bench/unusual_models.py                      # all cases
    python bench/unusual_models.py --cases gray28-ts binary-1logit
    python bench/unusual_models.py --json bench/results/unusual_models/run.json
    python bench/unusual_models.py --probe-cost efficientnet_lite0   # load-time probe cost

Model files go to a temporary folder (``--work DIR`` keeps them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


# -- tiny models --------------------------------------------------------------------------


class Net(nn.Module):
    """Conv-norm-ReLU x2, global pool, linear head; ``head`` shapes the output."""

    def __init__(
        self,
        channels: int = 3,
        classes: int = 10,
        norm: str = "bn",
        head: str = "logits",
        stride: int = 1,
        first_width: int = 16,
        first_kernel: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()

        def norm_layer(c: int) -> nn.Module:
            if norm == "gn":
                return nn.GroupNorm(4, c)
            if norm == "ln":
                return nn.GroupNorm(1, c)  # LayerNorm over C,H,W
            return nn.BatchNorm2d(c)

        pad = first_kernel // 2
        self.features = nn.Sequential(
            nn.Conv2d(channels, first_width, first_kernel, stride=stride, padding=pad),
            norm_layer(first_width),
            nn.ReLU(),
            nn.Conv2d(first_width, 32, 3, stride=2, padding=1),
            norm_layer(32),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
        )
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(32 * 16, classes)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.fc(self.drop(self.features(x)))
        if self.head == "log_softmax":
            return torch.log_softmax(z, dim=1)
        if self.head == "softmax":
            return torch.softmax(z, dim=1)
        if self.head == "sigmoid":
            return torch.sigmoid(z)
        return z


class _Wrapper(nn.Module):
    """A trained ``Net`` inside, its forward changed by the subclass."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner


class Rounded(_Wrapper):
    """Quantises its input with ``round``: the gradient to the input is zero."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.round(x * 4) / 4)


class ArgmaxOneHot(_Wrapper):
    """Returns 10 x one-hot(argmax): piecewise constant, no gradient."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.inner(x)
        return 10.0 * torch.nn.functional.one_hot(z.argmax(1), z.shape[1]).to(z.dtype)


class NanAbove(_Wrapper):
    """NaN logits for inputs whose brightest (normalised) pixel is above 1.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.inner(x)
        peak = x.flatten(1).amax(1, keepdim=True)
        return torch.where(peak > 1.5, torch.full_like(z, float("nan")), z)


class Unflattened(_Wrapper):
    """Logits shaped (N, C, 1, 1) (a convolutional head without flatten) or (N, 1, C)."""

    def __init__(self, inner: nn.Module, shape: str = "nc11") -> None:
        super().__init__(inner)
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.inner(x)
        return z[:, :, None, None] if self.shape == "nc11" else z[:, None, :]


class InPlaceInput(_Wrapper):
    """Scales and rectifies its input in place before the network (``x.mul_``,
    ``x.relu_``), then returns ``head`` of the logits."""

    def __init__(self, inner: nn.Module, head: str = "logits") -> None:
        super().__init__(inner)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.mul_(1.5).add_(1.0).relu_()
        z = self.inner(x)
        return torch.softmax(z, dim=1) if self.head == "softmax" else z


class ListOutput(_Wrapper):
    """Returns ``[logits, features]``: a list, not a tuple."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.inner(x), x.mean((2, 3))]


class ExtraInput(_Wrapper):
    """``forward(x, mask)``: a second required input."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.inner(x * mask)


class OptionalInputs(_Wrapper):
    """``forward(x, temperature=1.0, *, return_features=False)``."""

    def forward(
        self, x: torch.Tensor, temperature: float = 1.0, return_features: bool = False
    ) -> torch.Tensor:
        z = self.inner(x) / temperature
        return x.mean((2, 3)) if return_features else z


class ChannelsLastInput(_Wrapper):
    """Takes (N, H, W, C) images, as a model converted from TensorFlow does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.permute(0, 3, 1, 2))


def train(
    model: nn.Module,
    shape: tuple[int, int, int],
    classes: int,
    *,
    scale: float = 1.0,
    mean: float = 0.0,
    std: float = 1.0,
    steps: int = 150,
    seed: int = 0,
    multilabel: bool = False,
) -> nn.Module:
    """A few Adam steps on noisy low-frequency class templates in [0,1] image units,
    fed as ``(x - mean) / std * scale``; ``multilabel``: images hold two templates
    (averaged) and the loss is one binary cross-entropy per class."""
    g = torch.Generator().manual_seed(seed)
    c, h, w = shape
    used = min(classes, 64)  # templates for the first classes; the rest stay untrained
    templates = torch.rand(used, c, 4, 4, generator=g)
    templates = nn.functional.interpolate(templates, size=(h, w), mode="bilinear")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        y = torch.randint(0, used, (32,), generator=g)
        x = (templates[y] + 0.15 * torch.randn(32, c, h, w, generator=g)).clamp(0, 1)
        if multilabel:
            y2 = torch.randint(0, used, (32,), generator=g)
            x = (x + templates[y2]) / 2
            labels = nn.functional.one_hot(y, classes).float()
            labels = labels.maximum(nn.functional.one_hot(y2, classes).float())
            z = model.fc(model.features((x - mean) / std * scale))
            loss = nn.functional.binary_cross_entropy_with_logits(z, labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            continue
        out = model((x - mean) / std * scale)
        if getattr(model, "head", "logits") == "sigmoid" or out.shape[1] == 1:
            loss = nn.functional.binary_cross_entropy_with_logits(
                model.fc(model.features((x - mean) / std * scale)).squeeze(1), (y % 2).float()
            )
        else:
            z = model.fc(model.features((x - mean) / std * scale)) if hasattr(model, "fc") else out
            loss = nn.functional.cross_entropy(z, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


# -- saving the way a user does -----------------------------------------------------------


def save_ts(model: nn.Module, path: Path, shape: tuple[int, int, int], trace: bool = False) -> str:
    example = torch.rand(2, *shape)
    module = torch.jit.trace(model, example) if trace else torch.jit.script(model)
    module.save(str(path))
    return str(path)


def save_pt2(model: nn.Module, path: Path, shape: tuple[int, int, int]) -> str:
    """``shape`` is the model's own input shape ((H, W, C) for a channels-last one); the
    example input has the model's float type."""
    dtype = next(model.parameters()).dtype
    program = torch.export.export(
        model.eval(),
        (torch.rand(2, *shape, dtype=dtype),),
        dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
    )
    torch.export.save(program, str(path))
    return str(path)


FACTORY_MODULE = textwrap.dedent(
    '''
    """Factory for the unusual-models bench (a user's own module)."""
    import sys
    sys.path.insert(0, {bench!r})
    from unusual_models import Net

    def gray28():
        return Net(channels=1, classes=10)
    '''
)


def save_factory(model: nn.Module, work: Path, shape: tuple[int, int, int]) -> str:
    (work / "um_factory.py").write_text(FACTORY_MODULE.format(bench=str(ROOT / "bench")))
    torch.save(model.state_dict(), work / "gray28.pth")
    json.dump(
        {
            "channels": 1,
            "height": 28,
            "width": 28,
            "mean": 0.0,
            "std": 1.0,
            "factory": "um_factory:gray28",
        },
        (work / "gray28.json").open("w"),
    )
    return str(work / "gray28.pth")


def sidecar(path: str, **spec: object) -> None:
    Path(path + ".json").write_text(json.dumps(spec))


# -- cases --------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    build: Callable[[Path], str]  # -> model reference
    args: list[str] = field(default_factory=list)
    target: str = "3"
    note: str = ""
    timeout: float = 600.0


def _gray(head: str = "logits", norm: str = "bn") -> nn.Module:
    torch.manual_seed(0)
    net = Net(channels=1, classes=10, norm=norm, head=head)
    return train(net, (1, 28, 28), 10)


def _rgb(shape: tuple[int, int, int], classes: int = 10, **kw: object) -> nn.Module:
    torch.manual_seed(0)
    net = Net(channels=shape[0], classes=classes, **kw)  # type: ignore[arg-type]
    return train(net, shape, classes)


GRAY = ["--input-shape", "1,28,28"]


def cases() -> list[Case]:
    s32 = (3, 32, 32)
    return [
        Case("gray28-ts", lambda w: save_ts(_gray(), w / "g.pt", (1, 28, 28)), GRAY),
        Case("gray28-ts-nospec", lambda w: save_ts(_gray(), w / "g.pt", (1, 28, 28)), []),
        Case("gray28-pt2", lambda w: save_pt2(_gray(), w / "g.pt2", (1, 28, 28)), []),
        Case("gray28-factory", lambda w: save_factory(_gray(), w, (1, 28, 28)), []),
        Case(
            "rgba4-ts",
            lambda w: _with_spec(
                save_ts(_rgb((4, 32, 32)), w / "r.pt", (4, 32, 32)),
                channels=4,
                height=32,
                width=32,
                mean=0.5,
                std=0.25,
            ),
        ),
        Case(
            "rect-3x64x128-pt2", lambda w: save_pt2(_rgb((3, 64, 128)), w / "r.pt2", (3, 64, 128))
        ),
        Case(
            "odd-3x97x97-ts",
            lambda w: save_ts(_rgb((3, 97, 97)), w / "o.pt", (3, 97, 97)),
            ["--input-shape", "3,97,97"],
        ),
        Case(
            "large-3x384-ts",
            lambda w: save_ts(_rgb((3, 384, 384), stride=4), w / "l.pt", (3, 384, 384)),
            ["--input-shape", "3,384,384"],
        ),
        Case(
            "classes-10000-ts",
            lambda w: save_ts(_rgb(s32, 10000), w / "c.pt", s32),
            ["--input-shape", "3,32,32"],
            target="7",
        ),
        Case(
            "classes-2-ts",
            lambda w: save_ts(_rgb(s32, 2), w / "c.pt", s32),
            ["--input-shape", "3,32,32"],
            target="1",
        ),
        Case(
            "binary-1logit-ts",
            lambda w: save_ts(_rgb(s32, 1), w / "b.pt", s32),
            ["--input-shape", "3,32,32"],
            target="0",
        ),
        Case(
            "binary-sigmoid-ts",
            lambda w: save_ts(_rgb(s32, 1, head="sigmoid"), w / "b.pt", s32),
            ["--input-shape", "3,32,32"],
            target="0",
        ),
        Case(
            "log-softmax-ts",
            lambda w: save_ts(_rgb(s32, head="log_softmax"), w / "s.pt", s32),
            ["--input-shape", "3,32,32"],
        ),
        Case(
            "softmax-ts",
            lambda w: save_ts(_rgb(s32, head="softmax"), w / "s.pt", s32),
            ["--input-shape", "3,32,32"],
        ),
        Case("groupnorm-pt2", lambda w: save_pt2(_rgb(s32, norm="gn"), w / "n.pt2", s32)),
        Case(
            "layernorm-ts",
            lambda w: save_ts(_rgb(s32, norm="ln"), w / "n.pt", s32),
            ["--input-shape", "3,32,32"],
        ),
        Case(
            "dropout-train-script",
            lambda w: save_ts(_rgb(s32, dropout=0.5).train(), w / "d.pt", s32),
            ["--input-shape", "3,32,32"],
        ),
        Case(
            "dropout-train-trace",
            lambda w: save_ts(_rgb(s32, dropout=0.5).train(), w / "d.pt", s32, trace=True),
            ["--input-shape", "3,32,32"],
        ),
        Case(
            "round-input-ts",
            lambda w: save_ts(Rounded(_rgb(s32)), w / "q.pt", s32),
            ["--input-shape", "3,32,32"],
        ),
        Case(
            "argmax-onehot-ts",
            lambda w: save_ts(ArgmaxOneHot(_rgb(s32)), w / "a.pt", s32),
            ["--input-shape", "3,32,32"],
        ),
        Case(
            "nan-some-inputs-ts",
            lambda w: save_ts(NanAbove(_rgb(s32)), w / "n.pt", s32),
            ["--input-shape", "3,32,32"],
        ),
        Case(
            "range255-sidecar",
            lambda w: _with_spec(
                save_ts(_r255(), w / "x.pt", s32),
                channels=3,
                height=32,
                width=32,
                mean=0.0,
                std=1 / 255,
            ),
        ),
        Case(
            "range255-no-spec",
            lambda w: save_ts(_r255(), w / "x.pt", s32),
            ["--input-shape", "3,32,32"],
            note="user forgot the [0,255] spec",
        ),
        *round_2(s32),
        Case(
            "huge-first-conv-ts",
            lambda w: save_ts(_huge(), w / "h.pt", (3, 224, 224)),
            ["--input-shape", "3,224,224"],
            timeout=60.0,
            note="killed by the bench's timeout (SIGINT) after 60 s",
        ),
    ]


S32 = ["--input-shape", "3,32,32"]


def round_2(s32: tuple[int, int, int]) -> list[Case]:
    """Round 2 (issue 12): weights in other float types, logits with singleton
    dimensions, in-place input changes, multi-label, other forward signatures,
    channels-last input."""
    nhwc = (32, 32, 3)
    return [
        Case("half-ts", lambda w: save_ts(_rgb(s32).half(), w / "h.pt", s32), S32),
        Case("bfloat16-pt2", lambda w: save_pt2(_rgb(s32).bfloat16(), w / "b.pt2", s32)),
        Case("double-ts", lambda w: save_ts(_rgb(s32).double(), w / "d.pt", s32), S32),
        Case("logits-nc11-ts", lambda w: save_ts(Unflattened(_rgb(s32)), w / "u.pt", s32), S32),
        Case("logits-n1c-pt2", lambda w: save_pt2(Unflattened(_rgb(s32), "n1c"), w / "u.pt2", s32)),
        Case("inplace-input-ts", lambda w: save_ts(InPlaceInput(_rgb(s32)), w / "i.pt", s32), S32),
        Case("inplace-input-pt2", lambda w: save_pt2(InPlaceInput(_rgb(s32)), w / "i.pt2", s32)),
        Case(
            "inplace-input-softmax-ts",
            lambda w: save_ts(InPlaceInput(_rgb(s32), "softmax"), w / "i.pt", s32),
            S32,
        ),
        Case(
            "multilabel-sigmoid-ts",
            lambda w: save_ts(_multilabel(s32), w / "m.pt", s32),
            S32,
        ),
        Case(
            "multilabel-logits-declared-ts",
            lambda w: _declared(save_ts(_multilabel(s32, "logits"), w / "m.pt", s32)),
            S32,
        ),
        Case(
            "multilabel-logits-undeclared-ts",
            lambda w: save_ts(_multilabel(s32, "logits"), w / "m.pt", s32),
            S32,
        ),
        Case("list-output-ts", lambda w: save_ts(ListOutput(_rgb(s32)), w / "l.pt", s32), S32),
        Case("extra-input-ts", lambda w: save_ts(ExtraInput(_rgb(s32)), w / "e.pt", s32), S32),
        Case(
            "optional-inputs-ts",
            lambda w: save_ts(OptionalInputs(_rgb(s32)), w / "o.pt", s32),
            S32,
        ),
        Case("nhwc-pt2", lambda w: save_pt2(ChannelsLastInput(_rgb(s32)), w / "n.pt2", nhwc)),
        Case(
            "nhwc-ts",
            lambda w: save_ts(ChannelsLastInput(_rgb(s32)), w / "n.pt", nhwc),
            S32,
        ),
    ]


def _multilabel(shape: tuple[int, int, int], head: str = "sigmoid") -> nn.Module:
    torch.manual_seed(0)
    return train(Net(channels=shape[0], classes=10, head=head), shape, 10, multilabel=True)


def _declared(path: str) -> str:
    """Its sidecar declares the output multi-label logits (which loading cannot tell)."""
    sidecar(path, output="multi-label-logits")
    return path


def _with_spec(path: str, **spec: object) -> str:
    sidecar(path, **spec)
    return path


def _r255() -> nn.Module:
    torch.manual_seed(0)
    net = Net(channels=3, classes=10)
    return train(net, (3, 32, 32), 10, std=1 / 255)  # fed 255 x


def _huge() -> nn.Module:
    torch.manual_seed(0)
    return Net(channels=3, classes=10, first_width=256, first_kernel=31).eval()  # untrained


# -- running ------------------------------------------------------------------------------


def run_case(case: Case, work: Path, threads: int) -> dict[str, object]:
    folder = work / case.name
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ref = case.build(folder)
    built = time.perf_counter() - t0
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "server"), str(ROOT / "client"), str(folder), env.get("PYTHONPATH", "")]
    )
    cmd = [
        sys.executable,
        "-m",
        "protolens.cli",
        "generate",
        "--model",
        ref,
        "--target",
        case.target,
        *case.args,
        "--out",
        str(folder / "out"),
        "--json",
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=case.timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        proc.send_signal(2)  # Ctrl-C
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        timed_out = True
    wall = time.perf_counter() - t0
    row: dict[str, object] = {
        "case": case.name,
        "rc": proc.returncode,
        "wall_s": round(wall, 1),
        "build_s": round(built, 1),
        "timed_out": timed_out,
        "note": case.note,
    }
    lines = [  # less generate's progress lines (stderr is not a terminal here)
        ln
        for ln in err.replace("\r", "\n").splitlines()
        if ln.strip() and not ln.startswith("protolens generate: ")
    ]
    row["stderr_last"] = lines[-1][:300] if lines else ""
    row["warnings"] = [ln[:300] for ln in lines if "warning" in ln.lower()][:3]
    if proc.returncode == 0 and out.strip():
        proto = json.loads(out)["prototypes"][0]
        row.update(
            probability=round(proto["probability"], 4),
            steps=proto["steps"],
            stop_reason=proto["stop_reason"],
            lr=proto["lr"],
            top1=proto["top5"][0]["index"],
        )
        if proto.get("multi_label"):  # probability is the label's own sigmoid
            row["multi_label"] = True
            row["top1_probability"] = round(proto["top5"][0]["probability"], 4)
    return row


def probe_cost(reference: str, repeats: int = 3) -> dict[str, object]:
    """Seconds of the load-time output probe (models/_probe_output.py) against one
    no-grad forward of the load's dry-run batch, on one model."""
    from protolens_server.models import load_model
    from protolens_server.models._probe_output import probe_output

    t0 = time.perf_counter()
    handle = load_model(reference)
    load = time.perf_counter() - t0
    x = torch.zeros(2, *handle.input_spec.shape)
    with torch.no_grad():
        out = handle.module(x)
    pairs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.no_grad():
            handle.module(x)
        forward = time.perf_counter() - t0
        t0 = time.perf_counter()
        probe_output(handle.module, handle.input_spec, reference, out)
        pairs.append((round(forward, 3), round(time.perf_counter() - t0, 3)))
    return {"model": reference, "load_s": round(load, 2), "forward_s_probe_s": pairs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", help="case names (default: all)")
    parser.add_argument("--work", help="keep the models and outputs here")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--probe-cost", metavar="MODEL", help="only time the load-time probe")
    args = parser.parse_args(argv)
    if args.probe_cost:
        torch.set_num_threads(args.threads)
        print(json.dumps(probe_cost(args.probe_cost)))
        return 0
    chosen = [c for c in cases() if not args.cases or c.name in args.cases]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="unusual-models-"))
    torch.set_num_threads(args.threads)
    rows = []
    for case in chosen:
        row = run_case(case, work, args.threads)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
