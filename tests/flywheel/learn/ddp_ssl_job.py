"""One process of a torchrun launch (test_ssl_distributed.py): SSL under DDP, gloo on CPU.
Writes this rank's backbone weights and losses to ``OUT/rank<r>.pt``."""

import sys
from pathlib import Path

import numpy as np
import torch

from flywheel.learn.ssl.distributed import distributed_world
from flywheel.learn.ssl.loop import SSLConfig, train_ssl

out = Path(sys.argv[1])
torch.set_num_threads(1)
images = np.random.default_rng(0).integers(0, 255, (32, 8, 8), dtype=np.uint8)
config = SSLConfig(width=8, hidden_dim=16, embedding_dim=8, epochs=3, batch_size=8, device="cpu")
result = train_ssl(images, config, out / "ckpt")
world = distributed_world()
assert world is not None
torch.save(
    {
        "backbone": result.backbone.state_dict(),
        "losses": result.losses,
        "resumed_from_epoch": result.resumed_from_epoch,
        "world": world.size,
    },
    out / f"rank{world.rank}.pt",
)
