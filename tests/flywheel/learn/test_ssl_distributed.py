"""SSL with DistributedDataParallel, launched the standard way (torchrun), on CPU with the
gloo backend and 2 processes."""

import subprocess
import sys
from pathlib import Path

import torch

from tests.endpoints import free_port

JOB = Path(__file__).with_name("ddp_ssl_job.py")


def torchrun(out: Path) -> None:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        f"--master_port={free_port()}", "--master_addr=127.0.0.1", str(JOB), str(out),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_processes_train_one_model_and_write_one_checkpoint(tmp_path: Path) -> None:
    torchrun(tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert ranks[0]["world"] == 2
    for key, value in ranks[0]["backbone"].items():  # DDP kept the replicas identical
        assert torch.equal(value, ranks[1]["backbone"][key]), key
    assert ranks[0]["losses"] == ranks[1]["losses"] and len(ranks[0]["losses"]) == 3
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["ssl_last.pt"]

    torchrun(tmp_path)  # launched again: both processes resume the finished checkpoint
    again = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [a["resumed_from_epoch"] for a in again] == [3, 3]
    for key, value in ranks[0]["backbone"].items():
        assert torch.equal(value, again[1]["backbone"][key]), key


def test_a_cycle_s_ssl_trained_by_torchrun_is_what_its_select_step_uses(tmp_path: Path) -> None:
    """``torchrun -m flywheel.cli cycle ssl ID``: two processes train the queued cycle's
    SSL model with DDP; the cycle's select step then finds it finished and uses it."""
    import os

    from flywheel.config import Settings
    from flywheel.cycle.runner import run_cycle
    from flywheel.cycle.state import load_cycle, start_cycle
    from flywheel.learn.registry import ModelRegistry
    from flywheel.store.ingest import SplitPlan, ingest_candidates
    from flywheel.store.ingest_sources import digits_candidates
    from flywheel.workspace import open_workspace
    from tests.flywheel.cycle.test_runner import TINY

    env_learning = {f"FLYWHEEL_LEARNING__{k.upper()}": str(v) for k, v in TINY.items()}
    env = {**os.environ, "FLYWHEEL_DATA_DIR": str(tmp_path / "data"), **env_learning}
    settings = Settings(data_dir=tmp_path / "data")
    settings = settings.model_copy(update={"learning": settings.learning.model_copy(update=TINY)})
    ws = open_workspace(settings)
    plan = SplitPlan(labels_per_class=3, test_fraction=0.3, seed=0)
    ingest_candidates(ws.db, ws.blobs, digits_candidates()[:120], "digits", settings.ingest, plan)
    cycle_id = start_cycle(ws, settings.learning)

    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        f"--master_port={free_port()}", "--master_addr=127.0.0.1",
        "-m", "flywheel.cli", "cycle", "ssl", str(cycle_id),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "on 2 processes" in done.stdout
    key = done.stdout.split("SSL run ", 1)[1].split()[0]

    result = run_cycle(
        ws, ModelRegistry.from_settings(settings), settings.learning, cycle_id=cycle_id
    )
    assert load_cycle(ws, result.cycle_id).outputs["selection"]["ssl"]["key"] == key
    ws.close()
