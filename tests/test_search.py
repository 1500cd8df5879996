"""Greedy search driven by fake step functions: no model, exact expectations."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from app.models.search import END_ID, greedy_search, max_output_lengths

VOCAB = 6


def scripted_step(script: np.ndarray):
    """step_fn whose logits at step t put probability 0.5 on `script[row, t]`, the rest spread evenly."""
    script = tf.constant(script, tf.int32)
    rest = np.log(0.5 / (VOCAB - 1))

    def step(tokens, state):
        position = state["position"]
        wanted = tf.gather(script, tf.minimum(position, script.shape[1] - 1), axis=1)
        logits = tf.where(tf.one_hot(wanted, VOCAB) > 0, np.log(0.5), rest)
        return tf.cast(logits, tf.float32), {**state, "position": position + 1, "seen": tokens}

    return step


def initial_state(batch: int) -> dict:
    return {"position": tf.constant(0), "seen": tf.zeros([batch], tf.int32)}


def test_follows_the_most_likely_tokens_and_stops_each_sentence_at_its_end():
    script = np.array([[4, 5, END_ID, 3, 3], [3, END_ID, 4, 4, 4]])
    result = greedy_search(scripted_step(script), initial_state(2), tf.constant([10, 10]))
    np.testing.assert_array_equal(result.tokens.numpy(), [[4, 5, END_ID], [3, END_ID, 0]])
    np.testing.assert_array_equal(result.lengths.numpy(), [3, 2])
    np.testing.assert_allclose(result.scores.numpy(), [3 * np.log(0.5), 2 * np.log(0.5)], rtol=1e-5)


def test_loop_stops_when_every_sentence_has_ended():
    script = np.array([[3, END_ID] + [3] * 8, [END_ID] + [3] * 9])
    result = greedy_search(scripted_step(script), initial_state(2), tf.constant([50, 50]))
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


def test_output_limit_is_tied_to_the_source_length():
    limits = max_output_lengths(tf.constant([1, 10, 400]), ratio=1.5, offset=4, ceiling=100)
    assert limits.numpy().tolist() == [6, 19, 100]
