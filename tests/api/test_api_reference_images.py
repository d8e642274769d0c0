"""Hostile and odd files in a registered reference set (real gRPC, real Redis, a real worker).

The API walks a set and digests its bytes; the worker decodes its images when it scores.
A broken file therefore fails the job on the worker, as job state (BAD_REFERENCE_SET,
one attempt), and the job's error must say which file to fix. It said
``cannot read image <path>: cannot identify image file '<path>'``: the worker replaced
every absolute path in a tenant-visible message by ``<path>``, the file's name with
it. Now a path under the reference root (or the model store) is shown relative to it
(``setname/apple/t.png``); any other path is still ``<path>``.

Reference images also had only PIL's decompression-bomb limit (179 megapixels; an
81-megapixel PNG of 80 KB was decoded in the worker); they now have the API's 40
megapixels, read from the header before decoding.

Odd but sane images (grayscale for an RGB model, CMYK JPEG, 16-bit PNG, palette with
transparency, EXIF-rotated JPEG, animated GIF and APNG under a .png name) are scored.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from protolens.v1 import common_pb2, job_pb2
from protolens.v1 import service_pb2 as pb
from protolens_server.api.server import ApiServer
from protolens_server.config import Settings
from protolens_server.worker.worker import Worker
from test_api_hostile_inputs import _flat_png


def _saved(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def _noise(seed: int, size: tuple[int, int] = (20, 20), mode: str = "RGB") -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


def _write_set(root: Path, name: str, extra: dict[str, bytes | Path]) -> None:
    """Two classes of three good images; ``extra`` files (bytes, or a symlink's target)
    go in ``apple/``."""
    for c, cls in enumerate(("apple", "banana")):
        (root / name / cls).mkdir(parents=True)
        for i in range(3):
            (root / name / cls / f"{i}.png").write_bytes(_saved(_noise(10 * c + i)))
    for file, content in extra.items():
        path = root / name / "apple" / file
        if isinstance(content, Path):
            os.symlink(content, path)
        else:
            path.write_bytes(content)


def _exif_rotated() -> bytes:
    image = _noise(7, (30, 20))
    exif = image.getexif()
    exif[0x0112] = 6  # orientation: rotate 90
    return _saved(image, "JPEG", exif=exif)


_GOOD = _saved(_noise(1))
BROKEN = {  # set name -> (file in apple/, its bytes or symlink target, what the error says)
    "truncated": ("t.png", _GOOD[: len(_GOOD) // 2], "cannot read image"),
    "empty-file": ("z.png", b"", "cannot identify image file"),
    "svg-as-png": ("s.png", b'<svg xmlns="http://www.w3.org/2000/svg"/>', "cannot identify"),
    "html-as-jpg": ("h.jpg", b"<html><script>alert(1)</script></html>", "cannot identify"),
    "symlink-to-etc": ("l.png", Path("/etc/passwd"), "cannot identify image file"),
    "flat-81-megapixels": ("b.png", _flat_png(9_000, 9_000), "at most 40,000,000"),
    "declares-10g-pixels": ("b.png", _flat_png(100_000, 100_000, rows=1), "over 40,000,000"),
    "too-small": ("sm.png", _saved(_noise(2, (4, 4))), "smaller than the model's input"),
}
ODD = {
    "gray.png": _saved(_noise(3, mode="L")),
    "cmyk.jpg": _saved(_noise(4, mode="CMYK"), "JPEG"),
    "deep.png": _saved(Image.fromarray(np.arange(400, dtype=np.uint16).reshape(20, 20) * 100)),
    "palette.png": _saved(_noise(5, mode="P"), transparency=0),
    "rotated.jpg": _exif_rotated(),
    "animated-gif.png": _saved(_noise(6), "GIF", save_all=True, append_images=[_noise(8)] * 3),
    "apng.png": _saved(_noise(6), "PNG", save_all=True, append_images=[_noise(9)] * 3),
}


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reference statistics are cached on disk by the set's content digest: a set scored
    once (by an older build, say) is never decoded again. These tests are about decoding."""
    monkeypatch.setenv("PROTOLENS_CACHE_DIR", str(tmp_path / "cache"))


def _request(reference_set: str, seed: int) -> pb.CreatePrototypeJobRequest:
    target = common_pb2.Target(classes=[common_pb2.ClassRef(name="apple")])
    req = pb.CreatePrototypeJobRequest(
        model="tiny", targets=[target], seed=seed, reference_set=reference_set
    )
    req.config.steps = 2
    return req


async def _run_all(settings: Settings, stub, names: list[str]) -> list[job_pb2.Job]:
    async with Worker(settings, name="w-refs") as worker:
        for _ in range(4 * len(names)):
            if not await worker.run_once(block_ms=50):
                break
    return [(await stub.GetJob(pb.GetJobRequest(name=n))).job for n in names]


async def test_a_broken_reference_file_fails_the_job_naming_that_file(
    api: ApiServer, stub, api_settings: Settings
) -> None:
    root = api_settings.reference_root
    assert root is not None
    for name, (file, content, _) in BROKEN.items():
        _write_set(root, name, {file: content})
    made = [await stub.CreatePrototypeJob(_request(name, seed)) for seed, name in enumerate(BROKEN)]
    assert {m.outcome for m in made} == {pb.CREATE_OUTCOME_QUEUED}  # the walk reads bytes only
    jobs = await _run_all(api_settings, stub, [m.job.name for m in made])
    for job, (name, (file, _, says)) in zip(jobs, BROKEN.items(), strict=True):
        error = job.error
        assert job.state == job_pb2.JOB_STATE_FAILED, (name, job.state)
        assert error.reason == "BAD_REFERENCE_SET" and error.metadata["attempts"] == "1", name
        assert f"{name}/apple/{file}" in error.message and says in error.message, error.message
        assert error.metadata["file"] == f"{name}/apple/{file}", error.metadata
        assert "<path>" not in error.message and str(root) not in str(error), error.message
    # and the server goes on: a good set scores
    _write_set(root, "good", {})
    (job,) = await _run_all(
        api_settings, stub, [(await stub.CreatePrototypeJob(_request("good", 99))).job.name]
    )
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.error


async def test_odd_but_sane_reference_images_are_scored(
    api: ApiServer, stub, api_settings: Settings
) -> None:
    assert api_settings.reference_root is not None
    _write_set(api_settings.reference_root, "odd", ODD)
    made = await stub.CreatePrototypeJob(_request("odd", seed=1))
    (job,) = await _run_all(api_settings, stub, [made.job.name])
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.error
    proto = await stub.GetPrototype(pb.GetPrototypeRequest(name=f"{made.job.name}/prototypes/0"))
    assert proto.prototype.scores.layer_names  # scored against the set, odd images included


async def test_a_set_filled_past_max_reference_files_after_submit_fails_on_the_worker(
    api: ApiServer, stub, api_settings: Settings
) -> None:
    """The API counts a set's files when a job is created; an admin can fill the folder
    before a worker scores it. The worker applies the same cap before it reads a byte:
    the job fails BAD_REFERENCE_SET naming the limit, and the worker goes on."""
    root = api_settings.reference_root
    assert root is not None and api_settings.max_reference_files >= 6
    _write_set(root, "growing", {})
    made = await stub.CreatePrototypeJob(_request("growing", seed=5))
    assert made.outcome == pb.CREATE_OUTCOME_QUEUED
    for i in range(api_settings.max_reference_files):  # filled after the API's check
        (root / "growing" / "banana" / f"more-{i}.png").write_bytes(b"")
    (job,) = await _run_all(api_settings, stub, [made.job.name])
    assert job.state == job_pb2.JOB_STATE_FAILED
    assert job.error.reason == "BAD_REFERENCE_SET" and job.error.metadata["attempts"] == "1"
    assert "max_reference_files" in job.error.message and "'growing'" in job.error.message
    _write_set(root, "small", {})  # the worker goes on
    (ok,) = await _run_all(
        api_settings, stub, [(await stub.CreatePrototypeJob(_request("small", 6))).job.name]
    )
    assert ok.state == job_pb2.JOB_STATE_SUCCEEDED, ok.error
