#!/usr/bin/env python3
"""What parsing a job costs the worker per job when it forms a batch (issue 15).

The worker peeks at each job's spec (``spec_from_json``) to decide whether it fits the
batch, then claims it and reads its record from the claim's answer
(``record_from_fields``, which can reuse the peeked spec). On a Python-bound engine this
CPU comes out of the engine thread's time (the GIL). Prints microseconds per call.

    python bench/queue_parse.py [--calls 2000]
"""

from __future__ import annotations

import argparse
import sys
import timeit

from protolens_server import ENGINE_VERSION
from protolens_server.engine import GenerationConfig, Target
from protolens_server.queue.codec import record_from_fields, record_to_fields, spec_from_json
from protolens_server.queue.records import JobRecord, JobSpec, JobState


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=2000)
    args = p.parse_args(argv)
    spec = JobSpec(
        model="tiny",
        model_digest="d" * 64,
        targets=(Target((1,)),),
        config=GenerationConfig(steps=32).to_dict(),
        seed=1,
        engine_version=ENGINE_VERSION,
        tenant="tenant-00",
    )
    fields = record_to_fields(JobRecord(job_id="j", spec=spec, state=JobState.RUNNING))
    peeked = spec_from_json(fields["spec"])
    try:
        assert record_from_fields(fields, peeked) == record_from_fields(fields)
    except TypeError:  # a codec from before the peeked spec was reused (to compare)
        peeked = None

    def us(fn: object) -> float:
        return timeit.timeit(fn, number=args.calls) / args.calls * 1e6  # type: ignore[arg-type]

    peek = us(lambda: spec_from_json(fields["spec"]))
    record = us(lambda: record_from_fields(fields))
    reused = us(lambda: record_from_fields(fields, peeked)) if peeked else record
    print(f"spec_from_json (peek): {peek:.1f} us")
    print(f"record_from_fields (claim): {record:.1f} us; with the peeked spec: {reused:.1f} us")
    print(f"per job, peek + claim: {peek + reused:.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
