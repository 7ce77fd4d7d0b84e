"""The registry against a real local MLflow store (SQLite backend, file artifacts)."""

from pathlib import Path

import pytest
import torch
from torch import nn

from flywheel.errors import InvalidInputError, NotFoundError
from flywheel.learn.registry import CHALLENGER, CHAMPION, ModelRegistry


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "test-exp",
        "test-model",
        (tmp_path / "artifacts").as_uri(),
    )


def train_and_register(registry: ModelRegistry, bias: float) -> str:
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.bias.fill_(bias)
    with registry.run("cycle", {"bias": bias}):
        registry.log_metrics({"accuracy": bias}, step=0)
        return registry.log_model(model, {"bias": str(bias)}).version


def test_register_promote_load_rollback(registry: ModelRegistry) -> None:
    assert registry.champion() is None
    v1 = train_and_register(registry, 1.0)
    assert registry.get(CHALLENGER).version == v1
    registry.promote(v1, "first")
    v2 = train_and_register(registry, 2.0)
    assert registry.get(CHALLENGER).version == v2  # the alias moved to the newest model
    assert registry.champion().version == v1  # registering never promotes by itself
    registry.promote(v2, "better")
    assert registry.champion().version == v2
    loaded = registry.load(CHAMPION)
    assert torch.allclose(loaded.bias, torch.tensor([2.0, 2.0]))
    assert registry.get(v2).tags["flywheel.promoted_because"] == "better"

    assert registry.rollback().version == v1
    assert registry.champion().version == v1
    assert torch.allclose(registry.load().bias, torch.tensor([1.0, 1.0]))
    with pytest.raises(InvalidInputError, match="nothing to roll back"):
        registry.rollback()
    listed = registry.versions()
    assert [m.version for m in listed] == [v1, v2]
    assert listed[0].aliases == (CHAMPION,) and listed[1].aliases == (CHALLENGER,)
    run_id = registry.get(v1).run_id
    assert registry.client.get_run(run_id).data.metrics["accuracy"] == 1.0


def test_bad_references(registry: ModelRegistry) -> None:
    with pytest.raises(NotFoundError):
        registry.get("7")
    with pytest.raises(NotFoundError):
        registry.promote("champion")
    v1 = train_and_register(registry, 0.5)
    registry.promote(v1)
    with pytest.raises(InvalidInputError, match="already the champion"):
        registry.promote(v1)


@pytest.mark.integration
def test_against_a_real_tracking_server(tmp_path: Path) -> None:
    """The distributed setting: an ``mlflow server`` process, artifacts served through it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import httpx

    from tests.workers.conftest import free_port

    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
            "--serve-artifacts", "--artifacts-destination", str(tmp_path / "served"),
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None and time.monotonic() < deadline, "server did not start"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        registry = ModelRegistry(
            f"http://127.0.0.1:{port}", "exp", "model", "mlflow-artifacts:/flywheel"
        )
        v1 = train_and_register(registry, 1.0)
        registry.promote(v1, "first")
        assert registry.champion().version == v1
        assert registry.load().bias.tolist() == [1.0, 1.0]
        assert any((tmp_path / "served").rglob("*")), "artifacts went through the server"
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(30)
