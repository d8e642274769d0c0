"""``CheckService``: each RPC is proto -> ``checks.service.CheckRunner`` call -> proto.

Registered on the API server by ``add_check_service`` (one line in
``api/server.py``, which also calls the runner's ``tick`` from its sampler loop
and ``close`` on shutdown). Check records live in Redis, so any API replica
answers for any check. Domain errors are mapped by the same interceptor as every
other RPC; the caller's tenant scopes every check lookup (another tenant's check
is NOT_FOUND, like a missing one). A failed check's error is stored already
mapped (code, reason, message, metadata) by this module's table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
import yaml
from protolens import names
from protolens.v1 import checks_pb2 as pb
from protolens.v1 import checks_pb2_grpc, common_pb2

from protolens_server.api.convert import timestamp_pb
from protolens_server.api.errors import stored_status
from protolens_server.api.reference_sets import ReferenceSets
from protolens_server.api.request_pool import RequestPool
from protolens_server.api.tenancy import current_tenant
from protolens_server.api.validation import (
    MAX_CLASS_NAME_CHARS,
    check_request_size,
    generation_config,
    model_name,
    page_size,
    read_name,
    request_id_of,
    seed_of,
)
from protolens_server.checks.policy import Policy
from protolens_server.checks.service import CheckRunner
from protolens_server.engine.types import GenerationConfig
from protolens_server.errors import ErrorRecord, InvalidArgument
from protolens_server.queue.checks import CheckRecord, CheckState

if TYPE_CHECKING:
    from protolens_server.config import Settings
    from protolens_server.models.catalog import ModelCatalog
    from protolens_server.queue.store import Store


SERVICE_NAME = pb.DESCRIPTOR.services_by_name["CheckService"].full_name
_STATES = {
    CheckState.RUNNING: pb.CHECK_STATE_RUNNING,
    CheckState.SUCCEEDED: pb.CHECK_STATE_SUCCEEDED,
    CheckState.FAILED: pb.CHECK_STATE_FAILED,
    CheckState.CANCELLED: pb.CHECK_STATE_CANCELLED,
}


def check_to_pb(run: CheckRecord) -> pb.Check:
    verdict = run.verdict
    error = None
    if run.error is not None:
        status = stored_status(ErrorRecord.from_dict(run.error))
        error = common_pb2.Status(
            code=status.code, message=status.message, reason=status.reason, metadata=status.metadata
        )
    return pb.Check(
        name=names.CHECKS.name(run.check_id),
        state=_STATES[run.state],
        model=run.model,
        baseline=run.baseline,
        progress=run.progress,
        message=run.message,
        passed=bool(verdict.get("passed", False)),
        failed_rules=verdict.get("failed_rules", []),
        flagged_classes=verdict.get("flagged_classes", []),
        jobs=run.stats.jobs,
        cache_hits=run.stats.cache_hits,
        error=error,
        create_time=timestamp_pb(run.created_at),
        end_time=timestamp_pb(run.finished_at),
    )


def _config(request: pb.StartCheckRequest, settings: Settings) -> GenerationConfig:
    if not 0 <= request.prototypes_per_class <= 64:
        raise InvalidArgument("prototypes_per_class", "must be 1..64 (0 = 1)")
    return generation_config(request.config, request.prototypes_per_class, settings)


class _PolicyLoader(yaml.SafeLoader):
    """YAML without aliases: a policy never needs them, and they let a few bytes expand."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in a policy", event.start_mark
            )
        return super().compose_node(parent, index)


def _check_policy_size(text: str, settings: Settings) -> None:
    limit = settings.max_policy_bytes
    size = len(text.encode())
    if size > limit:
        raise InvalidArgument(
            "policy_yaml",
            f"is {size} bytes; this server accepts at most {limit} (max_policy_bytes)",
        )


def _policy(text: str) -> Policy:
    if not text.strip():
        return Policy()
    try:
        data = yaml.load(text, Loader=_PolicyLoader)  # a SafeLoader without aliases
    except yaml.YAMLError as exc:
        raise InvalidArgument("policy_yaml", f"not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidArgument("policy_yaml", "must be a mapping of policy keys")
    return Policy.from_dict(data, source="policy_yaml")


class CheckServicer(checks_pb2_grpc.CheckServiceServicer):
    def __init__(self, runner: CheckRunner, pool: RequestPool) -> None:
        self.runner = runner
        self.pool = pool

    async def StartCheck(
        self, request: pb.StartCheckRequest, context: grpc.aio.ServicerContext
    ) -> pb.StartCheckResponse:
        settings = self.runner.settings
        check_request_size(request, settings)  # at once, before any work
        _check_policy_size(request.policy_yaml, settings)
        if len(request.classes) > settings.max_class_refs_per_job:
            raise InvalidArgument(
                "classes",
                f"{len(request.classes)} classes; this server allows at most"
                f" {settings.max_class_refs_per_job} per check (max_class_refs_per_job)",
            )
        for i, name in enumerate(request.classes):
            if len(name) > MAX_CLASS_NAME_CHARS:
                raise InvalidArgument(
                    f"classes[{i}]",
                    f"a class name of {len(name)} characters; at most {MAX_CLASS_NAME_CHARS}",
                )
        seed = seed_of(request)
        config = _config(request, settings)
        policy = await self.pool.run(_policy, request.policy_yaml)  # YAML: off the event loop
        run = await self.runner.start(
            tenant=current_tenant(),
            model=model_name(request.model),
            baseline=model_name(request.baseline) if request.baseline else "",
            classes=[c for c in request.classes if c.strip()],
            config=config,
            seed=seed,
            reference_set=request.reference_set,
            policy=policy,
            request_id=request_id_of(request.request_id),
        )
        return pb.StartCheckResponse(check=check_to_pb(run))

    async def GetCheck(
        self, request: pb.GetCheckRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetCheckResponse:
        run = await self.runner.get(read_name(names.CHECKS.parse, request.name), current_tenant())
        return pb.GetCheckResponse(check=check_to_pb(run))

    async def ListChecks(
        self, request: pb.ListChecksRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListChecksResponse:
        runs, token = await self.runner.list(
            current_tenant(), page_size=page_size(request.page_size), page_token=request.page_token
        )
        return pb.ListChecksResponse(checks=[check_to_pb(r) for r in runs], next_page_token=token)

    async def CancelCheck(
        self, request: pb.CancelCheckRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelCheckResponse:
        run = await self.runner.cancel(
            read_name(names.CHECKS.parse, request.name), current_tenant()
        )
        return pb.CancelCheckResponse(check=check_to_pb(run))

    async def GetCheckReport(
        self, request: pb.GetCheckReportRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetCheckReportResponse:
        html, json_text = await self.runner.report(
            read_name(names.CHECKS.parse, request.name), current_tenant()
        )
        return pb.GetCheckReportResponse(html=html, json=json_text)


def add_check_service(
    server: grpc.aio.Server,
    store: Store,
    catalog: ModelCatalog,
    settings: Settings,
    *,
    pool: RequestPool | None = None,
    references: ReferenceSets | None = None,
    **runner_options: Any,
) -> CheckRunner:
    """Register ``CheckService`` on ``server``; returns its runner (the server calls its
    ``tick`` periodically and ``close`` on shutdown). ``pool``: where requests are parsed
    (the API's shared ``RequestPool``); ``references``: the API's shared ``ReferenceSets``
    (one walk per folder for both services); ``runner_options``: e.g. ``lease_s``."""
    if references is None:
        references = ReferenceSets.from_settings(settings)
    runner = CheckRunner(
        store,
        catalog,
        settings,
        references.digest,
        **runner_options,
    )
    pool = pool if pool is not None else RequestPool(settings.request_threads)
    checks_pb2_grpc.add_CheckServiceServicer_to_server(CheckServicer(runner, pool), server)
    return runner
