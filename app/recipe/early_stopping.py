"""Early stopping that counts its patience from the kept checkpoint, so that a resumed run stops
where an uninterrupted one would.

Keras's `EarlyStopping` keeps its patience count and best score in memory and clears them when
training starts; `BackupAndRestore` brings back the weights and the epoch, not them. A run resumed
after epoch k would start counting patience afresh, and a run killed twice could train well past the
epoch where an uninterrupted run stops. Here the count is read each epoch from the best checkpoint's
record (`BestCheckpoint`, which a resumed run reloads from the run folder), so there is no state to
lose.
"""

from __future__ import annotations

import keras

from app.config import TrainConfig
from app.recipe.callbacks import BestCheckpoint


def early_stopping_start(train: TrainConfig, planned_epochs: int | None = None) -> int:
    """Epochs before early stopping watches the scores: `train.early_stopping_from_epoch`, or half
    of the planned epochs (`train.epochs`, or those a time budget allows): a run is never cut inside
    the first half of its learning-rate schedule."""
    if train.early_stopping_from_epoch is not None:
        return train.early_stopping_from_epoch
    return (planned_epochs or train.epochs) // 2


class CheckpointEarlyStopping(keras.callbacks.EarlyStopping):
    """Stops the run once `patience` watched epochs have passed without a new kept checkpoint.

    Epochs before `start_from_epoch` (0-based; the time budget may move it) are not watched.
    The patience runs from the kept checkpoint's epoch, or from the first watched epoch when the
    checkpoint is older (as Keras's `EarlyStopping`, whose first watched epoch is always its best).
    What counts as progress is what the checkpoint keeps: a better score, or under BLEU an equal one
    at a lower dev loss (`app.recipe.callbacks.improves`), so a run whose BLEU ties while its loss
    still falls is not cut. Placed after the checkpoint, which has seen the epoch by then.

    Args:
        checkpoint: the run's `BestCheckpoint` (its record survives a restart).
        monitor: the metric it keeps by; an epoch without it in the logs is not counted.
        patience: epochs without a new checkpoint before the run stops.
        start_from_epoch: epochs not watched at the start.
    """

    def __init__(self, checkpoint: BestCheckpoint, monitor: str, patience: int, start_from_epoch: int):
        super().__init__(
            monitor=monitor, mode=checkpoint.mode, patience=patience, start_from_epoch=start_from_epoch
        )
        self.checkpoint = checkpoint

    def on_epoch_end(self, epoch, logs=None):
        if (logs or {}).get(self.monitor) is None or epoch < self.start_from_epoch:
            return
        kept = self.checkpoint.kept.get("epoch")  # 1-based, None before any
        counted_from = max(self.start_from_epoch, kept - 1 if kept else 0)
        self.wait = epoch - counted_from
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True
