"""The smallest pretraining run the trainer tests use: 32 px, batches of 3 videos, a checkpoint and a metrics line at
every step, no frame cache (shared, so every end-to-end test runs the same tiny recipe)."""

from __future__ import annotations

TINY = {
    "image_size": 32,
    "batch_size": 3,
    "num_workers": 0,
    "meta_batch_size": 2,
    "meta_fraction": 0.2,
    "checkpoint_every": 1,
    "log_every": 1,
    "cache_dir": None,
}
