"""The demo's last turn: a product app's users give feedback on the champion's predictions.

The users are simulated from the pool's hidden truth: each has a fixed chance of being
right (one is careless, one says the opposite of the truth on purpose). Their feedback goes
through the same library calls the API makes (store prediction, record feedback), then the
consensus turns it into labels: what an app would see after a day of traffic.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from rich.table import Table
from sqlalchemy import select

from flywheel.cli.common import console, fmt
from flywheel.db import GroundTruth
from flywheel.db.labels import current_labels_query
from flywheel.db.models import FeedbackKind, LabelSource
from flywheel.feedback.consensus import annotator_id, annotator_report, resolve_feedback
from flywheel.feedback.review import label_set
from flywheel.feedback.writer import FeedbackRequest, record_feedback
from flywheel.learn.registry import ModelRegistry
from flywheel.serve.serving import ChampionCache, predict_sample
from flywheel.workspace import Workspace

APP = "demo-app"
# name -> chance of giving the right answer
USERS = {"ana": 0.97, "ben": 0.95, "chen": 0.92, "dara": 0.9, "eli": 0.6, "troll": 0.05}
VOTES_PER_PREDICTION = 3


@dataclass
class FeedbackDemo:
    predictions: int
    feedback: int
    labels_written: int
    labels_correct: int
    review_opened: int


def simulate_feedback(
    ws: Workspace, registry: ModelRegistry, n_predictions: int, seed: int
) -> FeedbackDemo:
    rng = random.Random(seed)
    classes = label_set(ws.db)
    with ws.db.session() as s:
        truth = dict(s.execute(select(GroundTruth.sample_id, GroundTruth.label)).all())
    pool = sorted(truth)
    rng.shuffle(pool)
    serving = ChampionCache(registry, refresh_seconds=0).current()
    requests = []
    for sid in pool[:n_predictions]:
        pred = predict_sample(ws.db, ws.blobs, serving, sid, ws.settings.learning, 3, APP)
        for user in rng.sample(sorted(USERS), VOTES_PER_PREDICTION):
            right = rng.random() < USERS[user]
            answer = truth[sid] if right else rng.choice([c for c in classes if c != truth[sid]])
            kind = FeedbackKind.CONFIRM if answer == pred.label else FeedbackKind.CORRECT
            label = answer if kind == FeedbackKind.CORRECT else None
            requests.append(FeedbackRequest(pred.id, kind, user, label, APP))
    outcomes = record_feedback(ws.db, requests, classes)
    written = sum(1 for o in outcomes if o.record is not None)
    report = resolve_feedback(ws.db, ws.settings.consensus)
    with ws.db.session() as s:
        feedback_labels = s.scalars(current_labels_query(sources=[LabelSource.FEEDBACK])).all()
        correct = sum(1 for lab in feedback_labels if truth.get(lab.sample_id) == lab.label)
    return FeedbackDemo(
        n_predictions, written, report.labels_written, correct, report.review_opened
    )


def print_feedback_demo(ws: Workspace, result: FeedbackDemo) -> None:
    console.print(
        f"{result.predictions} predictions served by the champion, {result.feedback} feedback "
        f"items from {len(USERS)} users; consensus wrote [green]{result.labels_written} "
        f"feedback labels[/] ({fmt(result.labels_correct / max(result.labels_written, 1))} "
        f"right) and sent {result.review_opened} conflicts to the review queue"
    )
    report = annotator_report(ws.db, ws.settings.consensus)
    table = Table("user", "really right", "estimated reliability", "votes")
    estimated = {a.annotator: a for a in report.annotators}
    for user, p in sorted(USERS.items(), key=lambda kv: -kv[1]):
        a = estimated.get(annotator_id(APP, user))
        if a is not None:
            table.add_row(user, fmt(p), fmt(a.accuracy), str(a.n_votes))
    console.print(table)
