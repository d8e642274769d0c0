"""Model-registry checks: prototypes of a model version, compared with a baseline version,
judged by a policy, reported as one HTML file and JSON.

    from protolens_server.checks import Policy, run_check, write_html
    result = run_check("vision@2", baseline="vision@1", catalog=catalog,
                       policy=Policy.from_yaml("policy.yaml"))
    write_html(result, "report.html"); result.passed
"""

from protolens_server.checks.policy import Policy
from protolens_server.checks.report import render_html, write_html, write_json
from protolens_server.checks.result import CheckResult, ClassCheck, RuleResult
from protolens_server.checks.run import analyse, run_check

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
