"""Per-layer activations, spatially averaged per channel, from image to logits.

A *layer* is a submodule named by its dotted path (``_blocks.3``), plus the
model's output under the name ``"logits"``, always last. Each captured layer is
reduced to one vector per image, ``(B, C)``: ``(B, C, H, W)`` outputs are averaged
over ``H, W``, ``(B, T, D)`` outputs over the token axis ``T``, ``(B, D)`` outputs
are kept as they are.

The default layer set walks the top-level children in call order, expanding
plain containers (``nn.Sequential`` and any never-called holder such as
``nn.ModuleList``) into their elements, and keeps the modules that hold weights
and run exactly once per forward pass; stateless modules (activations, dropout,
pooling, flatten) and shared modules are skipped. A module whose output *is*
the model's output is replaced by ``"logits"`` (or, when it wraps the whole
network, e.g. ``nn.Sequential(normalise, net)``, expanded in turn).

How layers are reached depends on the module:

- eager ``nn.Module`` and ``torch.export.unflatten`` results: forward hooks;
- ``ExportedProgram.module()`` graphs: an FX interpreter that keeps the output
  of the last graph node of each chosen module scope (``nn_module_stack``);
- TorchScript: inner layers are not available; only ``"logits"``.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from protolens_server.errors import InvalidArgument

LOGITS = "logits"
TORCHSCRIPT_REASON = "TorchScript modules do not expose inner layers"
CaptureMode = Literal["hooks", "graph", "output"]

_SEQUENTIAL_TYPE = "torch.nn.modules.container.Sequential"
_PROBE_BATCHES = (3, 1, 2, 4, 8, 16, 32)  # first success of 3 means "any batch"


@dataclass(frozen=True)
class ModuleInfo:
    """What one probe forward pass learned about a submodule."""

    path: str
    type_name: str
    stateful: bool  # holds parameters or buffers
    calls: int
    order: int  # position of its (first) output in the forward pass
    shape: tuple[int, ...] | None  # output shape in the probe (None: not a tensor)


@dataclass(frozen=True)
class LayerSet:
    """The ordered layers to capture (always ending with ``"logits"``), and how they are reached."""

    names: tuple[str, ...]
    available: bool = True  # False when inner layers cannot be reached at all
    reason: str = ""
    mode: CaptureMode = "hooks"  # forward hooks, an FX graph interpreter, or the output only
    fixed_batch: int | None = None  # a program's static batch size (inputs are fed in chunks)


@dataclass
class ModelLayers:
    """Everything the probe found for one module: how to reach it and which layers exist."""

    mode: CaptureMode
    infos: dict[str, ModuleInfo]
    default: tuple[str, ...]  # inner layers of the default set, in call order
    fixed_batch: int | None = None  # exported programs with a static batch dimension
    graph_nodes: dict[str, Any] = field(default_factory=dict)  # path -> fx node (graph mode)

    def available(self) -> list[str]:
        """Every layer a user may name: modules run once with a usable output, then logits."""
        usable = [i for i in self.infos.values() if i.calls == 1 and _reducible(i.shape) and i.path]
        ranked = sorted(usable, key=lambda i: (i.order, -i.path.count(".")))
        return [i.path for i in ranked] + [LOGITS]


def _reducible(shape: tuple[int, ...] | None) -> bool:
    return shape is not None and len(shape) in (2, 3, 4)


def reduce_activation(t: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> mean over H, W; (B, T, D) -> mean over T; (B, D) as is. float32."""
    t = t.detach().float()
    if t.ndim == 4:
        return t.mean(dim=(2, 3))
    if t.ndim == 3:
        return t.mean(dim=1)
    if t.ndim == 2:
        return t
    raise InvalidArgument("layers", f"cannot reduce an output of shape {tuple(t.shape)}")


def _first_tensor(out: Any) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return None


def _type_name(m: torch.nn.Module) -> str:
    t = type(m)
    return f"{t.__module__}.{t.__qualname__}"


def _stateful(m: torch.nn.Module) -> bool:
    return any(True for _ in m.parameters()) or any(True for _ in m.buffers())


def capture_mode(module: Any, format: str | None = None) -> CaptureMode:
    """How inner layers of ``module`` can be reached."""
    if format == "torchscript" or isinstance(module, torch.jit.ScriptModule):
        return "output"
    if isinstance(module, torch.fx.GraphModule) and any(
        n.meta.get("nn_module_stack") for n in module.graph.nodes
    ):
        return "graph"
    if isinstance(module, torch.nn.Module):
        return "hooks"
    return "output"


# ---------------------------------------------------------------------------------------------
# Probing: one forward pass on a grey batch to learn call order, call counts and shapes.


class _HookRecorder:
    """Forward hooks that record what a set of modules output, for the calling thread only.

    The thread check matters in a worker: another thread may run the same module
    (e.g. a generation) while we capture, and its outputs must not leak in here.
    """

    def __init__(self, modules: dict[str, torch.nn.Module], keep: set[str] | None) -> None:
        self.outputs: dict[str, list[Any]] = {}
        self.order: list[str] = []
        self._thread = threading.get_ident()
        self._keep = keep
        self._handles = [m.register_forward_hook(self._hook(p)) for p, m in modules.items()]

    def _hook(self, path: str) -> Callable[..., None]:
        def hook(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
            if threading.get_ident() != self._thread:
                return
            self.order.append(path)
            if self._keep is None or path in self._keep:
                self.outputs.setdefault(path, []).append(output)

        return hook

    def close(self) -> None:
        for h in self._handles:
            h.remove()

    def __enter__(self) -> _HookRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _probe_input(spec: Any, batch: int, device: torch.device) -> torch.Tensor:
    x01 = torch.full((batch, *spec.shape), 0.5, device=device)
    return spec.normalise(x01)


def _find_batch(module: Any, spec: Any, device: torch.device) -> tuple[int | None, Any]:
    """Run the probe; returns (fixed batch or None, the output of the successful run)."""
    last_error: Exception | None = None
    for b in _PROBE_BATCHES:
        try:
            with torch.no_grad():
                out = module(_probe_input(spec, b, device))
            return (None if b == _PROBE_BATCHES[0] else b), out
        except Exception as e:  # a static-shape program refuses other batch sizes
            last_error = e
    raise InvalidArgument(
        "model", f"does not run on a batch of the input spec {tuple(spec.shape)}: {last_error}"
    ) from last_error


def _probe_hooks(module: torch.nn.Module, spec: Any, device: torch.device) -> ModelLayers:
    named = dict(module.named_modules())
    named.pop("", None)
    with _HookRecorder(named, keep=None) as rec:
        fixed, out = _find_batch(module, spec, device)
    types = _type_names_from_graphs(module)
    infos: dict[str, ModuleInfo] = {}
    for path, m in named.items():
        outs = rec.outputs.get(path, [])
        first = _first_tensor(outs[0]) if outs else None
        infos[path] = ModuleInfo(
            path=path,
            type_name=types.get(path, _type_name(m)),
            stateful=_stateful(m),
            calls=len(outs),
            order=rec.order.index(path) if path in rec.order else -1,
            shape=tuple(first.shape) if first is not None else None,
        )
    output_paths = _output_modules(infos, {p: rec.outputs.get(p, []) for p in infos}, out)
    default = _default_layers(infos, output_paths)
    return ModelLayers("hooks", infos, default, fixed_batch=fixed)


def _type_names_from_graphs(module: torch.nn.Module) -> dict[str, str]:
    """Original module types of an unflattened exported program (its submodules lost them)."""
    types: dict[str, str] = {}
    for _, m in module.named_modules():
        graph = getattr(m, "graph", None)
        if not isinstance(graph, torch.fx.Graph):
            continue
        for node in graph.nodes:
            for path, type_name in (node.meta.get("nn_module_stack") or {}).values():
                types.setdefault(path, str(type_name))
    return types


def _output_modules(
    infos: dict[str, ModuleInfo], outputs: dict[str, list[Any]], model_out: Any
) -> set[str]:
    """Modules whose output *is* the model's output (reported as ``logits``, or expanded
    when they wrap the whole network)."""
    final = _first_tensor(model_out)
    if final is None:
        return set()
    found = set()
    for info in infos.values():
        if info.calls != 1 or info.shape != tuple(final.shape):
            continue
        t = _first_tensor(outputs[info.path][0])
        if t is not None and torch.equal(t, final):
            found.add(info.path)
    return found


def _children_of(paths: Iterable[str]) -> dict[str, list[str]]:
    """Parent path -> direct child paths, in first-seen order, including implied parents."""
    children: dict[str, list[str]] = {}
    for path in paths:
        parts = path.split(".")
        for depth in range(1, len(parts) + 1):
            child, parent = ".".join(parts[:depth]), ".".join(parts[: depth - 1])
            siblings = children.setdefault(parent, [])
            if child not in siblings:
                siblings.append(child)
    return children


def _default_layers(infos: dict[str, ModuleInfo], output_paths: set[str]) -> tuple[str, ...]:
    children = _children_of(infos)

    def expand(parent: str) -> list[str]:
        picked: list[str] = []
        for child in children.get(parent, []):
            info = infos.get(child)
            container = (
                info is None
                or info.calls == 0
                or info.type_name == _SEQUENTIAL_TYPE
                or child in output_paths  # a wrapper around the whole network
            )
            picked.extend(expand(child) if container and child in children else [child])
        return picked

    chosen = []
    for path in expand(""):
        info = infos.get(path)
        if info is None or not info.stateful or info.calls != 1 or not _reducible(info.shape):
            continue
        if path in output_paths:
            continue
        chosen.append(info)
    return tuple(i.path for i in sorted(chosen, key=lambda i: i.order))


def _probe_graph(gm: torch.fx.GraphModule, spec: Any, device: torch.device) -> ModelLayers:
    nodes = [n for n in gm.graph.nodes if n.op in ("call_function", "call_method")]
    types: dict[str, str] = {}
    runs: dict[str, int] = {}
    keys: dict[str, set[str]] = {}
    last_node: dict[str, Any] = {}
    first_index: dict[str, int] = {}
    previous: set[str] = set()
    for index, node in enumerate(nodes):
        meta = node.meta.get("nn_module_stack") or {}
        stack = {path: str(t) for path, t in meta.values()}
        for key, (path, _) in meta.items():
            keys.setdefault(path, set()).add(key)
        for path, type_name in stack.items():
            types.setdefault(path, type_name)
            if path not in previous:
                runs[path] = runs.get(path, 0) + 1
            first_index.setdefault(path, index)
            last_node[path] = node
        previous = set(stack)
    position = {id(n): i for i, n in enumerate(nodes)}
    recorder = _GraphRecorder(gm, _by_node(last_node, list(last_node)))
    fixed, out = _find_batch(recorder.run, spec, device)
    submodules = dict(gm.named_modules())
    infos: dict[str, ModuleInfo] = {}
    outputs: dict[str, list[Any]] = {}
    for path in types:
        if not path:
            continue
        value = recorder.values.get(path)
        sub = submodules.get(path)
        outputs[path] = [value] if value is not None else []
        infos[path] = ModuleInfo(
            path=path,
            type_name=types[path],
            stateful=sub is not None and _stateful(sub),
            calls=max(runs.get(path, 0), len(keys.get(path, ()))),
            # the order a hook would see: a module's output arrives after its last node
            order=position[id(last_node[path])],
            shape=tuple(value.shape) if isinstance(value, torch.Tensor) else None,
        )
    output_paths = _output_modules(infos, outputs, out)
    default = _default_layers(infos, output_paths)
    return ModelLayers("graph", infos, default, fixed_batch=fixed, graph_nodes=last_node)


def _by_node(last_node: dict[str, Any], paths: list[str]) -> dict[int, list[str]]:
    """fx node id -> the module paths whose output that node is (a parent shares its last)."""
    wanted: dict[int, list[str]] = {}
    for path in paths:
        wanted.setdefault(id(last_node[path]), []).append(path)
    return wanted


class _GraphRecorder(torch.fx.Interpreter):
    """Runs an exported program's graph and keeps the outputs of chosen nodes."""

    def __init__(self, gm: torch.fx.GraphModule, wanted: dict[int, list[str]]) -> None:
        super().__init__(gm)
        self.wanted = wanted
        self.values: dict[str, Any] = {}

    def run_node(self, n: torch.fx.Node) -> Any:
        result = super().run_node(n)
        for path in self.wanted.get(id(n), ()):
            self.values[path] = result
        return result

    def run(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self.values = {}
        return super().run(*args, **kwargs)


# ---------------------------------------------------------------------------------------------
# Public entry points.

_PROBES: weakref.WeakKeyDictionary[Any, ModelLayers] = weakref.WeakKeyDictionary()
_PROBES_LOCK = threading.Lock()


def model_layers(model: Any, *, device: str | torch.device = "cpu") -> ModelLayers:
    """Probe ``model`` (an ``ImageClassifier``) once; cached per module object."""
    module = model.module
    mode = capture_mode(module, getattr(model, "format", None))
    with _PROBES_LOCK:
        try:
            cached = _PROBES.get(module)
        except TypeError:  # not weak-referenceable
            cached = None
    if cached is not None:
        return cached
    dev = torch.device(device)
    if mode == "hooks":
        layers = _probe_hooks(module, model.input_spec, dev)
    elif mode == "graph":
        layers = _probe_graph(module, model.input_spec, dev)
    else:
        fixed, _ = _find_batch(module, model.input_spec, dev)
        layers = ModelLayers("output", {}, (), fixed_batch=fixed)
    with _PROBES_LOCK, contextlib.suppress(TypeError):
        _PROBES[module] = layers
    return layers


def layers_of(
    model: Any, layers: Sequence[str] | None = None, *, device: str | torch.device = "cpu"
) -> LayerSet:
    """The layer set to capture: the default, or the user's names (validated), then logits.

    ``model`` is an ``ImageClassifier`` (a ``ModelHandle`` works). The default walks
    the top-level children in call order (module docstring); an unknown name is
    an ``InvalidArgument`` listing the available ones.
    """
    found = model_layers(model, device=device)
    how = {"mode": found.mode, "fixed_batch": found.fixed_batch}
    if found.mode == "output":
        if layers and any(name != LOGITS for name in layers):
            raise InvalidArgument(
                "layers", f"{TORCHSCRIPT_REASON}; leave layers unset (only '{LOGITS}' is scored)"
            )
        return LayerSet((LOGITS,), available=False, reason=TORCHSCRIPT_REASON, **how)
    if not layers:
        return LayerSet((*found.default, LOGITS), **how)
    available = found.available()
    unknown = [name for name in layers if name not in available]
    if unknown:
        shown = ", ".join(available[:40]) + (
            f", ... ({len(available) - 40} more)" if len(available) > 40 else ""
        )
        raise InvalidArgument("layers", f"unknown layer {unknown[0]!r}; available layers: {shown}")
    order = {name: i for i, name in enumerate(available)}
    inner = sorted({name for name in layers if name != LOGITS}, key=order.__getitem__)
    return LayerSet((*inner, LOGITS), **how)


def _chunks(x: torch.Tensor, fixed: int | None) -> list[tuple[torch.Tensor, int]]:
    """Split (and pad the last piece) for programs whose batch size is fixed."""
    if fixed is None:
        return [(x, x.shape[0])]
    pieces = []
    for start in range(0, x.shape[0], fixed):
        piece = x[start : start + fixed]
        real = piece.shape[0]
        if real < fixed:
            piece = torch.cat([piece, piece[-1:].expand(fixed - real, *piece.shape[1:])])
        pieces.append((piece, real))
    return pieces


def capture(
    model: Any,
    x01: torch.Tensor,
    layers: LayerSet | Sequence[str] | None = None,
    *,
    device: str | torch.device = "cpu",
) -> dict[str, torch.Tensor]:
    """Activations for a batch in [0, 1] image space: layer name -> (B, C) float32 on CPU.

    ``layers``: a ``LayerSet`` from ``layers_of``, layer names (validated as
    ``layers_of`` does; ``["logits"]`` gives the logits alone), or None for the
    default set. Runs without gradients; the batch is normalised with the
    model's input spec; each output is spatially averaged (``reduce_activation``).
    """
    layer_set = layers if isinstance(layers, LayerSet) else layers_of(model, layers, device=device)
    found = model_layers(model, device=device)
    inner = [n for n in layer_set.names if n != LOGITS]
    dev = torch.device(device)
    x = model.input_spec.normalise(x01.to(dev, torch.float32))
    results: dict[str, list[torch.Tensor]] = {n: [] for n in layer_set.names}
    for piece, real in _chunks(x, found.fixed_batch):
        outputs, logits = _run(model.module, found, piece, inner)
        for name in inner:
            results[name].append(reduce_activation(outputs[name])[:real].cpu())
        results[LOGITS].append(reduce_activation(logits)[:real].cpu())
    return {n: torch.cat(v) for n, v in results.items()}


def _run(
    module: Any, found: ModelLayers, x: torch.Tensor, inner: list[str]
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    with torch.no_grad():
        if not inner:
            return {}, _first_tensor(module(x))  # type: ignore[return-value]
        if found.mode == "graph":
            recorder = _GraphRecorder(module, _by_node(found.graph_nodes, inner))
            out = recorder.run(x)
            values = recorder.values
        else:
            subs = {n: module.get_submodule(n) for n in inner}
            with _HookRecorder(subs, keep=set(inner)) as rec:
                out = module(x)
            values = {n: rec.outputs[n][-1] for n in inner if rec.outputs.get(n)}
    missing = [n for n in inner if n not in values]
    if missing:
        raise InvalidArgument("layers", f"layer {missing[0]!r} did not run in this forward pass")
    tensors = {n: _first_tensor(v) for n, v in values.items()}
    return tensors, _first_tensor(out)  # type: ignore[return-value]


def run_model(model: Any, x: torch.Tensor, *, device: str | torch.device = "cpu") -> torch.Tensor:
    """Logits for an already-normalised batch, respecting a program's fixed batch size."""
    found = model_layers(model, device=device)
    with torch.no_grad():
        outs = [
            _first_tensor(model.module(piece))[:real]  # type: ignore[index]
            for piece, real in _chunks(x.to(torch.device(device)), found.fixed_batch)
        ]
    return torch.cat(outs)
