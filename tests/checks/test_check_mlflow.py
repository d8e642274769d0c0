"""MLflow registry as a model source, against a real local MLflow store (file backend in a
tmp dir): ``models:/NAME/VERSION`` loads the registered .pt2 with the same digest as the
model store's copy, so a check through MLflow reuses the store check's cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from checks_shortcut_models import CONFIG, POLICY
from protolens_server.checks import run_check
from protolens_server.errors import InvalidModel, ModelNotFound
from protolens_server.models import load_model

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
