#!/usr/bin/env python3
"""Run the fault and load suite and write its table to docs/faults.md.

Usage: python bench/fault_report.py [--soak] [--out docs/faults.md]

Runs ``pytest tests/faults`` (each scenario records its outcome through
PROTOLENS_FAULT_REPORT) plus the real-process fault tests that live beside the
worker (SIGKILL mid-job, SIGTERM hand-back, Redis restart with AOF, the engine
process killed mid-batch), the health test under Redis outages and the hostile-request
cases of tests/api, then renders one markdown table: fault -> outcome, load held, inputs
tried, jobs lost. The
tenant-isolation scenarios of issue 14 (watch flood, large request, mixed-config
fairness) live in tests/faults/test_sharing.py.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROCESS_TESTS = {
    "tests/worker/test_worker_processes.py::test_sigkilled_workers_job_is_finished_by_another_exactly_once":
        "worker SIGKILL mid-job (real processes)",
    "tests/worker/test_worker_processes.py::test_sigterm_mid_job_hands_it_back_and_loses_nothing":
        "worker SIGTERM mid-job: hands the job back (real processes)",
    "tests/worker/test_worker_redis_restart.py::test_redis_restart_mid_job_loses_nothing":
        "Redis restart mid-job with AOF",
    "tests/worker/test_worker_engine_process.py::test_a_killed_engine_process_loses_no_job_and_finishes_none_twice":
        "engine process (engine_process on) SIGKILLed mid-batch of 4 (real worker process)",
}  # fmt: skip
# Tests outside tests/faults that the report runs too: test -> (fault, outcome when it passed).
OTHER_TESTS = {
    "tests/api/test_api_health.py::test_health_follows_redis_within_a_second":
        ("Redis stopped, restarted, then hung (SIGSTOP) under the API",
         "health NOT_SERVING within 1 s of each outage and SERVING within 1 s of its end"),
    "tests/api/test_api_cancel_race.py::test_a_cancel_at_any_moment_ends_the_job_once_and_consistently":
        ("CancelJob at 24 moments of a job's life: queued, running, storing, ended"
         " (in-process worker)",
         "every cancel OK or FAILED_PRECONDITION; each job ended once, SUCCEEDED with its"
         " prototype or CANCELLED with none; each watch ended with that one final event;"
         " no queue entry left pending"),
    # red-team round 4
    "tests/api/test_api_stream_close.py::test_cancelled_watches_free_their_slots_and_subscriptions":
        ("WatchJob streams cancelled by their caller after their first event, 3 rounds of 48"
         " at once (max_streams_per_tenant 48, job queued)",
         "each ended on the server at once: none left subscribed, and the tenant opened 48"
         " more (a cancel that landed during a watch's first Redis reads was lost: the watch"
         " stayed open as long as its job, holding the tenant's slot)"),
    "tests/api/test_api_pool_busy.py::test_a_busy_pool_is_server_busy_and_ends_no_watch":
        ("the API's Redis pool kept busy by one tenant (200 calls in flight; pool 2, 50 ms"
         " wait) while 10 watches are open",
         "calls that found no connection: RESOURCE_EXHAUSTED SERVER_BUSY naming"
         " redis_max_connections, RetryInfo 1 s (was UNAVAILABLE 'Redis is unreachable');"
         " the 10 watches lived through it and ended with their job (the shared event reader"
         " has its own connection; a busy pool used to end every watch)"),
    "tests/worker/test_worker_redis_restart.py::test_redis_restarted_empty_mid_job_the_worker_goes_on":
        ("Redis restarted empty (no persistence) while a worker runs a job",
         "the running job is gone with Redis's data; the worker recreated the consumer group"
         " and the job submitted after SUCCEEDED (it used to die on NOGROUP)"),
    "tests/tenancy/test_quotas.py::test_a_job_is_capped_by_default_and_told_what_fits":
        ("one CreatePrototypeJob of 1,000 targets x 64 prototypes x 10,000 steps, no tenants"
         " file",
         "RESOURCE_EXHAUSTED QUOTA_EXCEEDED (built-in max_target_steps 256,000) saying what"
         " fits; 1,000 targets at the default step budget accepted (it was QUEUED)"),
    "tests/tenancy/test_quotas.py::test_running_checks_are_capped_per_tenant":
        ("one tenant's registry checks past max_checks_per_tenant (3), waiting for a worker",
         "the 4th StartCheck RESOURCE_EXHAUSTED naming the limit, RetryInfo; another tenant's"
         " started; a cancelled check freed its place (300 checks used to slow every other"
         " tenant's calls: bench/tenant_floods.py)"),
    "tests/cli/test_cli_first_hour.py::test_a_bad_settings_file_is_one_line_naming_it":
        ("serve and worker with a bad PROTOLENS_CONFIG: missing, a YAML list, not YAML, not"
         " UTF-8, an unknown setting, a bad value (12 cases)",
         "one line naming the file or setting, exit 1 (worker 2); they were tracebacks"),
}  # fmt: skip
# Files of hostile-input cases: each test case counts as inputs tried.
INPUT_FILES = {
    "tests/api/test_api_limits.py":
        "hostile requests: class names '²', '٣', 40 and 5,000 digits; inf/nan/1e308 config"
        " floats; oversized requests, targets x classes, policies, YAML aliases; SDK and CLI",
    "tests/api/test_api_hostile_inputs.py":
        "hostile isolation images: a PNG declaring 100k x 100k, a flat 81-megapixel PNG,"
        " a 1 x 200,000 strip, truncated, SVG; 16-bit, CMYK, palette, animated accepted;"
        " WatchJob cursors '$', '>', '-', '+', malformed and over 64 bits (a '$' held open"
        " no longer stops the shared event reader for every other watch); ListJobs/ListChecks"
        " page tokens never issued ('abc', 23/25 digits, upper-case hex, '(', '+', '-', NUL);"
        " check baselines that are paths (named field 'baseline', was 'model'); unit directions"
        " float32 cannot normalise (1e20 made a constant objective and SUCCEEDED)",
    "tests/api/test_api_reference_images.py": (
        "hostile reference-set files, scored by a real worker: truncated, 0-byte, SVG/HTML"
        " under image names, a symlink to /etc/passwd, a flat 81-megapixel PNG, one declaring"
        " 10 G pixels, 4x4; gray, CMYK, 16-bit, palette+transparency, EXIF-rotated, animated"
        " GIF and APNG",
        "cases as specified: each broken file FAILED its job once (BAD_REFERENCE_SET, 1"
        " attempt) naming set/class/file, no server path (was '<path>'); the odd images"
        " scored; the worker went on",
    ),
    "tests/api/test_api_reference_sets.py": (
        "a reference set of 300 files requested 8 times at once, changed in place, and over"
        " max_reference_files",
        "cases as specified: one walk for the 8 requests and a plain request answered while it"
        " is held; the change noticed after reference_walk_ttl_s; the over-cap folder refused"
        " INVALID_ARGUMENT before its walk; server kept serving",
    ),
}  # fmt: skip
# the outcome of an INPUT_FILES entry given as a bare string
_INPUT_OUTCOME = (
    "cases answered INVALID_ARGUMENT, NOT_FOUND or one CLI line as specified; server kept serving"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--soak", action="store_true", help="PROTOLENS_SOAK=1 (longer runs)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "faults.md")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="protolens-faults-"))
    records, junit = work / "records.json", work / "junit.xml"
    env = {**os.environ, "PROTOLENS_FAULT_REPORT": str(records)}
    if args.soak:
        env["PROTOLENS_SOAK"] = "1"
    selected = [p.split("::")[0] for p in (*PROCESS_TESTS, *OTHER_TESTS, *INPUT_FILES)]
    cmd = [sys.executable, "-m", "pytest", "tests/faults", *sorted(set(selected)), "-q",
           "-p", "no:xdist", "--timeout", "600", f"--junitxml={junit}"]  # fmt: skip
    load_before = os.getloadavg()[0]
    started = dt.datetime.now(dt.UTC)
    done = subprocess.run(cmd, cwd=ROOT, env=env)
    rows = json.loads(records.read_text()) if records.exists() else []
    outcomes = _junit(junit)
    for test, fault in PROCESS_TESTS.items():
        name = test.split("::")[1]
        state = outcomes.get(name, "not run")
        rows.append({"fault": fault, "outcome": f"test {state}: job finished, stored once",
                     "lost": 0 if state == "passed" else "?"})  # fmt: skip
    for test, (fault, outcome) in OTHER_TESTS.items():
        state = _state(outcomes, test.split("::")[1])
        rows.append({"fault": fault, "outcome": outcome if state == "passed" else f"test {state}",
                     "lost": "-"})  # fmt: skip
    for path, entry in INPUT_FILES.items():
        fault, outcome = entry if isinstance(entry, tuple) else (entry, _INPUT_OUTCOME)
        module = Path(path).stem
        cases = {n: st for n, st in outcomes.items() if n.startswith(f"{module}::")}
        passed = sum(st == "passed" for st in cases.values())
        rows.append(
            {
                "fault": fault,
                "fuzzed": len(cases),
                "lost": "-",
                "outcome": f"{passed}/{len(cases)} {outcome}",
            }
        )
    args.out.write_text(_render(rows, started, load_before, args.soak, done.returncode))
    print(f"wrote {args.out} ({len(rows)} rows); pytest exit {done.returncode}")
    return done.returncode


def _state(outcomes: dict[str, str], name: str) -> str:
    """A test's outcome; a parametrised test's is "passed" only if every case passed."""
    if name in outcomes:
        return outcomes[name]
    cases = [st for n, st in outcomes.items() if n.startswith(f"{name}[")]
    if not cases:
        return "not run"
    return "passed" if all(st == "passed" for st in cases) else "failed"


def _junit(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        failed = case.find("failure") is not None or case.find("error") is not None
        skipped = case.find("skipped") is not None
        state = "failed" if failed else "skipped" if skipped else "passed"
        name = case.get("name", "")
        out[name] = state
        module = case.get("classname", "").rsplit(".", 1)[-1]
        out[f"{module}::{name}"] = state  # also by module, to count a file's cases
    return out


def _render(rows: list[dict], started: dt.datetime, load: float, soak: bool, code: int) -> str:
    lost = sum(int(r.get("lost", 0)) for r in rows if str(r.get("lost", 0)).isdigit())
    fuzzed = sum(int(r.get("fuzzed", 0)) for r in rows)
    lines = [
        "# Fault and load suite",
        "",
        "Generated by `python bench/fault_report.py"
        + (" --soak" if soak else "")
        + "` (runs `pytest tests/faults`, the real-process fault tests, the health test and"
        " the hostile-request cases of tests/api); do not edit by hand.",
        f"Run {started:%Y-%m-%d %H:%M} UTC on {platform.machine()} "
        f"({os.cpu_count()} CPUs, load average {load:.2f} at start), "
        f"Python {platform.python_version()}; pytest exit status {code}.",
        "",
        "| fault | outcome | jobs lost |",
        "|---|---|---|",
    ]
    for r in rows:
        if "clients" in r:
            continue
        lines.append(f"| {r['fault']} | {r['outcome']} | {r.get('lost', '-')} |")
    load_rows = [r for r in rows if "clients" in r]
    if load_rows:
        lines += ["", "## Load held", "",
                  "| clients | jobs | RPCs | create p99 (ms) | get p99 (ms) | errors | wall (s) |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in load_rows:
            lines.append(
                f"| {r['clients']} | {r['jobs']} | {r['rpcs']} | {r['create_p99_ms']} | "
                f"{r['get_p99_ms']} | {r['errors']} | {r['wall_s']} |"
            )
    lines += ["", f"Inputs tried (fuzzed and hostile): {fuzzed}. Jobs lost: {lost}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
