"""MLflow: one run per cycle, and a model registry moved by aliases.

Every trained model is registered and gets the ``challenger`` alias; ``champion`` moves
only through :meth:`ModelRegistry.promote` (the gate's decision, or an engineer), and each
move is appended to a history tag on the registered model so that ``rollback`` can return
to the previous champion. Serving loads ``models:/<name>@champion``. Registry stages are
deprecated in MLflow; aliases are the supported way.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from torch import nn

from flywheel.config import Settings, apply_library_environment
from flywheel.errors import InvalidInputError, NotFoundError

CHAMPION = "champion"
DATASET_VERSION_TAG = "dataset_version"  # a model version's training data (and its run's)
MLFLOW_DIGEST_CHARS = 36  # the longest dataset digest MLflow's stores keep
CHALLENGER = "challenger"
HISTORY_TAG = "flywheel.champion_history"
CLASSES_TAG = "classes"  # the model's output classes in order, comma-separated


def classes_tag(classes: Sequence[str]) -> dict[str, str]:
    """The tag that records a model's classes (read back by ``ModelVersion.classes``)."""
    return {CLASSES_TAG: ",".join(classes)}


def classes_of(tags: Mapping[str, str]) -> tuple[str, ...]:
    """A model's output classes in order, from its tags; empty when the tag is missing."""
    return tuple(c for c in tags.get(CLASSES_TAG, "").split(",") if c)


@dataclass(frozen=True)
class ModelVersion:
    version: str
    run_id: str | None
    aliases: tuple[str, ...]
    tags: dict[str, str]
    created_at: datetime

    @property
    def classes(self) -> tuple[str, ...]:
        return classes_of(self.tags)

    def predicts(self, classes: Sequence[str]) -> bool:
        """True when the model's outputs are exactly ``classes``, in order: only then are
        its probabilities comparable with a cycle's."""
        return self.tags.get(CLASSES_TAG) == ",".join(classes)


def _to_info(mv: Any) -> ModelVersion:
    return ModelVersion(
        version=str(mv.version),
        run_id=mv.run_id,
        aliases=tuple(sorted(mv.aliases or ())),
        tags=dict(mv.tags or {}),
        created_at=datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC),
    )


class ModelRegistry:
    def __init__(
        self, tracking_uri: str, experiment: str, model_name: str, artifact_location: str
    ) -> None:
        apply_library_environment()
        # The pickle format is chosen on purpose (see log_model); MLflow's per-call warning
        # about it, and its schema-migration chatter, would drown the CLI's own output.
        logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
        logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.model_name = model_name
        self.artifact_location = artifact_location
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRegistry:
        return cls(
            settings.mlflow_tracking_uri,
            settings.mlflow.experiment,
            settings.mlflow.model_name,
            settings.mlflow_artifact_location,
        )

    # --- runs ----------------------------------------------------------------------
    def _experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            return exp.experiment_id
        try:
            return self.client.create_experiment(
                self.experiment, artifact_location=self.artifact_location
            )
        except MlflowException:  # created concurrently by another process
            return self.client.get_experiment_by_name(self.experiment).experiment_id

    @contextmanager
    def run(
        self, run_name: str, params: dict[str, Any], tags: dict[str, str] | None = None
    ) -> Iterator[str]:
        """An active MLflow run (the fluent API needs one for ``log_model``); yields its id."""
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        with mlflow.start_run(
            experiment_id=self._experiment_id(), run_name=run_name, tags=tags
        ) as active:
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
            yield active.info.run_id

    def end_run(self, run_id: str, status: str = "KILLED") -> None:
        """Close a run an interrupted process left open (no-op if it already ended)."""
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return
        if run.info.status == "RUNNING":
            self.client.set_terminated(run_id, status)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        mlflow.log_artifact(str(path), artifact_path=folder)

    def log_dict(self, data: dict[str, Any], name: str) -> None:
        mlflow.log_dict(data, name)

    def log_dataset_input(self, manifest_uri: str, version_id: str, context: str) -> None:
        """Dataset version ``version_id`` as an input of the active run: MLflow's UI then
        shows which data trained which model. The source is the manifest; the digest is the
        version id, cut to the 36 characters MLflow stores (a prefix that still resolves)."""
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        with warnings.catch_warnings():  # a file:// URI matches two equivalent source kinds
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(manifest_uri)
        dataset = MetaDataset(source, name=version_id, digest=version_id[:MLFLOW_DIGEST_CHARS])
        mlflow.log_input(dataset, context=context)

    def log_model(self, model: nn.Module, tags: dict[str, str]) -> ModelVersion:
        """Log ``model`` in the active run, register it and make it the challenger."""
        info = mlflow.pytorch.log_model(
            model.cpu().eval(),
            name="model",
            # Pickle keeps the module's Python class; the pt2 export needs traced inputs.
            serialization_format="pickle",
            pip_requirements=["torch", "torchvision"],
        )
        self._ensure_registered()
        # model_id names the logged model the source belongs to: a tracking server refuses
        # a ``models:/`` source without it (the local store does not check).
        mv = self.client.create_model_version(
            self.model_name, info.model_uri, run_id=info.run_id, tags=tags, model_id=info.model_id
        )
        self.client.set_registered_model_alias(self.model_name, CHALLENGER, mv.version)
        return self.get(str(mv.version))

    def _ensure_registered(self) -> None:
        try:
            self.client.get_registered_model(self.model_name)
        except MlflowException:
            with suppress(MlflowException):  # registered concurrently
                self.client.create_registered_model(self.model_name)

    # --- registry ------------------------------------------------------------------
    def versions(self) -> list[ModelVersion]:
        found = self.client.search_model_versions(f"name='{self.model_name}'")
        if not found:
            return []
        # Search results leave ``aliases`` empty on some stores; the model's map is complete.
        aliases = self.client.get_registered_model(self.model_name).aliases or {}
        by_version: dict[str, list[str]] = {}
        for alias, version in aliases.items():
            by_version.setdefault(str(version), []).append(alias)
        infos = [_to_info(mv) for mv in found]
        infos = [
            ModelVersion(
                m.version,
                m.run_id,
                tuple(sorted(by_version.get(m.version, []))),
                m.tags,
                m.created_at,
            )
            for m in infos
        ]
        return sorted(infos, key=lambda m: int(m.version))

    def get(self, ref: str) -> ModelVersion:
        """``ref`` is a version number or an alias (``champion``, ``challenger``)."""
        try:
            if ref.isdigit():
                return _to_info(self.client.get_model_version(self.model_name, ref))
            return _to_info(self.client.get_model_version_by_alias(self.model_name, ref))
        except MlflowException:
            raise NotFoundError(f"no model {ref!r} in registry {self.model_name!r}") from None

    def champion(self) -> ModelVersion | None:
        try:
            return self.get(CHAMPION)
        except NotFoundError:
            return None

    def latest(self) -> ModelVersion | None:
        """The newest registered model (the ``challenger``), promoted or not."""
        try:
            return self.get(CHALLENGER)
        except NotFoundError:
            return None

    def load(self, ref: str = CHAMPION) -> nn.Module:
        version = self.get(ref).version
        mlflow.set_registry_uri(self.tracking_uri)
        mlflow.set_tracking_uri(self.tracking_uri)
        return mlflow.pytorch.load_model(f"models:/{self.model_name}/{version}").eval()

    def _history(self) -> list[str]:
        try:
            tags = self.client.get_registered_model(self.model_name).tags
        except MlflowException:
            return []
        return json.loads(tags.get(HISTORY_TAG, "[]"))

    def promote(self, ref: str, reason: str = "manual") -> ModelVersion:
        target = self.get(ref)
        current = self.champion()
        if current is not None and current.version == target.version:
            raise InvalidInputError(f"model version {target.version} is already the champion")
        history = [*self._history(), target.version]
        self.client.set_registered_model_alias(self.model_name, CHAMPION, target.version)
        self.client.set_registered_model_tag(self.model_name, HISTORY_TAG, json.dumps(history))
        self.client.set_model_version_tag(
            self.model_name, target.version, "flywheel.promoted_because", reason[:500]
        )
        return self.get(target.version)

    def rollback(self) -> ModelVersion:
        """Make the previous champion the champion again."""
        history = self._history()
        if len(history) < 2:
            raise InvalidInputError("nothing to roll back to: there was no earlier champion")
        previous = history[-2]
        self.client.set_registered_model_alias(self.model_name, CHAMPION, previous)
        self.client.set_registered_model_tag(self.model_name, HISTORY_TAG, json.dumps(history[:-1]))
        return self.get(previous)
