"""A model run over a pool: process growth of per-batch outputs kept in a list and joined,
against the outputs written into one preallocated array (``rows_by_batch``).

Each way runs in a fresh process over the same uint8 8x8 RGB pool held as one array, with
the small CNN classifier in eval mode, 512 images a batch. Growth is VmRSS after the pass
over VmRSS before it (the outputs themselves are 40 B an image).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_batch_outputs.py --pool 100000
"""

from __future__ import annotations

import json
import sys

from harness.cli import RESULTS, add_out, parser, run_json, self_command
from harness.resources import status_kb


def measure(way: str, pool: int) -> dict[str, float | str | int]:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from flywheel.learn.backbones import Classifier, build_backbone
    from flywheel.learn.inference import rows_by_batch
    from flywheel.learn.pool_images import torch_view

    torch.manual_seed(0)
    model = Classifier(build_backbone("small_cnn", 3, None, 32, 1), 10).eval()
    images = np.random.default_rng(0).integers(0, 256, (pool, 8, 8, 3), dtype=np.uint8)

    def probs(xb: torch.Tensor) -> torch.Tensor:
        return F.softmax(model(xb).float(), dim=1)

    probs(torch.zeros(512, 3, 8, 8))  # warm-up: the first batch's allocations are not growth
    before = status_kb("VmRSS")
    with torch.no_grad():
        if way == "list":
            x = torch_view(images)
            out = [probs(x[i : i + 512].float() / 255.0) for i in range(0, len(x), 512)]
            result = torch.cat(out).numpy()
        else:
            result = rows_by_batch(probs, images, torch.device("cpu"))
    growth = (status_kb("VmRSS") - before) / 1024
    return {"way": way, "pool": pool, "rows": len(result), "growth_mib": round(growth, 1)}


def main() -> None:
    if len(sys.argv) > 3 and sys.argv[1] == "child":
        print(json.dumps(measure(sys.argv[2], int(sys.argv[3]))), flush=True)
        return
    ap = parser(__doc__)
    ap.add_argument("--pool", type=int, default=100_000)
    add_out(ap, RESULTS / "batch_outputs.json")
    args = ap.parse_args()
    rows = [
        run_json(self_command(__file__, "child", way, str(args.pool)))
        for way in ("list", "preallocated")
    ]
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    for r in rows:
        print(f"{r['way']:>12}: {r['pool']:,} images, growth {r['growth_mib']} MiB")


if __name__ == "__main__":
    main()
