"""MLflow knows what data trained a model: the cycle's run has its dataset version as an
input (the manifest as source, the version id as digest), the registered model is tagged
with it, and the SSL loss of every epoch is logged. Real MLflow store, real tiny cycle."""

from __future__ import annotations

import json

from flywheel.cycle.runner import run_cycle
from flywheel.cycle.state import load_cycle
from tests.flywheel.cycle.test_runner import ingest_digits


def test_a_cycle_s_run_names_the_dataset_version_that_trained_its_model(ws, registry) -> None:
    ingest_digits(ws, 200)
    result = run_cycle(ws, registry, ws.settings.learning)
    version = ws.versions.resolve(result.dataset_version)
    run = registry.client.get_run(load_cycle(ws, result.cycle_id).mlflow_run_id)

    (given,) = run.inputs.dataset_inputs
    assert given.dataset.name == version.id
    assert version.id.startswith(given.dataset.digest) and len(given.dataset.digest) == 36
    assert ws.versions.resolve(given.dataset.digest).id == version.id  # the prefix resolves
    assert json.loads(given.dataset.source)["uri"] == version.manifest_uri
    assert [t.value for t in given.tags if t.key == "mlflow.data.context"] == ["training"]

    assert registry.get(result.model_version).tags["dataset_version"] == version.id
    losses = registry.client.get_metric_history(run.info.run_id, "ssl_loss")
    assert [m.step for m in losses] == list(range(1, ws.settings.learning.ssl_epochs + 1))
    assert all(m.value > 0 for m in losses)
