"""The deployment files are consistent with each other and with the settings model."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from flywheel.config import load_settings

REPO = Path(__file__).resolve().parents[1]


def test_compose_file_is_valid() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "postgres", "mlflow", "flywheel", "api", "worker-cpu", "worker-gpu"} <= set(
        services
    )
    assert "--queues" in services["worker-gpu"]["command"]
    gpu = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert "--appendonly" in services["redis"]["command"]  # the broker keeps its queue
    for name, service in services.items():
        for dep, cond in service.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert cond == {"condition": "service_healthy"}
            assert "healthcheck" in services[dep]
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


@pytest.mark.parametrize("profile", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_every_profile_loads(profile: str) -> None:
    settings = load_settings(REPO / "configs" / profile)
    assert settings.database_url
