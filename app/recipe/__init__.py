"""The training recipe that `attend train` and `attend bench` share: datasets, optimizer, compiled
model and callbacks. Activities compose it with a run folder; nothing here owns paths or prints.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import keras
import tensorflow as tf

from app.config import Config, TrainConfig
from app.data.pipeline import count_batches, make_dataset
from app.data.prepare import PreparedData
from app.data.tokenizer import SubwordTokenizer
from app.models.losses import (
    MaskedPerplexity,
    MaskedTokenAccuracy,
    label_smoothed_cross_entropy,
    perplexity,
)
from app.models.precision import training_policy
from app.models.seq2seq import build_model
from app.recipe import schedule
from app.recipe.callbacks import (
    BestCheckpoint,
    DivergenceGuard,
    EpochWeights,
    ModelGraphWriter,
    TensorBoard,
    TimeBudget,
)
from app.recipe.optimizer import ReplicaSumClippingAdam, ReplicaSumClippingAdamW
from app.recipe.schedule import ResizableCosineDecay
from app.recipe.strategy_loop import DevEvaluation


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


def held_out_perplexity(
    model: keras.Model, config: Config, tokenizers: tuple[SubwordTokenizer, SubwordTokenizer], tsv: Path
) -> dict:
    """Teacher-forced cross-entropy of `model` on a file of pairs: `perplexity` (exp of the mean per
    target token, padding excluded, no label smoothing), `cross_entropy` (that mean, in nats) and the
    `target_tokens` counted. Every pair the translator would translate whole counts (sources up to
    decode.max_input_tokens, targets up to decode.max_output_tokens), not only those training keeps."""
    dataset = make_dataset(
        tsv,
        *tokenizers,
        batch_size=config.train.batch_size,
        max_source_tokens=config.decode.max_input_tokens,
        max_target_tokens=config.decode.max_output_tokens,
        bucket_width=config.train.bucket_width,
    )
    loss_sum = tokens = 0.0
    for _, _, nll_sum, _, count in DevEvaluation(model).counts(dataset):
        loss_sum, tokens = loss_sum + nll_sum, tokens + count
    return {
        "perplexity": perplexity(loss_sum, tokens),
        "cross_entropy": loss_sum / tokens if tokens else float("nan"),
        "target_tokens": int(tokens),
    }


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


def learning_rate_schedule(train: TrainConfig, total_steps: int) -> ResizableCosineDecay:
    """`train`'s warm-up and cosine decay over `total_steps` (`app.recipe.schedule`)."""
    return schedule.learning_rate_schedule(
        train.learning_rate, train.min_learning_rate_ratio, train.warmup_steps, total_steps
    )


# Decoupled weight decay leaves these alone (as BERT's and most recipes do): a bias or a gate's offset
# has no scale to shrink toward zero.
NO_WEIGHT_DECAY = ("bias",)


def make_optimizer(train: TrainConfig, total_steps: int) -> keras.optimizers.Optimizer:
    """Adam on `learning_rate_schedule` (AdamW when `train.weight_decay` > 0, biases excluded), with
    gradient-norm clipping (of the gradients summed over the replicas, under a distribution strategy)."""
    settings = {"learning_rate": learning_rate_schedule(train, total_steps), "clipnorm": train.clipnorm}
    if not train.weight_decay:
        return ReplicaSumClippingAdam(**settings)
    optimizer = ReplicaSumClippingAdamW(weight_decay=train.weight_decay, **settings)
    optimizer.exclude_from_weight_decay(var_names=list(NO_WEIGHT_DECAY))
    return optimizer


def compile_model(
    config: Config,
    data: PreparedData,
    total_steps: int,
    strategy: tf.distribute.Strategy | None = None,
    before_compile: Callable[[keras.Model], None] | None = None,
) -> keras.Model:
    """The model for `config`, compiled for training (precision policy, loss, metrics, optimizer), its
    variables made in `strategy`'s scope (default: no distribution). Under mixed_float16 Keras wraps
    the optimizer in a LossScaleOptimizer. `before_compile(model)` runs in the scope between building
    and compiling (pretrained embeddings: freezing a layer must precede `compile`)."""
    keras.mixed_precision.set_global_policy(training_policy(config.train.precision))
    with (strategy or tf.distribute.get_strategy()).scope():
        model = build_model(
            data.source_tokenizer.vocab_size,
            data.target_tokenizer.vocab_size,
            **config.model.architecture(),
        )
        if before_compile:
            before_compile(model)
        model.compile(
            optimizer=make_optimizer(config.train, total_steps),
            loss=label_smoothed_cross_entropy(config.train.label_smoothing),
            metrics=[MaskedTokenAccuracy(), MaskedPerplexity()],
            jit_compile=config.train.jit_compile,
            steps_per_execution=config.train.steps_per_execution,
        )
    return model


def early_stopping_start(train: TrainConfig, planned_epochs: int | None = None) -> int:
    """Epochs before early stopping watches the scores: `train.early_stopping_from_epoch`, or half
    of the planned epochs (`train.epochs`, or those a time budget allows): a run is never cut inside
    the first half of its learning-rate schedule."""
    if train.early_stopping_from_epoch is not None:
        return train.early_stopping_from_epoch
    return (planned_epochs or train.epochs) // 2


def schedule_of(model: keras.Model) -> ResizableCosineDecay:
    """The learning-rate schedule `compile_model` gave the model's optimizer (Keras has no public
    accessor: `optimizer.learning_rate` is the current value)."""
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)  # a LossScaleOptimizer's
    return optimizer._learning_rate


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
    - the last epochs' weights are kept (for `attend average`) before the backup marks the epoch done;
    - under `train.max_minutes` (which needs the model's `schedule` and `steps_per_epoch`), the time
      budget after early stopping (its new start counts from the next epoch) and before TensorBoard
      (which charts the plan);
    - the backup last: once it says an epoch is done, that epoch's evaluation, checkpoint and
      summaries are on disk, so a kill never loses them (a kill before it repeats the epoch).
    The best score so far (of an interrupted run) is where checkpointing continues from."""
    metric, mode = ("val_bleu", "max") if monitor else ("val_loss", "min")
    saved = run.best_score()
    best = saved if saved and saved.get("monitor") == metric else None
    early_stopping = keras.callbacks.EarlyStopping(
        monitor=metric,
        mode=mode,
        patience=train.early_stopping_patience,
        start_from_epoch=early_stopping_start(train),
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
        BestCheckpoint(run.best_weights, run.write_best_score, metric, mode, best, run.logs_dir),
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
        keras.callbacks.BackupAndRestore(str(run.backup_dir)),
    ]
