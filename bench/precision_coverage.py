"""Precision vs coverage of pseudo-labels: agreement score vs softmax-only vs kNN-only.

Runs the real pipeline on digits (5 labels per class, seed 0): the bootstrap cycle and one
selecting cycle, then ranks the pool by each score using the newest model and the SSL
embedding (anchors: human labels + accepted pseudo-labels) and measures, against the
hidden truth, the precision of accepting the top x % of the pool.

    .venv/bin/python bench/precision_coverage.py --out docs/precision_coverage_cycle.png
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from harness.cli import parser
from harness.results import pyplot, save_figure, table_header, table_row
from harness.stats import precision_coverage
from harness.workspaces import ingest_digits, scratch

from flywheel.config import Settings
from flywheel.cycle.runner import run_cycle
from flywheel.learn.data import load_cycle_data
from flywheel.learn.embedding_store import EmbeddingStore
from flywheel.learn.embeddings import choose_embedding
from flywheel.learn.recipe import classifier_probs, train_ssl_backbone
from flywheel.learn.registry import ModelRegistry
from flywheel.select.outcome import pseudo_anchors
from flywheel.store.ingest import SplitPlan
from flywheel.workspace import open_workspace


def pipeline(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The real pipeline's state after the bootstrap and one selecting cycle: the newest
    model's pool probabilities, the kNN class votes from the chosen embedding (anchors:
    human labels + accepted pseudo-labels), and the pool's hidden truth."""
    with scratch() as tmp:
        settings = Settings(data_dir=tmp, learning={"seed": seed})
        ws = open_workspace(settings)
        ingest_digits(ws, plan=SplitPlan(5, 0.3, seed))
        registry = ModelRegistry.from_settings(settings)
        for _ in range(2):
            run_cycle(ws, registry, settings.learning)
        data = load_cycle_data(ws.db, ws.blobs, None, 1)
        ssl = train_ssl_backbone(data, settings.learning, tmp / "cache" / "ssl")
        choice = choose_embedding(
            {"ssl": ssl.encoder},
            {"labeled": data.labeled.images, "pool": data.pool_images, "test": data.test.images},
            {"labeled": data.labeled.ids, "pool": data.pool_ids, "test": data.test.ids},
            data.labeled.labels,
            EmbeddingStore(str(tmp / "emb")),
        )
        probs = classifier_probs(registry.load("challenger"), data.pool_images, 10)
        ws.close()
    px, py, pw, _ = pseudo_anchors(data, choice)
    anchors = np.concatenate([choice.labeled, px])
    labels = np.concatenate([data.labeled.labels, py])
    weights = np.concatenate([np.ones(len(data.labeled.labels)), pw])
    sims = choice.pool @ anchors.T
    top = np.argsort(-sims, axis=1)[:, :10]
    rows = np.arange(len(sims))[:, None]
    w = weights[top] * np.exp((sims[rows, top] - 1) / 0.1)
    votes = np.zeros((len(sims), 10))
    np.add.at(votes, (np.broadcast_to(rows, top.shape), labels[top]), w)
    votes /= votes.sum(1, keepdims=True)
    return probs, votes, data.pool_truth


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--out", type=Path, default=Path("docs/precision_coverage_cycle.png"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    probs, votes, truth = pipeline(args.seed)
    pred = probs.argmax(1)
    agree = pred == votes.argmax(1)
    scores = {
        "agreement (model x kNN, disputes last)": np.where(
            agree, np.sqrt(probs.max(1) * votes[np.arange(len(pred)), pred]), -1.0
        ),
        "softmax only (model max prob)": probs.max(1),
        "kNN vote only": votes.max(1),
    }
    fig, ax = pyplot().subplots(figsize=(6.4, 4.2), dpi=110)
    print(table_header(["score", "precision @50%", "@80%", "@90%", "@100%"], "lrrrr"))
    for name, score in scores.items():
        label_pred = pred if "kNN" not in name else votes.argmax(1)
        cov, prec = precision_coverage(score, label_pred == truth)
        ax.plot(cov, prec, label=name)
        at = [prec[max(0, int(c * len(prec)) - 1)] for c in (0.5, 0.8, 0.9, 1.0)]
        print(table_row([name, *(f"{100 * a:.1f}" for a in at)]))
    ax.axhline(0.99, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("coverage (share of the pool accepted, most confident first)")
    ax.set_ylabel("precision against hidden truth")
    ax.set_ylim(0.85, 1.005)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    ax.set_title("digits, 5 labels/class, after one selecting cycle")
    fig.tight_layout()
    save_figure(fig, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
