"""A training run's callbacks, in the order that keeps a killed or diverged epoch from leaving half
a record, wired to the run folder that keeps their state between restarts."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import keras

from app.config import TrainConfig
from app.recipe.callbacks import (
    BestCheckpoint,
    DivergenceGuard,
    EpochWeights,
    ModelGraphWriter,
    TensorBoard,
    TimeBudget,
    TrainingFinished,
)
from app.recipe.early_stopping import CheckpointEarlyStopping, early_stopping_start
from app.recipe.schedule import ResizableCosineDecay


class TrainingRun(Protocol):
    """The paths the callbacks write (`app.run.RunDir` is one)."""

    backup_dir: Path
    best_weights: Path
    logs_dir: Path

    def epoch_weights(self, epoch: int) -> Path: ...

    def best_score(self) -> dict | None: ...

    def write_best_score(
        self, monitor: str, value: float, epoch: int, metrics: dict | None = None
    ) -> None: ...

    def first_epoch_dev_loss(self) -> float | None: ...

    def write_first_epoch_dev_loss(self, dev_loss: float) -> None: ...

    def time_budget(self) -> dict | None: ...

    def write_time_budget(self, state: dict) -> None: ...

    def write_training_finished(self, record: dict) -> None: ...


def make_time_budget(
    run: TrainingRun,
    train: TrainConfig,
    schedule: ResizableCosineDecay,
    steps_per_epoch: int,
    early_stopping: keras.callbacks.EarlyStopping,
) -> TimeBudget:
    """`train.max_minutes` as a callback: each plan sets the schedule's length to the planned epochs
    and early stopping's start to their first half (unless `train.early_stopping_from_epoch`)."""

    def follow_plan(epochs: int) -> None:
        schedule.resize(epochs * steps_per_epoch)
        early_stopping.start_from_epoch = early_stopping_start(train, epochs)

    return TimeBudget(train.max_minutes, train.epochs, follow_plan, run.time_budget(), run.write_time_budget)


def make_callbacks(
    run: TrainingRun,
    train: TrainConfig,
    monitor: keras.callbacks.Callback | None,
    dev_scores: keras.callbacks.Callback | None = None,
    schedule: ResizableCosineDecay | None = None,
    steps_per_epoch: int | None = None,
) -> list[keras.callbacks.Callback]:
    """Keras's callbacks in the order that matters at an epoch's end:
    - the dev scores, where Keras's validation does not give them (`app.recipe.strategy_loop.DevScores`);
    - the divergence guard first: a diverged epoch stops the run before anything else sees it;
    - the dev monitor adds `val_bleu` to the logs before the checkpoint, early stopping and
      TensorBoard read them;
    - early stopping after the checkpoint, whose record its patience counts from;
    - the last epochs' weights are kept (for `attend average`) before the backup marks the epoch done;
    - under `train.max_minutes` (which needs the model's `schedule` and `steps_per_epoch`), the time
      budget after early stopping (its new start counts from the next epoch) and before TensorBoard
      (which charts the plan);
    - the backup last: once it says an epoch is done, that epoch's evaluation, checkpoint and
      summaries are on disk, so a kill never loses them (a kill before it repeats the epoch).
    The best score so far (of an interrupted run) is where checkpointing and early stopping continue
    from."""
    metric, mode = ("val_bleu", "max") if monitor else ("val_loss", "min")
    saved = run.best_score()
    best = saved if saved and saved.get("monitor") == metric else None
    checkpoint = BestCheckpoint(run.best_weights, run.write_best_score, metric, mode, best, run.logs_dir)
    early_stopping = CheckpointEarlyStopping(
        checkpoint, metric, train.early_stopping_patience, early_stopping_start(train)
    )
    budget = []
    if train.max_minutes is not None:
        if schedule is None or not steps_per_epoch:
            raise ValueError("train.max_minutes needs the model's learning-rate schedule and steps per epoch")
        budget = [make_time_budget(run, train, schedule, steps_per_epoch, early_stopping)]
    return [
        *([dev_scores] if dev_scores else []),
        DivergenceGuard(train.divergence_factor, run.first_epoch_dev_loss(), run.write_first_epoch_dev_loss),
        *([monitor] if monitor else []),
        checkpoint,
        EpochWeights(run.epoch_weights, train.keep_last_epochs),
        early_stopping,
        *budget,
        ModelGraphWriter(run.logs_dir),
        TensorBoard(
            profile_batch=tuple(int(step) for step in train.profile_batches.split(","))
            if train.profile_batches
            else 0,
            log_dir=str(run.logs_dir),
            update_freq=train.log_every_steps,
            histogram_freq=train.histogram_epochs,
        ),
        TrainingFinished(run.write_training_finished),  # before the backup goes, at the end
        keras.callbacks.BackupAndRestore(str(run.backup_dir)),
    ]
