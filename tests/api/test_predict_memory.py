"""A 6000x6000 upload to ``/v1/predict`` costs a real server little memory (issue 11, section 4).

Before, the model ran at the upload's full resolution (about 620 bytes a pixel: 22 GB for
this input). The server is a ``flywheel serve`` process of its own, so its peak memory is
read from the kernel (VmHWM, reset through clear_refs) and nothing else in the test counts.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image

from flywheel.config import IngestSettings
from flywheel.serve.api_keys import create_key
from flywheel.workspace import open_workspace
from tests.api.conftest import ModelStore, api_settings_for, auth, free_port
from tests.endpoints import wait_until_healthy

pytestmark = pytest.mark.integration

LIMIT_MB = 100


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for process {pid}")


def gradient(size: int, fmt: str) -> bytes:
    """A size x size RGB gradient: cheap to encode, and it compresses to little."""
    ramp = np.linspace(0, 255, size, dtype=np.uint8)
    rgb = np.stack(
        [
            np.broadcast_to(ramp, (size, size)),
            np.broadcast_to(ramp[:, None], (size, size)),
            np.full((size, size), 90, np.uint8),
        ],
        axis=-1,
    )
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, model_store: ModelStore
) -> Iterator[tuple[str, str, int]]:
    """``flywheel serve`` over a workspace with a champion: (base URL, app key, pid)."""
    tmp_path = tmp_path_factory.mktemp("serve")
    settings = api_settings_for(
        tmp_path / "data", f"sqlite:///{tmp_path / 'flywheel.db'}", model_store
    )
    config = tmp_path / "settings.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(settings.data_dir),
                "database": {"url": settings.database.url},
                "mlflow": settings.mlflow.model_dump(mode="json"),
                "api": {"champion_refresh_seconds": 0},
            }
        )
    )
    ws = open_workspace(settings)
    token = create_key(ws.db, "app", "shop", "memory test")[1]
    ws.close()
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flywheel.cli",
            "--config",
            str(config),
            "serve",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, proc, 120)
        yield base, token, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_6000x6000_upload_stays_under_100_mb(server, fmt: str) -> None:
    base, token, pid = server
    data = gradient(6000, fmt)
    assert len(data) < IngestSettings().max_image_bytes  # an upload the server must accept

    def predict(image: bytes) -> httpx.Response:
        files = {"file": (f"x.{fmt.lower()}", image, f"image/{fmt.lower()}")}
        return httpx.post(f"{base}/v1/predict", files=files, headers=auth(token), timeout=300)

    for seed in range(2):  # load the champion and warm every lazy import first
        assert predict(gradient(64 + seed, fmt)).status_code == 201
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak (VmHWM) restarts from now
    before = _status_kb(pid, "VmRSS")
    r = predict(data)
    assert r.status_code == 201, r.text
    growth_mb = (_status_kb(pid, "VmHWM") - before) / 1024
    assert growth_mb < LIMIT_MB, f"peak memory grew {growth_mb:.0f} MB for one 6000x6000 input"
