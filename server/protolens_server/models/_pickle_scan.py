"""What a pickle would import, read from its opcodes without unpickling it.

A ``.pt2`` archive carries pickles protolens never needs (its sample inputs).
Rather than unpickle them, even with ``weights_only``, ``check_plain_tensors``
lists the globals the pickle names (``GLOBAL``/``STACK_GLOBAL`` opcodes, via
``pickletools``, which only parses) and refuses anything beyond what
``torch.save`` writes for plain tensors. A file that hides a payload there is
thereby reported as hostile instead of being loaded with the payload inert.
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from pathlib import Path

from protolens_server.errors import InvalidModel

_TENSOR_GLOBALS = frozenset({
    "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
    "collections.OrderedDict", "torch.Size", "torch.device",
})  # fmt: skip
_STRING_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"})
_MEMO_PUT = frozenset({"MEMOIZE", "BINPUT", "LONG_BINPUT", "PUT"})
_MEMO_GET = frozenset({"BINGET", "LONG_BINGET", "GET"})
MAX_PICKLE_BYTES = 64 * 1024**2


def pickle_globals(data: bytes) -> set[str]:
    """``module.name`` of every global the pickle loads (``"?"`` when it hides one)."""
    found: set[str] = set()
    strings: list[str | None] = []  # what string opcodes pushed, most recent last
    memo: dict[int, str | None] = {}
    for op, arg, _ in pickletools.genops(data):
        name = op.name
        if name == "GLOBAL":
            found.add(str(arg).replace(" ", "."))
        elif name == "STACK_GLOBAL":
            module, attr = strings[-2:] if len(strings) >= 2 else (None, None)
            found.add(f"{module}.{attr}" if module and attr else "?")
            strings.clear()
        elif name in ("INST", "OBJ"):
            found.add(str(arg).replace(" ", ".") if arg else "?")
        elif name in _STRING_OPS:
            strings.append(str(arg))
        elif name in _MEMO_PUT:
            memo[len(memo) if arg is None else int(arg)] = strings[-1] if strings else None
        elif name in _MEMO_GET:
            strings.append(memo.get(int(arg)))
        elif name not in ("FRAME", "PROTO"):
            strings.clear()  # something else is on the stack now: a later STACK_GLOBAL is "?"
    return found


def check_plain_tensors(data: bytes, what: str, origin: str) -> None:
    """Refuse a ``torch.save`` file (or raw pickle) that names more than tensor globals."""
    pickles = [data]
    if data[:2] == b"PK":
        try:
            pickles = zip_pickles(data)
        except (zipfile.BadZipFile, OSError, RuntimeError) as exc:
            raise InvalidModel(f"{origin}: {what} is not a torch.save file") from exc
    for blob in pickles:
        try:
            names = pickle_globals(blob)
        except Exception as exc:  # pickletools raises ValueError and friends on garbage
            raise InvalidModel(f"{origin}: {what} is not a readable pickle") from exc
        odd = sorted(n for n in names if not tensor_global(n))
        if odd:
            raise InvalidModel(
                f"{origin}: refused: {what} is a pickle that would import {', '.join(odd[:3])} "
                "(not plain tensors; a code payload?); re-export the model with "
                "torch.export.save from tensor inputs"
            )


def zip_pickles(source: Path | bytes) -> list[bytes]:
    """The pickles of a ``torch.save`` zip (each at most ``MAX_PICKLE_BYTES``), read, never
    unpickled; raises ``zipfile.BadZipFile``/``OSError`` for what is not a readable zip."""
    with zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source) as zf:
        return [
            zf.read(i)
            for i in zf.infolist()
            if i.filename.endswith(".pkl") and i.file_size <= MAX_PICKLE_BYTES
        ]


def tensor_global(name: str) -> bool:
    """Whether ``torch.save`` names this global for plain tensors (a state dict's own)."""
    return name in _TENSOR_GLOBALS or _is_storage(name)


def _is_storage(name: str) -> bool:
    module, _, attr = name.rpartition(".")
    return module == "torch" and attr.endswith("Storage")
