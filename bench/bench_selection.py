"""kNN pseudo-label selection at pool scale: FAISS flat / IVF / HNSW vs numpy brute force.

Synthetic pool: ``--n`` x 128 clustered Gaussians (100 clusters, 10 classes), L2-normalised,
plus ``--labeled`` labeled points from the same clusters. Each method runs in its own
subprocess so ``ru_maxrss`` (which sees FAISS's C++ allocations, unlike tracemalloc) is its
own peak; "extra RSS" subtracts the peak after the data were generated. Recall@k is against
the exact neighbours of 10,000 sampled queries. Prints a markdown table.

    .venv/bin/python bench/bench_selection.py --n 1000000 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from harness.cli import parser, run_json, self_command
from harness.resources import peak_rss_mib
from harness.results import table_header, table_row

METHODS = ["numpy", "flat", "ivf", "hnsw", "select_flat", "agreement"]
DIM, CLASSES, CLUSTERS = 128, 10, 100


def _data(n: int, n_labeled: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(CLUSTERS, DIM)).astype(np.float32)
    out = []
    for size in (n, n_labeled):
        cluster = rng.integers(0, CLUSTERS, size)
        x = np.empty((size, DIM), dtype=np.float32)
        for s in range(0, size, 65_536):  # in chunks: temporaries must not set the RSS peak
            block = centres[cluster[s : s + 65_536]]
            block += 0.8 * rng.standard_normal(block.shape, dtype=np.float32)
            x[s : s + 65_536] = block / np.linalg.norm(block, axis=1, keepdims=True)
        out += [x, cluster % CLASSES]
    return out  # pool, pool_labels, labeled, labeled_labels


def _numpy_knn(
    pool: np.ndarray, labeled: np.ndarray, k: int, chunk: int = 65_536
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k cosine (rows already unit norm): chunked matmul + argpartition."""
    sims = np.empty((len(pool), k), dtype=np.float32)
    ids = np.empty((len(pool), k), dtype=np.int64)
    for s in range(0, len(pool), chunk):
        block = pool[s : s + chunk] @ labeled.T
        top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        val = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-val, axis=1)
        ids[s : s + chunk] = np.take_along_axis(top, order, axis=1)
        sims[s : s + chunk] = np.take_along_axis(val, order, axis=1)
    return sims, ids


def child(method: str, n: int, n_labeled: int, k: int, threads: int) -> dict:
    import faiss

    from flywheel.learn.index import build_index, search
    from flywheel.select.calibrated import SelectionConfig, select_pseudo_labels

    faiss.omp_set_num_threads(threads)
    pool, _, labeled, lab_y = _data(n, n_labeled)
    rss0 = peak_rss_mib()
    t0 = time.perf_counter()
    build_s = 0.0
    if method == "numpy":
        _, ids = _numpy_knn(pool, labeled, k)
    elif method == "agreement":  # the cycle's default strategy (flywheel.select.agreement)
        from flywheel.select.agreement import AgreementConfig, select_by_agreement

        rng = np.random.default_rng(1)
        logits = rng.normal(size=(n, CLASSES)).astype(np.float32)
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        del logits
        rss0, t0 = peak_rss_mib(), time.perf_counter()
        r = select_by_agreement(
            pool, probs, labeled, lab_y, np.ones(n_labeled), CLASSES, AgreementConfig(k=k)
        )
        ids = r.neighbor_ids
    elif method == "select_flat":
        rng = np.random.default_rng(1)
        logits = rng.normal(size=(n, CLASSES)).astype(np.float32)
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        oof = np.exp(logits[:n_labeled]) / np.exp(logits[:n_labeled]).sum(axis=1, keepdims=True)
        rss0, t0 = peak_rss_mib(), time.perf_counter()
        r = select_pseudo_labels(
            pool,
            probs,
            labeled,
            lab_y,
            None,
            oof,
            None,
            CLASSES,
            SelectionConfig(k=k, n_bootstrap=50),
        )
        ids = r.neighbor_ids
    else:
        index = build_index(labeled, method, nlist=32 if method == "ivf" else None, nprobe=8)
        build_s = time.perf_counter() - t0
        _, ids = search(index, pool, k)
    total_s = time.perf_counter() - t0
    q = np.random.default_rng(2).choice(n, min(n, 10_000), replace=False)
    _, exact = _numpy_knn(pool[q], labeled, k)
    recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(ids[q], exact, strict=True)])
    return {
        "method": method,
        "n": n,
        "build_s": build_s,
        "total_s": total_s,
        "queries_per_s": n / total_s,
        "recall": recall,
        "peak_rss_mib": peak_rss_mib(),
        "extra_rss_mib": peak_rss_mib() - rss0,
    }


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--labeled", type=int, default=1_000)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.n, args.labeled, args.k, args.threads)))
        return
    env = os.environ | {
        "OMP_NUM_THREADS": str(args.threads),
        "OPENBLAS_NUM_THREADS": str(args.threads),
    }
    print(f"pool {args.n:,} x {DIM}, {args.labeled:,} labeled, k={args.k}, {args.threads} threads")
    columns = ["method", "build s", "total s", "queries/s", "recall@k", "peak RSS MiB"]
    print(table_header([*columns, "extra RSS MiB"], "lllllll"))
    for method in args.methods.split(","):
        cmd = self_command(__file__, "--child", method, "--n", str(args.n))
        cmd += ["--labeled", str(args.labeled), "-k", str(args.k), "--threads", str(args.threads)]
        r = run_json(cmd, env)
        cells = [method, f"{r['build_s']:.3f}", f"{r['total_s']:.2f}", f"{r['queries_per_s']:,.0f}"]
        cells += [f"{r['recall']:.4f}", f"{r['peak_rss_mib']:,.0f}", f"{r['extra_rss_mib']:,.0f}"]
        print(table_row(cells), flush=True)


if __name__ == "__main__":
    main()
