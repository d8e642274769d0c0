"""Every Prometheus metric protolens exports, named in one place.

Names follow Prometheus conventions: ``protolens_`` prefix, base units
(seconds, bytes), ``_total`` on counters. The API server and each worker serve
this registry over HTTP (``serve_metrics``); the Grafana dashboard and alert
rules in deploy/ refer only to these names (a test checks it).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

# Seconds to many minutes: GPU jobs range from sub-second cache hits to long checks.
_JOB_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 3600)
_RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)

# --- API server -----------------------------------------------------------------
RPC_REQUESTS = Counter(
    "protolens_rpc_requests_total",
    "gRPC requests by method and status code",
    ["method", "code"],
    registry=REGISTRY,
)
RPC_LATENCY = Histogram(
    "protolens_rpc_duration_seconds",
    "gRPC handling time by method",
    ["method"],
    buckets=_RPC_BUCKETS,
    registry=REGISTRY,
)
JOBS_CREATED = Counter(
    "protolens_jobs_created_total",
    "Jobs accepted, by how they were satisfied",
    ["outcome"],  # queued | cache_hit | dedup_join | idempotent_replay
    registry=REGISTRY,
)
CACHE_LOOKUPS = Counter(
    "protolens_cache_lookups_total",
    "Result-cache lookups",
    ["result"],  # hit | miss
    registry=REGISTRY,
)
DEDUP_JOINS = Counter(
    "protolens_dedup_joins_total",
    "Requests attached to an identical job in flight",
    registry=REGISTRY,
)
WATCHERS = Gauge(
    "protolens_watchers",
    "WatchJob streams this API process is serving",
    registry=REGISTRY,
)
WATCH_STREAMS_READ = Gauge(
    "protolens_watch_streams_read",
    "Job event streams the process's one shared reader follows (one per watched job)",
    registry=REGISTRY,
)
WATCH_READS = Counter(
    "protolens_watch_reads_total",
    "Reads of the shared event reader (one blocking XREAD for all watched jobs)",
    registry=REGISTRY,
)
STREAMS_OPEN = Gauge(
    "protolens_streams_open",
    "Streaming RPCs this API process holds open, all tenants (each capped by"
    " max_streams_per_tenant)",
    registry=REGISTRY,
)
STREAMS_REFUSED = Counter(
    "protolens_streams_refused_total",
    "Streaming RPCs refused because the tenant had max_streams_per_tenant open",
    registry=REGISTRY,
)
REDIS_CONNECTIONS = Gauge(
    "protolens_redis_connections",
    "Connections of the API's Redis pool, by state (bounded by redis_max_connections)",
    ["state"],  # in_use | idle
    registry=REGISTRY,
)
REQUEST_POOL_BUSY = Gauge(
    "protolens_request_pool_busy",
    "Requests being validated in the request thread pool (bounded by request_threads)",
    registry=REGISTRY,
)
EVENT_LOOP_LAG = Histogram(
    "protolens_event_loop_lag_seconds",
    "How late the API's event loop ran a timer (a CPU-bound call on the loop shows here)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
    registry=REGISTRY,
)

# --- Queue (sampled by whoever serves metrics) ---------------------------------------
QUEUE_DEPTH = Gauge(
    "protolens_queue_depth",
    "Jobs waiting, by priority",
    ["priority"],
    registry=REGISTRY,
)
QUEUE_OLDEST_AGE = Gauge(
    "protolens_queue_oldest_age_seconds",
    "Age of the oldest waiting job",
    registry=REGISTRY,
)
JOBS_BY_STATE = Gauge(
    "protolens_jobs",
    "Jobs known to the queue, by state",
    ["state"],
    registry=REGISTRY,
)
DEAD_LETTERS = Gauge(
    "protolens_dead_letter_jobs",
    "Entries in the dead-letter stream",
    registry=REGISTRY,
)

# --- Workers -------------------------------------------------------------------
JOBS_FINISHED = Counter(
    "protolens_jobs_finished_total",
    "Jobs a worker finished, by final state",
    ["state"],
    registry=REGISTRY,
)
JOB_QUEUED_SECONDS = Histogram(
    "protolens_job_queued_seconds",
    "Time from submit to a worker starting the job",
    buckets=_JOB_BUCKETS,
    registry=REGISTRY,
)
JOB_RUNNING_SECONDS = Histogram(
    "protolens_job_running_seconds",
    "Time a worker spent generating a job",
    buckets=_JOB_BUCKETS,
    registry=REGISTRY,
)
GENERATION_STEPS = Counter(
    "protolens_generation_steps_total",
    "Optimisation steps run (per image in the batch)",
    registry=REGISTRY,
)
STEPS_PER_SECOND = Gauge(
    "protolens_generation_steps_per_second",
    "Image-steps per second of the last batch",
    registry=REGISTRY,
)
BATCH_OCCUPANCY = Histogram(
    "protolens_batch_occupancy_ratio",
    "Images in a batch / the batch budget",
    buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0),
    registry=REGISTRY,
)
ENGINE_BATCHES = Counter(
    "protolens_engine_batches_total",
    "Engine calls made by workers (one per batch of compatible jobs)",
    registry=REGISTRY,
)
BATCH_JOBS = Histogram(
    "protolens_batch_jobs",
    "Jobs sharing one engine call",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
    registry=REGISTRY,
)
BATCH_LINGER_SECONDS = Histogram(
    "protolens_batch_linger_seconds",
    "Time an idle worker waited for more jobs to fill a batch (worker_batch_linger_ms)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
    registry=REGISTRY,
)
JOB_RETRIES = Counter(
    "protolens_job_retries_total",
    "Jobs handed back for another attempt",
    registry=REGISTRY,
)
JOBS_RECLAIMED = Counter(
    "protolens_jobs_reclaimed_total",
    "Jobs reclaimed from a dead worker",
    registry=REGISTRY,
)
ENGINE_OOM_SPLITS = Counter(
    "protolens_engine_oom_splits_total",
    "Engine chunks that ran out of device memory and were retried in smaller chunks",
    registry=REGISTRY,
)
INJECTED_OOMS = Counter(
    "protolens_injected_oom_total",
    "Out-of-memory errors raised by the PROTOLENS_FAULT_OOM_ABOVE fault hook (0 unless set)",
    registry=REGISTRY,
)
TORCH_THREADS = Gauge(
    "protolens_torch_threads",
    "torch CPU threads of this worker's engine for its last batch (cpu_budget.py)",
    registry=REGISTRY,
)
MODELS_LOADED = Gauge(
    "protolens_models_loaded",
    "Models resident in this worker",
    registry=REGISTRY,
)
WORKER_HEARTBEATS = Counter(
    "protolens_worker_heartbeats_total",
    "Heartbeats sent by this worker",
    registry=REGISTRY,
)
WORKERS_ALIVE = Gauge(
    "protolens_workers_alive",
    "Workers whose heartbeat is fresh",
    registry=REGISTRY,
)
GPU_MEMORY_BYTES = Gauge(
    "protolens_gpu_memory_allocated_bytes",
    "GPU memory allocated by torch",
    ["device"],
    registry=REGISTRY,
)
GPU_MEMORY_PEAK_BYTES = Gauge(
    "protolens_gpu_memory_peak_bytes",
    "Peak GPU memory allocated by torch",
    ["device"],
    registry=REGISTRY,
)
GPU_UTILISATION = Gauge(
    "protolens_gpu_utilization_ratio",
    "GPU utilisation reported by the driver (0-1)",
    ["device"],
    registry=REGISTRY,
)

# --- every process ----------------------------------------------------------------
GC_PAUSE_SECONDS = Histogram(
    "protolens_gc_pause_seconds",
    "Garbage-collector pauses by generation (every RPC and step in flight waits them out)",
    ["generation"],
    buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
    registry=REGISTRY,
)
GC_FROZEN_OBJECTS = Gauge(
    "protolens_gc_frozen_objects",
    "Objects frozen out of the garbage collector's passes (start-up heap, loaded models)",
    registry=REGISTRY,
)


def serve_metrics(port: int, addr: str = "0.0.0.0") -> int:
    """Serve REGISTRY over HTTP on ``port`` (0 picks a free one); returns the bound port."""
    server, _thread = start_http_server(port, addr=addr, registry=REGISTRY)
    return int(server.server_port)
