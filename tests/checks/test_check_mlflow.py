"""MLflow registry as a model source, against a real local MLflow store (file backend in a
tmp dir): ``models:/NAME/VERSION`` loads the registered .pt2 with the same digest as the
model store's copy, so a check through MLflow reuses the store check's cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from checks_serving import check_settings
from checks_shortcut_models import CONFIG, POLICY
from protolens_server.checks import run_check
from protolens_server.errors import InvalidArgument, InvalidModel, ModelNotFound
from protolens_server.models import ModelCatalog, load_model
from protolens_server.models.inspection import InspectionLimits, Inspector

mlflow = pytest.importorskip("mlflow", reason="pip install 'protolens[registry]'")


@pytest.fixture(scope="module")
def registry(shapes_store: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("mlflow")
    uri = (root / "mlruns").as_uri()
    for var, value in (
        ("MLFLOW_TRACKING_URI", uri),
        ("MLFLOW_REGISTRY_URI", uri),
        ("MLFLOW_ALLOW_FILE_STORE", "true"),  # the file backend is enough for a test store
    ):
        mp.setenv(var, value)
    client = mlflow.MlflowClient()
    client.create_registered_model("shapes")
    mlflow.set_experiment("protolens-checks")
    for version in ("1", "2"):
        with mlflow.start_run() as run:
            mlflow.log_artifacts(str(shapes_store / "shapes" / version), "model")
        client.create_model_version(
            "shapes", f"{run.info.artifact_uri}/model", run_id=run.info.run_id
        )
    with mlflow.start_run() as run:  # a pickled module only: refused, never unpickled
        pickled = root / "pickled"
        pickled.mkdir()
        (pickled / "model.pth").write_bytes(b"not unpickled")
        mlflow.log_artifacts(str(pickled), "model")
    client.create_model_version("shapes", f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    yield uri
    mp.undo()


def test_mlflow_version_loads_with_the_store_digest(registry, catalog) -> None:
    handle = load_model("models:/shapes/1")
    assert handle.source == "mlflow:models:/shapes/1"
    assert handle.name == "shapes@1"
    assert handle.class_names == ("disc", "bars", "cross", "ring")
    assert handle.digest == catalog.describe("shapes@1").digest
    assert load_model("models:/shapes/2").digest == catalog.describe("shapes@2").digest


def test_check_through_mlflow_reuses_the_store_check_cache(registry, catalog, tmp_path) -> None:
    store = run_check(
        "shapes@2",
        baseline="shapes@1",
        catalog=catalog,
        config=CONFIG,
        policy=POLICY,
        cache_dir=tmp_path,
    )
    via_mlflow = run_check(
        "models:/shapes/2",
        baseline="models:/shapes/1",
        config=CONFIG,
        policy=POLICY,
        cache_dir=tmp_path,
    )
    assert via_mlflow.generation.generated == 0
    assert not via_mlflow.passed and "bars" in via_mlflow.to_dict()["flagged_classes"]
    assert via_mlflow.model.source == "mlflow:models:/shapes/2"
    assert [c.drift for c in via_mlflow.classes] == [c.drift for c in store.classes]


def test_mlflow_bad_versions(registry) -> None:
    with pytest.raises(ModelNotFound, match="models:/shapes/7"):
        load_model("models:/shapes/7")
    with pytest.raises(InvalidModel, match="does not unpickle"):
        load_model("models:/shapes/3")


def test_catalog_serves_mlflow_versions_through_the_inspection_child(
    registry, shapes_store, catalog
) -> None:
    served = ModelCatalog(
        shapes_store,
        builtins=False,
        inspector=Inspector(InspectionLimits(120.0)),
        mlflow_tracking_uri=registry,
    )
    info = served.show("models:/shapes/2")
    assert info.usable, info.unusable_reason
    assert info.name == "models:/shapes/2" and info.version == "2"
    assert info.digest == catalog.describe("shapes@2").digest  # same weights, same cache keys
    handle = served.load("models:/shapes/2")
    assert handle.digest == info.digest and handle.source == "mlflow:models:/shapes/2"
    bad = served.show("models:/shapes/3")  # a pickle only: UNUSABLE, never unpickled
    assert not bad.usable and "does not unpickle" in bad.unusable_reason
    with pytest.raises(ModelNotFound):
        served.show("models:/shapes/9")
    assert served.previous("models:/shapes/2") == "models:/shapes/1"
    assert served.previous("models:/shapes/3") == "models:/shapes/2"
    with pytest.raises(ModelNotFound, match="first"):
        served.previous("models:/shapes/1")
    with pytest.raises(InvalidArgument, match="no MLflow registry"):
        catalog.show("models:/shapes/1")  # a catalog without mlflow_tracking_uri


def test_store_previous_versions(catalog) -> None:
    assert catalog.previous("shapes@2") == "shapes@1"
    assert catalog.previous("shapes") == "shapes@2"  # the latest is shapes@3
    with pytest.raises(ModelNotFound, match="first version"):
        catalog.previous("shapes@1")


def test_check_previous_through_mlflow_without_a_store(registry, catalog, tmp_path) -> None:
    result = run_check(
        "models:/shapes/2", baseline="previous", config=CONFIG, policy=POLICY, cache_dir=tmp_path
    )
    assert result.baseline is not None and result.baseline.ref == "models:/shapes/1"
    assert result.baseline.source == "mlflow:models:/shapes/1"


async def test_start_check_on_mlflow_versions_with_previous_baseline(
    registry, shapes_store, redis_url
) -> None:
    """StartCheck over real gRPC names MLflow versions: the API resolves "previous" in the
    registry, a real worker downloads and loads each version (after its inspection)."""
    import asyncio

    from protolens import AsyncClient
    from protolens_server.api.server import start_server
    from protolens_server.api.tenancy import default_tenant
    from protolens_server.worker import Worker

    settings = check_settings(redis_url, shapes_store, mlflow_tracking_uri=registry)
    api, port = await start_server(settings, sample_interval_s=0.2, tenant_resolver=default_tenant)
    worker = Worker(settings, name="w-mlflow", block_ms=100)
    task = asyncio.create_task(worker.run())
    try:
        async with AsyncClient(f"127.0.0.1:{port}") as client:
            model = await client.get_model("models:/shapes/2")  # described like a store model
            for _ in range(120):  # INSPECTING until its inspection child has loaded it
                if model.state != "INSPECTING":
                    break
                await asyncio.sleep(0.5)
                model = await client.get_model("models:/shapes/2")
            assert model.usable, model.unusable_reason
            assert model.source == "mlflow:models:/shapes/2"
            job = await client.create_prototype_job(
                "models:/shapes/1", ["disc"], config={"steps": 4, "start": "constant"}
            )
            job = await client.wait(job, timeout=120)
            assert job.state == "SUCCEEDED", job.error
            assert job.model == "models:/shapes/1"
            check = await client.start_check(
                "models:/shapes/2",
                baseline="previous",
                classes=["disc", "bars"],
                steps=8,
                prototypes=1,
                config={"transforms": "small"},
            )
            assert check.model == "models:/shapes/2" and check.baseline == "models:/shapes/1"
            done = await client.wait_check(check, timeout=180)
            assert done.state == "SUCCEEDED", done.error
            doc = json.loads((await client.get_check_report(done)).json)
            assert doc["baseline"]["source"] == "mlflow:models:/shapes/1"
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 30)
        await api.stop(grace=0)
