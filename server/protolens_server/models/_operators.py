"""What a model program may call: tensor operators, nothing that reaches files,
the network or Python.

A ``torch.export`` graph names its callables by string, and torch resolves
``torch.<anything>`` by ``getattr`` (``torch.os.system`` is a callable); TorchScript
can call ``torch.save`` (the ``aten::save`` operator writes any file, from
``forward`` or from a ``__setstate__`` that ``torch.jit.load`` runs), ``torch.from_file``
and RPC. So every program is checked against one allow-list before it runs:

- ``torch.export`` graphs: only ``call_function`` nodes whose target is an operator
  overload in an allowed namespace, a torch higher-order operator, or a symbolic-size
  helper from ``operator``/``math``/``torch.sym_*`` (``check_graph_module``);
- TorchScript archives: the source in ``code/`` is scanned *before* ``torch.jit.load``
  compiles it and runs ``__setstate__`` (``check_script_source``), and the inlined
  ``forward`` graph after (``check_script_module``).

Denied everywhere: ``aten::save``, ``aten::from_file``, RPC and Python operators, and
any operator outside ``ALLOWED_NAMESPACES`` (custom operators of other packages).
"""

from __future__ import annotations

import io
import math
import operator
import tokenize
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from protolens_server.errors import InvalidModel

ALLOWED_NAMESPACES = frozenset({
    "aten", "prim", "prims", "quantized", "_quantized", "quantized_decomposed", "prepacked",
    "mkldnn", "mkldnn_prepacked", "onednn", "torchvision",
})  # fmt: skip
DENIED_OPERATORS = frozenset({
    "aten::save", "aten::from_file", "prim::rpc_async", "prim::rpc_sync", "prim::rpc_remote",
    "prim::PythonOp", "prim::IgnoredPythonOp",
})  # fmt: skip
# TorchScript spellings of the denied operators (attribute names in code/ sources).
_DENIED_NAMES = frozenset({"save", "from_file", "rpc_async", "rpc_sync", "rpc_remote"})
_TORCHBIND_NAMESPACES = frozenset({"quantized", "_quantized", "xnnpack", "mkldnn", "onednn"})
_SYMBOLIC_HELPERS: frozenset[Any] = frozenset({
    operator.getitem, operator.add, operator.mul, operator.sub, operator.truediv,
    operator.floordiv, operator.mod, operator.pow, operator.neg, operator.abs, operator.pos,
    operator.ge, operator.le, operator.gt, operator.lt, operator.eq, operator.ne,
    operator.and_, operator.or_, operator.xor, operator.not_, operator.lshift,
    operator.rshift, math.ceil, math.floor, math.trunc, math.sqrt, round,
    torch.sym_int, torch.sym_float, torch.sym_ite, torch.sym_max, torch.sym_min,
    torch.sym_not, torch.sym_sqrt, torch.sym_sum, torch._C._set_grad_enabled,
    torch.autograd.grad_mode.set_grad_enabled,
})  # fmt: skip
_FIX = (
    "protolens runs tensor operators only (namespaces "
    + ", ".join(sorted(ALLOWED_NAMESPACES))
    + "): save the model again without this call (torch.export.export, torch.export.save)"
)


def check_operator_name(qualified: str, origin: str) -> None:
    """``aten::conv2d``-style names: allowed namespace, not denied."""
    namespace = qualified.partition("::")[0]
    if qualified in DENIED_OPERATORS or namespace not in ALLOWED_NAMESPACES:
        raise InvalidModel(f"{origin}: refused: the program calls {qualified}; {_FIX}")


def check_graph_module(gm: torch.nn.Module, origin: str) -> None:
    """Every node of a ``torch.export`` graph (and its subgraphs) calls an allowed target."""
    for mod in gm.modules():
        if not isinstance(mod, torch.fx.GraphModule):
            continue
        for node in mod.graph.nodes:
            if node.op in ("placeholder", "output", "get_attr"):
                continue
            if node.op != "call_function":
                raise InvalidModel(f"{origin}: refused: a {node.op} node ({node.target}); {_FIX}")
            _check_target(node.target, origin)


def _check_target(target: Any, origin: str) -> None:
    if isinstance(target, torch._ops.OpOverload):
        check_operator_name(target.name(), origin)
    elif isinstance(target, torch._ops.HigherOrderOperator):
        return  # cond, while_loop, ...: torch's own; their subgraphs are checked as modules
    elif not _is_symbolic_helper(target):
        name = getattr(target, "__qualname__", None) or str(target)
        module = getattr(target, "__module__", "") or ""
        raise InvalidModel(
            f"{origin}: refused: the program calls {module + '.' if module else ''}{name}, "
            f"which is not a tensor operator; {_FIX}"
        )


def _is_symbolic_helper(target: Any) -> bool:
    try:
        return target in _SYMBOLIC_HELPERS
    except TypeError:  # unhashable
        return False


def check_script_module(module: Any, origin: str) -> None:
    """Every operator the inlined ``forward`` of a TorchScript module reaches is allowed."""
    try:
        graph = module.inlined_graph
    except (AttributeError, RuntimeError) as exc:
        raise InvalidModel(f"{origin}: the TorchScript module has no forward()") from exc
    for node in _script_nodes(graph):
        check_operator_name(node.kind(), origin)


def _script_nodes(graph: Any) -> Iterator[Any]:
    stack = [graph.block() if hasattr(graph, "block") else graph]
    while stack:
        block = stack.pop()
        for node in block.nodes():
            yield node
            stack.extend(node.blocks())
            for attr in node.attributeNames():
                if node.kindOf(attr) == "g":
                    stack.append(node.g(attr).block())


def check_script_source(source: Path | bytes, origin: str) -> None:
    """Scan a TorchScript archive's ``code/`` before ``torch.jit.load`` compiles and runs it."""
    try:
        with zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source) as zf:
            texts = [(i.filename, zf.read(i)) for i in zf.infolist() if _is_code(i.filename)]
    except (zipfile.BadZipFile, OSError, RuntimeError):
        return  # not a zip: torch.jit.load refuses it without compiling anything
    for name, data in texts:
        try:
            tokens = list(tokenize.tokenize(io.BytesIO(data).readline))
        except (tokenize.TokenError, SyntaxError, UnicodeDecodeError) as exc:
            raise InvalidModel(f"{origin}: TorchScript source {name} does not parse") from exc
        _scan_tokens(tokens, origin)


def _is_code(name: str) -> bool:
    return "/code/" in name and name.endswith(".py")


def _scan_tokens(tokens: list[tokenize.TokenInfo], origin: str) -> None:
    words = [t.string for t in tokens if t.type in (tokenize.NAME, tokenize.OP)]
    for i, word in enumerate(words):
        prev = words[i - 1] if i else ""
        nxt = words[i + 2] if i + 2 < len(words) and words[i + 1] == "." else ""
        if prev == "." and word in _DENIED_NAMES:
            raise InvalidModel(f"{origin}: refused: the TorchScript code calls {word}(); {_FIX}")
        if word == "ops" and nxt and nxt not in ALLOWED_NAMESPACES:
            raise InvalidModel(
                f"{origin}: refused: the TorchScript code calls operators of namespace "
                f"{nxt!r}; {_FIX}"
            )
        if word == "classes" and nxt and nxt not in _TORCHBIND_NAMESPACES:
            raise InvalidModel(
                f"{origin}: refused: the TorchScript code uses torch.classes.{nxt}; {_FIX}"
            )
