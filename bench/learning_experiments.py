"""Reproduce the learning experiments behind bench/LEARNING_NOTES.md.

Protocol: sklearn digits as the project stores them (uint8 = round(x * 255 / 16)), 30 %
stratified test split (random_state=seed), the rest is the pool; N labels per class drawn
from the pool with the same seed. Per seed:

1. self-supervised training on the whole pool (``flywheel.learn.ssl.loop.train_ssl``),
   cached through its own checkpoint directory, so a rerun costs nothing;
2. the embedding report: kNN quality of SSL features vs raw pixels vs PCA;
3. per labels-per-class: cycle 0 trains on the labels only; each later cycle embeds the
   pool, selects pseudo-labels with an in-script stand-in for ``flywheel.select.calibrated``
   (classifier probability x agreement of the k nearest labeled/accepted neighbours,
   class-balanced, a growing share per cycle) and retrains on labels + pseudo-labels.

Usage (2 CPU cores; each seed is ~1-3 minutes per labels-per-class setting):

    OMP_NUM_THREADS=1 .venv/bin/python bench/learning_experiments.py \
        --seeds 0 1 2 3 4 --labels-per-class 1 5 10          # recipe A (defaults)
    OMP_NUM_THREADS=1 .venv/bin/python bench/learning_experiments.py \
        --labels-per-class 1 --share-start 0.2 --cycles 6    # recipe B for 1 label/class

Other rows of the notes: ``--ssl-method simclr``, ``--ssl-features backbone``,
``--fixmatch none|all``, ``--pl-weight one``, ``--prototypes/--ssl-batch/--ssl-hidden``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from harness.cli import add_seeds
from harness.digits import NUM_CLASSES, digits_uint8, draw_labels, pool_test_split
from harness.results import write_json
from sklearn.decomposition import PCA
from torch import nn

from flywheel.datasets.fingerprint import fingerprint
from flywheel.learn.backbones import AugmentConfig
from flywheel.learn.ssl.embed import embed
from flywheel.learn.ssl.loop import SSL_VERSION, SSLConfig, train_ssl
from flywheel.learn.training import TrainConfig, evaluate, train_classifier

DIGIT_STRONG = AugmentConfig.for_digits("strong")
DIGIT_WEAK = AugmentConfig.for_digits("weak")


def unit(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float32)
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def few_shot_nn(emb: np.ndarray, y: np.ndarray, n: int, seed: int) -> float:
    """Pool accuracy of 1-NN to n labeled samples per class (the kNN quality that matters)."""
    idx = draw_labels(y, n, seed)
    return float((y[idx][(emb @ emb[idx].T).argmax(1)] == y).mean())


def loo_nn(emb: np.ndarray, y: np.ndarray) -> float:
    """Leave-one-out 1-NN accuracy on labeled data: the in-cycle embedding judge."""
    s = emb @ emb.T
    np.fill_diagonal(s, -np.inf)
    return float((y[s.argmax(1)] == y).mean())


def knn_votes(
    emb: np.ndarray,
    anchors: np.ndarray,
    anchor_y: np.ndarray,
    anchor_w: np.ndarray,
    k: int,
    tau: float = 0.1,
) -> np.ndarray:
    """(N, C) share of each class among the k nearest anchors, weighted by exp(cos / tau).

    The similarity weighting matters with 1 label per class: k > 1 plain votes would tie.
    """
    k = min(k, len(anchors))
    sim = emb @ emb[anchors].T
    nn_idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    rows = np.arange(len(emb))[:, None]
    w = anchor_w[nn_idx] * np.exp((sim[rows, nn_idx] - 1) / tau)
    votes = np.zeros((len(emb), NUM_CLASSES))
    np.add.at(votes, (np.broadcast_to(rows, nn_idx.shape), anchor_y[nn_idx]), w)
    return votes / np.maximum(votes.sum(1, keepdims=True), 1e-30)


def select(
    probs: np.ndarray, votes: np.ndarray, share: float, labeled: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stand-in for flywheel.select.calibrated: class-balanced top ``share`` by combined confidence.

    A pool sample qualifies when the classifier and its neighbours agree on the class; its
    confidence is the geometric mean of the two; per class the top ``share`` of an equal
    split of the pool is accepted. Returns (indices, labels, confidences).
    """
    pred, knn_pred = probs.argmax(1), votes.argmax(1)
    conf = np.sqrt(probs.max(1) * votes[np.arange(len(votes)), pred])
    ok = (pred == knn_pred) & ~np.isin(np.arange(len(probs)), labeled)
    quota = round(share * len(probs) / NUM_CLASSES)
    picked = []
    for c in range(NUM_CLASSES):
        cand = np.flatnonzero(ok & (pred == c))
        picked.append(cand[np.argsort(-conf[cand], kind="stable")[:quota]])
    idx = np.concatenate(picked)
    return idx, pred[idx], conf[idx].astype(np.float32)


def ssl_backbone(pool: np.ndarray, cfg: SSLConfig, cache: Path, seed: int) -> tuple:
    key = fingerprint("bench-ssl", SSL_VERSION, json.dumps(dataclasses.asdict(cfg), sort_keys=True))
    t = time.time()
    res = train_ssl(pool, cfg, cache / f"ssl_seed{seed}_{key[:12]}")
    # Only epochs actually run here cost time; a finished checkpoint is just loaded.
    return res, time.time() - t


def run_seed(args: argparse.Namespace, x: np.ndarray, y: np.ndarray, seed: int) -> list[dict]:
    pool, test = pool_test_split(y, seed)
    xp, xt, yp, yt = x[pool], x[test], y[pool], y[test]
    ssl_cfg = SSLConfig(
        method=args.ssl_method,
        epochs=args.ssl_epochs,
        augment=DIGIT_STRONG,
        seed=seed,
        device="cpu",
        num_workers=args.workers,
        n_prototypes=args.prototypes,
        temperature=args.temperature,
        batch_size=args.ssl_batch,
        hidden_dim=args.ssl_hidden,
        embedding_dim=args.ssl_dim,
    )
    ssl, ssl_s = ssl_backbone(xp, ssl_cfg, Path(args.cache), seed)
    feat = (
        nn.Sequential(ssl.backbone, ssl.projector) if args.ssl_features == "proj" else ssl.backbone
    )
    raw = unit(xp.reshape(len(xp), -1))
    pca = PCA(30, random_state=seed).fit(xp.reshape(len(xp), -1).astype(np.float32))
    embs = {
        "ssl": embed(feat, xp, device="cpu"),
        "raw": raw,
        "pca": unit(pca.transform(xp.reshape(len(xp), -1))),
    }
    emb_t = {
        "ssl": embed(feat, xt, device="cpu"),
        "raw": unit(xt.reshape(len(xt), -1)),
        "pca": unit(pca.transform(xt.reshape(len(xt), -1))),
    }
    report = {
        name: {
            "test_1nn_all": float((yp[(emb_t[name] @ e.T).argmax(1)] == yt).mean()),
            **{f"pool_1nn_{n}": few_shot_nn(e, yp, n, seed) for n in args.labels_per_class},
        }
        for name, e in embs.items()
    }
    print(f"seed {seed}: SSL {args.ssl_method} {ssl_s:.0f}s; kNN quality {json.dumps(report)}")
    rows = []
    for n in args.labels_per_class:
        t0 = time.time()
        lab = draw_labels(yp, n, seed)
        # Judge the embeddings on the labeled data (leave-one-out); 1 label/class cannot be
        # judged this way, so the learned one is used.
        scores = {k: loo_nn(e[lab], yp[lab]) for k, e in embs.items()} if n > 1 else {}
        chosen = max(scores, key=lambda k: (scores[k], k == "ssl")) if scores else "ssl"
        emb = embs[chosen]
        tcfg = TrainConfig(
            epochs=args.epochs,
            steps_per_epoch=args.steps,
            batch_size=64,
            lr=args.lr,
            backbone_lr_mult=args.backbone_lr_mult,
            weak=DIGIT_WEAK,
            strong=DIGIT_STRONG,
            fixmatch=args.fixmatch != "none",
            fixmatch_mu=2,
            seed=seed,
            device="cpu",
            num_workers=args.workers,
        )
        init = ssl.backbone.state_dict() if not args.no_init else None
        idx, plab, pw = np.zeros(0, int), np.zeros(0, int), np.zeros(0, np.float32)
        shares = np.linspace(args.share_start, args.share_end, max(1, args.cycles))
        for cycle in range(args.cycles + 1):
            tx = np.concatenate([xp[lab], xp[idx]])
            ty = np.concatenate([yp[lab], plab])
            tw = np.concatenate([np.ones(len(lab), np.float32), pw])
            fm = args.fixmatch == "all" or (args.fixmatch == "first" and cycle == 0)
            cfg = dataclasses.replace(
                tcfg, fixmatch=fm, epochs=args.fixmatch_epochs if fm else args.epochs
            )
            clf = train_classifier(
                tx, ty, tw, cfg, NUM_CLASSES, init_backbone_state=init, unlabeled_images=xp
            )
            ev = evaluate(clf.predict_proba(xt), yt, NUM_CLASSES)
            prec = float((plab == yp[idx]).mean()) if len(idx) else float("nan")
            cov = len(idx) / (len(yp) - len(lab))
            rows.append(
                {
                    "seed": seed,
                    "n": n,
                    "cycle": cycle,
                    "emb": chosen,
                    "test_acc": ev.accuracy,
                    "ece": ev.ece,
                    "pl_precision": prec,
                    "pl_coverage": cov,
                    "seconds": time.time() - t0,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
            if cycle == args.cycles:
                break
            probs = clf.predict_proba(xp)
            anchors = np.concatenate([lab, idx])
            votes = knn_votes(
                emb,
                anchors,
                np.concatenate([yp[lab], plab]),
                np.concatenate([np.ones(len(lab)), pw]),
                args.k,
            )
            idx, plab, pw = select(probs, votes, shares[cycle], lab)
            if args.pl_weight == "one":
                pw = np.ones_like(pw)
        rows[-1]["ssl_seconds"] = ssl_s
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_seeds(p, [0, 1, 2, 3, 4])
    p.add_argument("--labels-per-class", type=int, nargs="+", default=[1, 5, 10])
    p.add_argument("--cycles", type=int, default=4)
    p.add_argument("--share-start", type=float, default=0.5)
    p.add_argument("--share-end", type=float, default=0.9)
    p.add_argument("--k", type=int, default=10)
    p.add_argument(
        "--pl-weight",
        default="conf",
        choices=["conf", "one"],
        help="train weight of a pseudo-label: its confidence, or 1",
    )
    p.add_argument("--tau", type=float, default=0.1)
    p.add_argument("--ssl-method", default="swav", choices=["simclr", "swav"])
    p.add_argument("--ssl-epochs", type=int, default=SSLConfig.epochs)
    p.add_argument("--ssl-features", default="proj", choices=["proj", "backbone"])
    p.add_argument("--prototypes", type=int, default=SSLConfig.n_prototypes)
    p.add_argument("--ssl-batch", type=int, default=SSLConfig.batch_size)
    p.add_argument("--ssl-hidden", type=int, default=SSLConfig.hidden_dim)
    p.add_argument("--ssl-dim", type=int, default=SSLConfig.embedding_dim)
    p.add_argument("--temperature", type=float, default=SSLConfig.temperature)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--backbone-lr-mult", type=float, default=1.0)
    p.add_argument(
        "--fixmatch",
        default="first",
        choices=["none", "first", "all"],
        help="FixMatch consistency in no cycle, in cycle 0 only, or in every cycle",
    )
    p.add_argument("--fixmatch-epochs", type=int, default=10, help="epochs of a FixMatch cycle")
    p.add_argument("--no-init", action="store_true", help="train the classifier from scratch")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "flywheel-bench-cache"))
    p.add_argument("--out", type=Path, default=None, help="write all rows as JSON here")
    args = p.parse_args()
    torch.set_num_threads(1)
    x, y = digits_uint8()
    t = time.time()
    rows = [r for s in args.seeds for r in run_seed(args, x, y, s)]
    print(f"\nmean over seeds {args.seeds} ({time.time() - t:.0f}s total)")
    print(f"{'n/cls':>5} {'cycle':>5} {'test acc':>9} {'ECE':>6} {'PL prec':>8} {'PL cover':>8}")
    for n in args.labels_per_class:
        for c in range(args.cycles + 1):
            sel = [r for r in rows if r["n"] == n and r["cycle"] == c]
            m = {
                k: np.mean([r[k] for r in sel])
                for k in ("test_acc", "ece", "pl_precision", "pl_coverage")
            }
            print(
                f"{n:>5} {c:>5} {100 * m['test_acc']:>8.1f}% {m['ece']:>6.3f} "
                f"{100 * m['pl_precision']:>7.1f}% {100 * m['pl_coverage']:>7.1f}%"
            )
    if args.out:
        write_json(args.out, rows, indent=1)


if __name__ == "__main__":
    main()
