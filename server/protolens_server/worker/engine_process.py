"""``EngineProcess``: the worker's engine in a child process (``Settings.engine_process``).

Why: in one process the engine thread and the worker's event loop share one GIL. A small
model (or a GPU, whose kernel launches are Python) keeps the engine Python-bound, so every
millisecond the loop spends on claims, progress, and final writes is taken from the
engine. In a child, the engine (model cache, ``run_engine``, ``package``) runs on its own
core beside the loop.

The child is started with *spawn* (no copy of the parent's threads, sockets or CUDA
state) and holds the models loaded on the worker's device (``ModelCache``). One pipe,
pickled tuples, one batch at a time::

    parent -> child   ("run", specs, images, lr_cache) | ("stop",) during a run | None: exit
    child -> parent   ("phase", "loading" | "preparing" | "finishing")
                      ("progress", ProgressEvent)
                      ("done", [Packaged | Exception per job], lr_cache, metric samples)
                      ("error", exception, its traceback's text, metric samples)

``run`` blocks (the worker calls it in a thread): it relays the child's phases and
progress to callbacks, asks the child to stop when ``should_stop()`` turns true (the
child's ``should_stop`` reads the pipe between engine steps), and returns the packaged
results or raises the engine's exception. A child that dies mid-batch (a crash, an OOM
kill, a hostile model) raises ``EngineProcessDied`` there, which the worker handles as
any engine error (retry, never lost); the next batch starts a new child.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import traceback
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from protolens_server import metrics
from protolens_server.config import Settings
from protolens_server.logging import get_logger, logging_config

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from protolens_server.cpu_budget import TorchThreads
    from protolens_server.engine import ProgressEvent
    from protolens_server.queue.records import JobSpec, StoredPrototype
    from protolens_server.worker.models import ModelCache

    Packaged = tuple[list[StoredPrototype], list[bytes], list[bytes]]  # runner.package's

log = get_logger("protolens.worker")

# Metrics the engine side updates (counters forwarded as increments, gauges as values):
# the child's registry is not the one the worker serves.
_COUNTERS = {
    "protolens_engine_oom_splits_total": metrics.ENGINE_OOM_SPLITS,
    "protolens_injected_oom_total": metrics.INJECTED_OOMS,
}
_POLL_S = 0.05  # how often a waiting parent re-reads should_stop() and the child's liveness
_STOP_WAIT_S = 10.0  # how long close() waits for the child to exit before killing it


class RemoteTraceback(Exception):
    """The cause of an error re-raised from the engine process: its traceback there (as
    ``concurrent.futures`` does), so the worker's log shows where it happened."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class EngineProcessDied(RuntimeError):
    """The engine's child process ended during a batch (crash, kill); retried like any
    engine error."""


class EngineProcess:
    """The engine child of one worker; ``run`` a batch at a time, ``close`` at shutdown.

    The child starts on ``start()`` (the worker's startup: its imports overlap the
    worker's) or on the first ``run``, and again after it died.
    """

    def __init__(self, settings: Settings, device: str) -> None:
        self.settings = settings
        self.device = device
        self.starts = 0  # children started (1 + restarts)
        self._proc: BaseProcess | None = None
        self._conn: Connection | None = None
        self._counters: dict[str, float] = {}  # the running child's last counter samples
        _OPEN.add(self)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the child unless it runs."""
        if self._proc is not None and self._proc.is_alive():
            return
        self._discard()
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        # not a daemon: the model catalog inspects models in child processes of its own
        proc = ctx.Process(
            target=serve,
            args=(child, self.settings, self.device, logging_config()),
            name="protolens-engine",
        )
        proc.start()
        child.close()
        self._proc, self._conn, self._counters = proc, parent, {}
        self.starts += 1
        log.info("engine process %s started", proc.pid)

    def run(
        self,
        specs: Sequence[JobSpec],
        *,
        images: Sequence[bytes] | None,
        lr_cache: dict[str, float],
        on_phase: Callable[[str], None],
        on_progress: Callable[[ProgressEvent], None],
        should_stop: Callable[[], bool],
    ) -> list[Packaged | Exception]:
        """Run and package a batch in the child (blocking): one result or error per job.
        ``lr_cache`` gains the learning rates the engine found."""
        self.start()
        conn = self._conn
        assert conn is not None
        try:
            conn.send(("run", list(specs), list(images) if images is not None else None, lr_cache))
        except OSError as e:  # it died between batches, after the liveness check
            raise self._died() from e
        asked_stop = False
        while True:
            if not asked_stop and should_stop():
                asked_stop = True
                with contextlib.suppress(OSError):  # dead: the read below says so
                    conn.send(("stop",))
            try:
                if not conn.poll(_POLL_S):
                    continue
                message = conn.recv()
            except (EOFError, OSError) as e:
                raise self._died() from e
            kind = message[0]
            if kind == "progress":
                on_progress(message[1])
            elif kind == "phase":
                on_phase(message[1])
            elif kind == "done":
                _, results, found, samples = message
                lr_cache.update(found)
                self._forward(samples)
                return results
            else:  # "error"
                _, error, child_traceback, samples = message
                self._forward(samples)
                raise error from RemoteTraceback(child_traceback)

    def close(self) -> None:
        """Ask the child to exit; kill it if it does not within a few seconds."""
        proc, conn = self._proc, self._conn
        if proc is None or conn is None:
            return
        with contextlib.suppress(OSError):
            conn.send(None)
        proc.join(_STOP_WAIT_S)
        self._discard()

    def _died(self) -> EngineProcessDied:
        proc = self._proc
        code = None
        if proc is not None:
            proc.join(1.0)
            code = proc.exitcode
        self._discard()
        return EngineProcessDied(f"the engine process died mid-batch (exit code {code})")

    def _discard(self) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if conn is not None:
            conn.close()
        if proc is not None:
            if proc.is_alive():
                proc.kill()
                proc.join(_STOP_WAIT_S)
            proc.close()

    def _forward(self, samples: dict[str, float]) -> None:
        """Apply the child's metric samples to the worker's registry."""
        for name, value in samples.items():
            counter = _COUNTERS.get(name)
            if counter is not None:
                seen = self._counters.get(name, 0.0)
                if value > seen:
                    counter.inc(value - seen)
                self._counters[name] = value
            elif name == "models_loaded":
                metrics.MODELS_LOADED.set(value)
            elif name == "torch_threads":
                metrics.TORCH_THREADS.set(value)
            elif name == "gpu_memory_bytes":
                metrics.GPU_MEMORY_BYTES.labels(self.device).set(value)
            elif name == "gpu_memory_peak_bytes":
                metrics.GPU_MEMORY_PEAK_BYTES.labels(self.device).set(value)


# Children still open at interpreter exit are closed first: multiprocessing joins its
# non-daemon children at exit, and a child waiting for work would never end.
_OPEN: weakref.WeakSet[EngineProcess] = weakref.WeakSet()


@atexit.register
def _close_open() -> None:
    for engine in list(_OPEN):
        engine.close()


# --- the child ----------------------------------------------------------------------------


def serve(
    conn: Connection,
    settings: Settings,
    device: str,
    logging: tuple[str | int, bool] | None,
) -> None:
    """The child's loop: run each batch it is sent until told to exit (or the parent is
    gone: the pipe reads EOF)."""
    from protolens_server.cpu_budget import TorchThreads
    from protolens_server.models.catalog import ModelCatalog
    from protolens_server.worker.models import ModelCache

    if logging is not None:
        from protolens_server.logging import configure_logging

        configure_logging(logging[0], json=logging[1])
    threads = TorchThreads(settings.torch_threads, device)
    log.info("engine process: torch threads: %d", threads.budget)
    if settings.engine_compile:
        import torch._dynamo  # noqa: F401  (paid now, not in the first batch)
    catalog = ModelCatalog.from_settings(settings, cache_bytes=0)
    models = ModelCache(lambda n: catalog.load(n, device), settings.model_cache_bytes)
    try:
        while (message := conn.recv()) is not None:
            if message[0] == "run":  # a late "stop" for a batch that ended is dropped
                _run(conn, message[1:], settings, device, models, threads)
    except (EOFError, OSError):
        pass  # the worker is gone


def _run(
    conn: Connection,
    request: tuple[list[JobSpec], list[bytes] | None, dict[str, float]],
    settings: Settings,
    device: str,
    models: ModelCache,
    threads: TorchThreads,
) -> None:
    from protolens_server.errors import GenerationCancelled
    from protolens_server.worker.runner import package_all, run_engine

    specs, images, lr_cache = request
    stopped = [False]

    def should_stop() -> bool:
        while not stopped[0] and conn.poll():
            message = conn.recv()  # EOF: the worker is gone, so stop too
            stopped[0] = message is None or message[0] == "stop"
        return stopped[0]

    try:
        model, digest = specs[0].model, specs[0].model_digest
        if not models.holds(model, digest):
            conn.send(("phase", "loading"))
        handle = models.get(model, digest)
        conn.send(("phase", "preparing"))
        threads.before_batch()
        results = run_engine(
            handle,
            specs,
            images=images,
            device=device,
            on_progress=lambda event: conn.send(("progress", event)),
            should_stop=should_stop,
            compile=settings.engine_compile,
            memory_budget=settings.gpu_memory_budget,
            lr_cache=lr_cache,
        )
        conn.send(("phase", "finishing"))
        packaged = package_all(handle, specs, results, settings=settings, device=device)
        out: tuple[Any, ...] = ("done", [_picklable(p) for p in packaged], lr_cache)
    except (EOFError, OSError):
        raise
    except GenerationCancelled as e:
        out = ("error", e, "")
    except Exception as e:
        out = ("error", _picklable(e), "".join(traceback.format_exception(e))[-4000:])
    conn.send((*out, _samples(models, device, threads)))


def _picklable(value: Any) -> Any:
    """``value``, or for an exception that does not survive pickling a RuntimeError saying
    what it was (its class name and message: what a job records of it anyway)."""
    if not isinstance(value, BaseException):
        return value
    import pickle

    try:
        pickle.loads(pickle.dumps(value))
        return value
    except Exception:
        return RuntimeError(f"{type(value).__name__}: {value}")


def _samples(models: ModelCache, device: str, threads: TorchThreads) -> dict[str, float]:
    """The child's metric values the worker serves (see ``EngineProcess._forward``)."""
    out = {n: metrics.REGISTRY.get_sample_value(n) or 0.0 for n in _COUNTERS}
    out["models_loaded"] = float(len(models))
    out["torch_threads"] = float(threads.threads)
    if device.startswith("cuda"):
        import torch

        out["gpu_memory_bytes"] = float(torch.cuda.memory_allocated(device))
        out["gpu_memory_peak_bytes"] = float(torch.cuda.max_memory_allocated(device))
    return out
