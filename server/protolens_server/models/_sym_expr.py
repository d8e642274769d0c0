"""Symbolic-size expressions in a ``.pt2`` program, checked before sympy sees them.

torch's deserializer turns each ``expr_str`` of a program (symbolic tensor sizes such
as ``Symbol('s77', positive=True, integer=True)``) into a sympy expression with
``sympy.sympify``, which ``eval()``s the string: a crafted program would run any
Python it likes. ``check_sym_expr`` accepts only what torch writes: calls of sympy
and ``torch.utils._sympy`` constructors by name, numbers, symbol-name strings,
keyword flags, arithmetic and comparisons; no attribute access, subscripts, lambdas
or other names that could reach a builtin.
"""

from __future__ import annotations

import ast
import builtins
import re
from collections.abc import Iterator
from typing import Any

from protolens_server.errors import InvalidModel

MAX_EXPR_CHARS = 4096
_SYMBOL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_NUMBER_TEXT = re.compile(r"[-+]?[0-9]*\.?[0-9]+(e[-+]?[0-9]+)?", re.IGNORECASE)
# sympy core constructors torch's printer emits (srepr and str forms).
_SYMPY = {
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Max", "Min", "Mod",
    "floor", "ceiling", "Abs", "sqrt", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "Equality",
    "Unequality", "StrictLessThan", "StrictGreaterThan", "LessThan", "GreaterThan",
    "And", "Or", "Not", "Piecewise", "ExprCondPair", "Tuple", "BooleanTrue",
    "BooleanFalse", "true", "false", "oo", "zoo", "nan", "Infinity", "NegativeInfinity",
    "One", "Zero", "NegativeOne", "Half", "pi", "E",
}  # fmt: skip
# torch.utils._sympy.functions (the deserializer passes them to sympify by name).
_TORCH_SYMPY = {
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt",
    "FloorToInt", "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow",
    "FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator", "TruncToFloat",
    "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "Identity",
}  # fmt: skip
_CALLABLE = frozenset(_SYMPY | _TORCH_SYMPY)
_BUILTINS = frozenset(vars(builtins))
_STRUCTURE = (
    ast.Expression, ast.Load, ast.keyword, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare,
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.USub, ast.UAdd,
    ast.Not, ast.And, ast.Or, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE,
)  # fmt: skip


def check_sym_expr(text: Any, origin: str) -> None:
    """Raise ``InvalidModel`` unless ``text`` is a plain symbolic-size expression."""
    if not isinstance(text, str) or len(text) > MAX_EXPR_CHARS:
        raise _refused(origin, "a symbolic size that is not a short string")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise _refused(origin, f"a symbolic size that does not parse: {text[:80]!r}") from None
    for node in ast.walk(tree):
        problem = _problem(node)
        if problem:
            raise _refused(origin, f"a symbolic size with {problem}: {text[:80]!r}")


def expr_strings(obj: Any) -> Iterator[str]:
    """Every ``expr_str`` value anywhere in a decoded program JSON."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key == "expr_str":
                    yield value
                else:
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


def _problem(node: ast.AST) -> str:
    if isinstance(node, _STRUCTURE):
        return ""
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _CALLABLE:
            return f"a call of {ast.unparse(node.func)[:40]!r}"
        return ""
    if isinstance(node, ast.Name):
        ok = node.id in _CALLABLE or _plain_symbol(node.id)
        return "" if ok else f"the name {node.id!r}"
    if isinstance(node, ast.Constant):
        return _constant_problem(node.value)
    return f"Python syntax {type(node).__name__}"


def _constant_problem(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, int):
        return "" if abs(value) < 10**30 else "an integer too large"
    if isinstance(value, float):
        return ""
    if isinstance(value, str) and (_plain_symbol(value) or _NUMBER_TEXT.fullmatch(value)):
        return ""
    return f"the constant {str(value)[:40]!r}"


def _plain_symbol(name: str) -> bool:
    """A name sympy makes a Symbol of, and that names nothing in Python's builtins."""
    return bool(_SYMBOL_NAME.fullmatch(name)) and "__" not in name and name not in _BUILTINS


def _refused(origin: str, what: str) -> InvalidModel:
    return InvalidModel(
        f"{origin}: refused: the program holds {what} (torch would eval() it); "
        "re-export the model with torch.export.export and torch.export.save"
    )
