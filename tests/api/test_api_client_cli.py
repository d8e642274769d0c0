"""The blocking SDK client and the CLI, in-process against the real aio server."""

from __future__ import annotations

import asyncio
import json

import pytest
from protolens import Client
from protolens import errors as sdk
from protolens.cli import main as cli_main
from protolens_server.api.stack import free_port


def _sync_session(address: str) -> dict:
    with Client(address, timeout=10) as client:
        models = client.list_models()
        job = client.create_prototype_job("tiny", [1, "cherry"], config={"steps": 5}, seed=3)
        got = client.get_job(job)
        jobs, _ = client.list_jobs()
        events = client.watch_job(job.id)
        first = next(events)
        cancelled = client.cancel_job(job.name)
        tail = [e.state for e in events]
        with pytest.raises(sdk.JobFailedError):
            job.result(timeout=10)
        with pytest.raises(sdk.InvalidArgumentError) as bad:
            client.create_prototype_job("tiny", [1], config={"colour": "red"})
        return {
            "models": [m.id for m in models],
            "job": job,
            "got": got,
            "listed": [j.id for j in jobs],
            "first": first.state,
            "cancelled": cancelled.state,
            "tail": tail,
            "bad_field": bad.value.field,
        }


async def test_sync_client_round_trip(address: str) -> None:
    out = await asyncio.to_thread(_sync_session, address)
    job = out["job"]
    assert out["models"] == ["tiny"]
    assert job.outcome == "queued" and out["got"].id == job.id and job.id in out["listed"]
    assert [t.class_names for t in job.targets] == [("banana",), ("cherry",)]
    assert (out["first"], out["cancelled"], out["tail"][-1]) == ("QUEUED", "CANCELLED", "CANCELLED")
    assert out["bad_field"] == "config.colour"  # refused by the SDK before sending


async def test_unreachable_service_is_connection_error() -> None:
    def call() -> None:
        with Client(f"127.0.0.1:{free_port()}", timeout=2) as client:
            client.list_models()

    with pytest.raises(sdk.ConnectionError):
        await asyncio.to_thread(call)


async def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(cli_main, list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def test_cli_submit_get_cancel_models(address: str, capsys: pytest.CaptureFixture) -> None:
    a = ("--address", address)
    code, out, _ = await _cli(capsys, "models", *a, "--json")
    assert code == 0 and json.loads(out)[0]["id"] == "tiny"
    code, out, _ = await _cli(capsys, "models", *a)
    assert code == 0 and out.startswith("tiny\t5 classes\t3x16x16")

    code, out, _ = await _cli(
        capsys, "submit", *a, "--model", "tiny", "--target", "banana", "--target", "apple+date",
        "--target", "anti:4", "--steps", "6", "--config", "lr=0.1", "--config", "transforms=small",
        "--json",
    )  # fmt: skip
    job = json.loads(out)
    assert code == 0 and job["state"] == "QUEUED" and job["outcome"] == "queued"
    assert [t["kind"] for t in job["targets"]] == ["prototype", "hybrid", "antitype"]
    assert job["config"]["lr"] == 0.1 and job["config"]["transforms"] == "small"

    code, out, _ = await _cli(capsys, "get", *a, job["id"])
    assert code == 0 and out.startswith(f"jobs/{job['id']} QUEUED")
    code, out, _ = await _cli(capsys, "cancel", *a, job["id"], "--json")
    assert code == 0 and json.loads(out)["state"] == "CANCELLED"
    code, out, _ = await _cli(capsys, "watch", *a, job["id"], "--json")
    assert code == 1 and json.loads(out.splitlines()[-1])["state"] == "CANCELLED"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (("submit", "--model", "tiny", "--target", "durian"), "protolens: UNKNOWN_CLASS: targets"),
        (("submit", "--model", "nope", "--target", "1"), "protolens: MODEL_NOT_FOUND: no model"),
        (("submit", "--model", "tiny", "--target", "1", "--steps", "200000"),
         "protolens: INVALID_ARGUMENT: config.steps"),
        (("get", "0123456789ab"), "protolens: JOB_NOT_FOUND: job"),
        (("cancel", "0123456789ab"), "protolens: JOB_NOT_FOUND: job"),
        (("get", "jobs/a/b"), "protolens: INVALID_ARGUMENT: name"),
    ],
)  # fmt: skip
async def test_cli_errors_are_one_line(
    address: str, capsys: pytest.CaptureFixture, argv: tuple[str, ...], expected: str
) -> None:
    code, out, err = await _cli(capsys, *argv, "--address", address)
    assert code == 1 and out == ""
    assert err.startswith(expected) and err.count("\n") == 1, err


async def test_cli_cancel_twice_and_unreachable(
    address: str, capsys: pytest.CaptureFixture
) -> None:
    code, out, _ = await _cli(
        capsys, "submit", "--address", address, "--model", "tiny", "--target", "2", "--json"
    )
    job_id = json.loads(out)["id"]
    assert (await _cli(capsys, "cancel", "--address", address, job_id))[0] == 0
    code, _, err = await _cli(capsys, "cancel", "--address", address, job_id)
    assert code == 1 and err.startswith("protolens: FAILED_PRECONDITION: job") and err[-1] == "\n"
    code, _, err = await _cli(capsys, "get", "--address", address, job_id, "--out", "x")
    assert code == 1 and err.startswith("protolens: CANCELLED: job")
    port = free_port()
    code, _, err = await _cli(capsys, "models", "--address", f"127.0.0.1:{port}")
    assert code == 1 and err.startswith(
        f"protolens: UNAVAILABLE: no protolens API at 127.0.0.1:{port}"
    )


def _reuse_request_id(address: str) -> tuple[str, str, sdk.AlreadyExistsError]:
    with Client(address, timeout=10) as client:
        first = client.create_prototype_job("tiny", [1], config={"steps": 5}, seed=3,
                                            request_id="reuse-1")  # fmt: skip
        again = client.create_prototype_job("tiny", [1], config={"steps": 5}, seed=3,
                                            request_id="reuse-1")  # fmt: skip
        with pytest.raises(sdk.AlreadyExistsError) as refused:
            client.create_prototype_job("tiny", [2], config={"steps": 5}, seed=3,
                                        request_id="reuse-1")  # fmt: skip
        client.cancel_job(first)
        return first.id, again.id, refused.value


async def test_a_request_id_reused_for_another_request_is_already_exists(address: str) -> None:
    first, again, refused = await asyncio.to_thread(_reuse_request_id, address)
    assert again == first  # the same request: the same job
    assert refused.code.name == "ALREADY_EXISTS" and refused.metadata["job"] == first
    assert "already used for job" in str(refused) and "new request_id" in str(refused)
