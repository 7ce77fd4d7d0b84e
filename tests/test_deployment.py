"""The deployment files are consistent with each other and with the settings model."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from flywheel.config import load_settings
from workers.app import beat_schedule

REPO = Path(__file__).resolve().parents[1]
COMPOSE_CONFIG = "/app/configs/compose.yaml"  # where configs/Dockerfile copies configs/
FLYWHEEL_ROLES = ("api", "worker-cpu", "worker-gpu", "beat")  # long-running, our image
ONE_SHOT = {"flywheel"}  # `init` then exit; `docker compose run --rm flywheel <command>`


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def _command(service: dict[str, Any]) -> str:
    command = service["command"]
    return command if isinstance(command, str) else " ".join(command)


def test_compose_file_is_valid(compose: dict[str, Any], services: dict[str, Any]) -> None:
    assert {
        "redis",
        "postgres",
        "mlflow",
        "flywheel",
        "api",
        "worker-cpu",
        "worker-gpu",
        "beat",
    } <= set(services)
    assert "--queues" in services["worker-gpu"]["command"]
    gpu = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    redis = services["redis"]["command"]
    assert redis[redis.index("--appendonly") + 1] == "yes"  # the broker keeps its queue (AOF)
    for name, service in services.items():
        for dep, cond in service.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if dep in ONE_SHOT:
                assert cond == {"condition": "service_completed_successfully"}, (name, dep)
            else:
                assert cond == {"condition": "service_healthy"}, (name, dep)
                assert "healthcheck" in services[dep], dep
        if name not in ONE_SHOT:
            assert "healthcheck" in service, f"{name} has no healthcheck"
            assert service.get("restart") in {"always", "unless-stopped"}, name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), source
            else:
                assert source in compose["volumes"], source
    dockerfile = services["flywheel"]["build"]["dockerfile"]
    assert (REPO / dockerfile).is_file()
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        subprocess.run(["docker", "compose", "config", "-q"], cwd=REPO, check=True)


def test_flywheel_roles_share_image_config_and_data(services: dict[str, Any]) -> None:
    """API, workers and beat: the same image, the compose profile, the same data volume,
    and they start on healthy backing services after the one-shot migration."""
    for name in FLYWHEEL_ROLES:
        service = services[name]
        assert service["build"] == services["flywheel"]["build"], name
        assert service["environment"]["FLYWHEEL_CONFIG"] == COMPOSE_CONFIG, name
        assert service["volumes"] == services["worker-gpu"]["volumes"], name
        assert {"redis", "postgres", "mlflow", "flywheel"} <= set(service["depends_on"]), name
    assert _command(services["flywheel"]) == "init"
    assert services["flywheel"]["restart"] == "no"


def test_beat_service(services: dict[str, Any], tmp_path: Path) -> None:
    beat = services["beat"]
    assert beat["command"] == ["beat"]
    assert beat["depends_on"]["redis"] == {"condition": "service_healthy"}
    assert beat["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert "deploy" not in beat  # exactly one beat per deployment: no replicas, no GPU
    # The healthcheck passes on a freshly synced schedule file and fails on a stale or
    # missing one (run here with /data pointed at a temp folder).
    test = beat["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"] and test[2] == "-c"
    code = test[3].replace("/data/", f"{tmp_path}/")

    def check() -> int:
        return subprocess.run([sys.executable, "-c", code], timeout=30).returncode

    assert check() == 1  # no schedule file yet
    schedule = tmp_path / "celerybeat-schedule.dat"
    schedule.write_bytes(b"x")
    assert check() == 0
    old = time.time() - 3600
    os.utime(schedule, (old, old))
    assert check() == 1


def test_workers_requeue_on_stop(services: dict[str, Any]) -> None:
    """A stopped worker (cold shutdown) hands its task back at once, not after the
    visibility timeout."""
    for name in ("worker-cpu", "worker-gpu"):
        assert services[name]["stop_signal"] == "SIGQUIT", name
        queues = services[name]["command"][services[name]["command"].index("--queues") + 1]
        assert queues == name.removeprefix("worker-")


def test_mlflow_server_on_postgres_with_artifact_volume(services: dict[str, Any]) -> None:
    mlflow = services["mlflow"]
    command = _command(mlflow)
    assert "--backend-store-uri postgresql://" in command
    assert "@postgres:5432/mlflow" in command
    assert "--artifacts-destination /mlartifacts" in command
    assert "mlflow-artifacts:/mlartifacts" in mlflow["volumes"]
    assert mlflow["depends_on"]["postgres"] == {"condition": "service_healthy"}
    # The clients reach it as mlflow:5000; the server must accept that Host header.
    allowed = command.split("--allowed-hosts")[1].split()[0].strip('"').split(",")
    assert "mlflow:5000" in allowed


def test_compose_profile_matches_the_services(services: dict[str, Any]) -> None:
    settings = load_settings(REPO / "configs" / "compose.yaml")
    assert settings.broker.url == services["worker-cpu"]["environment"]["FLYWHEEL_BROKER__URL"]
    broker = urlparse(settings.broker.url)
    assert broker.scheme == "redis" and broker.hostname == "redis"
    assert urlparse(settings.database_url).hostname == "postgres"
    tracking = urlparse(settings.mlflow_tracking_uri)
    assert tracking.hostname == "mlflow"
    assert f"{tracking.port}:{tracking.port}" in services["mlflow"]["ports"]
    assert settings.mlflow_artifact_location.startswith("mlflow-artifacts:/")
    assert str(settings.data_dir) == "/data"
    assert any(v.endswith(":/data") for v in services["beat"]["volumes"])
    assert settings.api.host == "0.0.0.0"
    # Beat's schedule: the outbox relay, and a cycle per triggers.feedback_count items.
    assert settings.triggers.feedback_count > 0
    relay = beat_schedule(settings)["relay-outbox"]
    assert relay["schedule"].total_seconds() == settings.cycles.relay_interval_s
    # The commented nightly schedule is a valid crontab for beat.
    nightly = settings.model_copy(
        update={"triggers": settings.triggers.model_copy(update={"schedule_cron": "0 3 * * *"})}
    )
    assert "scheduled-cycle" in beat_schedule(nightly)
    assert "0 3 * * *" in (REPO / "configs" / "compose.yaml").read_text()
    # A task must finish within the visibility timeout, or Redis delivers it twice.
    assert settings.broker.visibility_timeout_s >= 3600
    assert settings.cycles.heartbeat_s < settings.cycles.lease_s


@pytest.mark.parametrize("profile", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_every_profile_loads(profile: str) -> None:
    settings = load_settings(REPO / "configs" / profile)
    assert settings.database_url
