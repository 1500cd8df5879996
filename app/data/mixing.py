"""Weighted mixing of several training corpora in tf.data (`data.corpora`).

Each corpus becomes its own stream of (source_ids, target_ids) pairs (`pipeline.token_pairs`:
length-filtered, cached, shuffled), repeated without end so that a small corpus is revisited, and
`tf.data.Dataset.sample_from_datasets` draws each next pair from corpus i with probability
weight_i / sum(weights), seeded by `train.seed`. Batches are made after the draw
(`pipeline.batch_pairs`), so one batch holds pairs of every corpus. With `train.tag_synthetic` the
sources of synthetic corpora get the reserved tag's id prepended here, in the training pipeline
only: dev, test and the export tokenize text and never add it.

The mixed set is endless, so an epoch is counted by the main corpus, as Marian and OpenNMT do: as
many steps as one pass over the main corpus's train split alone takes (`app.recipe.epoch_steps`).
A corpus of weight 0 (only the main one may have it, `data.weight=0`: `attend distill`'s student,
which trains on the teacher's translations of the same pairs) is left out of the draw entirely.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from app.data.pipeline import SubwordSampling, token_pairs
from app.data.tokenizer import SubwordTokenizer


@dataclass(frozen=True)
class MixedCorpus:
    """One corpus of the mixture: its prepared train file(s), its weight, and the id prepended to its
    sources (None: no tag)."""

    files: tuple[Path, ...]
    weight: float
    tag_id: int | None = None


def mix(datasets: Sequence[tf.data.Dataset], weights: Sequence[float], seed: int | None) -> tf.data.Dataset:
    """An endless stream that draws each element from `datasets[i]` (repeated) with probability
    `weights[i] / sum(weights)`."""
    if len(datasets) != len(weights) or not datasets:
        raise ValueError(
            f"mix needs one weight per dataset, got {len(datasets)} datasets, {len(weights)} weights"
        )
    if any(weight < 0 for weight in weights) or not any(weight > 0 for weight in weights):
        raise ValueError(f"mixing weights must be at least 0, one above 0, got {list(weights)}")
    drawn = [(dataset, weight) for dataset, weight in zip(datasets, weights, strict=True) if weight > 0]
    if len(drawn) == 1:
        return drawn[0][0].repeat()
    total = float(sum(weight for _, weight in drawn))
    return tf.data.Dataset.sample_from_datasets(
        [dataset.repeat() for dataset, _ in drawn], weights=[weight / total for _, weight in drawn], seed=seed
    )


def prepend_tag(tag_id: int):
    """`(source_ids, target_ids) → ([tag_id, *source_ids], target_ids)`, for `Dataset.map`."""

    def prepend(source_ids: tf.Tensor, target_ids: tf.Tensor):
        return tf.concat([tf.constant([tag_id], source_ids.dtype), source_ids], axis=0), target_ids

    return prepend


def mixed_pairs(
    corpora: Sequence[MixedCorpus],
    source_tokenizer: SubwordTokenizer,
    target_tokenizer: SubwordTokenizer,
    *,
    max_source_tokens: int,
    max_target_tokens: int,
    shuffle_buffer: int = 0,
    seed: int | None = None,
    shard: tuple[int, int] | None = None,
    cache: bool = True,
    sampling: SubwordSampling | None = None,
) -> tf.data.Dataset:
    """The corpora's pairs, each filtered and shuffled on its own, drawn by weight. A tagged corpus's
    sources are filtered one token shorter, so that with the tag they respect `max_source_tokens`;
    with `sampling` every corpus is segmented anew each epoch, the tag prepended after the draw."""
    streams, weights = [], []
    for index, corpus in enumerate(corpora):
        if corpus.weight == 0:  # never drawn, so never read (the seeds of the others keep their index)
            continue
        tagged = corpus.tag_id is not None
        pairs = token_pairs(
            corpus.files,
            source_tokenizer,
            target_tokenizer,
            max_source_tokens=max_source_tokens - tagged,
            max_target_tokens=max_target_tokens,
            shuffle_buffer=shuffle_buffer,
            seed=None if seed is None else seed + index,
            shard=shard,
            cache=cache,
            sampling=sampling,
        )
        if tagged:
            pairs = pairs.map(prepend_tag(corpus.tag_id), num_parallel_calls=tf.data.AUTOTUNE)
        streams.append(pairs)
        weights.append(corpus.weight)
    return mix(streams, weights, seed)
