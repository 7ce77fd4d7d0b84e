"""One short check of the learning path on a GPU node; writes its figures as JSON.

Four measurements, each in its own time box, so the whole runs in well under 8 minutes on
one GPU:

1. training steps per second: resnet50 on 224x224 RGB, batch 64, CUDA + AMP (fp16
   autocast and a GradScaler, as ``flywheel.learn.training`` runs on a GPU);
2. embedding images per second: resnet50 at 224x224 through ``flywheel.learn.ssl.embed``
   (uint8 on the host in, unit vectors out: transfers included);
3. the DataLoader decode rate: PNG blobs read from a blob store and decoded to 224x224 by
   ``BlobImages`` in DataLoader worker processes, as learning reads a streamed pool;
4. a short end-to-end cycle: sklearn digits ingested into a scratch project, one cycle on
   the embedded default with ``device: auto``.

``--smoke`` shrinks every part (resnet18, 64 px, a few steps) so that the script can be
checked on a CPU before GPU time is spent; its figures mean nothing.

    bash bench/gpu_check.sh results.json          # on the GPU node
    .venv/bin/python bench/gpu_check.py --smoke --out /tmp/gpu_smoke.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

FULL = {
    "backbone": "resnet50",
    "side": 224,
    "batch": 64,
    "steps": 30,
    "embed": 2048,
    "decode": 2048,
    "workers": min(8, os.cpu_count() or 1),
}
SMOKE = {
    "backbone": "resnet18",
    "side": 64,
    "batch": 8,
    "steps": 3,
    "embed": 64,
    "decode": 64,
    "workers": 2,
}


def device_info() -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0) if cuda else f"cpu ({platform.processor()})",
        "cpus": os.cpu_count(),
    }


def train_steps_per_second(p: dict[str, Any]) -> dict[str, Any]:
    from flywheel.learn.backbones import Classifier, build_backbone

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = dev.type == "cuda"
    model = Classifier(build_backbone(p["backbone"], 3, p["side"]), 10).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(dev.type, enabled=amp)
    x = torch.rand(p["batch"], 3, p["side"], p["side"], device=dev)
    y = torch.randint(0, 10, (p["batch"],), device=dev)

    def step() -> None:
        with torch.autocast(dev.type, enabled=amp):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(3):  # cuDNN autotuning and allocator warm-up
        step()
    _sync()
    t0 = time.perf_counter()
    for _ in range(p["steps"]):
        step()
    _sync()
    seconds = time.perf_counter() - t0
    return {
        "backbone": p["backbone"],
        "side": p["side"],
        "batch": p["batch"],
        "amp": amp,
        "steps_per_s": p["steps"] / seconds,
        "images_per_s": p["steps"] * p["batch"] / seconds,
    }


def embed_images_per_second(p: dict[str, Any]) -> dict[str, Any]:
    from flywheel.learn.backbones import build_backbone
    from flywheel.learn.ssl.embed import embed

    backbone = build_backbone(p["backbone"], 3, p["side"])
    images = np.random.default_rng(0).integers(
        0, 256, (p["embed"], p["side"], p["side"], 3), dtype=np.uint8
    )
    embed(backbone, images[:64], batch_size=64)  # warm-up
    _sync()
    t0 = time.perf_counter()
    vectors = embed(backbone, images, batch_size=256)
    _sync()
    seconds = time.perf_counter() - t0
    return {
        "backbone": p["backbone"],
        "side": p["side"],
        "images": len(images),
        "dim": int(vectors.shape[1]),
        "images_per_s": len(images) / seconds,
    }


def decode_rate(p: dict[str, Any], scratch: Path) -> dict[str, Any]:
    from functools import partial

    from torch.utils.data import DataLoader

    from flywheel.learn.backbones import ViewDataset
    from flywheel.learn.pool_images import BlobImages, torch_view
    from flywheel.store.blobs import BlobStore
    from flywheel.store.images import to_model_input

    blobs = BlobStore(str(scratch / "store"))
    rng = np.random.default_rng(0)
    side = int(p["side"] * 1.5)  # stored larger than the model's input: a real resize
    ids = []
    for _ in range(p["decode"]):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
        ids.append(blobs.put(buf.getvalue()).sha256)
    decode = partial(to_model_input, size=p["side"], channels=3, policy="stretch")
    pool = BlobImages(blobs, ids, (p["side"], p["side"], 3), decode, cache_bytes=0)
    loader = DataLoader(
        ViewDataset(torch_view(pool), [torch.clone]),
        batch_size=64,
        num_workers=p["workers"],
        persistent_workers=False,
    )
    t0 = time.perf_counter()
    seen = sum(len(batch[0]) for batch in loader)
    seconds = time.perf_counter() - t0
    return {
        "images": seen,
        "stored_side": side,
        "side": p["side"],
        "workers": p["workers"],
        "images_per_s": seen / seconds,
    }


def short_cycle(smoke: bool, scratch: Path) -> dict[str, Any]:
    from flywheel.config import LearningSettings, Settings
    from flywheel.cycle.runner import run_cycle
    from flywheel.learn.registry import ModelRegistry
    from flywheel.store.ingest import SplitPlan, ingest_candidates
    from flywheel.store.ingest_sources import digits_candidates
    from flywheel.workspace import open_workspace

    learning = LearningSettings(device="auto", ssl_epochs=2 if smoke else 20)
    settings = Settings(data_dir=scratch / "project", learning=learning)
    ws = open_workspace(settings)
    candidates = digits_candidates()[: 300 if smoke else None]
    ingest_candidates(
        ws.db,
        ws.blobs,
        candidates,
        "digits",
        settings.ingest,
        SplitPlan(labels_per_class=5, test_fraction=0.3, seed=0),
    )
    registry = ModelRegistry.from_settings(settings)
    t0 = time.perf_counter()
    result = run_cycle(ws, registry, learning)
    seconds = time.perf_counter() - t0
    ws.close()
    return {
        "samples": len(candidates),
        "seconds": seconds,
        "test_accuracy": result.metrics["test_accuracy"],
    }


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="gpu_check.json")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, to check on a CPU")
    args = ap.parse_args()
    p = SMOKE if args.smoke else FULL
    report: dict[str, Any] = {"smoke": args.smoke, **device_info()}
    parts = {
        "train": lambda tmp: train_steps_per_second(p),
        "embed": lambda tmp: embed_images_per_second(p),
        "decode": lambda tmp: decode_rate(p, tmp),
        "cycle": lambda tmp: short_cycle(args.smoke, tmp),
    }
    for name, run in parts.items():
        with tempfile.TemporaryDirectory(prefix=f"gpu-check-{name}-") as tmp:
            t0 = time.perf_counter()
            try:
                report[name] = run(Path(tmp))
            except Exception as exc:  # one failed part must not lose the others' figures
                report[name] = {"error": f"{type(exc).__name__}: {exc}"}
            report[name]["wall_s"] = round(time.perf_counter() - t0, 1)
        print(json.dumps({name: report[name]}), flush=True)
        Path(args.out).write_text(json.dumps(report, indent=2))  # after each part


if __name__ == "__main__":
    main()
