"""`train.batch_tokens`: batches of about N tokens instead of N pairs (issue #31, part 3)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from app.config import SETTINGS_ADDED_IN, load_config
from app.data.pipeline import bucket_batch_sizes, make_dataset, mean_batch_rows
from app.data.tokenizer import SubwordTokenizer, read_side, train_sentencepiece
from tests.conftest import BIBLE_SAMPLE, tiny_overrides

TOKENS = 240  # several rows of long verses, many of short ones


@pytest.fixture(scope="module")
def tokenizers() -> tuple[SubwordTokenizer, SubwordTokenizer]:
    return tuple(SubwordTokenizer(train_sentencepiece(read_side(BIBLE_SAMPLE, side), 400)) for side in (0, 1))


def batches(tokenizers, **options):
    settings = {"batch_size": 16, "max_source_tokens": 64, "max_target_tokens": 64, "bucket_width": 4}
    return list(make_dataset(BIBLE_SAMPLE, *tokenizers, **{**settings, **options}).as_numpy_iterator())


def padded_length(batch) -> int:
    """What the batch's bucket pads to: its longer side, the target with both markers."""
    (source, target_in), _ = batch
    return max(source.shape[1], target_in.shape[1] + 1)


def pairs_of(all_batches) -> Counter:
    """Every (source, target) pair of the batches, padding cut, as a multiset."""
    pairs = Counter()
    for (source, _), target_out in all_batches:
        for source_row, target_row in zip(source, target_out, strict=True):
            pairs[(tuple(source_row[source_row != 0]), tuple(target_row[target_row != 0]))] += 1
    return pairs


def test_bucket_sizes_hold_the_token_budget_and_divide_among_replicas():
    boundaries, longest = [5, 9], 12  # buckets of lengths up to 4, 8 and 12
    assert bucket_batch_sizes(boundaries, longest, batch_size=7) == [7, 7, 7]
    assert bucket_batch_sizes(boundaries, longest, 7, batch_tokens=24) == [6, 3, 2]
    assert bucket_batch_sizes(boundaries, longest, 7, batch_tokens=10) == [2, 1, 1]  # never 0 rows
    assert bucket_batch_sizes(boundaries, longest, 7, batch_tokens=48, rows_divisible_by=4) == [12, 4, 4]


def test_every_batch_keeps_within_the_tokens_and_short_pairs_come_more_to_a_batch(tokenizers):
    token_batches = batches(tokenizers, batch_tokens=TOKENS)
    for batch in token_batches:
        rows = batch[1].shape[0]
        (_, target_in), _ = batch
        assert rows * target_in.shape[1] <= rows * padded_length(batch) <= TOKENS
    by_length = {}
    for batch in token_batches:
        by_length.setdefault(padded_length(batch), []).append(batch[1].shape[0])
    # the largest batch of each length: a bucket's full batches (the last one of each may be partial)
    largest = {length: max(rows) for length, rows in by_length.items()}
    short, long = min(largest), max(largest)
    assert largest[short] > largest[long]
    assert largest[short] > 16  # more than batch_size pairs where sentences are short


def test_batch_tokens_zero_gives_the_batches_of_batch_size(tokenizers):
    before = batches(tokenizers)  # batch_tokens not given: how every run batched so far
    off = batches(tokenizers, batch_tokens=0)
    assert len(off) == len(before)
    for a, b in zip(off, before, strict=True):
        for x, y in zip((*a[0], a[1]), (*b[0], b[1]), strict=True):
            np.testing.assert_array_equal(x, y)
    assert max(batch[1].shape[0] for batch in off) == 16


def test_every_pair_comes_once_a_pass_in_batches_of_tokens(tokenizers):
    options = {"shuffle_buffer": 1000, "seed": 7}
    token_pass = batches(tokenizers, batch_tokens=TOKENS, **options)
    assert pairs_of(token_pass) == pairs_of(batches(tokenizers, **options))
    assert sum(pairs_of(token_pass).values()) == len(BIBLE_SAMPLE.read_text(encoding="utf-8").splitlines())


def test_static_shapes_with_replicas_give_fixed_shapes_of_rows_that_divide(tokenizers):
    token_batches = batches(tokenizers, batch_tokens=TOKENS, static_shapes=True, rows_divisible_by=3)
    assert token_batches
    shapes = {}
    for batch in token_batches:
        rows = batch[1].shape[0]
        assert rows % 3 == 0 and rows * padded_length(batch) <= TOKENS
        shapes.setdefault(padded_length(batch), set()).add(rows)
    assert all(len(rows) == 1 for rows in shapes.values()), shapes  # remainders dropped: one shape a bucket


def test_mean_batch_rows_counts_pairs_per_batch(tokenizers):
    dataset = make_dataset(
        BIBLE_SAMPLE,
        *tokenizers,
        batch_size=16,
        max_source_tokens=64,
        max_target_tokens=64,
        batch_tokens=TOKENS,
    )
    listed = list(dataset.as_numpy_iterator())
    assert mean_batch_rows(dataset) == pytest.approx(sum(b[1].shape[0] for b in listed) / len(listed))


def test_the_config_refuses_a_batch_smaller_than_the_longest_pair():
    assert load_config("smoke").train.batch_tokens == 0  # off by default
    assert "train.batch_tokens" in SETTINGS_ADDED_IN[(0, 4, 0)]  # older saved configs take 0
    assert load_config("smoke", ["train.batch_tokens=65"]).train.batch_tokens == 65  # 64 + the start marker
    with pytest.raises(ValueError, match=r"train\.batch_tokens: expected 0 \(off\) or at least 65.*got 64"):
        load_config("smoke", ["train.batch_tokens=64"])
    with pytest.raises(ValueError, match=r"at least 101"):
        load_config("smoke", ["train.batch_tokens=80", "train.max_source_tokens=101"])
    with pytest.raises(ValueError, match=r"train\.batch_tokens: expected at least 0"):
        load_config("smoke", ["train.batch_tokens=-1"])


def test_an_epoch_trains_in_batches_of_tokens_through_the_recipe(tmp_path):
    """The fit path `attend train` takes (app.recipe): one epoch of token batches, counted by
    `epoch_steps`, and the mean pairs a batch that `attend train` logs for scaling the learning rate."""
    from app.data.prepare import prepare_data
    from app.recipe import compile_model, epoch_steps, make_datasets, mean_pairs_per_batch

    config = load_config("smoke", tiny_overrides(**{"train.batch_tokens": 1000}))
    data = prepare_data(config, tmp_path / "data", log=lambda *_: None)
    train_set, dev_set = make_datasets(config, data)
    listed = list(train_set.as_numpy_iterator())
    steps = epoch_steps(config, data, train_set)
    assert steps == len(listed)
    rows = [batch[1].shape[0] for batch in listed]
    assert mean_pairs_per_batch(config, data) == pytest.approx(sum(rows) / steps)
    assert max(rows) > config.train.batch_size  # short verses: more than 32 pairs a batch
    model = compile_model(config, data, steps)
    history = model.fit(
        train_set.repeat(), epochs=1, steps_per_epoch=steps, validation_data=dev_set, verbose=0
    )
    assert np.isfinite(history.history["loss"][0]) and np.isfinite(history.history["val_loss"][0])
