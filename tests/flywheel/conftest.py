"""Fixtures for tests that run cycles: tiny learning settings, their workspace, registry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flywheel.config import Settings
from flywheel.learn.registry import ModelRegistry
from flywheel.workspace import Workspace, open_workspace
from tests.flywheel.cycle.test_runner import TINY


@pytest.fixture
def tiny_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"learning": settings.learning.model_copy(update=TINY)})


@pytest.fixture
def ws(tiny_settings: Settings) -> Iterator[Workspace]:
    workspace = open_workspace(tiny_settings)
    yield workspace
    workspace.close()


@pytest.fixture
def registry(tiny_settings: Settings) -> ModelRegistry:
    return ModelRegistry.from_settings(tiny_settings)
