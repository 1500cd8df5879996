"""The batches a training run reads: train (shuffled anew each epoch, one worker's shard under
several workers), dev (in file order, its length known), and the check that a global batch splits
evenly over the replicas.

With `train.batch_tokens` both train and dev come in batches of about that many tokens: the dev
loss is a mean over tokens, so it does not depend on how the pairs are grouped, and one rule keeps
a dev batch within the memory a train batch takes. Under a strategy each bucket's rows are a
multiple of the replicas (Keras splits every batch evenly among them; TPUs need it)."""

from __future__ import annotations

import tensorflow as tf

from app.config import Config, TrainConfig
from app.data.mixing import mixed_pairs
from app.data.pipeline import (
    SubwordSampling,
    batch_pairs,
    count_batches,
    make_dataset,
    mean_batch_rows,
    token_pairs,
)
from app.data.prepare import PreparedData

# Up to this many train pairs, their token ids (int32, a few hundred bytes a pair with tf.data's
# overhead) are cached in memory after the first epoch; larger splits are tokenized anew each epoch.
MEMORY_CACHE_PAIRS = 1_000_000


def _batching(
    train: TrainConfig,
    batch_size: int | None,
    static_shapes: bool,
    replicas: int = 1,
    batch_tokens: int | None = None,
) -> dict:
    return {
        "batch_size": batch_size or train.batch_size,
        "max_source_tokens": train.max_source_tokens,
        "max_target_tokens": train.max_target_tokens,
        "bucket_width": train.bucket_width,
        "static_shapes": static_shapes,
        "batch_tokens": train.batch_tokens if batch_tokens is None else batch_tokens,
        "rows_divisible_by": replicas,
    }


def make_train_set(
    config: Config,
    data: PreparedData,
    *,
    batch_size: int | None = None,
    batch_tokens: int | None = None,
    shard: tuple[int, int] | None = None,
    static_shapes: bool = False,
    replicas: int = 1,
) -> tf.data.Dataset:
    """Train batches, shuffled anew each epoch; `shard=(count, index)`: one worker's share of the pairs
    (each pair in exactly one share), `batch_size` / `batch_tokens`: its rows or tokens per batch
    (default train.batch_size / train.batch_tokens), `replicas`: what each bucket's rows divide by.
    With `data.corpora`: drawn from every corpus by weight (`app.data.mixing`), endless."""
    shuffling = {"shuffle_buffer": config.train.shuffle_buffer, "seed": config.train.seed, "shard": shard}
    sampling = SubwordSampling.of(config.tokenizer)  # train only: dev, test and BLEU read the best
    batching = _batching(config.train, batch_size, static_shapes, replicas, batch_tokens)
    lengths = {key: batching[key] for key in ("max_source_tokens", "max_target_tokens")}
    if data.extras:
        pairs = data.corpus.report["splits"]["train"] + sum(extra.report["pairs"] for extra in data.extras)
        drawn = mixed_pairs(
            data.mixture(config.data.weight),
            *data.tokenizers,
            cache=pairs <= MEMORY_CACHE_PAIRS,  # every corpus's ids together
            sampling=sampling,
            **shuffling,
            **lengths,
        )
    else:
        drawn = token_pairs(
            data.corpus.train_files,
            *data.tokenizers,
            cache=data.corpus.report["splits"]["train"] <= MEMORY_CACHE_PAIRS,
            sampling=sampling,
            **shuffling,
            **lengths,
        )
    return batch_pairs(drawn, **batching)


def epoch_steps(
    config: Config,
    data: PreparedData,
    train_set: tf.data.Dataset,
    static_shapes: bool = False,
    replicas: int = 1,
) -> int:
    """Steps of one epoch: train.steps_per_epoch, else one pass over the train split. With
    `data.corpora` the mixed set is endless, so an epoch is what one pass over the main corpus alone
    takes (as Marian and OpenNMT count): epochs, the schedule and dev evaluations keep the cadence of
    the run without extras, and the two compare at equal steps."""
    if config.train.steps_per_epoch:
        return config.train.steps_per_epoch
    if not data.extras:
        return count_batches(train_set)
    return count_batches(_main_train_pass(config, data, static_shapes, replicas))


def _main_train_pass(
    config: Config, data: PreparedData, static_shapes: bool, replicas: int
) -> tf.data.Dataset:
    """One pass over the main corpus's train split, batched as the run batches it (not cached)."""
    batching = _batching(config.train, None, static_shapes, replicas)
    return make_dataset(data.corpus.train_files, *data.tokenizers, cache=False, **batching)


def mean_pairs_per_batch(
    config: Config, data: PreparedData, static_shapes: bool = False, replicas: int = 1
) -> float:
    """Mean pairs per train batch over one pass of the main corpus: what `train.batch_tokens` gives,
    for scaling the learning rate to it (the schedule is not changed for it)."""
    return mean_batch_rows(_main_train_pass(config, data, static_shapes, replicas))


def make_dev_set(
    config: Config, data: PreparedData, static_shapes: bool = False, replicas: int = 1
) -> tf.data.Dataset:
    """Dev batches in file order; the set knows its length so that Keras starts a fresh pass over it
    at every validation."""
    batching = _batching(config.train, None, static_shapes, replicas)
    dev_set = make_dataset(data.corpus.dev, *data.tokenizers, **batching)
    return dev_set.apply(tf.data.experimental.assert_cardinality(count_batches(dev_set)))


def make_datasets(
    config: Config, data: PreparedData, static_shapes: bool = False, replicas: int = 1
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """Train (shuffled each epoch) and dev batches of `train.batch_size` rows (or
    `train.batch_tokens` tokens, each bucket's rows a multiple of `replicas`)."""
    train_set = make_train_set(config, data, static_shapes=static_shapes, replicas=replicas)
    return train_set, make_dev_set(config, data, static_shapes, replicas)


def shard_input_function(config: Config, data: PreparedData):
    """`input_context → dataset` for `Strategy.distribute_datasets_from_function`: each input pipeline
    (one per worker) reads its shard of the pairs, endlessly, in batches of one replica's share
    of `train.batch_size` (or of `train.batch_tokens`)."""

    def make(context: tf.distribute.InputContext) -> tf.data.Dataset:
        tokens = config.train.batch_tokens and max(
            1, config.train.batch_tokens // context.num_replicas_in_sync
        )
        rows = None if tokens else context.get_per_replica_batch_size(config.train.batch_size)
        shard = (context.num_input_pipelines, context.input_pipeline_id)
        return make_train_set(config, data, batch_size=rows, batch_tokens=tokens, shard=shard).repeat()

    return make


def check_batch_divides(batch_size: int, replicas: int) -> None:
    """Each replica gets the same share of the global batch, so it must divide evenly."""
    if batch_size % replicas:
        raise ValueError(
            f"train.batch_size={batch_size} does not divide among {replicas} replicas; use a multiple of "
            f"{replicas} (the global batch is split evenly over the replicas)"
        )
