"""Every Redis key protolens uses, built from one prefix (``Settings.key_prefix``).

Fixed names (deploy/ KEDA scaler and alert rules read them; do not rename):

- ``{prefix}:queue:p0|p1|p2``  priority streams (0 = high), consumer group ``workers``
- ``{prefix}:queue:dead``      dead-letter stream
- ``{prefix}:workers``         worker heartbeats (sorted set: name -> unix time)

The rest:

- ``{prefix}:job:{<id>}``          job hash: JobRecord fields + queue bookkeeping
- ``{prefix}:job:{<id>}:events``   per-job progress stream (what WatchJob relays)
- ``{prefix}:result:{<ck>}``       cached result hash: prototypes JSON + ``png:<i>`` blob keys
  (the bytes live in the blob store, blobs.py) + ``blobs`` (every key it names)
- ``{prefix}:inflight:{<ck>}``     id of the job generating that cache key (dedup)
- ``{prefix}:idem:<len>:<tenant>:<rid>`` job id for a tenant's request_id (idempotency)
- ``{prefix}:tenant:<tenant>:jobs`` a tenant's job ids (sorted set, lexical = time order)
- ``{prefix}:jobs:<STATE>``        job ids by state (sorted set, score = time of entry)
- ``{prefix}:worker:<name>``       worker info hash (pid, host, metrics port, device)
- ``{prefix}:tq:<len>:<tenant>:p0|p1|p2`` a tenant's waiting job ids (lists, FIFO)
- ``{prefix}:tq:<len>:<tenant>:running`` job ids the tenant has taken/running (quota)
- ``{prefix}:ready`` / ``{prefix}:ready:set`` tenants with waiting jobs (round-robin
  ring of ``{prefix}:tq:<len>:<tenant>`` names)
- ``{prefix}:lr:<digest>``         learning rates the engine's finder chose for a model's
  weights (hash: ``engine.lr_key`` -> rate), shared by every worker
- ``{prefix}:apikey:<id>``         API key hash: tenant, role, name, sha256 of the secret
- ``{prefix}:apikeys``             ids of every API key (set)
- ``{prefix}:rate:<tenant>:<sec>`` a tenant's requests in one second (quota counter)
- ``{prefix}:check:{<id>}``        check hash: the check's record (queue/checks.py)
- ``{prefix}:check:{<id>}:report`` a SUCCEEDED check's HTML and JSON report (hash)
- ``{prefix}:check:{<id>}:lease``  token of the API replica driving the check (PX lease)
- ``{prefix}:tenant:<len>:<tenant>:checks`` a tenant's check ids (sorted set, lexical = time)
- ``{prefix}:checks:running``     ids of RUNNING checks (sorted set, score = start time)
- ``{prefix}:checkidem:<len>:<tenant>:<rid>`` check id for a tenant's StartCheck request_id
- ``{prefix}:blobgc``              lock: the API replica collecting unreferenced blobs
- ``{prefix}:blobs:inputs``        blob keys of jobs' input images (an isolation's photo;
  sorted set, score = unix time until which a job may still read it): the sweep keeps them

Waiting jobs: each job's entry is XADDed to its priority stream and at once
delivered to the consumer ``PARKED`` (so XLEN = waiting + running, as before);
its id also goes to its tenant's list. Workers take jobs round-robin over the
tenants (``scripts.TAKE``) and XCLAIM the entry from ``PARKED``: see
docs/tenancy.md (fair scheduling).

Curly braces are Redis Cluster hash tags: one job's keys (hash, events) share a
slot. Multi-key scripts (submit, finish) touch keys of several kinds; on a
Cluster (``redis+cluster://``) ``key_prefix`` must be a hash tag such as
``{protolens}`` so every key shares one slot: ``Settings`` refuses a cluster URL
with any other prefix (see docs/queue.md, Redis Cluster).
"""

from __future__ import annotations

from dataclasses import dataclass

from protolens_server.queue.records import JobState

GROUP = "workers"
PARKED = "~parked"  # consumer holding the entries of jobs waiting in their tenant's list
PRIORITIES = (0, 1, 2)


@dataclass(frozen=True)
class Keys:
    prefix: str = "protolens"

    # --- fixed names -------------------------------------------------------------
    def stream(self, priority: int) -> str:
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be 0, 1 or 2 (got {priority!r})")
        return f"{self.prefix}:queue:p{priority}"

    @property
    def streams(self) -> tuple[str, ...]:
        """Priority streams, highest priority first."""
        return tuple(self.stream(p) for p in PRIORITIES)

    @property
    def dead(self) -> str:
        return f"{self.prefix}:queue:dead"

    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    # --- per job -----------------------------------------------------------------
    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{{{job_id}}}"

    def events(self, job_id: str) -> str:
        return f"{self.prefix}:job:{{{job_id}}}:events"

    # --- cache, dedup, idempotency -------------------------------------------------
    def result(self, cache_key: str) -> str:
        return f"{self.prefix}:result:{{{cache_key}}}"

    def inflight(self, cache_key: str) -> str:
        return f"{self.prefix}:inflight:{{{cache_key}}}"

    def idempotency(self, tenant: str, request_id: str) -> str:
        # The tenant's length keeps ("a:b", "c") and ("a", "b:c") apart.
        return f"{self.prefix}:idem:{len(tenant)}:{tenant}:{request_id}"

    # --- indexes -------------------------------------------------------------------
    def tenant_jobs(self, tenant: str) -> str:
        return f"{self.prefix}:tenant:{tenant}:jobs"

    def by_state(self, state: JobState | str) -> str:
        return f"{self.prefix}:jobs:{JobState(state).value}"

    @property
    def state_indexes(self) -> tuple[str, ...]:
        """One sorted set per state, in JobState order."""
        return tuple(self.by_state(s) for s in JobState)

    def worker_info(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}"

    # --- fair scheduling -------------------------------------------------------------
    def tenant_base(self, tenant: str) -> str:
        """What the ready ring holds for a tenant; its queues and running set extend it."""
        return f"{self.prefix}:tq:{len(tenant)}:{tenant}"

    def tenant_queue(self, tenant: str, priority: int) -> str:
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be 0, 1 or 2 (got {priority!r})")
        return f"{self.tenant_base(tenant)}:p{priority}"

    def tenant_queues(self, tenant: str) -> tuple[str, ...]:
        return tuple(self.tenant_queue(tenant, p) for p in PRIORITIES)

    @property
    def ready(self) -> str:
        return f"{self.prefix}:ready"

    @property
    def ready_set(self) -> str:
        return f"{self.prefix}:ready:set"

    def tenant_running(self, tenant: str) -> str:
        return f"{self.tenant_base(tenant)}:running"

    def learning_rates(self, model_digest: str) -> str:
        """Hash of the finder's chosen rates for one model's weights (engine.lr_key -> lr)."""
        return f"{self.prefix}:lr:{model_digest}"

    # --- authentication and quotas ----------------------------------------------------
    def api_key(self, key_id: str) -> str:
        return f"{self.prefix}:apikey:{key_id}"

    @property
    def api_keys(self) -> str:
        return f"{self.prefix}:apikeys"

    def rate(self, tenant: str) -> str:
        """The tenant's request-rate state (GCRA arrival time, api/auth.py)."""
        return f"{self.prefix}:rate:{len(tenant)}:{tenant}"

    # --- checks (queue/checks.py) ------------------------------------------------------
    def check(self, check_id: str) -> str:
        return f"{self.prefix}:check:{{{check_id}}}"

    def check_report(self, check_id: str) -> str:
        return f"{self.prefix}:check:{{{check_id}}}:report"

    def check_lease(self, check_id: str) -> str:
        return f"{self.prefix}:check:{{{check_id}}}:lease"

    def check_idempotency(self, tenant: str, request_id: str) -> str:
        """A tenant's StartCheck request_id -> the id of the check it started."""
        return f"{self.prefix}:checkidem:{len(tenant)}:{tenant}:{request_id}"

    def tenant_checks(self, tenant: str) -> str:
        return f"{self.prefix}:tenant:{len(tenant)}:{tenant}:checks"

    @property
    def running_checks(self) -> str:
        return f"{self.prefix}:checks:running"

    # --- the blob store (blobs.py, queue/blob_gc.py) -------------------------------------
    @property
    def results_pattern(self) -> str:
        """SCAN pattern of every result hash (the prefix matched literally)."""
        return f"{_glob_escape(self.prefix)}:result:*"

    @property
    def blob_gc_lock(self) -> str:
        return f"{self.prefix}:blobgc"

    @property
    def input_blobs(self) -> str:
        return f"{self.prefix}:blobs:inputs"


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis glob pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


# Fields of the job hash that are queue bookkeeping, not JobRecord fields.
TENANT_FIELD_PREFIX = "t:"  # t:<tenant> -> number of that tenant's requests attached
SPEC_FIELD = "spec"  # the job's JobSpec as JSON (a JobRecord field)
CACHE_KEY_FIELD = "cache_key"  # the job's cache key (a JobRecord field)
TENANT_QUEUE_FIELD = "tq"  # the tenant list holding the job's id while it waits
OWNER_FIELD = "owner"  # delivery token of the worker allowed to finish the job
CANCEL_FIELD = "cancel"  # "1" once cancel was asked while running
STREAM_FIELD = "stream"  # priority stream holding the job's entry
ENTRY_FIELD = "entry"  # that entry's id
PNG_FIELD = "png:{index}"  # field of the result hash: blob key of prototype <index>'s PNG
BLOBS_FIELD = "blobs"  # field of the result hash: every blob key it names, space-separated
PROTOTYPES_FIELD = "prototypes"  # field of the job and result hashes: prototypes JSON
JOB_ID_FIELD = "job_id"  # field of the result hash: the job that made it
