"""Model-version checks in the SDK: ``start_check``, ``get_check``, ``list_checks``,
``wait_check``, ``cancel_check``, ``get_check_report`` on ``Client`` and ``AsyncClient``
(mixins). Checks are stored by the service, so any API replica answers for them and
they outlive API restarts.

    with Client(addr) as client:
        check = client.start_check("vision@2", baseline="vision@1",
                                   policy_yaml=Path("policy.yaml").read_text())
        check = client.wait_check(check)          # progress via on_progress(fraction, message)
        report = client.get_check_report(check)   # .html (self-contained), .json
        check.passed, check.failed_rules, check.flagged_classes
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from protolens import names
from protolens.errors import translate_errors
from protolens.v1 import checks_pb2 as pb
from protolens.v1 import checks_pb2_grpc, common_pb2

POLL_S = 0.25
_STATE_NAMES = {
    v.number: v.name.removeprefix("CHECK_STATE_") for v in pb.CheckState.DESCRIPTOR.values
}


@dataclass(frozen=True)
class Check:
    """A check as the service last reported it."""

    name: str
    state: str  # RUNNING | SUCCEEDED | FAILED | CANCELLED
    model: str
    baseline: str
    progress: float
    message: str
    passed: bool
    failed_rules: tuple[str, ...] = ()
    flagged_classes: tuple[str, ...] = ()
    jobs: int = 0
    cache_hits: int = 0
    error: str = ""
    error_reason: str = ""

    @property
    def finished(self) -> bool:
        return self.state != "RUNNING"


@dataclass(frozen=True)
class CheckReport:
    html: str
    json: str
    extras: dict[str, Any] = field(default_factory=dict)


CheckRef = str | Check
Progress = Callable[[float, str], None]


def check_name(check: CheckRef) -> str:
    return check.name if isinstance(check, Check) else names.CHECKS.name(str(check))


def _check(msg: pb.Check) -> Check:
    return Check(
        name=msg.name,
        state=_STATE_NAMES.get(msg.state, "UNSPECIFIED"),
        model=msg.model,
        baseline=msg.baseline,
        progress=msg.progress,
        message=msg.message,
        passed=msg.passed,
        failed_rules=tuple(msg.failed_rules),
        flagged_classes=tuple(msg.flagged_classes),
        jobs=msg.jobs,
        cache_hits=msg.cache_hits,
        error=msg.error.message if msg.HasField("error") else "",
        error_reason=msg.error.reason if msg.HasField("error") else "",
    )


def start_request(
    model: str,
    *,
    baseline: str = "",
    classes: Sequence[int | str] = (),
    steps: int | None = None,
    prototypes: int = 1,
    config: Mapping[str, Any] | None = None,
    seed: int | None = None,
    reference_set: str = "",
    policy_yaml: str = "",
    request_id: str = "",
) -> pb.StartCheckRequest:
    cfg = common_pb2.GenerationConfig(**dict(config or {}))
    if steps is not None:
        cfg.steps = int(steps)
    req = pb.StartCheckRequest(
        model=model,
        baseline=baseline,
        classes=[str(c) for c in classes],
        config=cfg,
        prototypes_per_class=int(prototypes),
        reference_set=reference_set,
        policy_yaml=policy_yaml,
        request_id=request_id,
    )
    if seed is not None:
        req.seed = int(seed)
    return req


class CheckMethods:
    """Blocking check methods (mixed into ``Client``)."""

    _checks: checks_pb2_grpc.CheckServiceStub  # made by the client on its channel
    _kw: Callable[..., dict[str, Any]]

    def start_check(self, model: str, *, timeout: float | None = None, **options: Any) -> Check:
        """Start checking ``model`` (options: baseline, classes, steps, prototypes, config,
        seed, reference_set, policy_yaml, request_id); returns the RUNNING check at once.
        A retry with the same ``request_id`` returns the check the first call started."""
        with translate_errors():
            resp = self._checks.StartCheck(start_request(model, **options), **self._kw(timeout))
        return _check(resp.check)

    def get_check(self, check: CheckRef, *, timeout: float | None = None) -> Check:
        with translate_errors():
            resp = self._checks.GetCheck(
                pb.GetCheckRequest(name=check_name(check)), **self._kw(timeout)
            )
        return _check(resp.check)

    def list_checks(
        self, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> tuple[list[Check], str]:
        """One page of your checks, newest first, and the next page's token ("" at the end)."""
        req = pb.ListChecksRequest(page_size=page_size, page_token=page_token)
        with translate_errors():
            resp = self._checks.ListChecks(req, **self._kw(timeout))
        return [_check(c) for c in resp.checks], resp.next_page_token

    def cancel_check(self, check: CheckRef, *, timeout: float | None = None) -> Check:
        with translate_errors():
            resp = self._checks.CancelCheck(
                pb.CancelCheckRequest(name=check_name(check)), **self._kw(timeout)
            )
        return _check(resp.check)

    def wait_check(
        self,
        check: CheckRef,
        *,
        timeout: float | None = None,
        on_progress: Progress | None = None,
    ) -> Check:
        """Poll until the check ends; returns it (whatever its state)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            current = self.get_check(check)
            if on_progress is not None:
                on_progress(current.progress, current.message)
            if current.finished:
                return current
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{check_name(check)} still running after {timeout}s")
            time.sleep(POLL_S)

    def get_check_report(self, check: CheckRef, *, timeout: float | None = None) -> CheckReport:
        with translate_errors():
            resp = self._checks.GetCheckReport(
                pb.GetCheckReportRequest(name=check_name(check)), **self._kw(timeout)
            )
        return CheckReport(html=resp.html, json=resp.json)


class AsyncCheckMethods:
    """The same, for ``AsyncClient``."""

    _checks: checks_pb2_grpc.CheckServiceStub  # made by the client on its channel
    _kw: Callable[..., dict[str, Any]]

    async def start_check(
        self, model: str, *, timeout: float | None = None, **options: Any
    ) -> Check:
        with translate_errors():
            resp = await self._checks.StartCheck(
                start_request(model, **options), **self._kw(timeout)
            )
        return _check(resp.check)

    async def get_check(self, check: CheckRef, *, timeout: float | None = None) -> Check:
        with translate_errors():
            resp = await self._checks.GetCheck(
                pb.GetCheckRequest(name=check_name(check)), **self._kw(timeout)
            )
        return _check(resp.check)

    async def list_checks(
        self, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> tuple[list[Check], str]:
        req = pb.ListChecksRequest(page_size=page_size, page_token=page_token)
        with translate_errors():
            resp = await self._checks.ListChecks(req, **self._kw(timeout))
        return [_check(c) for c in resp.checks], resp.next_page_token

    async def cancel_check(self, check: CheckRef, *, timeout: float | None = None) -> Check:
        with translate_errors():
            resp = await self._checks.CancelCheck(
                pb.CancelCheckRequest(name=check_name(check)), **self._kw(timeout)
            )
        return _check(resp.check)

    async def wait_check(
        self,
        check: CheckRef,
        *,
        timeout: float | None = None,
        on_progress: Progress | None = None,
    ) -> Check:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            current = await self.get_check(check)
            if on_progress is not None:
                on_progress(current.progress, current.message)
            if current.finished:
                return current
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{check_name(check)} still running after {timeout}s")
            await asyncio.sleep(POLL_S)

    async def get_check_report(
        self, check: CheckRef, *, timeout: float | None = None
    ) -> CheckReport:
        with translate_errors():
            resp = await self._checks.GetCheckReport(
                pb.GetCheckReportRequest(name=check_name(check)), **self._kw(timeout)
            )
        return CheckReport(html=resp.html, json=resp.json)
