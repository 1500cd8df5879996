"""tf.data input pipeline: prepared TSV → token ids → length-bucketed, 0-padded teacher-forcing batches.

Order matters: tokenize (vectorised, parallel) → filter by length → cache the ids → shuffle
anew each epoch → bucket by length → prefetch. Caching before shuffling keeps tokenization
out of every epoch after the first while the order still changes (keras-io's example shuffles
before `cache()`, so every epoch replays the first one's order).

With subword regularisation (`SubwordSampling`) the cache holds each pair's text beside its best
ids, and the sampled segmentation comes after it: a cache after the sampling would replay the
first epoch's draw in every epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from app.config import TokenizerConfig
from app.data.tokenizer import SampledTokenizer, SubwordTokenizer, as_paths
from app.special_tokens import END_ID, START_ID

_TOKENIZE_BATCH = 1024
INTERLEAVE_FILES = 16  # shards read at once: enough to mix them, few enough open files


def add_source_end(ids: tf.RaggedTensor) -> tf.RaggedTensor:
    """Every source ends with the end id, so even an empty input has one position to attend to."""
    ends = tf.fill([ids.nrows(), 1], tf.constant(END_ID, ids.dtype))
    return tf.concat([ids, ends], axis=1)


def add_target_markers(ids: tf.RaggedTensor) -> tf.RaggedTensor:
    starts = tf.fill([ids.nrows(), 1], tf.constant(START_ID, ids.dtype))
    ends = tf.fill([ids.nrows(), 1], tf.constant(END_ID, ids.dtype))
    return tf.concat([starts, ids, ends], axis=1)


def read_lines(tsv_paths: Path | Sequence[Path]) -> tf.data.Dataset:
    """The lines of one file, or of several interleaved (one line of each in turn, deterministic).

    Shards of a large train split are read INTERLEAVE_FILES at a time; `tf.distribute` can also
    give each worker its own shards (auto-sharding by file) because the dataset starts from the names.
    """
    files = [str(path) for path in as_paths(tsv_paths)]
    if not files:
        raise ValueError("make_dataset needs at least one prepared TSV file; none was given")
    if len(files) == 1:
        return tf.data.TextLineDataset(files[0])
    return tf.data.Dataset.from_tensor_slices(files).interleave(
        tf.data.TextLineDataset,
        cycle_length=min(len(files), INTERLEAVE_FILES),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def read_pairs(tsv_paths: Path | Sequence[Path]) -> tf.data.Dataset:
    """(source, target) string pairs from prepared `source<TAB>target` file(s)."""
    lines = read_lines(tsv_paths)
    columns = lines.map(
        lambda line: tf.strings.split(line, "\t", maxsplit=2), num_parallel_calls=tf.data.AUTOTUNE
    )
    return columns.map(lambda fields: (fields[0], fields[1]), num_parallel_calls=tf.data.AUTOTUNE)


def tokenize_pairs(
    pairs: tf.data.Dataset,
    source_tokenizer: SubwordTokenizer,
    target_tokenizer: SubwordTokenizer,
    *,
    keep_text: bool = False,
) -> tf.data.Dataset:
    """Tokenizes in batches (vectorised ops) and yields one (source_ids, target_ids) pair at a time,
    after the pair's (source, target) text with `keep_text`.

    Sources end with END; targets are START … END, the teacher-forcing shift happens in `to_model_inputs`.
    """

    def tokenize(source: tf.Tensor, target: tf.Tensor):
        source_ids = add_source_end(source_tokenizer.tokenize(source))
        target_ids = add_target_markers(target_tokenizer.tokenize(target))
        return ((source, target) if keep_text else ()) + _dense_rows(source_ids, target_ids)

    batched = pairs.batch(_TOKENIZE_BATCH).map(tokenize, num_parallel_calls=tf.data.AUTOTUNE)
    return _unbatch_rows(batched)


def _dense_rows(source_ids: tf.RaggedTensor, target_ids: tf.RaggedTensor) -> tuple[tf.Tensor, ...]:
    # dense + lengths: tf.data cannot unbatch ragged rows into plain tensors
    return (
        source_ids.to_tensor(),
        source_ids.row_lengths(),
        target_ids.to_tensor(),
        target_ids.row_lengths(),
    )


def _unbatch_rows(batched: tf.data.Dataset) -> tf.data.Dataset:
    """One pair at a time from batches ending with `_dense_rows`'s four, each row cut to its length."""

    def cut(*row):
        *text, source, source_length, target, target_length = row
        return (*text, source[:source_length], target[:target_length])

    return batched.unbatch().map(cut, num_parallel_calls=tf.data.AUTOTUNE)


@dataclass(frozen=True)
class SubwordSampling:
    """Subword regularisation (Kudo, 2018): every epoch, each train source (and with `target`, each
    target) is segmented anew by a draw from its segmentations (`SubwordTokenizer.sampling`).

    `alpha` is the draw's inverse temperature (near 0: nearly uniform; 1: the model's own
    probabilities), `nbest` how many of the best segmentations it draws from (-1: all of them).
    Dev, test, BLEU and the export always read the best segmentation.
    """

    alpha: float
    nbest: int = -1
    target: bool = False

    @classmethod
    def of(cls, tokenizer: TokenizerConfig) -> SubwordSampling | None:
        """The tokenizer settings' sampling, or None where `tokenizer.sampling_alpha` is 0 (off)."""
        if not tokenizer.sampling_alpha:
            return None
        return cls(tokenizer.sampling_alpha, tokenizer.sampling_nbest, tokenizer.sample_target)


def sample_segmentations(
    pairs: tf.data.Dataset,
    source_tokenizer: SubwordTokenizer,
    target_tokenizer: SubwordTokenizer,
    sampling: SubwordSampling,
    *,
    max_source_tokens: int,
    max_target_tokens: int,
    cache: bool = True,
) -> tf.data.Dataset:
    """(source_ids, target_ids) of (source, target) text pairs, segmented anew by sampling at every
    pass over the dataset.

    The length filter reads the best segmentation, so every epoch trains on the same pairs (those
    `app.data.prepare` counts) whatever the draw; a draw longer than the limit (sampled
    segmentations have more pieces) gives way to the best segmentation for that pair and epoch.
    `cache` holds each pair's text and best ids in memory: the draws always come after it (without
    it, every epoch tokenizes twice: the best segmentation for the filter, then the draw).
    """
    kept = tokenize_pairs(pairs, source_tokenizer, target_tokenizer, keep_text=True).filter(
        lambda _source, _target, s, t: fits(s, t, max_source_tokens, max_target_tokens)
    )
    if cache:
        kept = kept.cache()
    draw_source = _draw(source_tokenizer.sampling(sampling.nbest, sampling.alpha), add_source_end)
    draw_target = (
        _draw(target_tokenizer.sampling(sampling.nbest, sampling.alpha), add_target_markers)
        if sampling.target
        else None
    )

    def draw(source: tf.Tensor, target: tf.Tensor, source_ids: tf.RaggedTensor, target_ids: tf.RaggedTensor):
        source_ids = draw_source(source, source_ids, max_source_tokens)
        if draw_target:
            target_ids = draw_target(target, target_ids, max_target_tokens + 1)  # + 1: the start marker
        return _dense_rows(source_ids, target_ids)

    batched = kept.ragged_batch(_TOKENIZE_BATCH).map(draw, num_parallel_calls=tf.data.AUTOTUNE)
    return _unbatch_rows(batched)


def _draw(sampler: SampledTokenizer, markers: Callable[[tf.RaggedTensor], tf.RaggedTensor]):
    """`(text, best_ids, limit) → ids`: a sampled segmentation with its markers for each row, or the
    row's best one (`best_ids`, markers included) where the draw has more than `limit` ids."""

    def draw(text: tf.Tensor, best_ids: tf.RaggedTensor, limit: int) -> tf.RaggedTensor:
        drawn = markers(sampler.tokenize(text))
        best_ids = best_ids.with_row_splits_dtype(drawn.row_splits.dtype)
        rows = tf.range(drawn.nrows())
        # row i of [drawn; best] is the draw, row i + n the best segmentation
        chosen = tf.where(drawn.row_lengths() <= limit, rows, rows + drawn.nrows())
        return tf.gather(tf.concat([drawn, best_ids], axis=0), chosen)

    return draw


def fits(source_ids: tf.Tensor, target_ids: tf.Tensor, max_source_tokens: int, max_target_tokens: int):
    """The length filter: the source with its end marker, the target without its start marker."""
    return tf.logical_and(
        tf.size(source_ids) <= max_source_tokens, tf.size(target_ids) - 1 <= max_target_tokens
    )


def to_model_inputs(source_ids: tf.Tensor, target_ids: tf.Tensor):
    """The one place of the teacher-forcing shift: decoder reads target[:-1], predicts target[1:]."""
    return (source_ids, target_ids[:, :-1]), target_ids[:, 1:]


def bucket_boundaries(max_length: int, width: int) -> list[int]:
    return list(range(width + 1, max_length + 2, width))


def make_dataset(
    tsv_paths: Path | Sequence[Path],
    source_tokenizer: SubwordTokenizer,
    target_tokenizer: SubwordTokenizer,
    *,
    batch_size: int,
    max_source_tokens: int,
    max_target_tokens: int,
    bucket_width: int = 8,
    shuffle_buffer: int = 0,
    seed: int | None = None,
    shard: tuple[int, int] | None = None,
    static_shapes: bool = False,
    cache: bool = True,
    sampling: SubwordSampling | None = None,
    batch_tokens: int = 0,
    rows_divisible_by: int = 1,
) -> tf.data.Dataset:
    """Batches `((source_ids, target_in), target_out)` padded with 0, bucketed by length.

    `tsv_paths` is one prepared file or several (a sharded train split: `PreparedCorpus.train_files`),
    read interleaved so that each pass yields every pair of every file once.
    Pairs whose source (with its end marker) exceeds `max_source_tokens`, or whose target
    (without the start marker) exceeds `max_target_tokens`, are left out. `shuffle_buffer=0`
    keeps file order (dev and test).

    `shard=(count, index)` keeps every count-th pair from the index-th on, before tokenizing: one
    worker's share under multi-worker training, each pair in exactly one share. `static_shapes`
    (TPUs) pads every batch to its bucket's upper bound and drops the partial last batch of each
    bucket, so that batches come in a few fixed shapes. `cache=False` tokenizes anew every epoch
    instead of holding every pair's ids in memory (for corpora of millions of pairs). `sampling`
    (train only) segments each pair anew every epoch (`sample_segmentations`). `batch_tokens` and
    `rows_divisible_by`: batches of about that many tokens instead of `batch_size` pairs (`batch_pairs`).
    """
    pairs = token_pairs(
        tsv_paths,
        source_tokenizer,
        target_tokenizer,
        max_source_tokens=max_source_tokens,
        max_target_tokens=max_target_tokens,
        shuffle_buffer=shuffle_buffer,
        seed=seed,
        shard=shard,
        cache=cache,
        sampling=sampling,
    )
    return batch_pairs(
        pairs,
        batch_size=batch_size,
        max_source_tokens=max_source_tokens,
        max_target_tokens=max_target_tokens,
        bucket_width=bucket_width,
        static_shapes=static_shapes,
        batch_tokens=batch_tokens,
        rows_divisible_by=rows_divisible_by,
    )


def token_pairs(
    tsv_paths: Path | Sequence[Path],
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
    """`make_dataset`'s pairs before batching: (source_ids, target_ids), length-filtered, cached and
    shuffled; `app.data.mixing` draws from one such set per corpus before `batch_pairs`."""
    lines = read_pairs(tsv_paths)
    if shard:
        lines = lines.shard(*shard)
    limits = {"max_source_tokens": max_source_tokens, "max_target_tokens": max_target_tokens}
    if sampling:
        pairs = sample_segmentations(
            lines, source_tokenizer, target_tokenizer, sampling, cache=cache, **limits
        )
    else:
        pairs = tokenize_pairs(lines, source_tokenizer, target_tokenizer)
        pairs = pairs.filter(lambda s, t: fits(s, t, **limits))
        if cache:
            pairs = pairs.cache()
    if shuffle_buffer:
        pairs = pairs.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return pairs


def batch_pairs(
    pairs: tf.data.Dataset,
    *,
    batch_size: int,
    max_source_tokens: int,
    max_target_tokens: int,
    bucket_width: int = 8,
    static_shapes: bool = False,
    batch_tokens: int = 0,
    rows_divisible_by: int = 1,
) -> tf.data.Dataset:
    """(source_ids, target_ids) pairs → `make_dataset`'s bucketed, 0-padded teacher-forcing batches:
    of `batch_size` pairs, or with `batch_tokens` of about that many tokens (`bucket_batch_sizes`)."""
    longest = max(max_source_tokens, max_target_tokens + 1)
    boundaries = bucket_boundaries(longest, bucket_width)
    if static_shapes and boundaries[-1] <= longest:
        boundaries.append(longest + 1)  # padding to a bound needs one above every length
    batches = pairs.bucket_by_sequence_length(
        element_length_func=lambda s, t: tf.maximum(tf.size(s), tf.size(t)),
        bucket_boundaries=boundaries,
        bucket_batch_sizes=bucket_batch_sizes(
            boundaries, longest, batch_size, batch_tokens, rows_divisible_by
        ),
        padded_shapes=([None], [None]),
        padding_values=(0, 0),
        pad_to_bucket_boundary=static_shapes,
        drop_remainder=static_shapes,
    )
    return batches.map(to_model_inputs, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def bucket_batch_sizes(
    boundaries: Sequence[int],
    longest: int,
    batch_size: int,
    batch_tokens: int = 0,
    rows_divisible_by: int = 1,
) -> list[int]:
    """Rows per batch of each length bucket (`bucket_by_sequence_length`'s buckets: below the first
    boundary, between two, from the last on): `batch_size` each, or with `batch_tokens` as many as
    keep rows × the bucket's longest length (source or target, markers included: what a batch of
    it pads to at most) within `batch_tokens`, as OpenNMT's `batch_type: tokens` and Marian's
    `--mini-batch-words` do. Short sentences then come many to a batch and long ones few, so a
    step's cost and memory no longer grow with its sentences' length. At least one row (a bucket
    longer than `batch_tokens` trains one pair at a time); `rows_divisible_by` (the replicas that
    split each batch) rounds each size down to a multiple of it, and at least to it."""
    buckets = len(boundaries) + 1
    if not batch_tokens:
        return [batch_size] * buckets
    longest_in = [bound - 1 for bound in boundaries] + [longest]  # lengths below each bound, then the rest
    return [
        max(rows_divisible_by, batch_tokens // length // rows_divisible_by * rows_divisible_by)
        for length in longest_in
    ]


def count_batches(dataset: tf.data.Dataset) -> int:
    """Number of batches in one pass (bucketing makes it unknowable without a pass)."""
    return int(dataset.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1).numpy())


def mean_batch_rows(dataset: tf.data.Dataset) -> float:
    """Mean pairs per batch over one pass of `make_dataset`'s batches (with `batch_tokens` they vary)."""
    rows, batches = dataset.reduce(
        (tf.constant(0, tf.int64), tf.constant(0, tf.int64)),
        lambda totals, batch: (totals[0] + tf.shape(batch[1], out_type=tf.int64)[0], totals[1] + 1),
    )
    return float(rows.numpy()) / max(int(batches.numpy()), 1)
