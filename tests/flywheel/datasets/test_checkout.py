import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from flywheel.datasets.checkout import checkout
from flywheel.store.images import decode_image
from flywheel.store.ingest import SplitPlan, ingest_candidates
from flywheel.store.ingest_sources import digits_candidates
from flywheel.workspace import Workspace


def test_checkout_digits_as_torch_dataset(workspace: Workspace) -> None:
    cands = digits_candidates()[:200]
    plan = SplitPlan(labels_per_class=3, test_fraction=0.3, seed=1)
    ingest_candidates(
        workspace.db, workspace.blobs, cands, "digits", workspace.settings.ingest, plan
    )
    info, _ = workspace.versions.snapshot()

    everything = checkout(workspace.versions, workspace.blobs, info.id, mode="L")
    assert len(everything.dataset) == everything.table.num_rows == info.num_rows
    assert everything.dataset.classes == [str(d) for d in range(10)]

    train = checkout(workspace.versions, workspace.blobs, "latest", splits=("train",), mode="L")
    assert len(train.dataset) == 30
    image, target = train.dataset[0]
    assert image.size == (8, 8) and image.mode == "L"
    assert train.dataset.classes[target] == train.table["label"][0].as_py()
    # The decoded image is exactly the stored scan.
    original = next(
        c for c in cands if c.read() == workspace.blobs.get(train.table["sample_id"][0].as_py())
    )
    assert np.array_equal(np.asarray(image), np.asarray(decode_image(original.read(), "L")))


def test_transforms_and_worker_processes(workspace: Workspace) -> None:
    plan = SplitPlan(labels_per_class=2, test_fraction=0.0, seed=0)
    cands = digits_candidates()[:60]
    ingest_candidates(
        workspace.db, workspace.blobs, cands, "digits", workspace.settings.ingest, plan
    )
    workspace.versions.snapshot()
    to_tensor = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    co = checkout(workspace.versions, workspace.blobs, "latest", transform=to_tensor, mode="L")
    # num_workers=1: the dataset (and its blob store) must survive pickling into a worker.
    batches = list(DataLoader(co.dataset, batch_size=8, num_workers=1))
    images = torch.cat([b[0] for b in batches])
    targets = torch.cat([b[1] for b in batches])
    assert images.shape == (len(co.dataset), 1, 8, 8) and images.dtype == torch.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert targets.tolist() == co.dataset.targets
