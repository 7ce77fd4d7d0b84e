from pathlib import Path

import pytest
from pydantic import ValidationError

from flywheel.config import Settings, SettingsError, load_settings
from flywheel.errors import InvalidInputError

REPO = Path(__file__).resolve().parents[2]


def test_default_yaml_mirrors_embedded_defaults() -> None:
    assert load_settings(REPO / "configs" / "default.yaml").model_dump() == Settings().model_dump()


def test_derived_locations_follow_data_dir(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    assert s.database_url == f"sqlite:///{tmp_path.resolve() / 'flywheel.db'}"
    assert s.storage_root == str(tmp_path.resolve() / "store")
    assert s.mlflow_tracking_uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert s.mlflow_artifact_location == (tmp_path / "mlartifacts").resolve().as_uri()
    assert s.broker.url is None


def test_precedence_kwargs_over_env_over_yaml(tmp_path: Path, monkeypatch) -> None:
    cfg = tmp_path / "profile.yaml"
    cfg.write_text(
        "data_dir: from-yaml\nmlflow:\n  experiment: yaml-exp\nbroker:\n  url: redis://y\n"
    )
    monkeypatch.setenv("FLYWHEEL_CONFIG", str(cfg))
    monkeypatch.setenv("FLYWHEEL_MLFLOW__EXPERIMENT", "env-exp")
    s = load_settings()
    assert s.data_dir == Path("from-yaml")  # yaml beats default
    assert s.mlflow.experiment == "env-exp"  # env beats yaml (nested with __)
    assert s.broker.url == "redis://y"
    assert load_settings(data_dir=Path("cli")).data_dir == Path("cli")  # kwargs beat all


def test_explicit_config_beats_env_var_choice(tmp_path: Path, monkeypatch) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("data_dir: a\n")
    b.write_text("data_dir: b\n")
    monkeypatch.setenv("FLYWHEEL_CONFIG", str(a))
    assert load_settings(b).data_dir == Path("b")


def test_bad_config_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="not found"):
        load_settings(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data_dir: [unclosed\n")
    with pytest.raises(InvalidInputError, match="not valid YAML"):
        load_settings(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("databse:\n  url: x\n")
    with pytest.raises(SettingsError, match=r"setting databse .*Extra inputs are not permitted"):
        load_settings(typo)


def test_invalid_values_are_rejected() -> None:
    with pytest.raises(ValidationError):
        Settings(ingest={"batch_size": 0})
