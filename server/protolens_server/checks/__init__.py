"""Model-registry checks: prototypes of a model version, compared with a baseline version,
judged by a policy, reported as one HTML file and JSON.

    from protolens_server.checks import Policy, run_check, write_html
    result = run_check("vision@2", baseline="vision@1", catalog=catalog,
                       policy=Policy.from_yaml("policy.yaml"))
    write_html(result, "report.html"); result.passed
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from protolens_server.checks.policy import Policy
    from protolens_server.checks.report import render_html, write_html, write_json
    from protolens_server.checks.result import CheckResult, ClassCheck, RuleResult
    from protolens_server.checks.run import analyse, run_check

# Exports load on first use, so a light module of the package (``checks.svg``, which
# the web gallery draws with) does not pull torch in through this file.
_EXPORTS = {
    "Policy": "policy",
    "render_html": "report",
    "write_html": "report",
    "write_json": "report",
    "CheckResult": "result",
    "ClassCheck": "result",
    "RuleResult": "result",
    "analyse": "run",
    "run_check": "run",
}
__all__ = [
    "CheckResult",
    "ClassCheck",
    "Policy",
    "RuleResult",
    "analyse",
    "render_html",
    "run_check",
    "write_html",
    "write_json",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
