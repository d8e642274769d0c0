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
from collections.abc import Callable
from typing import Any

from protolens import _convert as convert
from protolens.errors import translate_errors
from protolens.types import Check, CheckReport
from protolens.v1 import checks_pb2 as pb
from protolens.v1 import checks_pb2_grpc

POLL_S = 0.25
CheckRef = str | Check
Progress = Callable[[float, str], None]


class CheckMethods:
    """Blocking check methods (mixed into ``Client``)."""

    _checks: checks_pb2_grpc.CheckServiceStub  # made by the client on its channel
    _kw: Callable[..., dict[str, Any]]

    def start_check(self, model: str, *, timeout: float | None = None, **options: Any) -> Check:
        """Start checking ``model`` (options: baseline, classes, steps, prototypes, config,
        seed, reference_set, policy_yaml, request_id); returns the RUNNING check at once.
        A retry with the same ``request_id`` returns the check the first call started."""
        with translate_errors():
            resp = self._checks.StartCheck(
                convert.check_request(model, **options), **self._kw(timeout)
            )
        return convert.check(resp.check)

    def get_check(self, check: CheckRef, *, timeout: float | None = None) -> Check:
        with translate_errors():
            resp = self._checks.GetCheck(
                pb.GetCheckRequest(name=convert.check_name(check)), **self._kw(timeout)
            )
        return convert.check(resp.check)

    def list_checks(
        self, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> tuple[list[Check], str]:
        """One page of your checks, newest first, and the next page's token ("" at the end)."""
        req = pb.ListChecksRequest(page_size=page_size, page_token=page_token)
        with translate_errors():
            resp = self._checks.ListChecks(req, **self._kw(timeout))
        return [convert.check(c) for c in resp.checks], resp.next_page_token

    def cancel_check(self, check: CheckRef, *, timeout: float | None = None) -> Check:
        with translate_errors():
            resp = self._checks.CancelCheck(
                pb.CancelCheckRequest(name=convert.check_name(check)), **self._kw(timeout)
            )
        return convert.check(resp.check)

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
                raise TimeoutError(f"{convert.check_name(check)} still running after {timeout}s")
            time.sleep(POLL_S)

    def get_check_report(self, check: CheckRef, *, timeout: float | None = None) -> CheckReport:
        with translate_errors():
            resp = self._checks.GetCheckReport(
                pb.GetCheckReportRequest(name=convert.check_name(check)), **self._kw(timeout)
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
                convert.check_request(model, **options), **self._kw(timeout)
            )
        return convert.check(resp.check)

    async def get_check(self, check: CheckRef, *, timeout: float | None = None) -> Check:
        with translate_errors():
            resp = await self._checks.GetCheck(
                pb.GetCheckRequest(name=convert.check_name(check)), **self._kw(timeout)
            )
        return convert.check(resp.check)

    async def list_checks(
        self, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> tuple[list[Check], str]:
        req = pb.ListChecksRequest(page_size=page_size, page_token=page_token)
        with translate_errors():
            resp = await self._checks.ListChecks(req, **self._kw(timeout))
        return [convert.check(c) for c in resp.checks], resp.next_page_token

    async def cancel_check(self, check: CheckRef, *, timeout: float | None = None) -> Check:
        with translate_errors():
            resp = await self._checks.CancelCheck(
                pb.CancelCheckRequest(name=convert.check_name(check)), **self._kw(timeout)
            )
        return convert.check(resp.check)

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
                raise TimeoutError(f"{convert.check_name(check)} still running after {timeout}s")
            await asyncio.sleep(POLL_S)

    async def get_check_report(
        self, check: CheckRef, *, timeout: float | None = None
    ) -> CheckReport:
        with translate_errors():
            resp = await self._checks.GetCheckReport(
                pb.GetCheckReportRequest(name=convert.check_name(check)), **self._kw(timeout)
            )
        return CheckReport(html=resp.html, json=resp.json)
