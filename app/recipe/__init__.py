"""The training recipe that `attend train` and `attend bench` share: datasets, optimizer, compiled
model and callbacks. Activities compose it with a run folder; nothing here owns paths or prints.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Protocol

import keras
import tensorflow as tf

from app.config import Config, TrainConfig
from app.data.pipeline import count_batches, make_dataset
from app.data.prepare import PreparedData
from app.models.losses import MaskedTokenAccuracy, masked_cross_entropy
from app.models.precision import training_policy
from app.models.seq2seq import build_model
from app.recipe.callbacks import BestScoreRecord, DivergenceGuard, ModelGraphWriter, TensorBoard
from app.recipe.optimizer import ReplicaSumClippingAdam


class TrainingRun(Protocol):
    """The paths the callbacks write (`app.run.RunDir` is one)."""

    backup_dir: Path
    best_weights: Path
    logs_dir: Path

    def best_score(self) -> dict | None: ...

    def write_best_score(
        self, monitor: str, value: float, epoch: int, metrics: dict | None = None
    ) -> None: ...

    def first_epoch_dev_loss(self) -> float | None: ...

    def write_first_epoch_dev_loss(self, dev_loss: float) -> None: ...


def _batching(train: TrainConfig, batch_size: int | None, static_shapes: bool) -> dict:
    return {
        "batch_size": batch_size or train.batch_size,
        "max_source_tokens": train.max_source_tokens,
        "max_target_tokens": train.max_target_tokens,
        "bucket_width": train.bucket_width,
        "static_shapes": static_shapes,
    }


# Up to this many train pairs, their token ids (int32, a few hundred bytes a pair with tf.data's
# overhead) are cached in memory after the first epoch; larger splits are tokenized anew each epoch.
MEMORY_CACHE_PAIRS = 1_000_000


def make_train_set(
    config: Config,
    data: PreparedData,
    *,
    batch_size: int | None = None,
    shard: tuple[int, int] | None = None,
    static_shapes: bool = False,
) -> tf.data.Dataset:
    """Train batches, shuffled anew each epoch; `shard=(count, index)`: one worker's share of the pairs
    (each pair in exactly one share), `batch_size`: its rows per batch (default train.batch_size)."""
    return make_dataset(
        data.corpus.train_files,
        *data.tokenizers,
        shuffle_buffer=config.train.shuffle_buffer,
        seed=config.train.seed,
        shard=shard,
        cache=data.corpus.report["splits"]["train"] <= MEMORY_CACHE_PAIRS,
        **_batching(config.train, batch_size, static_shapes),
    )


def make_dev_set(config: Config, data: PreparedData, static_shapes: bool = False) -> tf.data.Dataset:
    """Dev batches in file order; the set knows its length so that Keras starts a fresh pass over it
    at every validation."""
    dev_set = make_dataset(data.corpus.dev, *data.tokenizers, **_batching(config.train, None, static_shapes))
    return dev_set.apply(tf.data.experimental.assert_cardinality(count_batches(dev_set)))


def make_datasets(
    config: Config, data: PreparedData, static_shapes: bool = False
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """Train (shuffled each epoch) and dev batches of `train.batch_size` rows."""
    return make_train_set(config, data, static_shapes=static_shapes), make_dev_set(
        config, data, static_shapes
    )


def shard_input_function(config: Config, data: PreparedData):
    """`input_context → dataset` for `Strategy.distribute_datasets_from_function`: each input pipeline
    (one per worker) reads its shard of the pairs, endlessly, in batches of one replica's share
    of `train.batch_size`."""

    def make(context: tf.distribute.InputContext) -> tf.data.Dataset:
        rows = context.get_per_replica_batch_size(config.train.batch_size)
        shard = (context.num_input_pipelines, context.input_pipeline_id)
        return make_train_set(config, data, batch_size=rows, shard=shard).repeat()

    return make


def check_batch_divides(batch_size: int, replicas: int) -> None:
    """Each replica gets the same share of the global batch, so it must divide evenly."""
    if batch_size % replicas:
        raise ValueError(
            f"train.batch_size={batch_size} does not divide among {replicas} replicas; use a multiple of "
            f"{replicas} (the global batch is split evenly over the replicas)"
        )


def learning_rate_schedule(train: TrainConfig, total_steps: int) -> keras.optimizers.schedules.CosineDecay:
    """Linear warm-up (at most a tenth of the steps), then cosine decay to `min_learning_rate_ratio`
    of the peak at the last step."""
    warmup = min(train.warmup_steps, max(total_steps // 10, 1))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=max(total_steps - warmup, 1),
        alpha=train.min_learning_rate_ratio,
        warmup_target=train.learning_rate,
        warmup_steps=warmup,
    )


def make_optimizer(train: TrainConfig, total_steps: int) -> keras.optimizers.Optimizer:
    """Adam on `learning_rate_schedule`, with gradient-norm clipping (of the gradients summed over the
    replicas, under a distribution strategy)."""
    return ReplicaSumClippingAdam(
        learning_rate=learning_rate_schedule(train, total_steps), clipnorm=train.clipnorm
    )


def compile_model(
    config: Config, data: PreparedData, total_steps: int, strategy: tf.distribute.Strategy | None = None
) -> keras.Model:
    """The model for `config`, compiled for training (precision policy, loss, metrics, optimizer), its
    variables made in `strategy`'s scope (default: no distribution). Under mixed_float16 Keras wraps
    the optimizer in a LossScaleOptimizer."""
    keras.mixed_precision.set_global_policy(training_policy(config.train.precision))
    with (strategy or tf.distribute.get_strategy()).scope():
        model = build_model(
            data.source_tokenizer.vocab_size,
            data.target_tokenizer.vocab_size,
            **dataclasses.asdict(config.model),
        )
        model.compile(
            optimizer=make_optimizer(config.train, total_steps),
            loss=masked_cross_entropy,
            metrics=[MaskedTokenAccuracy()],
            jit_compile=config.train.jit_compile,
            steps_per_execution=config.train.steps_per_execution,
        )
    return model


def make_callbacks(
    run: TrainingRun,
    train: TrainConfig,
    monitor: keras.callbacks.Callback | None,
    dev_scores: keras.callbacks.Callback | None = None,
) -> list[keras.callbacks.Callback]:
    """Keras's callbacks in the order that matters at an epoch's end:
    - the dev scores, where Keras's validation does not give them (`app.recipe.strategy_loop.DevScores`);
    - the divergence guard first: a diverged epoch stops the run before anything else sees it;
    - the dev monitor adds `val_bleu` to the logs before the checkpoint, early stopping and
      TensorBoard read them;
    - the backup last: once it says an epoch is done, that epoch's evaluation, checkpoint and
      summaries are on disk, so a kill never loses them (a kill before it repeats the epoch).
    The best score so far (of an interrupted run) is where checkpointing continues from."""
    metric, mode = ("val_bleu", "max") if monitor else ("val_loss", "min")
    saved = run.best_score()
    best = saved if saved and saved.get("monitor") == metric else None
    return [
        *([dev_scores] if dev_scores else []),
        DivergenceGuard(train.divergence_factor, run.first_epoch_dev_loss(), run.write_first_epoch_dev_loss),
        *([monitor] if monitor else []),
        keras.callbacks.ModelCheckpoint(
            str(run.best_weights),
            monitor=metric,
            mode=mode,
            save_best_only=True,
            save_weights_only=True,
            initial_value_threshold=best["value"] if best else None,
        ),
        BestScoreRecord(run.write_best_score, metric, mode, best, run.logs_dir),
        keras.callbacks.EarlyStopping(monitor=metric, mode=mode, patience=train.early_stopping_patience),
        ModelGraphWriter(run.logs_dir),
        TensorBoard(
            profile_batch=tuple(int(step) for step in train.profile_batches.split(","))
            if train.profile_batches
            else 0,
            log_dir=str(run.logs_dir),
            update_freq=train.log_every_steps,
            histogram_freq=train.histogram_epochs,
        ),
        keras.callbacks.BackupAndRestore(str(run.backup_dir)),
    ]
