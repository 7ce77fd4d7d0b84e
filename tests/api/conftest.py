"""API fixtures: a real app over a real workspace (SQLite or PostgreSQL) and MLflow store.

Registering models in MLflow costs seconds, so one store with two small registered
models (v1 champion, v2 challenger) is built once per session and copied per test.
"""

from __future__ import annotations

import functools
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient

from api.app import create_app
from flywheel.config import Settings
from flywheel.serve.api_keys import create_key
from flywheel.store.ingest import SplitPlan, ingest_candidates
from flywheel.store.ingest_sources import digits_candidates
from flywheel.workspace import Workspace, open_workspace

CLASSES = [str(d) for d in range(10)]
MEMORY_ROOT = "memory://flywheel-test"


@dataclass(frozen=True)
class ModelStore:
    tracking_uri: str
    artifacts: str
    db_file: Path


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    """An MLflow store with v1 (champion) and v2 (challenger): small untrained CNNs."""
    import torch

    from flywheel.learn.backbones import Classifier, build_backbone
    from flywheel.learn.registry import ModelRegistry

    root = tmp_path_factory.mktemp("mlflow")
    registry = ModelRegistry(
        f"sqlite:///{root / 'mlflow.db'}",
        "flywheel",
        "flywheel-classifier",
        (root / "mlartifacts").as_uri(),
    )
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = Classifier(build_backbone("small_cnn", 1, None, width=4), len(CLASSES))
        with registry.run(f"fixture-{seed}", {"seed": seed}):
            registry.log_model(model, {"classes": ",".join(CLASSES), "cycle_id": "0"})
    registry.promote("1", "fixture")
    return ModelStore(registry.tracking_uri, registry.artifact_location, root / "mlflow.db")


def api_settings_for(data_dir: Path, db_url: str, store: ModelStore, **api: object) -> Settings:
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(store.db_file, data_dir / "mlflow.db")
    return Settings(
        data_dir=data_dir,
        database={"url": db_url},
        mlflow={
            "tracking_uri": f"sqlite:///{data_dir / 'mlflow.db'}",
            "artifact_location": store.artifacts,
        },
        # Tests see revocations and promotions at once. No heap freeze: every app start
        # would pay a full collection of the suite's heap (it has its own test).
        api={"auth_cache_seconds": 0, "champion_refresh_seconds": 0, "freeze_heap": False, **api},
        # Tests register URIs from fsspec's in-process memory filesystem, under this root.
        ingest={"uri_roots": [MEMORY_ROOT]},
    )


@pytest.fixture
def api_settings(tmp_path: Path, db_url: str, model_store: ModelStore) -> Settings:
    return api_settings_for(tmp_path / "data", db_url, model_store)


@pytest.fixture
def api_workspace(api_settings: Settings) -> Iterator[Workspace]:
    """200 real digits: 3 seed labels per class, 20 % test split, the rest pool."""
    ws = open_workspace(api_settings)
    add_digits(ws)
    yield ws
    ws.close()


# Encoding the 1,797 PNGs once per session, not once per test (candidates are read-only).
_digits = functools.cache(digits_candidates)


def add_digits(ws: Workspace, n: int = 200) -> None:
    ingest_candidates(
        ws.db,
        ws.blobs,
        _digits()[:n],
        "digits",
        ws.settings.ingest,
        SplitPlan(labels_per_class=3, test_fraction=0.2, seed=0),
    )


@dataclass(frozen=True)
class Keys:
    app: str
    engineer: str
    other_app: str  # a second tenant's app key
    revoked: str


@pytest.fixture
def keys(api_workspace: Workspace) -> Keys:
    from flywheel.serve.api_keys import revoke_key

    db = api_workspace.db
    revoked_info, revoked = create_key(db, "app", "shop", "to revoke")
    revoke_key(db, revoked_info.id)
    return Keys(
        app=create_key(db, "app", "shop", "shop app")[1],
        engineer=create_key(db, "engineer", "ml", "ml team")[1],
        other_app=create_key(db, "app", "other", "other app")[1],
        revoked=revoked,
    )


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def client(api_settings: Settings, api_workspace: Workspace) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings), raise_server_exceptions=False) as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class LiveServer:
    url: str
    settings: Settings


@contextmanager
def serve_in_thread(app: object) -> Iterator[str]:
    """Run ``app`` under a real uvicorn on 127.0.0.1 (a thread); yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")  # type: ignore[arg-type]
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def live_server(api_settings: Settings, api_workspace: Workspace) -> Iterator[LiveServer]:
    """The real app under uvicorn on 127.0.0.1 (a thread of the test process)."""
    with serve_in_thread(create_app(api_settings)) as url:
        yield LiveServer(url, api_settings)
