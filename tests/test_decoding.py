"""Decoding strategies: which one the settings pick, that each runs its search function unchanged,
and that the Translator decides its searches once, when it is built."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from app.config import load_config
from app.data.tokenizer import SubwordTokenizer, read_side, train_sentencepiece
from app.models.decoding import (
    BeamSearch,
    DecodingStrategy,
    FixedLengthGreedySearch,
    FixedShapeBeamSearch,
    GreedySearch,
)
from app.models.search import (
    beam_search,
    beam_search_nbest,
    fixed_length_greedy_search,
    fixed_shape_beam_search,
    greedy_search,
)
from app.models.seq2seq import Seq2SeqDecoding
from app.translator import XLA_MAX_BATCH, build_float32_model, build_translator
from tests.conftest import BIBLE_SAMPLE
from tests.test_search import markov_state, markov_step, random_table

KEYS = ("encoder",)


@pytest.mark.parametrize(
    ("beam_width", "output_length", "expected"),
    [
        (1, None, GreedySearch(0.6)),
        (4, None, BeamSearch(4, 0.6, KEYS)),
        (1, 16, FixedLengthGreedySearch(0.6, 16)),
        (3, 16, FixedShapeBeamSearch(3, 0.6, 16, KEYS)),
    ],
)
def test_settings_pick_the_strategy(beam_width, output_length, expected):
    strategy = DecodingStrategy.from_settings(
        beam_width, 0.6, output_length=output_length, constant_keys=KEYS
    )
    assert strategy == expected and type(strategy) is type(expected)
    assert strategy.static_shapes == (output_length is not None)
    assert strategy.name == ("greedy" if beam_width == 1 else "beam")


def test_a_beam_width_below_one_is_refused():
    with pytest.raises(ValueError, match="beam_width must be at least 1"):
        DecodingStrategy.from_settings(0, 0.6)


def _assert_same(got, expected):
    assert len(got) == len(expected)
    for got_field, expected_field in zip(got, expected, strict=True):
        if expected_field is None:
            assert got_field is None
        else:
            np.testing.assert_array_equal(got_field.numpy(), expected_field.numpy())


SEARCHES = [
    (GreedySearch(0.6), lambda *args: greedy_search(*args, collect="fed")),
    (BeamSearch(3, 0.6), lambda *args: beam_search(*args, 3, 0.6, collect="fed")),
    (FixedLengthGreedySearch(0.6, 16), lambda *args: fixed_length_greedy_search(*args, 16)),
    (FixedShapeBeamSearch(3, 0.6, 16), lambda *args: fixed_shape_beam_search(*args, 16, 3, 0.6)),
]


@pytest.mark.parametrize(("strategy", "search"), SEARCHES, ids=lambda value: type(value).__name__)
def test_each_strategy_gives_its_search_function_s_output(strategy, search):
    step, limits = markov_step(random_table(3, vocab=9, sharpness=1.0)), tf.constant([12, 4, 9])
    collect = None if strategy.static_shapes else "fed"
    got = strategy.search(step, markov_state(3), limits, collect=collect)
    _assert_same(got, search(step, markov_state(3), limits))
    assert got.tokens.shape[0] == 3 and (got.lengths.numpy() <= limits.numpy()).all()


def test_static_strategies_refuse_to_collect():
    with pytest.raises(ValueError, match="collects no state entries"):
        FixedShapeBeamSearch(3, 0.6, 16).search(
            markov_step(random_table(0)), markov_state(1), [4], collect="fed"
        )


def test_beam_nbest_is_the_whole_beam_and_greedy_nbest_its_one_translation():
    step, limits = markov_step(random_table(5, vocab=9, sharpness=1.0)), tf.constant([8, 5])
    _assert_same(
        BeamSearch(4, 0.6).nbest(step, markov_state(2), limits),
        beam_search_nbest(step, markov_state(2), limits, 4, 0.6),
    )
    greedy = greedy_search(step, markov_state(2), limits)
    nbest = GreedySearch(1.0).nbest(step, markov_state(2), limits)
    assert nbest.tokens.shape[1] == 1
    np.testing.assert_array_equal(nbest.tokens.numpy()[:, 0], greedy.tokens.numpy())
    np.testing.assert_array_equal(nbest.scores.numpy()[:, 0], greedy.scores.numpy())
    penalty = (5 + greedy.lengths.numpy()) / 6  # GNMT's, at alpha = 1
    np.testing.assert_allclose(
        nbest.normalised_scores.numpy()[:, 0], greedy.scores.numpy() / penalty, rtol=1e-6
    )


# === The Translator chooses once ===


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """An untrained smoke-sized model and real tokenizers: enough to build Translators and decode."""
    tokenizers = tuple(
        SubwordTokenizer(train_sentencepiece(read_side(BIBLE_SAMPLE, side), 400)) for side in (0, 1)
    )
    config = load_config("smoke", ["decode.max_output_tokens=6"])  # untrained: outputs run to the limit
    model = build_float32_model(tokenizers[0].vocab_size, tokenizers[1].vocab_size, config)
    return model, config, tmp_path_factory.mktemp("vocab"), tokenizers


def translator_for(untrained, **settings):
    return build_translator(*untrained, **settings)


@pytest.mark.parametrize("beam_width", [1, 4])
def test_the_translator_s_strategy_comes_from_the_config(untrained, beam_width):
    model, config, vocab_dir, tokenizers = untrained
    config = load_config("smoke", [f"decode.beam_width={beam_width}", "decode.length_penalty_alpha=0.8"])
    translator = build_translator(model, config, vocab_dir, tokenizers)
    expected = GreedySearch(0.8) if beam_width == 1 else BeamSearch(4, 0.8, Seq2SeqDecoding.CONSTANT_KEYS)
    assert translator.decoding_strategy == expected


def test_without_xla_every_batch_takes_the_dynamic_search(untrained):
    translator = translator_for(untrained, beam_width=4)
    assert translator._translate_batch == translator._search_batch
    assert not hasattr(translator, "_compiled_search")


@pytest.mark.parametrize("beam_width", [1, 4])
def test_with_xla_small_batches_take_the_padded_compiled_search(untrained, beam_width):
    translator = translator_for(untrained, beam_width=beam_width, xla=True)
    if beam_width == 1:  # greedy: the very function `translate_ids` runs
        assert translator._compiled_search is translator._translate_valid_ids
    else:
        assert translator._compiled_search is not translator._translate_valid_ids
    # eagerly, `tf.cond` runs only the branch taken: record which
    taken = []
    translator._padded_compiled_search = lambda ids: taken.append("compiled") or (ids, ids[:, 0])
    translator._search_batch = lambda ids: taken.append("dynamic") or (ids, ids[:, 0])
    limit = XLA_MAX_BATCH["greedy" if beam_width == 1 else "beam"]
    for batch in (1, limit, limit + 1):
        translator._translate_batch(tf.fill([batch, 3], 5))
    assert taken == ["compiled", "compiled", "dynamic"]


@pytest.mark.parametrize("beam_width", [1, 3])
def test_the_translator_runs_its_strategy_on_the_model_s_step(untrained, beam_width):
    """`search` is the strategy on the model's step, its encoding and the configured output limits."""
    translator = translator_for(untrained, beam_width=beam_width)
    decoding = Seq2SeqDecoding(untrained[0])
    source_ids = translator.source_ids(
        tf.constant(["Y lloró Jesús.", "En el principio crió Dios los cielos."])
    )
    lengths = tf.reduce_sum(tf.cast(source_ids > 0, tf.int32), axis=1)
    decode = untrained[1].decode
    limits = tf.minimum(
        tf.cast(tf.math.ceil(tf.cast(lengths, tf.float32) * decode.max_length_ratio), tf.int32)
        + decode.max_length_offset,
        decode.max_output_tokens,
    )
    state, alpha = decoding.encode(source_ids), decode.length_penalty_alpha
    if beam_width == 1:
        expected = greedy_search(decoding.step, state, limits)
    else:
        expected = beam_search(
            decoding.step, state, limits, 3, alpha, constant_keys=Seq2SeqDecoding.CONSTANT_KEYS
        )
    _assert_same(translator.search(source_ids), expected)
