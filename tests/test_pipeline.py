"""tf.data: teacher-forcing shift, 0-padding, length filter, bucketing."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from app.data.pipeline import count_batches, make_dataset
from app.data.tokenizer import END_ID, START_ID, SubwordTokenizer, read_side, train_sentencepiece
from tests.conftest import BIBLE_SAMPLE


@pytest.fixture(scope="module")
def tokenizers() -> tuple[SubwordTokenizer, SubwordTokenizer]:
    return tuple(SubwordTokenizer(train_sentencepiece(read_side(BIBLE_SAMPLE, side), 400)) for side in (0, 1))


def batches(tokenizers, **options):
    settings = {
        "batch_size": 16,
        "max_source_tokens": 64,
        "max_target_tokens": 64,
        "bucket_width": 4,
        **options,
    }
    return list(make_dataset(BIBLE_SAMPLE, *tokenizers, **settings).as_numpy_iterator())


def test_teacher_forcing_shift_and_markers(tokenizers):
    for (source, target_in), target_out in batches(tokenizers):
        assert source.shape[0] == target_in.shape[0] == target_out.shape[0]
        assert target_in.shape == target_out.shape
        assert (target_in[:, 0] == START_ID).all()
        np.testing.assert_array_equal(
            target_in[:, 1:][target_out[:, :-1] != 0], target_out[:, :-1][target_out[:, :-1] != 0]
        )
        target_lengths = (target_out != 0).sum(axis=1)
        assert (target_out[np.arange(len(target_out)), target_lengths - 1] == END_ID).all()
        source_lengths = (source != 0).sum(axis=1)
        assert (source[np.arange(len(source)), source_lengths - 1] == END_ID).all()


def test_padding_is_zero_and_only_at_the_end(tokenizers):
    for (source, _), target_out in batches(tokenizers):
        for matrix in (source, target_out):
            nonzero = matrix != 0
            # once a row reaches padding it stays padding: cumulative product of "real token" flags
            assert (np.cumprod(nonzero, axis=1) == nonzero).all()


def test_every_pair_is_kept_once_when_it_fits(tokenizers):
    total = sum(len(target_out) for _, target_out in batches(tokenizers))
    assert total == len(BIBLE_SAMPLE.read_text(encoding="utf-8").splitlines())


def test_length_filter_drops_long_pairs(tokenizers):
    kept = batches(tokenizers, max_source_tokens=14, max_target_tokens=14)
    assert kept, "some short pairs must remain"
    for (source, _), target_out in kept:
        assert source.shape[1] <= 14 and target_out.shape[1] <= 14
    assert sum(len(t) for _, t in kept) < len(BIBLE_SAMPLE.read_text(encoding="utf-8").splitlines())


def test_bucketing_cuts_padding(tokenizers):
    def padding_share(bucket_width: int) -> float:
        padded = real = 0
        for (source, _), _target in batches(tokenizers, bucket_width=bucket_width):
            padded += source.size
            real += (source != 0).sum()
        return 1 - real / padded

    assert padding_share(4) < padding_share(64)


def test_count_batches_matches_iteration(tokenizers):
    dataset = make_dataset(
        BIBLE_SAMPLE, *tokenizers, batch_size=16, max_source_tokens=64, max_target_tokens=64
    )
    assert count_batches(dataset) == len(list(dataset))
    assert dataset.element_spec[0][0] == tf.TensorSpec([None, None], tf.int32)
