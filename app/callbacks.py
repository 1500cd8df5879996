"""Training callbacks beyond Keras's own: fixed epoch summaries, the model graph, the best score."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import tensorflow as tf


class TensorBoard(keras.callbacks.TensorBoard):
    """Keras's TensorBoard callback, with epoch summaries that are never dropped.

    Keras 3.15 leaves the last batch's `record_if(step % update_freq == 0)` active during
    `on_epoch_end`, so epoch-level scalars and histograms vanish whenever an epoch's last
    step is not a multiple of `update_freq`. Recording is forced on for the epoch summaries.
    """

    def on_epoch_end(self, epoch, logs=None):
        with tf.summary.record_if(True):
            super().on_epoch_end(epoch, logs)


class ModelGraphWriter(keras.callbacks.Callback):
    """Writes the forward pass's op graph for TensorBoard's Graphs tab.

    Keras 3.15's own `write_graph` looks for a tf.function attribute that TensorFlow 2.21 no
    longer has and silently writes nothing.
    """

    def __init__(self, log_dir: Path):
        super().__init__()
        self.log_dir = log_dir

    def on_train_begin(self, logs=None):
        ids = tf.TensorSpec([None, None], tf.int32)
        forward = tf.function(lambda source, target: self.model([source, target], training=False))
        writer = tf.summary.create_file_writer(str(self.log_dir / "train"))
        with writer.as_default(), tf.summary.record_if(True):
            tf.summary.graph(forward.get_concrete_function(ids, ids).graph)
        writer.close()


class BestScoreRecord(keras.callbacks.Callback):
    """Keeps the best dev loss on disk, so that a resumed run's checkpointing continues from it."""

    def __init__(self, path: Path, best: float):
        super().__init__()
        self.path, self.best = path, best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get("val_loss")
        if value is not None and value < self.best:
            self.best = float(value)
            self.path.write_text(json.dumps({"val_loss": self.best, "epoch": epoch + 1}))
