"""Check a dataset version out as a torch ``Dataset`` (and its Arrow table for analysis)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from torch.utils.data import Dataset

from flywheel.datasets.versions import DatasetVersions, VersionInfo
from flywheel.store.blobs import BlobStore
from flywheel.store.images import decode_image


class VersionDataset(Dataset):
    """Decoded images and class indices of a version's rows.

    ``__getitem__`` returns ``(image, class_index)``: the image is a PIL image in ``mode``
    unless ``transform`` maps it (e.g. to a ``float32`` tensor). Class indices follow
    ``classes`` (sorted label names), so they agree across versions with the same classes.
    """

    def __init__(
        self,
        table: pa.Table,
        blobs: BlobStore,
        classes: list[str],
        transform: Callable[[Any], Any] | None = None,
        mode: str = "RGB",
    ) -> None:
        self.sample_ids: list[str] = table["sample_id"].to_pylist()
        self.labels: list[str] = table["label"].to_pylist()
        self.classes = classes
        index = {c: i for i, c in enumerate(classes)}
        self.targets: list[int] = [index[label] for label in self.labels]
        self.blobs = blobs
        self.transform = transform
        self.mode = mode

    def __len__(self) -> int:
        return len(self.sample_ids)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        image = decode_image(self.blobs.get(self.sample_ids[i]), self.mode)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[i]


@dataclass(frozen=True)
class Checkout:
    version: VersionInfo
    table: pa.Table
    dataset: VersionDataset


def checkout(
    versions: DatasetVersions,
    blobs: BlobStore,
    ref: str,
    splits: tuple[str, ...] | None = None,
    transform: Callable[[Any], Any] | None = None,
    mode: str = "RGB",
) -> Checkout:
    """Rows of version ``ref`` (optionally only ``splits``) as a dataset plus the table."""
    info, table = versions.read(ref)
    if splits is not None:
        table = table.filter(pc.is_in(table["split"], value_set=pa.array(list(splits))))
    classes = list(info.stats["classes"])
    return Checkout(info, table, VersionDataset(table, blobs, classes, transform, mode))
