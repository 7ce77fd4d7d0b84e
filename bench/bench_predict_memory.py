"""Peak memory growth and latency of serving one uploaded image, by upload size.

"new": what ``/v1/predict`` does now (validate with ``inspect_image``, bring the image to
the model's input size with ``to_model_input``, classify). "old": the full-resolution path
it replaced (decode whole, classify at the upload's own size); skipped above 2000x2000,
where it needs gigabytes (about 620 bytes a pixel: 22 GB at 6000x6000).

Each measurement runs in a fresh subprocess: the model is built and one small image is
served first (imports, allocator warm-up), then the peak is reset (clear_refs) and the
growth of VmHWM over VmRSS is what one request cost. Inputs are RGB gradients, as PNG.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_predict_memory.py
"""

from __future__ import annotations

import argparse
import io
import json
import time

from harness.cli import parser, run_json, self_command
from harness.resources import reset_peak_rss, status_kb

SIZES = (500, 2000, 6000)
OLD_MAX = 2000
INPUT_SIZE = 32  # the model's input size (serving's fallback for models without one)


def gradient_png(side: int) -> bytes:
    import numpy as np
    from PIL import Image

    ramp = np.linspace(0, 255, side, dtype=np.uint8)
    rgb = np.stack(
        [
            np.broadcast_to(ramp, (side, side)),
            np.broadcast_to(ramp[:, None], (side, side)),
            np.full((side, side), 90, np.uint8),
        ],
        axis=-1,
    )
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="PNG")
    return buf.getvalue()


def measure(path: str, side: int) -> dict[str, float]:
    """One request's cost in this (fresh) process."""
    import numpy as np
    import torch

    from flywheel.config import IngestSettings
    from flywheel.learn.backbones import Classifier, build_backbone
    from flywheel.serve.serving import ServingModel, classify
    from flywheel.store.images import decode_image, inspect_image, to_model_input

    torch.manual_seed(0)
    model = Classifier(build_backbone("small_cnn", 1, None, width=32), 10).eval()
    serving = ServingModel("bench", tuple(map(str, range(10))), model, INPUT_SIZE, 1)
    ingest = IngestSettings()

    def serve(data: bytes) -> None:
        inspect_image(data, ingest.allowed_formats, ingest.max_image_bytes, ingest.max_image_pixels)
        if path == "new":
            image = to_model_input(data, INPUT_SIZE, 1, "stretch")
        else:
            image = np.array(decode_image(data, "L"), dtype=np.uint8)
        classify(serving, image, 5)

    data = gradient_png(side)
    serve(gradient_png(64))
    reset_peak_rss()
    before = status_kb("VmRSS")
    start = time.perf_counter()
    serve(data)
    seconds = time.perf_counter() - start
    return {
        "growth_mb": (status_kb("VmHWM") - before) / 1024,
        "seconds": seconds,
        "bytes": len(data),
    }


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--one", nargs=2, metavar=("PATH", "SIDE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]))))
        return
    print(f"{'input':>11} {'png KB':>7} {'path':>4} {'peak growth MB':>15} {'latency s':>10}")
    for side in SIZES:
        for path in ("old", "new"):
            if path == "old" and side > OLD_MAX:
                print(f"{side:>5}x{side:<5} {'':>7} {path:>4} {'(skipped: ~22 GB)':>26}")
                continue
            r = run_json(self_command(__file__, "--one", path, str(side)))
            print(
                f"{side:>5}x{side:<5} {r['bytes'] / 1024:>7.0f} {path:>4} "
                f"{r['growth_mb']:>15.1f} {r['seconds']:>10.2f}"
            )


if __name__ == "__main__":
    main()
