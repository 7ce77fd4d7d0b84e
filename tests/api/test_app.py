"""Process-wide tuning the app applies while it serves."""

from __future__ import annotations

import gc

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from flywheel.config import Settings


@pytest.mark.parametrize("freeze", [True, False])
def test_start_up_heap_is_frozen_while_serving(api_settings: Settings, freeze: bool) -> None:
    settings = api_settings.model_copy(
        update={"api": api_settings.api.model_copy(update={"freeze_heap": freeze})}
    )
    assert gc.get_freeze_count() == 0
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        assert (gc.get_freeze_count() > 0) is freeze
    assert gc.get_freeze_count() == 0  # stopped: the heap is collectable again
