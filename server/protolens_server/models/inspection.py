"""Model files inspected in a child process under a time and a memory limit.

The API never loads a model: to list one it needs its input spec, class names and
digest, and getting those means loading the file and running one dry forward.
``Inspector`` does that in a fresh process forked from a forkserver (started once,
with torch imported, so a fork costs milliseconds; it holds none of the API's
sockets or credentials). The child lowers its own limits before touching the file:

- address space: what it uses after the fork plus ``memory_bytes`` (``RLIMIT_AS``);
- CPU time: ``timeout_s`` plus a margin (``RLIMIT_CPU``, a backstop);
- no core dumps, one torch thread, the first process the kernel's OOM killer picks;

and the parent kills it when ``timeout_s`` of wall time pass without an answer.
The answer is JSON over a pipe (the parent unpickles nothing the child wrote).

Results are cached by the file's content (sha256 of the model file and of its
sidecars) and the limits: a file is inspected once; a hostile or broken one is
listed as UNUSABLE with the reason and not loaded again until it changes. A limit
that was hit (time, memory, a crash) is retried after ``retry_s``, since the
machine may have been busy. Callers wait at most ``wait_s`` for a pending
inspection and are told the model is INSPECTING meanwhile.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import multiprocessing
import os
import signal
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from protolens_server.errors import ProtolensError
from protolens_server.models.info import ModelInfo, ModelState

MAX_REPLY_BYTES = 64 * 1024**2
_CHUNK = 1 << 20
_MEMORY_WORDS = ("can't allocate memory", "bad_alloc", "not enough memory", "out of memory")


@dataclass(frozen=True)
class InspectionLimits:
    timeout_s: float = 60.0
    memory_bytes: int = 4 * 1024**3
    retry_s: float = 600.0  # a hit limit (time, memory, crash) is tried again after this

    @classmethod
    def from_settings(cls, settings: Any) -> InspectionLimits:
        return cls(
            timeout_s=settings.model_inspect_timeout_s,
            memory_bytes=settings.model_inspect_memory_bytes,
            retry_s=settings.model_inspect_retry_s,
        )


@dataclass(frozen=True)
class Target:
    """A model to inspect: a file (``path``) under a catalog name, or a built-in."""

    name: str
    version: str = ""
    path: str | None = None  # None: the built-in ``name``; or an MLflow ``models:/`` URI
    tracking_uri: str = ""  # the MLflow tracking server of a ``models:/`` path
    signature: str = ""  # what identifies a registry version's content (mlflow.signature)


@dataclass(frozen=True)
class _Result:
    info: ModelInfo
    retry_at: float | None = None  # monotonic time after which it is inspected again


def inspect_here(target: Target) -> ModelInfo:
    """Load ``target`` in this process and describe it (raises the loader's error)."""
    from protolens_server.models import builtin
    from protolens_server.models.registry import load_path

    if target.path is None:
        handle = builtin.load(target.name)
    elif target.path.startswith("models:/"):
        from protolens_server.models.registry import load_mlflow

        handle = load_mlflow(target.path, name=target.name, tracking_uri=target.tracking_uri)
    else:
        handle = load_path(Path(target.path), name=target.name)
    return ModelInfo.of(handle, target.name, target.version)


class Inspector:
    """Inspects models in child processes, ``workers`` at a time; thread-safe."""

    def __init__(self, limits: InspectionLimits | None = None, *, workers: int = 2) -> None:
        self.limits = limits or InspectionLimits()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="protolens-inspect")
        self._lock = threading.Lock()
        self._futures: OrderedDict[tuple[Any, ...], Future[_Result]] = OrderedDict()
        self.processes_started = 0  # inspections that needed a child (not a cache hit)
        # start the forkserver now (it imports torch: seconds), not on the first request
        threading.Thread(target=_start_forkserver, name="protolens-forkserver", daemon=True).start()

    def inspect(
        self, target: Target, signature: tuple[Any, ...], wait_s: float | None = None
    ) -> ModelInfo:
        """The inspection of ``target`` (whose files stat as ``signature``), waiting at most
        ``wait_s`` (None: until done); an INSPECTING info when it is not done by then."""
        future = self._future(target, signature)
        try:
            return future.result(timeout=wait_s).info
        except FutureTimeout:
            return ModelInfo.not_ready(
                target.name,
                target.version,
                "being inspected (a new or changed model file): ready within "
                f"{self.limits.timeout_s:g} s; try again shortly",
                state=ModelState.INSPECTING,
            )

    def _future(self, target: Target, signature: tuple[Any, ...]) -> Future[_Result]:
        key = (target, signature)
        with self._lock:
            future = self._futures.get(key)
            if future is None or _expired(future):
                future = self._pool.submit(self._inspect, target)
                self._futures[key] = future
                while len(self._futures) > 4096:
                    self._futures.popitem(last=False)
            return future

    def _inspect(self, target: Target) -> _Result:
        try:
            content = _content_key(target)
        except OSError as exc:
            reason = f"the model file cannot be read: {exc.strerror or exc}"
            return _Result(unusable_info(target, reason), time.monotonic())
        key = (target, content, self.limits.timeout_s, self.limits.memory_bytes)
        hit = _RESULTS.get(key)
        if hit is not None:
            return hit
        with self._lock:
            self.processes_started += 1
        try:
            result = _run_child(target, self.limits)
        except Exception as exc:  # no child could be started (fork failed, no forkserver)
            reason = f"the inspection process could not start: {type(exc).__name__}: {exc}"
            return _Result(unusable_info(target, reason), time.monotonic() + 5.0)
        _RESULTS.put(key, result)
        return result


def _expired(future: Future[_Result]) -> bool:
    if not future.done() or future.exception() is not None:
        return future.done()
    retry_at = future.result().retry_at
    return retry_at is not None and time.monotonic() >= retry_at


class _ResultCache:
    """Inspection results by content, shared by every ``Inspector`` of the process."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._items: OrderedDict[tuple[Any, ...], _Result] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> _Result | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is None or (hit.retry_at is not None and time.monotonic() >= hit.retry_at):
                return None
            self._items.move_to_end(key)
            return hit

    def put(self, key: tuple[Any, ...], result: _Result) -> None:
        with self._lock:
            self._items[key] = result
            while len(self._items) > self.size:
                self._items.popitem(last=False)


_RESULTS = _ResultCache()


def _content_key(target: Target) -> str:
    """sha256 of the model file (or of each file of a model folder) and of every sidecar
    that can describe it."""
    if target.path is None:
        return f"builtin:{target.name}"
    if target.path.startswith("models:/"):  # a registry version: its run, source, update time
        return f"mlflow:{target.tracking_uri}:{target.signature}"
    from protolens_server.models.pretrained import folder_files
    from protolens_server.models.sidecar import sidecar_paths

    path = Path(target.path)
    h = hashlib.sha256()
    for part in folder_files(path) if path.is_dir() else [path]:
        if part != path:
            h.update(f"\0{part.name}\0".encode())
        with part.open("rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    for extra in (*sidecar_paths(path), path.with_name("index_to_name.json")):
        if extra != path and extra.is_file():
            h.update(f"\0{extra.name}\0".encode())
            h.update(extra.read_bytes())
    return h.hexdigest()


# --- the child process ------------------------------------------------------------------


def _run_child(target: Target, limits: InspectionLimits) -> _Result:
    ctx = _context()
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(
        target=_child_main,
        args=(sender, asdict(target), limits.timeout_s, limits.memory_bytes),
        name=f"protolens-inspect-{target.name}",
        daemon=True,
    )
    with _START_LOCK:
        process.start()
        _RUNNING.add(process)
    sender.close()
    try:
        if not receiver.poll(limits.timeout_s):
            return _Result(
                unusable_info(target, f"inspection did not finish within {limits.timeout_s:g} s "
                          "(the model_inspect_timeout_s limit): loading it or one forward pass "
                          "takes longer, or never ends; fix the model or raise the limit"),
                time.monotonic() + limits.retry_s,
            )  # fmt: skip
        reply = json.loads(receiver.recv_bytes(MAX_REPLY_BYTES))
    except (EOFError, OSError, ValueError):
        process.join(5)
        return _Result(_died(target, process.exitcode, limits), time.monotonic() + limits.retry_s)
    finally:
        if process.is_alive():
            process.kill()
        process.join(5)
        receiver.close()
        _RUNNING.discard(process)
    if "info" in reply:
        return _Result(ModelInfo.from_wire(reply["info"]))
    retry_at = time.monotonic() + limits.retry_s if reply.get("retry") else None
    return _Result(unusable_info(target, str(reply.get("reason", "unknown failure"))), retry_at)


def _died(target: Target, exitcode: int | None, limits: InspectionLimits) -> ModelInfo:
    how = f"exit status {exitcode}"
    if exitcode is not None and exitcode < 0:
        with contextlib.suppress(ValueError):
            how = signal.Signals(-exitcode).name
    mib = limits.memory_bytes // 2**20
    return unusable_info(
        target,
        f"the inspection process died ({how}) while loading the model: it crashed or ran out "
        f"of memory (limit model_inspect_memory_bytes = {mib} MiB); fix the model or raise "
        "the limit",
    )


def _child_main(sender: Any, target: dict[str, Any], timeout_s: float, memory_bytes: int) -> None:
    """In the child: lower the limits, inspect, send one JSON reply."""
    _lower_limits(timeout_s, memory_bytes)
    reply = _inspect_reply(Target(**target), memory_bytes)
    sender.send_bytes(json.dumps(reply).encode())
    sender.close()


def _inspect_reply(target: Target, memory_bytes: int) -> dict[str, Any]:
    memory = (
        f"loading it needs more memory than the inspection limit "
        f"(model_inspect_memory_bytes = {memory_bytes // 2**20} MiB); fix the model or "
        "raise the limit"
    )
    try:
        return {"info": inspect_here(target).to_wire()}
    except Exception as exc:  # the loaders wrap torch's errors: look down the chain
        if _out_of_memory(exc):
            return {"reason": memory, "retry": True}
        if isinstance(exc, ProtolensError):
            return {"reason": str(exc)}
        text = str(exc).strip().splitlines() or [type(exc).__name__]
        return {"reason": f"could not be loaded: {type(exc).__name__}: {text[0][:300]}"}


def _out_of_memory(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, MemoryError) or any(w in str(exc) for w in _MEMORY_WORDS):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _lower_limits(timeout_s: float, memory_bytes: int) -> None:
    import resource

    import torch

    torch.set_num_threads(1)
    with contextlib.suppress(ImportError, AttributeError):  # fx's progress bar would make a
        from torch.hub import tqdm  # multiprocessing lock this short-lived child leaks

        tqdm.set_lock(threading.RLock())
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")  # under a cgroup memory limit, the kernel kills this child first
    with contextlib.suppress(ValueError, OSError):  # a backstop: the parent kills it first
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        cpu = int(timeout_s) + 10
        if hard != resource.RLIM_INFINITY:
            cpu = min(cpu, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, hard))
    with contextlib.suppress(ValueError, OSError):
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = _address_space_bytes() + memory_bytes
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _address_space_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def unusable_info(target: Target, reason: str) -> ModelInfo:
    """An UNUSABLE info for ``target``, saying ``reason``."""
    source = f"file:{target.path}" if target.path else f"builtin:{target.name}"
    return ModelInfo.not_ready(target.name, target.version, reason, source=source)


_START_LOCK = threading.Lock()
_CONTEXT: Any = None
# Imported once by the forkserver, so each child starts with them (a cold .pt2 load
# would otherwise import torch.export's deserializer, sympy and fake tensors: seconds).
# "__main__" too: a child then does not import the parent's main script again.
_PRELOAD = [
    "__main__",
    __name__,
    "protolens_server.models.registry",
    "torch._export.serde.serialize",
    "torch._export.verifier",
    "torch.export.pt2_archive._package",
    "torch.export.unflatten",
    "torch.fx.experimental.symbolic_shapes",
]


_RUNNING: set[Any] = set()  # inspection processes alive now


@atexit.register
def _stop_at_exit() -> None:
    """The API or worker is exiting: end its inspections and its forkserver with it (the
    forkserver would notice within moments anyway; this makes it at once)."""
    for process in list(_RUNNING):
        with contextlib.suppress(Exception):
            process.kill()
    if _CONTEXT is None:
        return
    from multiprocessing import forkserver, resource_tracker

    for owner in (getattr(forkserver, "_forkserver", None), resource_tracker._resource_tracker):
        with contextlib.suppress(Exception):
            owner._stop()  # private but stable since 3.8; harmless when absent


def _start_forkserver() -> None:
    from multiprocessing import forkserver

    _context()
    with contextlib.suppress(Exception):  # the first inspection retries and reports it
        forkserver.ensure_running()


# A Unix socket path holds at most 107 bytes; multiprocessing puts the forkserver's
# under TMPDIR/pymp-XXXXXXXX/listener-XXXXXXXX (about 35 bytes more than TMPDIR).
_MAX_SOCKET_DIR = 60


def _short_socket_dir() -> None:
    """Give multiprocessing a short folder for the forkserver's socket when TMPDIR is
    long (a deep CI or pytest folder): "AF_UNIX path too long" otherwise."""
    import shutil
    import tempfile
    from multiprocessing import process, util

    config = process.current_process()._config
    if "tempdir" in config or len(tempfile.gettempdir()) <= _MAX_SOCKET_DIR:
        return
    folder = tempfile.mkdtemp(prefix="pl-mp-", dir="/tmp")
    config["tempdir"] = folder  # multiprocessing's own slot (util.get_temp_dir)
    util.Finalize(None, shutil.rmtree, args=(folder, True), exitpriority=-100)


def _context() -> Any:
    """The forkserver context; its server imports torch and the loaders once."""
    global _CONTEXT
    with _START_LOCK:
        if _CONTEXT is None:
            _short_socket_dir()
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(_PRELOAD)
            _CONTEXT = ctx
        return _CONTEXT
