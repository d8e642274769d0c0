"""``CheckService``: each RPC is proto -> ``checks.service.CheckRunner`` call -> proto.

Registered on the API server by ``add_check_service`` (one line in
``api/server.py``). Domain errors are mapped by the same interceptor as every
other RPC; the caller's tenant scopes every check lookup.
"""

from __future__ import annotations

from typing import Any

import grpc
import yaml
from google.protobuf import timestamp_pb2
from protolens.v1 import checks_pb2 as pb
from protolens.v1 import checks_pb2_grpc, common_pb2

from protolens_server.api.errors import code_number, to_rpc_error
from protolens_server.api.reference_sets import ReferenceSets
from protolens_server.api.tenancy import current_tenant
from protolens_server.api.validation import model_name
from protolens_server.checks.policy import Policy
from protolens_server.checks.service import CheckRun, CheckRunner
from protolens_server.engine.types import GenerationConfig
from protolens_server.errors import FailedPrecondition, InvalidArgument

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["CheckService"].full_name
_STATES = {
    "RUNNING": pb.CHECK_STATE_RUNNING,
    "SUCCEEDED": pb.CHECK_STATE_SUCCEEDED,
    "FAILED": pb.CHECK_STATE_FAILED,
    "CANCELLED": pb.CHECK_STATE_CANCELLED,
}
MAX_SEED = 2**63 - 1


def check_id_of(name: str) -> str:
    check_id = name.removeprefix("checks/")
    if not check_id or "/" in check_id:
        raise InvalidArgument("name", f"expected 'checks/{{check}}', got {name!r}")
    return check_id


def _timestamp(unix: float) -> timestamp_pb2.Timestamp | None:
    if not unix:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(unix * 1e9))
    return ts


def check_to_pb(run: CheckRun) -> pb.Check:
    doc = run.result.to_dict() if run.result is not None else {}
    error = None
    if run.error is not None:
        mapped = to_rpc_error(run.error)
        error = common_pb2.Status(
            code=code_number(mapped.code),
            message=mapped.message,
            reason=mapped.reason,
            metadata=mapped.metadata,
        )
    return pb.Check(
        name=f"checks/{run.check_id}",
        state=_STATES[run.state],
        model=run.model,
        baseline=run.baseline,
        progress=run.progress,
        message=run.message,
        passed=bool(doc.get("passed", False)),
        failed_rules=doc.get("failed_rules", []),
        flagged_classes=doc.get("flagged_classes", []),
        jobs=run.stats.jobs,
        cache_hits=run.stats.cache_hits,
        error=error,
        create_time=_timestamp(run.created_at),
        end_time=_timestamp(run.finished_at),
    )


def _config(request: pb.StartCheckRequest, settings: Any) -> GenerationConfig:
    given = {
        f.name: getattr(request.config, f.name)
        for f in request.config.DESCRIPTOR.fields
        if request.config.HasField(f.name)
    }
    if not 0 <= request.prototypes_per_class <= 64:
        raise InvalidArgument("prototypes_per_class", "must be 1..64 (0 = 1)")
    config = GenerationConfig(**given, prototypes=request.prototypes_per_class or 1)
    if config.steps > settings.max_steps:
        raise InvalidArgument(
            "config.steps", f"{config.steps} steps; this server allows at most {settings.max_steps}"
        )
    return config


def _policy(text: str) -> Policy:
    if not text.strip():
        return Policy()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidArgument("policy_yaml", f"not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidArgument("policy_yaml", "must be a mapping of policy keys")
    return Policy.from_dict(data, source="policy_yaml")


class CheckServicer(checks_pb2_grpc.CheckServiceServicer):
    def __init__(self, runner: CheckRunner) -> None:
        self.runner = runner

    async def StartCheck(
        self, request: pb.StartCheckRequest, context: grpc.aio.ServicerContext
    ) -> pb.StartCheckResponse:
        settings = self.runner.settings
        seed = request.seed if request.HasField("seed") else 0
        if not 0 <= seed <= MAX_SEED:
            raise InvalidArgument("seed", f"must be 0..{MAX_SEED}")
        run = await self.runner.start(
            tenant=current_tenant(),
            model=model_name(request.model),
            baseline=model_name(request.baseline) if request.baseline else "",
            classes=[c for c in request.classes if c.strip()],
            config=_config(request, settings),
            seed=seed,
            reference_set=request.reference_set,
            policy=_policy(request.policy_yaml),
        )
        return pb.StartCheckResponse(check=check_to_pb(run))

    async def GetCheck(
        self, request: pb.GetCheckRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetCheckResponse:
        run = self.runner.get(check_id_of(request.name), current_tenant())
        return pb.GetCheckResponse(check=check_to_pb(run))

    async def CancelCheck(
        self, request: pb.CancelCheckRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelCheckResponse:
        run = await self.runner.cancel(check_id_of(request.name), current_tenant())
        return pb.CancelCheckResponse(check=check_to_pb(run))

    async def GetCheckReport(
        self, request: pb.GetCheckReportRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetCheckReportResponse:
        run = self.runner.get(check_id_of(request.name), current_tenant())
        if run.state != "SUCCEEDED":
            raise FailedPrecondition(f"check {run.check_id} is {run.state}; no report")
        return pb.GetCheckReportResponse(html=run.html, json=run.json)


def add_check_service(server: grpc.aio.Server, queue: Any, catalog: Any, settings: Any) -> str:
    """Register ``CheckService`` on ``server``; returns its full name (an extra_services hook)."""
    runner = CheckRunner(queue, catalog, settings, ReferenceSets(settings.reference_root).digest)
    checks_pb2_grpc.add_CheckServiceServicer_to_server(CheckServicer(runner), server)
    return SERVICE_NAME
