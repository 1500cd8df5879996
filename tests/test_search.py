"""Greedy search driven by fake step functions: no model, exact expectations."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from app.models.search import (
    UNREACHABLE_LOG_PROB,
    _flat_rows,
    _hypothesis_rows,
    _merge_beams,
    _split_beams,
    _tile_beams,
    beam_search,
    beam_search_nbest,
    fixed_length_greedy_search,
    fixed_shape_beam_search,
    greedy_search,
    max_output_lengths,
    top_k,
)
from app.special_tokens import END_ID, PAD_ID, START_ID

VOCAB = 6


def scripted_step(script: np.ndarray):
    """step_fn whose logits at step t put probability 0.5 on `script[sentence, t]`, the rest spread
    evenly; the state carries each row's sentence, since ended sentences leave the batch."""
    script = tf.constant(script, tf.int32)
    rest = np.log(0.5 / (VOCAB - 1))

    def step(tokens, state):
        position = tf.minimum(state["position"], script.shape[1] - 1)
        wanted = tf.gather_nd(script, tf.stack([state["sentence"], position], axis=1))
        logits = tf.where(tf.one_hot(wanted, VOCAB) > 0, np.log(0.5), rest)
        return tf.cast(logits, tf.float32), {**state, "position": state["position"] + 1, "seen": tokens}

    return step


def initial_state(batch: int) -> dict:
    return {
        "sentence": tf.range(batch),
        "position": tf.zeros([batch], tf.int32),
        "seen": tf.zeros([batch], tf.int32),
    }


def test_follows_the_most_likely_tokens_and_stops_each_sentence_at_its_end():
    script = np.array([[4, 5, END_ID, 3, 3], [3, END_ID, 4, 4, 4]])
    result = greedy_search(scripted_step(script), initial_state(2), tf.constant([10, 10]))
    np.testing.assert_array_equal(result.tokens.numpy(), [[4, 5, END_ID], [3, END_ID, 0]])
    np.testing.assert_array_equal(result.lengths.numpy(), [3, 2])
    np.testing.assert_allclose(result.scores.numpy(), [3 * np.log(0.5), 2 * np.log(0.5)], rtol=1e-5)


@pytest.mark.parametrize("in_graph", [False, True])
def test_loop_stops_when_every_sentence_has_ended(in_graph):
    script = np.array([[3, END_ID] + [3] * 8, [END_ID] + [3] * 9])
    search = tf.function(greedy_search, autograph=False) if in_graph else greedy_search
    result = search(scripted_step(script), initial_state(2), tf.constant([50, 50]))
    assert result.tokens.shape == (2, 2)  # two steps, not fifty


def test_sentence_is_ended_at_its_length_limit():
    script = np.array([[4] * 10, [4, END_ID] + [4] * 8])
    result = greedy_search(scripted_step(script), initial_state(2), tf.constant([3, 6]))
    np.testing.assert_array_equal(result.tokens.numpy(), [[4, 4, END_ID], [4, END_ID, 0]])
    assert result.lengths.numpy().tolist() == [3, 2]


def test_collects_a_state_entry_per_step_and_handles_an_empty_batch():
    script = np.array([[4, END_ID]])
    result = greedy_search(scripted_step(script), initial_state(1), tf.constant([5]), collect="seen")
    assert result.collected.shape == (1, 2)
    np.testing.assert_array_equal(result.collected.numpy(), [[1, 4]])  # the tokens fed at each step
    empty = greedy_search(scripted_step(np.zeros((0, 2), int)), initial_state(0), tf.zeros([0], tf.int32))
    assert empty.tokens.shape[0] == 0


def counting_rows(step_fn):
    """step_fn that also counts the rows it is run on, and that counter."""
    rows_stepped = tf.Variable(0)

    def step(tokens, state):
        rows_stepped.assign_add(tf.shape(tokens)[0])
        return step_fn(tokens, state)

    return step, rows_stepped


@pytest.mark.parametrize("in_graph", [False, True])
def test_ended_sentences_leave_the_batch(in_graph):
    # sentence 0 ends after one step, sentence 1 after two, sentence 2 runs to its limit of 10
    script = np.array([[END_ID] + [3] * 9, [3, END_ID] + [3] * 8, [3] * 10])
    step, rows_stepped = counting_rows(scripted_step(script))
    search = tf.function(greedy_search, autograph=False) if in_graph else greedy_search
    result = search(step, initial_state(3), tf.constant([10, 10, 10]))
    assert result.lengths.numpy().tolist() == [1, 2, 10]
    np.testing.assert_array_equal(result.tokens.numpy()[:2, :3], [[END_ID, 0, 0], [3, END_ID, 0]])
    assert int(rows_stepped.numpy()) == 1 + 2 + 10  # not 3 sentences × 10 steps


def test_output_limit_is_tied_to_the_source_length():
    limits = max_output_lengths(tf.constant([1, 10, 400]), ratio=1.5, offset=4, ceiling=100)
    assert limits.numpy().tolist() == [6, 19, 100]


# === Beam search ===


def markov_step(table: np.ndarray):
    """step_fn whose next-token log-probabilities depend only on the previous token: table[previous]."""
    table = tf.constant(table, tf.float32)

    def step(tokens, state):
        return tf.gather(table, tokens), {**state, "fed": tokens}

    return step


def random_table(seed: int, vocab: int = 7, sharpness: float = 2.0) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(size=(vocab, vocab)) * sharpness
    logits[:, 0] = -1e9  # never predict padding
    return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


def markov_state(batch: int) -> dict:
    return {"fed": tf.zeros([batch], tf.int32)}


@pytest.mark.parametrize("seed", range(4))
def test_beam_of_width_one_is_greedy(seed):
    step, limits = markov_step(random_table(seed)), tf.constant([12, 5, 9])
    greedy = greedy_search(step, markov_state(3), limits)
    beam = beam_search(step, markov_state(3), limits, beam_width=1, alpha=0.6)
    np.testing.assert_array_equal(beam.tokens.numpy(), greedy.tokens.numpy())
    np.testing.assert_allclose(beam.scores.numpy(), greedy.scores.numpy(), rtol=1e-5)
    np.testing.assert_array_equal(beam.lengths.numpy(), greedy.lengths.numpy())


def test_beam_finds_the_likelier_sentence_that_greedy_misses():
    # from start (1): token 3 (p=.6) then five tokens at p=.2 each, or token 4 (p=.4) then end (p=1)
    table = np.full((6, 6), -1e9)
    table[1, 3], table[1, 4] = np.log(0.6), np.log(0.4)
    table[3, 1:6] = np.log(0.2)  # after 3: five tokens at .2 (end among them)
    table[4, END_ID] = 0.0
    table[5, END_ID] = 0.0
    table[END_ID, END_ID] = 0.0
    step = markov_step(table)
    greedy = greedy_search(step, markov_state(1), tf.constant([6]))
    beam = beam_search(step, markov_state(1), tf.constant([6]), beam_width=2, alpha=0.0)
    assert beam.tokens.numpy()[0, :2].tolist() == [4, END_ID]
    assert beam.scores.numpy()[0] == pytest.approx(np.log(0.4), rel=1e-5)
    assert greedy.tokens.numpy()[0, 0] == 3 and greedy.scores.numpy()[0] < np.log(0.4)


@pytest.mark.parametrize(
    ("alpha", "tokens", "length"), [(0.0, [END_ID, PAD_ID], 1), (1.0, [4, END_ID], 2), (2.0, [4, END_ID], 2)]
)
def test_length_penalty_lets_a_longer_hypothesis_beat_a_likelier_short_one(alpha, tokens, length):
    # From start: end at once (p=.3) or token 4 (p=.7); the limit of 2 then forces 4 to end, scored
    # p(end | 4) = .4. Both hypotheses stay in a beam of 2, so only the final pick differs:
    #   [end]    log P = log .3         = -1.204, penalty ((5+1)/6)^α = 1
    #   [4, end] log P = log(.7 · .4)   = -1.273, penalty ((5+2)/6)^α = 1.167 (α=1), 1.361 (α=2)
    # α = 0: -1.204 > -1.273, the short one; α = 1: -1.273/1.167 = -1.091 > -1.204, α = 2: -0.935,
    # the long one. Were the penalty ignored, the short one would win at every α.
    table = np.full((6, 6), -1e9)
    table[START_ID, END_ID], table[START_ID, 4] = np.log(0.3), np.log(0.7)
    table[4, END_ID], table[4, 5] = np.log(0.4), np.log(0.6)
    table[END_ID, END_ID] = 0.0
    result = beam_search(markov_step(table), markov_state(1), tf.constant([2]), beam_width=2, alpha=alpha)
    assert result.tokens.numpy()[0].tolist() == tokens
    assert result.lengths.numpy().tolist() == [length]
    expected = np.log(0.3) if length == 1 else np.log(0.7 * 0.4)
    assert result.scores.numpy()[0] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(("alpha", "first"), [(0.0, [END_ID, PAD_ID]), (1.0, [4, END_ID])])
def test_nbest_returns_the_beam_s_hypotheses_sorted_by_normalised_score(alpha, first):
    # the length-penalty test's table: the beam of 2 ends holding [end] and [4, end], in either order
    table = np.full((6, 6), -1e9)
    table[START_ID, END_ID], table[START_ID, 4] = np.log(0.3), np.log(0.7)
    table[4, END_ID], table[4, 5] = np.log(0.4), np.log(0.6)
    table[END_ID, END_ID] = 0.0
    args = (markov_step(table), markov_state(1), tf.constant([2]))
    nbest = beam_search_nbest(*args, beam_width=2, alpha=alpha)
    best = beam_search(*args, beam_width=2, alpha=alpha)
    hypotheses = [row.tolist() for row in nbest.tokens.numpy()[0]]
    assert hypotheses[0] == first and sorted(hypotheses) == sorted([[END_ID, PAD_ID], [4, END_ID]])
    assert hypotheses[0] == best.tokens.numpy()[0].tolist()  # the first is beam_search's answer
    by_tokens = {tuple(row): score for row, score in zip(hypotheses, nbest.scores.numpy()[0], strict=True)}
    assert by_tokens[(END_ID, PAD_ID)] == pytest.approx(np.log(0.3), rel=1e-5)
    assert by_tokens[(4, END_ID)] == pytest.approx(np.log(0.7 * 0.4), rel=1e-5)
    normalised = nbest.normalised_scores.numpy()[0]
    assert normalised[0] >= normalised[1]
    penalty = ((5 + nbest.lengths.numpy()[0]) / 6) ** alpha
    np.testing.assert_allclose(normalised, nbest.scores.numpy()[0] / penalty, rtol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_nbest_hypotheses_are_distinct_and_the_first_is_the_beam_s_best(seed):
    step, limits = markov_step(random_table(seed, vocab=9, sharpness=1.0)), tf.constant([8, 5, 11])
    nbest = beam_search_nbest(step, markov_state(3), limits, beam_width=4, alpha=0.6)
    best = beam_search(step, markov_state(3), limits, beam_width=4, alpha=0.6)
    tokens, scores = nbest.tokens.numpy(), nbest.scores.numpy()
    for sentence in range(3):
        rows = {tuple(row) for row in tokens[sentence]}
        assert len(rows) == 4 and (scores[sentence] > UNREACHABLE_LOG_PROB).all()
        assert (np.diff(nbest.normalised_scores.numpy()[sentence]) <= 1e-6).all()  # best first
        width = best.tokens.shape[1]
        np.testing.assert_array_equal(tokens[sentence, 0, :width], best.tokens.numpy()[sentence])


@pytest.mark.parametrize("seed", range(6))
def test_beam_log_probability_is_never_below_greedy(seed):
    step, limits = markov_step(random_table(seed, vocab=9, sharpness=1.0)), tf.constant([10, 10])
    greedy = greedy_search(step, markov_state(2), limits)
    beam = beam_search(step, markov_state(2), limits, beam_width=4, alpha=0.0)
    assert (beam.scores.numpy() >= greedy.scores.numpy() - 1e-5).all()


@pytest.mark.parametrize("in_graph", [False, True])
def test_beam_stops_when_every_hypothesis_has_ended_and_respects_limits(in_graph):
    table = random_table(3)
    table[:, END_ID] = 5.0  # ending is overwhelmingly likely
    table -= np.log(np.exp(table).sum(axis=1, keepdims=True))
    search = tf.function(beam_search, autograph=False) if in_graph else beam_search
    result = search(markov_step(table), markov_state(2), tf.constant([40, 40]), beam_width=3)
    assert result.tokens.shape[1] <= 2  # not 40
    limited = beam_search(markov_step(random_table(5)), markov_state(2), tf.constant([3, 5]), beam_width=3)
    lengths = limited.lengths.numpy()
    assert lengths[0] <= 3 and lengths[1] <= 5
    for row, length in enumerate(lengths):
        assert limited.tokens.numpy()[row, length - 1] == END_ID
        assert (limited.tokens.numpy()[row, length:] == 0).all()


@pytest.mark.parametrize("in_graph", [False, True])
def test_beam_sentences_leave_the_batch_when_all_their_hypotheses_have_ended(in_graph):
    table = random_table(6)
    table[:, END_ID] = -30.0  # never ends by choice: each sentence runs to its limit
    step, rows_stepped = counting_rows(markov_step(table))
    search = tf.function(beam_search, autograph=False) if in_graph else beam_search
    result = search(step, markov_state(2), tf.constant([2, 8]), beam_width=4)
    assert result.lengths.numpy().tolist() == [2, 8]
    assert result.tokens.shape[1] == 8 and (result.tokens.numpy()[0, 2:] == 0).all()
    assert int(rows_stepped.numpy()) == 4 * (2 + 8)  # not 4 beams × 2 sentences × 8 steps
    alone = beam_search(markov_step(table), markov_state(1), tf.constant([8]), beam_width=4)
    np.testing.assert_array_equal(result.tokens.numpy()[1], alone.tokens.numpy()[0])


@pytest.mark.parametrize("in_graph", [False, True])
def test_a_sentence_leaves_once_no_live_hypothesis_can_beat_its_best_ended_one(in_graph):
    # from start: end at p = .9, or one of five tokens after which ending is all but impossible
    table = np.full((7, 7), -1e9)
    table[START_ID, END_ID], table[START_ID, 3:7] = np.log(0.9), np.log(0.025)
    table[3:7, 3:7] = np.log(0.25)
    table[3:7, END_ID] = -30.0
    table[END_ID, END_ID] = 0.0
    step, rows_stepped = counting_rows(markov_step(table))
    search = tf.function(beam_search, autograph=False) if in_graph else beam_search
    result = search(step, markov_state(1), tf.constant([10]), beam_width=4, alpha=0.6)
    assert result.tokens.numpy()[0].tolist() == [END_ID] and result.lengths.numpy()[0] == 1
    assert int(rows_stepped.numpy()) == 4  # one step: log .025 / lp(10) is far below log .9 / lp(1)
    full, full_rows = counting_rows(markov_step(table))
    nbest = beam_search_nbest(full, markov_state(1), tf.constant([10]), beam_width=4, alpha=0.6)
    assert int(full_rows.numpy()) == 4 * 10  # the n-best list waits for every hypothesis to end
    assert nbest.tokens.numpy()[0, 0, 0] == END_ID


def test_a_live_hypothesis_the_length_penalty_will_favour_keeps_its_sentence_going():
    # end at once (p = .55: log .55 / 1 = -0.60), or 3 (p = .45) and a sure chain 4, 5, …, 11, end:
    # log .45 / ((5 + 10) / 6) = -0.32 with alpha = 1. After the first step the live hypothesis's
    # bound is log .45 over the penalty at the limit (-0.28), above -0.60: the search goes on
    table = np.full((12, 12), -1e9)
    table[START_ID, END_ID], table[START_ID, 3] = np.log(0.55), np.log(0.45)
    for token in range(3, 11):
        table[token, token + 1] = 0.0
    table[11, END_ID] = table[END_ID, END_ID] = 0.0
    result = beam_search(markov_step(table), markov_state(1), tf.constant([12]), beam_width=2, alpha=1.0)
    assert result.lengths.numpy()[0] == 10
    assert result.tokens.numpy()[0].tolist() == [*range(3, 12), END_ID]


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
@pytest.mark.parametrize("seed", range(8))
def test_stopping_settled_sentences_keeps_the_best_hypothesis_of_the_full_search(alpha, seed):
    table = random_table(seed, vocab=8, sharpness=1.5)
    step, limits = markov_step(table), tf.constant([3, 7, 12, 20])
    early = beam_search(step, markov_state(4), limits, beam_width=4, alpha=alpha)
    full = beam_search_nbest(step, markov_state(4), limits, beam_width=4, alpha=alpha)  # never stops early
    width = early.tokens.shape[1]
    np.testing.assert_array_equal(early.tokens.numpy(), full.tokens.numpy()[:, 0, :width])
    assert (full.tokens.numpy()[:, 0, width:] == 0).all()
    np.testing.assert_array_equal(early.lengths.numpy(), full.lengths.numpy()[:, 0])
    np.testing.assert_allclose(early.scores.numpy(), full.scores.numpy()[:, 0], rtol=1e-6)


def test_beam_collects_attention_of_the_chosen_hypothesis():
    result = beam_search(
        markov_step(random_table(1)), markov_state(2), tf.constant([6, 6]), beam_width=3, collect="fed"
    )
    # the collected entry after each step is the token fed at that step: start, then the output shifted
    collected, tokens = result.collected.numpy(), result.tokens.numpy()
    assert (collected[:, 0] == 1).all()
    for row, length in enumerate(result.lengths.numpy()):
        np.testing.assert_array_equal(collected[row, 1:length], tokens[row, : length - 1])


def test_beam_handles_an_empty_batch():
    result = beam_search(markov_step(random_table(0)), markov_state(0), tf.zeros([0], tf.int32), beam_width=3)
    assert result.tokens.shape[0] == 0 and result.scores.shape == (0,)


def test_fixed_length_greedy_compiles_with_xla_and_matches_the_dynamic_one():
    step, limits = markov_step(random_table(2)), tf.constant([12, 4, 9])
    dynamic = greedy_search(step, markov_state(3), limits)
    compiled = tf.function(
        lambda lengths: fixed_length_greedy_search(step, markov_state(3), lengths, 16), jit_compile=True
    )
    fixed = compiled(limits)
    assert fixed.tokens.shape == (3, 16)
    width = dynamic.tokens.shape[1]
    np.testing.assert_array_equal(fixed.tokens.numpy()[:, :width], dynamic.tokens.numpy())
    assert (fixed.tokens.numpy()[:, width:] == 0).all()
    np.testing.assert_array_equal(fixed.lengths.numpy(), dynamic.lengths.numpy())
    np.testing.assert_allclose(fixed.scores.numpy(), dynamic.scores.numpy(), rtol=1e-5)


@pytest.mark.parametrize(("seed", "alpha"), [(5, 0.6), (6, 0.0), (7, 1.0)])
def test_fixed_shape_beam_compiles_with_xla_and_matches_the_dynamic_one(seed, alpha):
    """Ended sentences stay in the batch and hypotheses are written into a static buffer: the same
    best hypotheses, lengths and scores as `beam_search`, whose sentences leave the batch."""
    step, limits = markov_step(random_table(seed)), tf.constant([12, 4, 9, 1, 15])
    dynamic = beam_search(step, markov_state(5), limits, beam_width=3, alpha=alpha)
    compiled = tf.function(
        lambda lengths: fixed_shape_beam_search(
            step, markov_state(5), lengths, 16, beam_width=3, alpha=alpha
        ),
        jit_compile=True,
    )
    fixed = compiled(limits)
    assert fixed.tokens.shape == (5, 16) and fixed.collected is None
    width = dynamic.tokens.shape[1]
    np.testing.assert_array_equal(fixed.tokens.numpy()[:, :width], dynamic.tokens.numpy())
    assert (fixed.tokens.numpy()[:, width:] == 0).all()
    np.testing.assert_array_equal(fixed.lengths.numpy(), dynamic.lengths.numpy())
    np.testing.assert_allclose(fixed.scores.numpy(), dynamic.scores.numpy(), rtol=1e-5)
    assert (fixed.lengths.numpy() <= np.minimum(limits.numpy(), 16)).all()
    capped = compiled(tf.constant([40, 40, 40, 40, 40]))  # limits beyond the buffer end there
    assert capped.tokens.shape == (5, 16) and (capped.lengths.numpy() <= 16).all()


def test_constant_state_entries_are_not_reordered_and_change_nothing():
    table = random_table(4)
    step = markov_step(table)
    state = {**markov_state(2), "encoder": tf.constant([[1.0, 2.0], [3.0, 4.0]])}

    def checking_step(tokens, state):
        # each hypothesis must still see its own sentence's constant row
        tf.debugging.assert_equal(tf.reduce_sum(state["encoder"], axis=1)[::3], tf.constant([3.0, 7.0]))
        return step(tokens, state)

    plain = beam_search(step, state, tf.constant([8, 8]), beam_width=3)
    constant = beam_search(
        checking_step, state, tf.constant([8, 8]), beam_width=3, constant_keys=("encoder",)
    )
    np.testing.assert_array_equal(plain.tokens.numpy(), constant.tokens.numpy())
    np.testing.assert_allclose(plain.scores.numpy(), constant.scores.numpy())


@pytest.mark.parametrize("in_graph", [False, True])
def test_beam_reshapes_keep_a_sentence_s_hypotheses_in_consecutive_rows(in_graph):
    def reshapes(flat, parents, sentences):
        split = _split_beams(flat, 2)
        return split, _merge_beams(split), _flat_rows(parents, 2), _hypothesis_rows(sentences, 2)

    if in_graph:  # unknown sizes, as in the loop
        pairs, indices = tf.TensorSpec([None, 2], tf.int32), tf.TensorSpec([None], tf.int32)
        reshapes = tf.function(reshapes, input_signature=[pairs, pairs, indices])
    flat = tf.reshape(tf.range(12), [6, 2])  # [3 sentences · 2 beams, 2]: row r holds [2r, 2r + 1]
    parents = tf.constant([[1, 1], [0, 1], [1, 0]])  # each new hypothesis's beam of origin
    split, merged, rows, kept = reshapes(flat, parents, tf.constant([0, 2]))
    # sentence i's hypotheses are rows 2i and 2i + 1
    np.testing.assert_array_equal(split.numpy(), [[[0, 1], [2, 3]], [[4, 5], [6, 7]], [[8, 9], [10, 11]]])
    np.testing.assert_array_equal(merged.numpy(), flat.numpy())  # round trip
    np.testing.assert_array_equal(rows.numpy(), [1, 1, 2, 3, 5, 4])  # row 2i + parent, within sentence i
    np.testing.assert_array_equal(kept.numpy(), [0, 1, 4, 5])  # all the rows of sentences 0 and 2
    tiled = _split_beams(_tile_beams(tf.constant([7, 8, 9]), 2), 2)  # a sentence's beams start alike
    np.testing.assert_array_equal(tiled.numpy(), [[7, 7], [8, 8], [9, 9]])
    assert _split_beams(tf.zeros([0, 3, 5]), 3).shape == (0, 3, 3, 5)  # an empty batch


@pytest.mark.parametrize("size", [7, 1000, 5003])
def test_blocked_top_k_equals_tf_top_k(size):
    values = tf.constant(np.random.default_rng(size).normal(size=(6, size)), tf.float32)
    got, expected = top_k(values, 4), tf.math.top_k(values, 4)
    np.testing.assert_array_equal(got[0].numpy(), expected.values.numpy())
    np.testing.assert_array_equal(got[1].numpy(), expected.indices.numpy())
