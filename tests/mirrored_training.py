"""`python -m tests.mirrored_training DIR`: trains the same tiny run twice, without a strategy and
under MirroredStrategy over two logical CPU devices, and prints both runs' losses and weights as
one JSON line (tests/test_distribute.py compares them).

A process of its own: logical devices can only be configured before TensorFlow starts its runtime.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import tensorflow as tf  # noqa: E402

CPU = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(CPU, [tf.config.LogicalDeviceConfiguration()] * 2)

import h5py  # noqa: E402

from app.config import load_config  # noqa: E402
from app.train import train  # noqa: E402
from tests.conftest import tiny_overrides  # noqa: E402

# Dropout draws other random numbers on each replica, so the runs are compared without it. Keras's
# `fit` under a strategy draws a first batch to build the model and then starts a new pass, which
# advances a reshuffling dataset by one order, so the runs read the file in order (a buffer of 1).
# A clip norm this small clips every step's gradients (Keras 3 would clip each replica's half; see
# app/recipe/optimizer.py); the dev loss picks the checkpoint (no BLEU) so both keep the same epoch.
SETTINGS = {
    "model.dropout": 0.0,
    "train.bleu_sentences": 0,
    "train.epochs": 3,
    "train.steps_per_epoch": 4,
    "train.shuffle_buffer": 1,
    "train.clipnorm": 0.01,
}


def run(root: Path, distribution: str) -> dict:
    config = load_config("smoke", tiny_overrides(**SETTINGS, **{"train.distribution": distribution}))
    metrics = train(config, root / distribution, root / "data", log=lambda *_: None)
    weights = []  # the best weights as saved, in the file's order: what every later step reads
    with h5py.File(root / distribution / "checkpoints" / "best.weights.h5") as saved:
        saved.visititems(
            lambda _, item: weights.append(item[()].ravel().tolist()) if hasattr(item, "shape") else None
        )
    return {"history": metrics["history"], "distribution": metrics["distribution"], "weights": weights}


if __name__ == "__main__":
    root = Path(sys.argv[1])
    print(json.dumps({name: run(root, name) for name in ("none", "mirrored")}))
